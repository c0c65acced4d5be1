package security

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
)

// forKeyStore runs f as a subtest on every engine under test, with a key
// store on a fresh database.
func forKeyStore(t *testing.T, f func(t *testing.T, db *connections.DB, ks *KeyStore)) {
	forEngine(t, func(t *testing.T, engine connectionstest.Engine) {
		db := connectionstest.Open(t, engine)
		f(t, db, NewKeyStore(db.DB))
	})
}

func TestKeyStoreCreate(t *testing.T) {
	forKeyStore(t, func(t *testing.T, db *connections.DB, ks *KeyStore) {
		ctx := context.Background()
		k, secret, err := ks.Create(ctx, NewKey{Name: "ci", Role: RoleDeveloper, CreatedBy: "admin"})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if !strings.HasPrefix(secret, KeyPrefix) {
			t.Errorf("key %q does not start with %q", secret[:8], KeyPrefix)
		}
		random, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(secret, KeyPrefix))
		if err != nil || len(random) < 32 {
			t.Errorf("key holds %d random bytes (%v), want at least 32", len(random), err)
		}
		if k.Prefix == "" || !strings.HasPrefix(secret, k.Prefix) || len(k.Prefix) >= len(secret)/2 {
			t.Errorf("Prefix = %q, want a short start of the key", k.Prefix)
		}
		if k.ID == "" || k.Name != "ci" || k.Role != RoleDeveloper || k.CreatedBy != "admin" || k.CreatedAt.IsZero() {
			t.Errorf("Create returned %+v", k)
		}
		_, other, err := ks.Create(ctx, NewKey{Name: "ci", Role: RoleDeveloper})
		if err != nil {
			t.Fatal(err)
		}
		if other == secret {
			t.Errorf("two keys are equal")
		}

		sum := sha256.Sum256([]byte(secret))
		values := connectionstest.TableText(t, db.DB, "api_keys")
		foundHash := false
		for _, v := range values {
			if strings.Contains(v, strings.TrimPrefix(secret, KeyPrefix)) {
				t.Errorf("api_keys holds the key: %q", v)
			}
			foundHash = foundHash || v == hex.EncodeToString(sum[:])
		}
		if !foundHash {
			t.Errorf("api_keys does not hold the SHA-256 of the key")
		}
	})
}

func TestNewKeyValidate(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	tests := []struct {
		name  string
		key   NewKey
		field string // "" for valid
	}{
		{name: "admin", key: NewKey{Name: "ops", Role: RoleAdmin}},
		{name: "invoker with patterns", key: NewKey{Name: "orders", Role: RoleInvoker, Connections: []string{"Conn_REST_Orders_*"}, ExpiresAt: &future}},
		{name: "no name", key: NewKey{Role: RoleAdmin}, field: "name"},
		{name: "unknown role", key: NewKey{Name: "x", Role: "root"}, field: "role"},
		{name: "invoker without patterns", key: NewKey{Name: "x", Role: RoleInvoker}, field: "connections"},
		{name: "viewer with patterns", key: NewKey{Name: "x", Role: RoleViewer, Connections: []string{"*"}}, field: "connections"},
		{name: "bad pattern", key: NewKey{Name: "x", Role: RoleInvoker, Connections: []string{"a b"}}, field: "connections[0]"},
		{name: "expired", key: NewKey{Name: "x", Role: RoleAdmin, ExpiresAt: &past}, field: "expiresAt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.key.Validate(now)
			var errs connections.ValidationErrors
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("Validate(%+v) = %v, want nil", tt.key, err)
			case tt.field != "" && (!errors.As(err, &errs) || len(errs) != 1 || errs[0].Field != tt.field):
				t.Errorf("Validate(%+v) = %v, want one error for %s", tt.key, err, tt.field)
			}
		})
	}
}

