package connections_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
	"github.com/connmgr/connmgr/security"
)

// testEnv is a migrated database on one engine with a store on it.
type testEnv struct {
	engine connectionstest.Engine
	db     *connections.DB
	store  *connections.GormStore
	ring   *security.KeyRing
	spec   string // the key ring's spec
	// where is the SQLite data directory, or the PostgreSQL URL.
	where string
}

func newEnv(t *testing.T, engine connectionstest.Engine) *testEnv {
	t.Helper()
	db, where := connectionstest.OpenURL(t, engine)
	ring, spec := newRing(t, "k1")
	return &testEnv{engine: engine, db: db, store: connections.NewGormStore(db.DB, ring), ring: ring, spec: spec, where: where}
}

func newRing(t testing.TB, id string) (*security.KeyRing, string) {
	t.Helper()
	spec, err := security.GenerateKeySpec(id)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := security.ParseKeyRing(spec)
	if err != nil {
		t.Fatal(err)
	}
	return ring, spec
}

// forEngine runs f on a fresh database for every engine under test.
func forEngine(t *testing.T, f func(t *testing.T, env *testEnv)) {
	for _, engine := range connectionstest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) { f(t, newEnv(t, engine)) })
	}
}

// rsaPEM is a real PKCS#8 RSA private key, generated once per test binary.
var rsaPEM = sync.OnceValue(func() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
})

func canary(what string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "canary-" + what + "-" + hex.EncodeToString(b)
}

func ptr[T any](v T) *T { return &v }

// fullConnection sets every field, including fields of every policy at
// once: the store keeps what it is given, validation is not its job.
func fullConnection(name string) *connections.Connection {
	return &connections.Connection{
		Name:        name,
		Description: "Orders API, production",
		Keywords:    []string{"orders", "Finance"},
		Role:        connections.RoleTriggerInvoke,
		BaseURL:     "https://api.example.com/v2?tenant=acme",
		Security: connections.Security{
			Policy:           connections.PolicyAuthorizationCode,
			Username:         "svc-orders",
			Password:         connections.NewSecret(canary("password")),
			Key:              connections.NewSecret(canary("key")),
			In:               connections.InQuery,
			Name:             "api_key",
			ValuePrefix:      ptr(""),
			TokenURL:         "https://auth.example.com/oauth2/token",
			AuthorizationURL: "https://auth.example.com/oauth2/authorize",
			ClientID:         "orders-client",
			ClientSecret:     connections.NewSecret(canary("clientSecret")),
			Scopes:           []string{"orders.read", "orders.write"},
			Audience:         "https://api.example.com",
			ExtraParams:      map[string]string{"resource": "orders", "tenant": "acme"},
			ClientAuth:       connections.ClientAuthPrivateKeyJWT,
			PrivateKeyPEM:    connections.NewSecret(rsaPEM()),
			KeyID:            "kid-1",
			Issuer:           "https://auth.example.com",
		},
		Headers:        map[string]string{"X-Api-Version": "2", "X-Tenant": "acme"},
		ForwardHeaders: []string{"X-Request-Id", "Traceparent"},
		Timeout:        12500 * time.Millisecond,
		TestRequest:    &connections.TestRequest{Method: "POST", RelativeURI: "/health?deep=1"},
		RateLimit:      &connections.RateLimit{RequestsPerSecond: 2.5, Burst: 5},
		MaxConcurrent:  7,
		Status:         connections.StatusConfigured,
		LastTest: &connections.TestResult{At: time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC),
			Result: connections.TestSuccess, Detail: "token obtained"},
		CreatedBy: "alice",
		UpdatedBy: "bob",
	}
}

// sample returns a valid connection with policy p, defaults applied.
func sample(name string, p connections.Policy) *connections.Connection {
	c := newConn(name, p)
	if err := c.Validate(); err != nil {
		panic(fmt.Sprintf("sample %s: %v", p, err))
	}
	return c
}

