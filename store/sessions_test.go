package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store"
)

// TestSessions holds the console's session store to its contract on both
// engines: a session lives until its ExpiresAt or IdleUntil, whichever
// comes first, Touch moves IdleUntil, Delete ends it, and Get returns the
// key it is bound to only while that key is stored and not revoked.
func TestSessions(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		sessions := store.NewSessions(env.db)
		keys := access.NewKeys(store.NewAPIKeys(env.db))
		admin, _, err := keys.Create(ctx, access.NewKey{Name: "console-admin", Role: access.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		invoker, _, err := keys.Create(ctx, access.NewKey{Name: "orders", Role: access.RoleInvoker,
			Connections: []string{"Conn_REST_Orders_*"}})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		mk := func(hash, keyID string) *access.Session {
			return &access.Session{Hash: hash, KeyID: keyID, CreatedAt: t0, ExpiresAt: t0.Add(8 * time.Hour),
				IdleUntil: t0.Add(time.Hour)}
		}
		for _, s := range []*access.Session{mk("h-admin", admin.ID), mk("h-invoker", invoker.ID), mk("h-env", "env"),
			mk("h-revoked", invoker.ID)} {
			if s.KeyID == "env" {
				s.KeyCheck = "check"
			}
			if err := sessions.Create(ctx, s); err != nil {
				t.Fatalf("Create(%s): %v", s.Hash, err)
			}
		}
		if err := sessions.Create(ctx, mk("h-admin", admin.ID)); err == nil {
			t.Errorf("Create(an existing hash) = nil, want an error")
		}

		cases := []struct {
			name    string
			hash    string
			at      time.Duration // after t0
			keyName string        // "" wants no key
			gone    bool          // wants ErrNoSession
		}{
			{name: "fresh", hash: "h-admin", at: time.Minute, keyName: "console-admin"},
			{name: "invoker key and patterns", hash: "h-invoker", at: time.Minute, keyName: "orders"},
			{name: "admin token session has no stored key", hash: "h-env", at: time.Minute},
			{name: "idle too long", hash: "h-admin", at: time.Hour, gone: true},
			{name: "unknown", hash: "h-nope", at: time.Minute, gone: true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s, k, err := sessions.Get(ctx, c.hash, t0.Add(c.at))
				if c.gone {
					if !errors.Is(err, access.ErrNoSession) {
						t.Fatalf("Get(%q) = %v, %v, %v, want ErrNoSession", c.hash, s, k, err)
					}
					return
				}
				if err != nil || s.Hash != c.hash || !s.ExpiresAt.Equal(t0.Add(8*time.Hour)) || !s.CreatedAt.Equal(t0) {
					t.Fatalf("Get(%q) = %+v, %v, want the session created", c.hash, s, err)
				}
				switch {
				case c.keyName == "" && k != nil:
					t.Errorf("Get(%q) key = %+v, want none", c.hash, k)
				case c.keyName != "" && (k == nil || k.Name != c.keyName || k.ID != s.KeyID):
					t.Errorf("Get(%q) key = %+v, want %s", c.hash, k, c.keyName)
				}
			})
		}
		if s, _, _ := sessions.Get(ctx, "h-env", t0); s == nil || s.KeyCheck != "check" || s.KeyID != "env" {
			t.Errorf("Get(h-env) = %+v, want its KeyID and KeyCheck", s)
		}
		if _, k, _ := sessions.Get(ctx, "h-invoker", t0); k == nil || len(k.Connections) != 1 || k.Connections[0] != "Conn_REST_Orders_*" {
			t.Errorf("Get(h-invoker) key = %+v, want its patterns", k)
		}

		// Touch moves the idle end, never past the absolute one.
		if err := sessions.Touch(ctx, "h-admin", t0.Add(90*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if s, _, err := sessions.Get(ctx, "h-admin", t0.Add(80*time.Minute)); err != nil || !s.IdleUntil.Equal(t0.Add(90*time.Minute)) {
			t.Errorf("Get(h-admin) after Touch = %+v, %v, want IdleUntil %v", s, err, t0.Add(90*time.Minute))
		}
		if err := sessions.Touch(ctx, "h-admin", t0.Add(9*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sessions.Get(ctx, "h-admin", t0.Add(8*time.Hour)); !errors.Is(err, access.ErrNoSession) {
			t.Errorf("Get(h-admin) at its ExpiresAt = %v, want ErrNoSession", err)
		}
		if err := sessions.Touch(ctx, "h-nope", t0); err != nil {
			t.Errorf("Touch(unknown) = %v, want nil", err)
		}

		// A revoked key leaves its sessions without a key, at once.
		if _, err := keys.Revoke(ctx, invoker.ID); err != nil {
			t.Fatal(err)
		}
		if s, k, err := sessions.Get(ctx, "h-revoked", t0.Add(time.Minute)); err != nil || s == nil || k != nil {
			t.Errorf("Get(session of a revoked key) = %+v, %+v, %v, want the session without a key", s, k, err)
		}

		if err := sessions.Delete(ctx, "h-env"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sessions.Get(ctx, "h-env", t0); !errors.Is(err, access.ErrNoSession) {
			t.Errorf("Get after Delete = %v, want ErrNoSession", err)
		}
		if err := sessions.Delete(ctx, "h-env"); err != nil {
			t.Errorf("Delete(gone) = %v, want nil", err)
		}

		// Creating a session drops those that have ended.
		if err := sessions.Create(ctx, &access.Session{Hash: "h-later", KeyID: admin.ID, CreatedAt: t0.Add(10 * time.Hour),
			ExpiresAt: t0.Add(18 * time.Hour), IdleUntil: t0.Add(11 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var left []string
		if err := env.db.Table("console_sessions").Order("hash").Pluck("hash", &left).Error; err != nil {
			t.Fatal(err)
		}
		if len(left) != 1 || left[0] != "h-later" {
			t.Errorf("sessions left after a later Create = %v, want [h-later]", left)
		}
	})
}