func TestKeyStoreAuthenticate(t *testing.T) {
	forKeyStore(t, func(t *testing.T, db *connections.DB, ks *KeyStore) {
		ctx := context.Background()
		k, secret, err := ks.Create(ctx, NewKey{Name: "orders", Role: RoleInvoker, Connections: []string{"Conn_*"}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ks.Authenticate(ctx, secret)
		if err != nil || got.ID != k.ID || got.Role != RoleInvoker || len(got.Connections) != 1 {
			t.Fatalf("Authenticate(key) = %+v, %v, want %+v", got, err, k)
		}
		for _, bad := range []string{"", secret + "x", secret[:len(secret)-1], strings.TrimPrefix(secret, KeyPrefix), strings.Repeat("a", 300)} {
			if got, err := ks.Authenticate(ctx, bad); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("Authenticate(%.12q...) = %v, %v, want ErrUnauthenticated", bad, got, err)
			}
		}

		// Cached: the row is gone, the key still works until Forget.
		if err := db.Exec("DELETE FROM api_keys WHERE id = ?", k.ID).Error; err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Authenticate(ctx, secret); err != nil {
			t.Errorf("Authenticate(cached key) = %v, want success without the database", err)
		}
		ks.Forget(k.ID)
		if _, err := ks.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate after Forget = %v, want ErrUnauthenticated", err)
		}
	})
}

func TestKeyStoreRevoke(t *testing.T) {
	forKeyStore(t, func(t *testing.T, _ *connections.DB, ks *KeyStore) {
		ctx := context.Background()
		k, secret, err := ks.Create(ctx, NewKey{Name: "ci", Role: RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Authenticate(ctx, secret); err != nil { // now cached
			t.Fatal(err)
		}
		revoked, err := ks.Revoke(ctx, k.ID)
		if err != nil || revoked.ID != k.ID || revoked.RevokedAt == nil {
			t.Fatalf("Revoke(%q) = %+v, %v", k.ID, revoked, err)
		}
		if _, err := ks.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate(revoked key) = %v, want ErrUnauthenticated", err)
		}
		if _, err := ks.Revoke(ctx, k.ID); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("Revoke(%q) again = %v, want ErrKeyNotFound", k.ID, err)
		}
		if keys, err := ks.List(ctx); err != nil || len(keys) != 0 {
			t.Errorf("List() = %d keys, %v, want none", len(keys), err)
		}
	})
}

func TestKeyStoreExpiry(t *testing.T) {
	forKeyStore(t, func(t *testing.T, _ *connections.DB, ks *KeyStore) {
		ctx := context.Background()
		now := time.Now()
		ks.Now = func() time.Time { return now }
		expires := now.Add(time.Hour)
		_, secret, err := ks.Create(ctx, NewKey{Name: "temp", Role: RoleViewer, ExpiresAt: &expires})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			now  time.Time
			ok   bool
		}{
			{name: "before expiry", now: now.Add(59 * time.Minute), ok: true},
			{name: "at expiry", now: expires, ok: false},
			{name: "after expiry", now: now.Add(2 * time.Hour), ok: false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ks.Now = func() time.Time { return tt.now }
				_, err := ks.Authenticate(ctx, secret)
				if (err == nil) != tt.ok {
					t.Errorf("Authenticate at %v = %v, want ok=%v", tt.now.Sub(now), err, tt.ok)
				}
			})
		}
	})
}