// newConn returns a valid connection with policy p, as a client sends it.
func newConn(name string, p connections.Policy) *connections.Connection {
	c := &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Keywords: []string{}, Headers: map[string]string{}, Status: connections.StatusDraft,
		Security: connections.Security{Policy: p}}
	s := &c.Security
	switch p {
	case connections.PolicyBasic:
		s.Username, s.Password = "user", connections.NewSecret(canary("password"))
	case connections.PolicyAPIKey:
		s.Key = connections.NewSecret(canary("key"))
	case connections.PolicyClientCredentials, connections.PolicyPassword, connections.PolicyAuthorizationCode:
		s.TokenURL, s.ClientID = "https://auth.example.com/token", "client"
		s.ClientSecret = connections.NewSecret(canary("clientSecret"))
		if p == connections.PolicyPassword {
			s.Username, s.Password = "user", connections.NewSecret(canary("password"))
		}
		if p == connections.PolicyAuthorizationCode {
			s.AuthorizationURL = "https://auth.example.com/authorize"
		}
	}
	return c
}

var policies = []connections.Policy{connections.PolicyNone, connections.PolicyBasic, connections.PolicyAPIKey,
	connections.PolicyClientCredentials, connections.PolicyPassword, connections.PolicyAuthorizationCode}

// checkSame reports how got differs from want. Secrets are compared by
// value (a %+v would show only masks).
func checkSame(t *testing.T, what string, got, want *connections.Connection) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s = nil, want %q", what, want.Name)
	}
	g, w := *got, *want
	if !g.CreatedAt.Equal(w.CreatedAt) || !g.UpdatedAt.Equal(w.UpdatedAt) {
		t.Errorf("%s: CreatedAt, UpdatedAt = %v, %v, want %v, %v", what, g.CreatedAt, g.UpdatedAt, w.CreatedAt, w.UpdatedAt)
	}
	g.CreatedAt, g.UpdatedAt = w.CreatedAt, w.UpdatedAt
	for _, f := range connections.SecretFields {
		if a, b := g.Security.Secret(f), w.Security.Secret(f); !a.Equal(b) {
			t.Errorf("%s: secret %s = %.24q, want %.24q", what, f, a.Reveal(), b.Reveal())
		}
	}
	// The store returns empty keywords and headers as empty, not nil.
	if len(g.Keywords) == 0 && len(w.Keywords) == 0 {
		g.Keywords, w.Keywords = nil, nil
	}
	if len(g.Headers) == 0 && len(w.Headers) == 0 {
		g.Headers, w.Headers = nil, nil
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s =\n%+v\nwant\n%+v", what, g, w)
	}
}

// expect reports the failure unless ok. A non-empty bug names the fixed
// bug the case guards against, so a regression says what came back.
func expect(t *testing.T, bug string, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	if bug != "" {
		t.Errorf("regression (%s): "+format, append([]any{bug}, args...)...)
		return
	}
	t.Errorf(format, args...)
}

