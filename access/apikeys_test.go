package access_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// forKeys runs f as a subtest on every engine under test, with API keys
// on a fresh database.
func forKeys(t *testing.T, f func(t *testing.T, db *store.DB, keys *access.Keys)) {
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			db := storetest.Open(t, engine)
			f(t, db, access.NewKeys(store.NewAPIKeys(db)))
		})
	}
}

func TestKeysCreate(t *testing.T) {
	forKeys(t, func(t *testing.T, db *store.DB, keys *access.Keys) {
		ctx := context.Background()
		k, secret, err := keys.Create(ctx, access.NewKey{Name: "ci", Role: access.RoleDeveloper, CreatedBy: "admin"})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if !strings.HasPrefix(secret, access.KeyPrefix) {
			t.Errorf("key %q does not start with %q", secret[:8], access.KeyPrefix)
		}
		random, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(secret, access.KeyPrefix))
		if err != nil || len(random) < 32 {
			t.Errorf("key holds %d random bytes (%v), want at least 32", len(random), err)
		}
		if k.Prefix == "" || !strings.HasPrefix(secret, k.Prefix) || len(k.Prefix) >= len(secret)/2 {
			t.Errorf("Prefix = %q, want a short start of the key", k.Prefix)
		}
		if k.ID == "" || k.Name != "ci" || k.Role != access.RoleDeveloper || k.CreatedBy != "admin" || k.CreatedAt.IsZero() {
			t.Errorf("Create returned %+v", k)
		}
		_, other, err := keys.Create(ctx, access.NewKey{Name: "ci", Role: access.RoleDeveloper})
		if err != nil {
			t.Fatal(err)
		}
		if other == secret {
			t.Errorf("two keys are equal")
		}
		if _, _, err := keys.Create(ctx, access.NewKey{Name: "", Role: access.RoleAdmin}); !errors.As(err, new(connections.ValidationErrors)) {
			t.Errorf("Create(no name) = %v, want ValidationErrors", err)
		}

		sum := sha256.Sum256([]byte(secret))
		values := storetest.TableText(t, db.DB, "api_keys")
		foundHash := false
		for _, v := range values {
			if strings.Contains(v, strings.TrimPrefix(secret, access.KeyPrefix)) {
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
		key   access.NewKey
		field string // "" for valid
	}{
		{name: "admin", key: access.NewKey{Name: "ops", Role: access.RoleAdmin}},
		{name: "invoker with patterns", key: access.NewKey{Name: "orders", Role: access.RoleInvoker, Connections: []string{"Conn_REST_Orders_*"}, ExpiresAt: &future}},
		{name: "no name", key: access.NewKey{Role: access.RoleAdmin}, field: "name"},
		{name: "unknown role", key: access.NewKey{Name: "x", Role: "root"}, field: "role"},
		{name: "invoker without patterns", key: access.NewKey{Name: "x", Role: access.RoleInvoker}, field: "connections"},
		{name: "viewer with patterns", key: access.NewKey{Name: "x", Role: access.RoleViewer, Connections: []string{"*"}}, field: "connections"},
		{name: "bad pattern", key: access.NewKey{Name: "x", Role: access.RoleInvoker, Connections: []string{"a b"}}, field: "connections[0]"},
		{name: "pattern with path.Match syntax", key: access.NewKey{Name: "x", Role: access.RoleInvoker, Connections: []string{"Conn_[a-z]?"}},
			field: "connections[0]"},
		{name: "expired", key: access.NewKey{Name: "x", Role: access.RoleAdmin, ExpiresAt: &past}, field: "expiresAt"},
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

func TestKeysAuthenticate(t *testing.T) {
	forKeys(t, func(t *testing.T, db *store.DB, keys *access.Keys) {
		ctx := context.Background()
		k, secret, err := keys.Create(ctx, access.NewKey{Name: "orders", Role: access.RoleInvoker, Connections: []string{"Conn_*"}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := keys.Authenticate(ctx, secret)
		if err != nil || got.ID != k.ID || got.Role != access.RoleInvoker || len(got.Connections) != 1 {
			t.Fatalf("Authenticate(key) = %+v, %v, want %+v", got, err, k)
		}
		for _, bad := range []string{"", secret + "x", secret[:len(secret)-1], strings.TrimPrefix(secret, access.KeyPrefix), strings.Repeat("a", 300)} {
			if got, err := keys.Authenticate(ctx, bad); !errors.Is(err, access.ErrUnauthenticated) {
				t.Errorf("Authenticate(%.12q...) = %v, %v, want ErrUnauthenticated", bad, got, err)
			}
		}

		// Cached: the row is gone, the key still works until Forget.
		if err := db.Exec("DELETE FROM api_keys WHERE id = ?", k.ID).Error; err != nil {
			t.Fatal(err)
		}
		if _, err := keys.Authenticate(ctx, secret); err != nil {
			t.Errorf("Authenticate(cached key) = %v, want success without the database", err)
		}
		keys.Forget(k.ID)
		if _, err := keys.Authenticate(ctx, secret); !errors.Is(err, access.ErrUnauthenticated) {
			t.Errorf("Authenticate after Forget = %v, want ErrUnauthenticated", err)
		}
	})
}

func TestKeysRevoke(t *testing.T) {
	forKeys(t, func(t *testing.T, _ *store.DB, keys *access.Keys) {
		ctx := context.Background()
		k, secret, err := keys.Create(ctx, access.NewKey{Name: "ci", Role: access.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keys.Authenticate(ctx, secret); err != nil { // now cached
			t.Fatal(err)
		}
		revoked, err := keys.Revoke(ctx, k.ID)
		if err != nil || revoked.ID != k.ID || revoked.RevokedAt == nil {
			t.Fatalf("Revoke(%q) = %+v, %v", k.ID, revoked, err)
		}
		if _, err := keys.Authenticate(ctx, secret); !errors.Is(err, access.ErrUnauthenticated) {
			t.Errorf("Authenticate(revoked key) = %v, want ErrUnauthenticated", err)
		}
		if _, err := keys.Revoke(ctx, k.ID); !errors.Is(err, access.ErrKeyNotFound) {
			t.Errorf("Revoke(%q) again = %v, want ErrKeyNotFound", k.ID, err)
		}
		if list, err := keys.List(ctx); err != nil || len(list) != 0 {
			t.Errorf("List() = %d keys, %v, want none", len(list), err)
		}
	})
}

// pausingStore is the real key store whose next ByHash, once armed, stops
// after reading the row until the test releases it: a cache-miss lookup
// caught between its read and its cache write.
type pausingStore struct {
	access.KeyStore
	armed   atomic.Bool
	read    chan struct{} // receives when the paused ByHash has read
	release chan struct{} // closed by the test to let it go on
}

func (s *pausingStore) ByHash(ctx context.Context, hash string) (*access.APIKey, error) {
	k, err := s.KeyStore.ByHash(ctx, hash)
	if s.armed.CompareAndSwap(true, false) {
		s.read <- struct{}{}
		<-s.release
	}
	return k, err
}

// TestRevokeDuringLookup is #8.7: a lookup that read the key row before a
// Revoke (or a Forget, when another replica revoked it) and caches after
// it must not keep the revoked key valid.
func TestRevokeDuringLookup(t *testing.T) {
	tests := []struct {
		name   string
		revoke func(ctx context.Context, keys *access.Keys, ks access.KeyStore, id string) error
	}{
		{name: "Revoke", revoke: func(ctx context.Context, keys *access.Keys, _ access.KeyStore, id string) error {
			_, err := keys.Revoke(ctx, id)
			return err
		}},
		{name: "revoked elsewhere, Forget of the key", revoke: func(ctx context.Context, keys *access.Keys, ks access.KeyStore, id string) error {
			_, err := ks.Revoke(ctx, id, time.Now().UTC())
			keys.Forget(id)
			return err
		}},
		{name: "revoked elsewhere, Forget of all keys", revoke: func(ctx context.Context, keys *access.Keys, ks access.KeyStore, id string) error {
			_, err := ks.Revoke(ctx, id, time.Now().UTC())
			keys.Forget("")
			return err
		}},
	}
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			db := storetest.Open(t, engine)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					ctx := context.Background()
					ks := &pausingStore{KeyStore: store.NewAPIKeys(db), read: make(chan struct{}), release: make(chan struct{})}
					keys := access.NewKeys(ks)
					k, secret, err := keys.Create(ctx, access.NewKey{Name: "ci", Role: access.RoleDeveloper})
					if err != nil {
						t.Fatal(err)
					}
					ks.armed.Store(true)
					done := make(chan error, 1)
					go func() {
						_, err := keys.Authenticate(ctx, secret) // cache miss: reads the row, then pauses
						done <- err
					}()
					<-ks.read
					if err := tt.revoke(ctx, keys, ks.KeyStore, k.ID); err != nil {
						t.Fatalf("revoke: %v", err)
					}
					close(ks.release)
					if err := <-done; err != nil {
						t.Fatalf("Authenticate that began before the revocation = %v, want the key it read", err)
					}
					if got, err := keys.Authenticate(ctx, secret); !errors.Is(err, access.ErrUnauthenticated) {
						t.Errorf("Authenticate after %s = %+v, %v, want ErrUnauthenticated: the racing lookup cached the revoked key",
							tt.name, got, err)
					}
				})
			}
		})
	}
}

func TestKeysExpiry(t *testing.T) {
	forKeys(t, func(t *testing.T, _ *store.DB, keys *access.Keys) {
		ctx := context.Background()
		now := time.Now()
		keys.Now = func() time.Time { return now }
		expires := now.Add(time.Hour)
		_, secret, err := keys.Create(ctx, access.NewKey{Name: "temp", Role: access.RoleViewer, ExpiresAt: &expires})
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
				keys.Now = func() time.Time { return tt.now }
				_, err := keys.Authenticate(ctx, secret)
				if (err == nil) != tt.ok {
					t.Errorf("Authenticate at %v = %v, want ok=%v", tt.now.Sub(now), err, tt.ok)
				}
			})
		}
	})
}