func TestSetAdminToken(t *testing.T) {
	db := connectionstest.Open(t, connectionstest.SQLite)
	ks := NewKeyStore(db.DB)
	ctx := context.Background()
	if err := ks.SetAdminToken(strings.Repeat("x", 31)); err == nil {
		t.Errorf("SetAdminToken(31 characters) = nil, want an error")
	}
	token := strings.Repeat("t", 32)
	if err := ks.SetAdminToken(token); err != nil {
		t.Fatalf("SetAdminToken(32 characters) = %v", err)
	}
	k, err := ks.Authenticate(ctx, token)
	if err != nil || k.Role != RoleAdmin {
		t.Fatalf("Authenticate(admin token) = %+v, %v, want an admin", k, err)
	}
	if _, err := ks.Authenticate(ctx, token[:31]+"u"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Authenticate(other token) = %v, want ErrUnauthenticated", err)
	}
	path := filepath.Join(t.TempDir(), "admin.token")
	if created, err := ks.Bootstrap(ctx, path); err != nil || created {
		t.Errorf("Bootstrap with an admin token = %v, %v, want nothing created", created, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Bootstrap with an admin token wrote %s (%v)", path, err)
	}
}

func TestBootstrap(t *testing.T) {
	forKeyStore(t, func(t *testing.T, _ *connections.DB, ks *KeyStore) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "data")
		path := filepath.Join(dir, "admin.token")
		created, err := ks.Bootstrap(ctx, path)
		if err != nil || !created {
			t.Fatalf("Bootstrap(empty store) = %v, %v, want created", created, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("token file mode = %v, want 0600", mode)
		}
		b, _ := os.ReadFile(path)
		k, err := ks.Authenticate(ctx, strings.TrimSpace(string(b)))
		if err != nil || k.Role != RoleAdmin || k.Name != BootstrapAdminName {
			t.Errorf("Authenticate(token file) = %+v, %v, want the bootstrap admin", k, err)
		}

		created, err = ks.Bootstrap(ctx, path)
		if err != nil || created {
			t.Errorf("second Bootstrap = %v, %v, want nothing created", created, err)
		}
		if again, _ := os.ReadFile(path); string(again) != string(b) {
			t.Errorf("second Bootstrap rewrote the token file")
		}
		if keys, err := ks.List(ctx); err != nil || len(keys) != 1 {
			t.Errorf("List() = %d keys, %v, want 1", len(keys), err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("data directory holds %d files, want only admin.token", len(entries))
		}
	})
}

func TestMatchPattern(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"Conn_REST_Orders_*", "Conn_REST_Orders_TriggerInvoke_OAuth", true},
		{"Conn_REST_Orders_*", "Conn_REST_Orders_", true},
		{"Conn_REST_Orders_*", "Conn_REST_Billing_Invoke", false},
		{"Conn_REST_Orders_*", "conn_rest_orders_x", false},
		{"*", "anything", true},
		{"*", "", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "abcd", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"*_OAuth", "Conn_Orders_OAuth", true},
		{"*_OAuth", "Conn_Orders_OAuth2", false},
		{"Conn_Orders", "Conn_Orders", true},
		{"Conn_Orders", "Conn_Orders2", false},
		{"Conn_Orders", "Conn_Order", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"/"+tt.name, func(t *testing.T) {
			if got := MatchPattern(tt.pattern, tt.name); got != tt.want {
				t.Errorf("MatchPattern(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
			}
		})
	}
}

func TestAPIKeyCan(t *testing.T) {
	all := []Permission{PermRead, PermWrite, PermInvoke, PermManageKeys, PermAudit}
	tests := []struct {
		role Role
		want []Permission
	}{
		{RoleAdmin, all},
		{RoleDeveloper, []Permission{PermRead, PermWrite, PermInvoke}},
		{RoleInvoker, []Permission{PermInvoke}},
		{RoleViewer, []Permission{PermRead, PermAudit}},
		{"unknown", nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.role), func(t *testing.T) {
			k := &APIKey{Role: tt.role}
			for _, p := range all {
				want := false
				for _, q := range tt.want {
					want = want || p == q
				}
				if got := k.Can(p); got != want {
					t.Errorf("%s.Can(%d) = %v, want %v", tt.role, p, got, want)
				}
			}
		})
	}
}

func TestAPIKeyMaySee(t *testing.T) {
	invoker := &APIKey{Role: RoleInvoker, Connections: []string{"Conn_REST_Orders_*", "Conn_Billing"}}
	tests := []struct {
		name string
		key  *APIKey
		conn string
		want bool
	}{
		{name: "invoker, pattern", key: invoker, conn: "Conn_REST_Orders_Invoke", want: true},
		{name: "invoker, exact", key: invoker, conn: "Conn_Billing", want: true},
		{name: "invoker, other", key: invoker, conn: "Conn_Billing_Old", want: false},
		{name: "invoker without patterns", key: &APIKey{Role: RoleInvoker}, conn: "Conn_Billing", want: false},
		{name: "viewer", key: &APIKey{Role: RoleViewer}, conn: "Conn_Billing", want: true},
		{name: "developer", key: &APIKey{Role: RoleDeveloper}, conn: "Anything", want: true},
		{name: "admin", key: &APIKey{Role: RoleAdmin}, conn: "Anything", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.MaySee(tt.conn); got != tt.want {
				t.Errorf("MaySee(%q) = %v, want %v", tt.conn, got, tt.want)
			}
		})
	}
}