func count(t *testing.T, db *gorm.DB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.Raw(query, args...).Scan(&n).Error; err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// addCredentialState inserts a token and a pending consent for connection id.
func addCredentialState(t *testing.T, db *gorm.DB, id int64) {
	t.Helper()
	now := time.Now().UTC()
	if err := db.Exec("INSERT INTO tokens (connection_id, access_token, updated_at) VALUES (?, ?, ?)",
		id, []byte("sealed"), now).Error; err != nil {
		t.Fatalf("insert token: %v", err)
	}
	if err := db.Exec(`INSERT INTO oauth_states (state_hash, connection_id, verifier, redirect_uri, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?)`, fmt.Sprintf("state-%d", id), id, []byte("sealed"), "https://connmgr/oauth/callback",
		now, now.Add(10*time.Minute)).Error; err != nil {
		t.Fatalf("insert oauth state: %v", err)
	}
}

func credentialState(t *testing.T, db *gorm.DB, id int64) (tokens, states int64) {
	t.Helper()
	return count(t, db, "SELECT COUNT(*) FROM tokens WHERE connection_id = ?", id),
		count(t, db, "SELECT COUNT(*) FROM oauth_states WHERE connection_id = ?", id)
}

func TestStoreRoundTrip(t *testing.T) {
	type roundTrip struct {
		name string
		conn func(name string) *connections.Connection
	}
	tests := []roundTrip{{name: "every field", conn: fullConnection}}
	for _, p := range policies {
		tests = append(tests, roundTrip{name: string(p), conn: func(name string) *connections.Connection { return sample(name, p) }})
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := tt.conn(fmt.Sprintf("Conn_%d", i))
				before := time.Now().Add(-time.Second)
				if err := env.store.Create(ctx, c); err != nil {
					t.Fatalf("Create: %v", err)
				}
				if c.ID <= 0 || c.Version != 1 || c.CreatedAt.Before(before) || c.CreatedAt.After(time.Now()) ||
					!c.UpdatedAt.Equal(c.CreatedAt) {
					t.Errorf("Create set ID %d, Version %d, CreatedAt %v, UpdatedAt %v; want an ID, 1, now, now",
						c.ID, c.Version, c.CreatedAt, c.UpdatedAt)
				}
				got, err := env.store.Get(ctx, c.Name)
				if err != nil {
					t.Fatalf("Get(%q) = %v", c.Name, err)
				}
				checkSame(t, fmt.Sprintf("Get(%q)", c.Name), got, c)
				byID, err := env.store.GetByID(ctx, c.ID)
				if err != nil {
					t.Fatalf("GetByID(%d) = %v", c.ID, err)
				}
				checkSame(t, fmt.Sprintf("GetByID(%d)", c.ID), byID, c)
				list, _, err := env.store.List(ctx, connections.Filter{Q: c.Name})
				if err != nil || len(list) != 1 {
					t.Fatalf("List(Q: %q) = %d connections, %v, want 1", c.Name, len(list), err)
				}
				checkSame(t, fmt.Sprintf("List(Q: %q)[0]", c.Name), list[0], c)
			})
		}
	})
}

func TestStoreUpdate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := fullConnection("Conn_Update")
		if err := env.store.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		created := *c

		// Every mutable field changes; optional ones are cleared, secrets
		// left unset are dropped (the service carries them, not the store).
		u := sample("Conn_Update", connections.PolicyBasic)
		u.ID, u.Version, u.CreatedAt, u.CreatedBy, u.UpdatedBy = c.ID, c.Version, c.CreatedAt, c.CreatedBy, "carol"
		u.Description, u.Keywords, u.Role = "changed", []string{"new"}, connections.RoleTrigger
		u.Status = connections.StatusError
		time.Sleep(2 * time.Millisecond) // UpdatedAt must move
		if err := env.store.Update(ctx, u, false); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if u.Version != 2 || !u.UpdatedAt.After(created.UpdatedAt) {
			t.Errorf("Update set Version %d, UpdatedAt %v; want 2, after %v", u.Version, u.UpdatedAt, created.UpdatedAt)
		}
		got, err := env.store.Get(ctx, u.Name)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, "Get after Update", got, u)
		if n := count(t, env.db.DB, "SELECT COUNT(*) FROM connection_secrets WHERE connection_id = ?", c.ID); n != 1 {
			t.Errorf("connection_secrets holds %d rows after an update to BASIC, want 1", n)
		}

		// Back to every field: the cleared fields come back.
		full := fullConnection("Conn_Update")
		full.ID, full.Version, full.CreatedAt = u.ID, u.Version, u.CreatedAt
		if err := env.store.Update(ctx, full, false); err != nil {
			t.Fatalf("Update: %v", err)
		}
		got, err = env.store.Get(ctx, full.Name)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, "Get after second Update", got, full)
	})
}