func TestSetAdminToken(t *testing.T) {
	db := storetest.Open(t, storetest.SQLite)
	keys := access.NewKeys(store.NewAPIKeys(db))
	ctx := context.Background()
	if err := keys.SetAdminToken(strings.Repeat("x", 31)); err == nil {
		t.Errorf("SetAdminToken(31 characters) = nil, want an error")
	}
	token := strings.Repeat("t", 32)
	if err := keys.SetAdminToken(token); err != nil {
		t.Fatalf("SetAdminToken(32 characters) = %v", err)
	}
	k, err := keys.Authenticate(ctx, token)
	if err != nil || k.Role != access.RoleAdmin || k.Name != access.BootstrapAdminName {
		t.Fatalf("Authenticate(admin token) = %+v, %v, want an admin", k, err)
	}
	if _, err := keys.Authenticate(ctx, token[:31]+"u"); !errors.Is(err, access.ErrUnauthenticated) {
		t.Errorf("Authenticate(other token) = %v, want ErrUnauthenticated", err)
	}
	path := filepath.Join(t.TempDir(), "admin.token")
	if created, err := keys.Bootstrap(ctx, path); err != nil || created {
		t.Errorf("Bootstrap with an admin token = %v, %v, want nothing created", created, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Bootstrap with an admin token wrote %s (%v)", path, err)
	}
}

func TestBootstrap(t *testing.T) {
	forKeys(t, func(t *testing.T, _ *store.DB, keys *access.Keys) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "data")
		path := filepath.Join(dir, "admin.token")
		created, err := keys.Bootstrap(ctx, path)
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
		k, err := keys.Authenticate(ctx, strings.TrimSpace(string(b)))
		if err != nil || k.Role != access.RoleAdmin || k.Name != access.BootstrapAdminName {
			t.Errorf("Authenticate(token file) = %+v, %v, want the bootstrap admin", k, err)
		}

		created, err = keys.Bootstrap(ctx, path)
		if err != nil || created {
			t.Errorf("second Bootstrap = %v, %v, want nothing created", created, err)
		}
		if again, _ := os.ReadFile(path); string(again) != string(b) {
			t.Errorf("second Bootstrap rewrote the token file")
		}
		if list, err := keys.List(ctx); err != nil || len(list) != 1 {
			t.Errorf("List() = %d keys, %v, want 1", len(list), err)
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
			if got := access.MatchPattern(tt.pattern, tt.name); got != tt.want {
				t.Errorf("MatchPattern(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
			}
		})
	}
}