func TestStoreErrors(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := sample("Conn_REST_Orders", connections.PolicyBasic)
		if err := env.store.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		stale := *c
		newer := *c
		newer.Description = "newer"
		if err := env.store.Update(ctx, &newer, false); err != nil {
			t.Fatal(err)
		}
		before, err := env.store.Get(ctx, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		secrets := count(t, env.db.DB, "SELECT COUNT(*) FROM connection_secrets")

		tests := []struct {
			name string
			op   func() error
			want error
		}{
			{name: "create duplicate", want: connections.ErrExists,
				op: func() error { return env.store.Create(ctx, sample("Conn_REST_Orders", connections.PolicyBasic)) }},
			{name: "create same identifier", want: connections.ErrExists,
				op: func() error { return env.store.Create(ctx, sample("CONN_rest_orders", connections.PolicyBasic)) }},
			{name: "get missing", want: connections.ErrNotFound,
				op: func() error { _, err := env.store.Get(ctx, "Conn_Missing"); return err }},
			{name: "get other case", want: connections.ErrNotFound,
				op: func() error { _, err := env.store.Get(ctx, "conn_rest_orders"); return err }},
			{name: "get by missing id", want: connections.ErrNotFound,
				op: func() error { _, err := env.store.GetByID(ctx, c.ID+1000); return err }},
			{name: "update missing", want: connections.ErrNotFound,
				op: func() error {
					m := sample("Conn_Missing", connections.PolicyNone)
					m.ID, m.Version = c.ID+1000, 1
					return env.store.Update(ctx, m, true)
				}},
			{name: "update stale version", want: connections.ErrVersionMismatch,
				op: func() error { s := stale; s.Description = "lost update"; return env.store.Update(ctx, &s, true) }},
			{name: "delete missing", want: connections.ErrNotFound,
				op: func() error { _, err := env.store.Delete(ctx, "Conn_Missing", 0); return err }},
			{name: "delete stale version", want: connections.ErrVersionMismatch,
				op: func() error { _, err := env.store.Delete(ctx, c.Name, 1); return err }},
			{name: "delete future version", want: connections.ErrVersionMismatch,
				op: func() error { _, err := env.store.Delete(ctx, c.Name, 3); return err }},
			{name: "set status of missing", want: connections.ErrNotFound,
				op: func() error {
					_, err := env.store.SetStatus(ctx, c.ID+1000, connections.StatusError, nil)
					return err
				}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.op(); !errors.Is(err, tt.want) {
					t.Errorf("%s = %v, want %v", tt.name, err, tt.want)
				}
				after, err := env.store.Get(ctx, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				checkSame(t, "stored connection", after, before)
				if n := count(t, env.db.DB, "SELECT COUNT(*) FROM connection_secrets"); n != secrets {
					t.Errorf("connection_secrets holds %d rows, want %d", n, secrets)
				}
			})
		}
	})
}

func TestStoreUpdateResetsCredentials(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		a := sample("Conn_A", connections.PolicyClientCredentials)
		b := sample("Conn_B", connections.PolicyClientCredentials)
		for _, c := range []*connections.Connection{a, b} {
			if err := env.store.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			addCredentialState(t, env.db.DB, c.ID)
		}
		tests := []struct {
			name            string
			reset           bool
			aTokens, aState int64
		}{
			{name: "keep", reset: false, aTokens: 1, aState: 1},
			{name: "reset", reset: true, aTokens: 0, aState: 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				a.Description = tt.name
				if err := env.store.Update(ctx, a, tt.reset); err != nil {
					t.Fatal(err)
				}
				if tok, st := credentialState(t, env.db.DB, a.ID); tok != tt.aTokens || st != tt.aState {
					t.Errorf("Update(reset %v): tokens, states of A = %d, %d, want %d, %d", tt.reset, tok, st, tt.aTokens, tt.aState)
				}
				if tok, st := credentialState(t, env.db.DB, b.ID); tok != 1 || st != 1 {
					t.Errorf("Update(A, reset %v): tokens, states of B = %d, %d, want 1, 1", tt.reset, tok, st)
				}
			})
		}
	})
}

func TestStoreDelete(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		a := fullConnection("Conn_A")
		b := fullConnection("Conn_B")
		for _, c := range []*connections.Connection{a, b} {
			if err := env.store.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			addCredentialState(t, env.db.DB, c.ID)
		}
		deleted, err := env.store.Delete(ctx, a.Name, a.Version)
		if err != nil {
			t.Fatalf("Delete(%q, %d) = %v", a.Name, a.Version, err)
		}
		if deleted.ID != a.ID || deleted.Name != a.Name || deleted.Version != a.Version {
			t.Errorf("Delete returned %d %q v%d, want %d %q v%d", deleted.ID, deleted.Name, deleted.Version, a.ID, a.Name, a.Version)
		}
		if _, err := env.store.Get(ctx, a.Name); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Get(%q) after Delete = %v, want ErrNotFound", a.Name, err)
		}
		tables := []struct {
			table, column string
			a, b          int64
		}{
			{"connections", "id", 0, 1},
			{"connection_secrets", "connection_id", 0, 4},
			{"tokens", "connection_id", 0, 1},
			{"oauth_states", "connection_id", 0, 1},
		}
		for _, tt := range tables {
			query := "SELECT COUNT(*) FROM " + tt.table + " WHERE " + tt.column + " = ?"
			if n := count(t, env.db.DB, query, a.ID); n != tt.a {
				t.Errorf("%s rows of the deleted connection = %d, want %d", tt.table, n, tt.a)
			}
			if n := count(t, env.db.DB, query, b.ID); n != tt.b {
				t.Errorf("%s rows of the other connection = %d, want %d", tt.table, n, tt.b)
			}
		}
		if _, err := env.store.Delete(ctx, a.Name, 0); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Delete(%q) again = %v, want ErrNotFound", a.Name, err)
		}
		if _, err := env.store.Delete(ctx, b.Name, 0); err != nil {
			t.Errorf("Delete(%q, any version) = %v", b.Name, err)
		}
	})
}

func TestStoreSetStatus(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := sample("Conn_Status", connections.PolicyBasic)
		if err := env.store.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		ok := connections.NewTestResult(time.Now(), true, "200 OK")
		failed := connections.NewTestResult(time.Now().Add(time.Minute), false, "connection refused")
		tests := []struct {
			name     string
			status   connections.Status
			test     *connections.TestResult
			prev     connections.Status
			lastTest *connections.TestResult
		}{
			{name: "tested", status: connections.StatusConfigured, test: ok, prev: connections.StatusDraft, lastTest: ok},
			{name: "same status", status: connections.StatusConfigured, prev: connections.StatusConfigured, lastTest: ok},
			{name: "refresh failed", status: connections.StatusError, prev: connections.StatusConfigured, lastTest: ok},
			{name: "test failed", status: connections.StatusError, test: failed, prev: connections.StatusError, lastTest: failed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				prev, err := env.store.SetStatus(ctx, c.ID, tt.status, tt.test)
				if err != nil || prev != tt.prev {
					t.Errorf("SetStatus(%s) = %s, %v, want %s", tt.status, prev, err, tt.prev)
				}
				got, err := env.store.Get(ctx, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				want := *c
				want.Status, want.LastTest = tt.status, tt.lastTest
				checkSame(t, "Get after SetStatus", got, &want) // same version, same UpdatedAt
			})
		}
	})
}

// keywordsAsJSON: List matches Q against the JSON text of the keywords
// column, so it matches JSON syntax and misses escaped characters.
const keywordsAsJSON = "List matches Q against the keywords' JSON text"