func TestAPIKeyCan(t *testing.T) {
	all := []access.Permission{access.PermRead, access.PermWrite, access.PermInvoke, access.PermManageKeys, access.PermAudit,
		access.PermMetrics}
	tests := []struct {
		role access.Role
		want []access.Permission
	}{
		{access.RoleAdmin, all},
		{access.RoleDeveloper, []access.Permission{access.PermRead, access.PermWrite, access.PermInvoke}},
		{access.RoleInvoker, []access.Permission{access.PermInvoke}},
		{access.RoleViewer, []access.Permission{access.PermRead, access.PermAudit, access.PermMetrics}},
		{"unknown", nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.role), func(t *testing.T) {
			k := &access.APIKey{Role: tt.role}
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
	invoker := &access.APIKey{Role: access.RoleInvoker, Connections: []string{"Conn_REST_Orders_*", "Conn_Billing"}}
	tests := []struct {
		name string
		key  *access.APIKey
		conn string
		want bool
	}{
		{name: "invoker, pattern", key: invoker, conn: "Conn_REST_Orders_Invoke", want: true},
		{name: "invoker, exact", key: invoker, conn: "Conn_Billing", want: true},
		{name: "invoker, other", key: invoker, conn: "Conn_Billing_Old", want: false},
		{name: "invoker without patterns", key: &access.APIKey{Role: access.RoleInvoker}, conn: "Conn_Billing", want: false},
		{name: "viewer", key: &access.APIKey{Role: access.RoleViewer}, conn: "Conn_Billing", want: true},
		{name: "developer", key: &access.APIKey{Role: access.RoleDeveloper}, conn: "Anything", want: true},
		{name: "admin", key: &access.APIKey{Role: access.RoleAdmin}, conn: "Anything", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.MaySee(tt.conn); got != tt.want {
				t.Errorf("MaySee(%q) = %v, want %v", tt.conn, got, tt.want)
			}
		})
	}
}