func TestStoreList(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		conns := []struct {
			name     string
			role     connections.Role
			policy   connections.Policy
			status   connections.Status
			keywords []string
		}{
			{"Alpha_Orders", connections.RoleInvoke, connections.PolicyBasic, connections.StatusDraft, []string{"orders"}},
			{"beta-billing", connections.RoleTrigger, connections.PolicyNone, connections.StatusDraft, []string{"Finance", "100%"}},
			{"Charlie", connections.RoleTriggerInvoke, connections.PolicyAPIKey, connections.StatusConfigured, []string{"a_b", "x"}},
			{"Delta_x", connections.RoleInvoke, connections.PolicyNone, connections.StatusDraft, nil},
			{"echo", connections.RoleInvoke, connections.PolicyClientCredentials, connections.StatusError, []string{`back\slash`}},
		}
		for _, cc := range conns {
			c := sample(cc.name, cc.policy)
			c.Role, c.Status, c.Keywords = cc.role, cc.status, cc.keywords
			if err := env.store.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name   string
			filter connections.Filter
			want   []string
			more   bool
			bug    string
		}{
			{name: "all, by name in byte order", filter: connections.Filter{},
				want: []string{"Alpha_Orders", "Charlie", "Delta_x", "beta-billing", "echo"}},
			{name: "first page", filter: connections.Filter{Limit: 2}, want: []string{"Alpha_Orders", "Charlie"}, more: true},
			{name: "middle page", filter: connections.Filter{After: "Charlie", Limit: 2}, want: []string{"Delta_x", "beta-billing"}, more: true},
			{name: "last page, full", filter: connections.Filter{After: "Delta_x", Limit: 2}, want: []string{"beta-billing", "echo"}},
			{name: "last page, short", filter: connections.Filter{After: "beta-billing", Limit: 2}, want: []string{"echo"}},
			{name: "after the end", filter: connections.Filter{After: "zulu"}, want: nil},
			{name: "after a name that does not exist", filter: connections.Filter{After: "B", Limit: 1}, want: []string{"Charlie"}, more: true},
			{name: "limit too large", filter: connections.Filter{Limit: connections.MaxListLimit + 1}, want: []string{"Alpha_Orders", "Charlie", "Delta_x", "beta-billing", "echo"}},
			{name: "role", filter: connections.Filter{Role: connections.RoleInvoke}, want: []string{"Alpha_Orders", "Delta_x", "echo"}},
			{name: "role, paged", filter: connections.Filter{Role: connections.RoleInvoke, Limit: 1, After: "Alpha_Orders"}, want: []string{"Delta_x"}, more: true},
			{name: "policy", filter: connections.Filter{Policy: connections.PolicyNone}, want: []string{"Delta_x", "beta-billing"}},
			{name: "status", filter: connections.Filter{Status: connections.StatusConfigured}, want: []string{"Charlie"}},
			{name: "q in name, other case", filter: connections.Filter{Q: "ALPHA"}, want: []string{"Alpha_Orders"}},
			{name: "q in name and keyword", filter: connections.Filter{Q: "orders"}, want: []string{"Alpha_Orders"}},
			{name: "q in keyword, other case", filter: connections.Filter{Q: "fINANCE"}, want: []string{"beta-billing"}},
			{name: "q and role", filter: connections.Filter{Q: "finance", Role: connections.RoleInvoke}, want: nil},
			{name: "q in keyword or name, and role", filter: connections.Filter{Q: "x", Role: connections.RoleInvoke}, want: []string{"Delta_x"}},
			{name: "q percent is literal", filter: connections.Filter{Q: "%"}, want: []string{"beta-billing"}},
			{name: "q underscore is literal", filter: connections.Filter{Q: "_"}, want: []string{"Alpha_Orders", "Charlie", "Delta_x"}},
			{name: "q a_b is literal", filter: connections.Filter{Q: "a_b"}, want: []string{"Charlie"}},
			{name: "q backslash is literal", filter: connections.Filter{Q: `k\s`}, want: []string{"echo"}, bug: keywordsAsJSON},
			{name: "q no match", filter: connections.Filter{Q: "nothing"}, want: nil},
			{name: "q bracket", filter: connections.Filter{Q: "["}, want: nil, bug: keywordsAsJSON},
			{name: "q quote", filter: connections.Filter{Q: `"`}, want: nil, bug: keywordsAsJSON},
			{name: "q across two keywords", filter: connections.Filter{Q: `a_b","x`}, want: nil, bug: keywordsAsJSON},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cs, more, err := env.store.List(ctx, tt.filter)
				if err != nil {
					t.Fatalf("List(%+v) = %v", tt.filter, err)
				}
				var got []string
				for _, c := range cs {
					got = append(got, c.Name)
				}
				expect(t, tt.bug, slices.Equal(got, tt.want) && more == tt.more,
					"List(%+v) = %q, more %v, want %q, more %v", tt.filter, got, more, tt.want, tt.more)
			})
		}
	})
}

// secretRows returns the ciphertexts of connection_secrets by "id/field".
func secretRows(t *testing.T, db *gorm.DB) map[string][]byte {
	t.Helper()
	var rows []struct {
		ConnectionID int64
		Field        string
		Ciphertext   []byte
	}
	if err := db.Raw("SELECT connection_id, field, ciphertext FROM connection_secrets").Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, r := range rows {
		m[fmt.Sprintf("%d/%s", r.ConnectionID, r.Field)] = r.Ciphertext
	}
	return m
}

// TestSecretsAtRest is the proof that no secret reaches the database in
// clear: canaries are searched in every column of every row and, on
// SQLite, in the bytes of the database files.
func TestSecretsAtRest(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		var canaries []string
		for i, c := range []*connections.Connection{
			fullConnection("Conn_Full"),
			sample("Conn_Basic", connections.PolicyBasic),
			sample("Conn_Key", connections.PolicyAPIKey),
			sample("Conn_Password", connections.PolicyPassword),
		} {
			if err := env.store.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			if i == 0 { // re-saved: secrets are written again
				if err := env.store.Update(ctx, c, false); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range connections.SecretFields {
				if v := c.Security.Secret(f).Reveal(); v != "" {
					canaries = append(canaries, v)
				}
			}
		}
		// The PEM's base64 lines, each on its own, are secrets too.
		for line := range strings.Lines(rsaPEM()) {
			if line = strings.TrimSpace(line); !strings.HasPrefix(line, "-----") {
				canaries = append(canaries, line)
			}
		}
		if len(canaries) < 10 {
			t.Fatalf("only %d canaries", len(canaries))
		}
		search := func(where string, data string) {
			t.Helper()
			for _, c := range canaries {
				if strings.Contains(data, c) {
					t.Errorf("%s contains the secret %.30q", where, c)
				}
			}
		}
		for _, table := range []string{"connections", "connection_secrets"} {
			values := connectionstest.TableText(t, env.db.DB, table)
			if len(values) == 0 {
				t.Fatalf("table %s is empty", table)
			}
			for _, v := range values {
				search("table "+table, v)
			}
		}
		if env.engine != connectionstest.SQLite {
			return
		}
		files := []string{"connmgr.db", "connmgr.db-wal"}
		read := func(when string) {
			for _, name := range files {
				b, err := os.ReadFile(filepath.Join(env.where, name))
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				search(when+" "+name, string(b))
			}
		}
		read("before checkpoint")
		if err := env.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)").Error; err != nil {
			t.Fatal(err)
		}
		read("after checkpoint")
		if b, err := os.ReadFile(filepath.Join(env.where, "connmgr.db")); err != nil || !bytes.Contains(b, []byte("Conn_Full")) {
			t.Fatalf("connmgr.db does not hold the connections (%v): the scan proves nothing", err)
		}
	})
}

func TestSecretsFreshCiphertexts(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		a := sample("Conn_A", connections.PolicyBasic)
		b := sample("Conn_B", connections.PolicyBasic)
		b.Security.Password = a.Security.Password
		for _, c := range []*connections.Connection{a, b} {
			if err := env.store.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		first := secretRows(t, env.db.DB)
		ka, kb := fmt.Sprintf("%d/password", a.ID), fmt.Sprintf("%d/password", b.ID)
		if bytes.Equal(first[ka], first[kb]) {
			t.Errorf("the same password of two connections has the same ciphertext")
		}
		if err := env.store.Update(ctx, a, false); err != nil {
			t.Fatal(err)
		}
		if again := secretRows(t, env.db.DB); bytes.Equal(first[ka], again[ka]) {
			t.Errorf("re-saving a password kept its ciphertext: the nonce was reused")
		}
	})
}

// TestSecretsBoundToRowAndField copies ciphertexts where they do not
// belong: reading must fail, never return the other secret.
func TestSecretsBoundToRowAndField(t *testing.T) {
	tests := []struct {
		name                string
		fromConn, fromField string
		toConn, toField     string
	}{
		{name: "other connection, same field", fromConn: "Conn_A", fromField: "password", toConn: "Conn_B", toField: "password"},
		{name: "same connection, other field", fromConn: "Conn_A", fromField: "clientSecret", toConn: "Conn_A", toField: "password"},
		{name: "other connection, other field", fromConn: "Conn_B", fromField: "password", toConn: "Conn_A", toField: "clientSecret"},
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ids := map[string]int64{}
				for _, name := range []string{"Conn_A", "Conn_B"} {
					c := sample(fmt.Sprintf("%s_%d", name, i), connections.PolicyPassword)
					if err := env.store.Create(ctx, c); err != nil {
						t.Fatal(err)
					}
					ids[name] = c.ID
				}
				res := env.db.Exec(`UPDATE connection_secrets SET ciphertext =
					(SELECT ciphertext FROM connection_secrets WHERE connection_id = ? AND field = ?)
					WHERE connection_id = ? AND field = ?`, ids[tt.fromConn], tt.fromField, ids[tt.toConn], tt.toField)
				if res.Error != nil || res.RowsAffected != 1 {
					t.Fatalf("copy ciphertext: %v, %d rows", res.Error, res.RowsAffected)
				}
				name := fmt.Sprintf("%s_%d", tt.toConn, i)
				got, err := env.store.Get(ctx, name)
				if !errors.Is(err, security.ErrDecrypt) {
					t.Errorf("Get(%q) = %v, %v, want ErrDecrypt", name, got, err)
				}
				if _, _, err := env.store.List(ctx, connections.Filter{Q: name}); !errors.Is(err, security.ErrDecrypt) {
					t.Errorf("List(Q: %q) = %v, want ErrDecrypt", name, err)
				}
			})
		}
	})
}

func TestReseal(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		var stored []*connections.Connection
		for _, c := range []*connections.Connection{
			fullConnection("Conn_Full"),
			sample("Conn_Basic", connections.PolicyBasic),
			sample("Conn_None", connections.PolicyNone),
			sample("Conn_Password", connections.PolicyPassword),
		} {
			if err := env.store.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			stored = append(stored, c)
		}
		secrets := len(secretRows(t, env.db.DB))
		if secrets != 4+1+2 {
			t.Fatalf("connection_secrets holds %d rows, want 7", secrets)
		}

		_, spec2 := newRing(t, "k2")
		rotated, err := security.ParseKeyRing(spec2 + "," + env.spec)
		if err != nil {
			t.Fatal(err)
		}
		onlyK2, err := security.ParseKeyRing(spec2)
		if err != nil {
			t.Fatal(err)
		}
		store := connections.NewGormStore(env.db.DB, rotated)
		n, err := store.Reseal(ctx, rotated.Stale)
		if err != nil || n != secrets {
			t.Fatalf("Reseal = %d, %v, want %d", n, err, secrets)
		}
		for key, ct := range secretRows(t, env.db.DB) {
			if id, _ := security.KeyID(ct); id != "k2" {
				t.Errorf("secret %s is sealed by key %q, want k2", key, id)
			}
		}
		for _, ring := range []struct {
			name string
			ring *security.KeyRing
		}{{"k2,k1", rotated}, {"k2 only", onlyK2}} {
			s := connections.NewGormStore(env.db.DB, ring.ring)
			for _, want := range stored {
				got, err := s.Get(ctx, want.Name)
				if err != nil {
					t.Errorf("Get(%q) with ring %s = %v", want.Name, ring.name, err)
					continue
				}
				checkSame(t, fmt.Sprintf("Get(%q) with ring %s", want.Name, ring.name), got, want)
			}
		}
		if n, err := store.Reseal(ctx, rotated.Stale); err != nil || n != 0 {
			t.Errorf("Reseal again = %d, %v, want 0", n, err)
		}

		// A replica still on the old key writes one more secret: the next
		// rotation picks up exactly that one.
		late := sample("Conn_Late", connections.PolicyBasic)
		if err := env.store.Create(ctx, late); err != nil {
			t.Fatal(err)
		}
		if n, err := store.Reseal(ctx, rotated.Stale); err != nil || n != 1 {
			t.Errorf("Reseal after a write under k1 = %d, %v, want 1", n, err)
		}
	})
}
