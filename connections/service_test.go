package connections_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// recorder collects what a service tells its observers.
type recorder struct {
	mu       sync.Mutex
	changes  []connections.Change
	statuses []string
}

func (r *recorder) observe(_ context.Context, ch connections.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, ch)
}

func (r *recorder) observeStatus(_ context.Context, c *connections.Connection, prev, next connections.Status, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, fmt.Sprintf("%s: %s -> %s (%s)", c.Name, prev, next, reason))
}

// last returns the only change recorded since the previous call.
func (r *recorder) last(t *testing.T) connections.Change {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.changes) != 1 {
		t.Fatalf("observers were called %d times, want once", len(r.changes))
	}
	ch := r.changes[0]
	r.changes = nil
	return ch
}

func newService(env *testEnv) (*connections.Service, *recorder) {
	r := &recorder{}
	return &connections.Service{Store: env.store, Fingerprints: fingerprints,
		Observers: []func(context.Context, connections.Change){r.observe},
		StatusObservers: []func(context.Context, *connections.Connection, connections.Status, connections.Status, string){
			r.observeStatus}}, r
}

func TestServiceCreate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		for _, p := range security.Policies() {
			t.Run(string(p), func(t *testing.T) {
				c := newConn("Conn_"+string(p), p)
				c.Status = connections.StatusConfigured // a client cannot set these
				c.StatusReason, c.Fingerprint = "forged", "forged"
				c.LastTest = connections.NewTestResult(c.CreatedAt, true, "forged")
				before := time.Now().Add(-time.Second)
				if err := svc.Create(ctx, "alice", c); err != nil {
					t.Fatalf("Create(%s) = %v", p, err)
				}
				want, reason := connections.StatusDraft, ""
				if p == security.PolicyAuthorizationCode || p == security.PolicyCustomThreeLegged {
					want, reason = connections.StatusNeedsConsent, "no consent given yet"
				}
				got, err := env.store.Get(ctx, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != want || got.LastTest != nil || got.CreatedBy != "alice" || got.UpdatedBy != "alice" ||
					len(got.StatusReason) < len(reason) || got.StatusReason[:len(reason)] != reason {
					t.Errorf("Create(%s) stored status %s (%q), last test %v, by %q/%q; want %s (%q...), nil, alice/alice",
						p, got.Status, got.StatusReason, got.LastTest, got.CreatedBy, got.UpdatedBy, want, reason)
				}
				if got.StatusSince.Before(before) || got.StatusSince.After(time.Now()) {
					t.Errorf("Create(%s) stored statusSince %v, want now", p, got.StatusSince)
				}
				if fp := fingerprints.Of(got); got.Fingerprint != fp || fp == "forged" {
					t.Errorf("Create(%s) stored fingerprint %q, want %q", p, got.Fingerprint, fp)
				}
				if got.Timeout != connections.DefaultTimeout {
					t.Errorf("Create(%s) stored timeout %v, want the default %v", p, got.Timeout, connections.DefaultTimeout)
				}
				ch := rec.last(t)
				if ch.Old != nil || ch.New != c || ch.Actor != "alice" || ch.Name() != c.Name {
					t.Errorf("observed %+v, want the new connection by alice", ch)
				}
			})
		}
		t.Run("invalid", func(t *testing.T) {
			c := newConn("Conn_Invalid", security.PolicyBasic)
			sec[*security.Basic](t, c).Password = connections.Secret{}
			var errs connections.ValidationErrors
			if err := svc.Create(ctx, "alice", c); !errors.As(err, &errs) {
				t.Errorf("Create(no password) = %v, want ValidationErrors", err)
			}
			if _, err := env.store.Get(ctx, c.Name); !errors.Is(err, connections.ErrNotFound) {
				t.Errorf("Get(%q) after a refused Create = %v, want ErrNotFound", c.Name, err)
			}
			if len(rec.changes) != 0 {
				t.Errorf("observers were told of a refused Create: %+v", rec.changes)
			}
		})
		t.Run("connmgr itself", func(t *testing.T) {
			own := &connections.Service{Store: env.store, Fingerprints: fingerprints, OwnOrigins: []string{"https://connmgr.example:443"}}
			c := newConn("Conn_Loop", security.PolicyNone)
			c.BaseURL = "https://CONNMGR.example/invoke/Conn_Loop"
			if err := own.Create(ctx, "alice", c); !slices.Equal(fields(err), []string{"baseUrl"}) {
				t.Errorf("Create(base URL of connmgr) = %v, want an error for baseUrl", err)
			}
			// The same address written as an IPv4-mapped IPv6 address.
			own.OwnOrigins = []string{"http://127.0.0.1:8080"}
			for _, base := range []string{"http://[::ffff:127.0.0.1]:8080/invoke/Conn_Loop", "http://[0:0:0:0:0:ffff:7f00:1]:8080/"} {
				c.BaseURL = base
				if err := own.Create(ctx, "alice", c); !slices.Equal(fields(err), []string{"baseUrl"}) {
					t.Errorf("Create(base URL %s, connmgr at 127.0.0.1:8080) = %v, want an error for baseUrl", base, err)
				}
			}
		})
		t.Run("exists", func(t *testing.T) {
			if err := svc.Create(ctx, "bob", newConn("CONN_NONE", security.PolicyNone)); !errors.Is(err, connections.ErrExists) {
				t.Errorf("Create(CONN_NONE) = %v, want ErrExists", err)
			}
		})
	})
}

func TestServiceReplace(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		orig := newConn("Conn_Replace", security.PolicyClientCredentials)
		if err := svc.Create(ctx, "alice", orig); err != nil {
			t.Fatal(err)
		}
		rec.last(t)
		secret := client(t, orig).ClientSecret

		tests := []struct {
			name   string
			match  connections.Match
			mutate func(c *connections.Connection)
			err    error // nil: success
			fields []string
			reset  bool
			secret connections.Secret
		}{
			{name: "description, secret omitted", mutate: func(c *connections.Connection) {
				c.Description = "new"
				client(t, c).ClientSecret = connections.Secret{}
			}, secret: secret},
			{name: "if-match current", match: connections.Version(2), mutate: func(c *connections.Connection) {
				c.Description = "newer"
				client(t, c).ClientSecret = connections.Secret{}
			}, secret: secret},
			{name: "if-match stale", match: connections.Version(2), mutate: func(c *connections.Connection) { c.Description = "lost" },
				err: connections.ErrVersionMismatch},
			{name: "host change without the secret", mutate: func(c *connections.Connection) {
				c.BaseURL = "https://other.example/v1"
				client(t, c).ClientSecret = connections.Secret{}
			}, fields: []string{"baseUrl"}},
			{name: "invalid", mutate: func(c *connections.Connection) { c.Role = "" }, fields: []string{"role"}},
			{name: "host change with the secret", mutate: func(c *connections.Connection) {
				c.BaseURL = "https://other.example/v1"
			}, reset: true, secret: secret},
			{name: "new secret", mutate: func(c *connections.Connection) {
				c.BaseURL = "https://other.example/v1"
				client(t, c).ClientSecret = connections.NewSecret("rotated")
			}, reset: true, secret: connections.NewSecret("rotated")},
			{name: "scope, secret omitted", mutate: func(c *connections.Connection) {
				c.BaseURL = "https://other.example/v1"
				client(t, c).Scopes = []string{"orders.read"}
				client(t, c).ClientSecret = connections.Secret{}
			}, reset: true, secret: connections.NewSecret("rotated")},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// The connection was tested and holds a token and a consent.
				cur, err := env.store.Get(ctx, orig.Name)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := env.store.SetStatus(ctx, cur.ID, connections.StatusConfigured, "", nil); err != nil {
					t.Fatal(err)
				}
				storetest.AddCredentialState(t, env.db.DB, cur.ID)
				defer env.db.Exec("DELETE FROM tokens")
				defer env.db.Exec("DELETE FROM oauth_states")
				before, err := env.store.Get(ctx, orig.Name)
				if err != nil {
					t.Fatal(err)
				}

				c := newConn(orig.Name, security.PolicyClientCredentials)
				client(t, c).ClientSecret = secret
				tt.mutate(c)
				err = svc.Replace(ctx, "bob", tt.match, c)
				after, gerr := env.store.Get(ctx, orig.Name)
				if gerr != nil {
					t.Fatal(gerr)
				}
				if tt.err != nil || tt.fields != nil {
					if tt.err != nil && !errors.Is(err, tt.err) || tt.fields != nil && !slices.Equal(fields(err), tt.fields) {
						t.Fatalf("Replace() = %v, want %v %q", err, tt.err, tt.fields)
					}
					storetest.CheckSame(t, "stored after a refused Replace", after, before)
					if len(rec.changes) != 0 {
						t.Errorf("observers were told of a refused Replace")
					}
					return
				}
				if err != nil {
					t.Fatalf("Replace() = %v", err)
				}
				storetest.CheckSame(t, "stored after Replace", after, c)
				if after.Version != before.Version+1 || after.UpdatedBy != "bob" || after.CreatedBy != "alice" {
					t.Errorf("stored version %d by %q/%q, want %d by alice/bob", after.Version, after.CreatedBy, after.UpdatedBy, before.Version+1)
				}
				if got := client(t, after).ClientSecret; !got.Equal(tt.secret) {
					t.Errorf("stored client secret %q, want %q", got.Reveal(), tt.secret.Reveal())
				}
				wantStatus, wantState, wantFP := connections.StatusConfigured, int64(1), before.Fingerprint
				if tt.reset {
					wantStatus, wantState, wantFP = connections.StatusDraft, 0, fingerprints.Of(after)
				}
				if after.Fingerprint != wantFP || (after.Fingerprint == before.Fingerprint) == tt.reset {
					t.Errorf("stored fingerprint %q (was %q), want %q", after.Fingerprint, before.Fingerprint, wantFP)
				}
				if tt.reset == after.StatusSince.Equal(before.StatusSince) {
					t.Errorf("statusSince %v (was %v): moved %v, want %v", after.StatusSince, before.StatusSince,
						!after.StatusSince.Equal(before.StatusSince), tt.reset)
				}
				tokens, states := storetest.CredentialState(t, env.db.DB, after.ID)
				if after.Status != wantStatus || tokens != wantState || states != wantState {
					t.Errorf("after Replace: status %s, %d tokens, %d consents; want %s, %d, %d",
						after.Status, tokens, states, wantStatus, wantState, wantState)
				}
				ch := rec.last(t)
				if ch.Old == nil || ch.New == nil {
					t.Fatalf("observed a change without the old or new connection")
				}
				if ch.Old.Version != before.Version || ch.New.Version != after.Version || ch.CredentialsReset != tt.reset || ch.Actor != "bob" {
					t.Errorf("observed {Old v%d, New v%d, reset %v, %q}, want {v%d, v%d, %v, bob}",
						ch.Old.Version, ch.New.Version, ch.CredentialsReset, ch.Actor, before.Version, after.Version, tt.reset)
				}
			})
		}
		if err := svc.Replace(ctx, "bob", nil, newConn("Conn_Missing", security.PolicyNone)); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Replace(missing) = %v, want ErrNotFound", err)
		}
	})
}

// TestServiceDestinations is #8.6: a kept secret (not sent again) may go
// only to origins (scheme, host, port) it went to before, and the secrets
// of an OAuth policy also mint tokens for the base URL, so a new base URL
// origin needs them again. Each case replaces a stored connection through
// the service and the real store.
func TestServiceDestinations(t *testing.T) {
	const base = "https://h.example/v1"
	omitAll := func(c *connections.Connection) {
		for _, r := range c.AllSecrets() {
			r.Set(connections.Secret{})
		}
	}
	rebase := func(u string) func(c *connections.Connection) {
		return func(c *connections.Connection) { c.BaseURL = u }
	}
	tests := []struct {
		name       string
		old, new   connections.Policy // new "": the same policy
		change     func(c *connections.Connection)
		resend     bool     // the replacement carries its own secrets
		want       []string // refused fields; nil: accepted
		keepSecret bool     // accepted with the stored secrets
	}{
		// (a) a secret entered for the token endpoint does not go to the API host.
		{name: "OAUTH2_PASSWORD to BASIC, password kept", old: security.PolicyPassword, new: security.PolicyBasic,
			want: []string{"security.password"}},
		{name: "OAUTH2_PASSWORD to BASIC, password re-sent", old: security.PolicyPassword, new: security.PolicyBasic, resend: true},
		{name: "BASIC to OAUTH2_PASSWORD, password kept", old: security.PolicyBasic, new: security.PolicyPassword,
			change: func(c *connections.Connection) {
				client(t, c).ClientSecret = connections.NewSecret("new-client-secret")
			},
			want: []string{"security.password"}},
		// (b) origins, not hosts.
		{name: "BASIC https to http", old: security.PolicyBasic, change: rebase("http://h.example/v1"),
			want: []string{"security.password"}},
		{name: "BASIC other port", old: security.PolicyBasic, change: rebase("https://h.example:8443/v1"),
			want: []string{"security.password"}},
		{name: "BASIC explicit default port", old: security.PolicyBasic, change: rebase("https://H.example:443/v2"),
			keepSecret: true},
		{name: "BASIC other path", old: security.PolicyBasic, change: rebase("https://h.example/v2/x?y=1"),
			keepSecret: true},
		{name: "BASIC https to http, re-sent", old: security.PolicyBasic, change: rebase("http://h.example/v1"),
			resend: true},
		{name: "API_KEY https to http", old: security.PolicyAPIKey, change: rebase("http://h.example/v1"),
			want: []string{"security.key"}},
		{name: "API_KEY other port", old: security.PolicyAPIKey, change: rebase("https://h.example:444/v1"),
			want: []string{"security.key"}},
		{name: "API_KEY other path", old: security.PolicyAPIKey, change: rebase("https://h.example/other"),
			keepSecret: true},
		{name: "client credentials, token URL https to http", old: security.PolicyClientCredentials,
			change: func(c *connections.Connection) { client(t, c).TokenURL = "http://auth.example.com/token" },
			want:   []string{"security.clientSecret"}},
		{name: "client credentials, token URL port", old: security.PolicyClientCredentials,
			change: func(c *connections.Connection) { client(t, c).TokenURL = "https://auth.example.com:8443/token" },
			want:   []string{"security.clientSecret"}},
		{name: "client credentials, token URL path", old: security.PolicyClientCredentials,
			change:     func(c *connections.Connection) { client(t, c).TokenURL = "https://auth.example.com/oauth2/v2/token" },
			keepSecret: true},
		{name: "password grant, token URL https to http", old: security.PolicyPassword,
			change: func(c *connections.Connection) { client(t, c).TokenURL = "http://auth.example.com/token" },
			want:   []string{"security.clientSecret", "security.password"}},
		// Tokens minted with the OAuth secrets go to the base URL.
		{name: "client credentials, base URL https to http", old: security.PolicyClientCredentials,
			change: rebase("http://h.example/v1"), want: []string{"baseUrl"}},
		{name: "client credentials, base URL port", old: security.PolicyClientCredentials,
			change: rebase("https://h.example:8443/v1"), want: []string{"baseUrl"}},
		{name: "client credentials, base URL path", old: security.PolicyClientCredentials,
			change: rebase("https://h.example/v2"), keepSecret: true},
		{name: "client credentials, base URL host, re-sent", old: security.PolicyClientCredentials,
			change: rebase("https://other.example/v1"), resend: true},
		{name: "password grant, base URL host", old: security.PolicyPassword,
			change: rebase("https://other.example/v1"), want: []string{"baseUrl"}},
		{name: "authorization code, base URL https to http", old: security.PolicyAuthorizationCode,
			change: rebase("http://h.example/v1"), want: []string{"baseUrl"}},
		{name: "authorization code, authorization URL host", old: security.PolicyAuthorizationCode,
			change: func(c *connections.Connection) {
				sec[*security.AuthorizationCode](t, c).AuthorizationURL = "https://login.evil.example/authorize"
			}, want: []string{"security.clientSecret"}},
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, _ := newService(env)
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := fmt.Sprintf("Conn_Dest_%d", i)
				old := newConn(name, tt.old)
				old.BaseURL = base
				if err := svc.Create(ctx, "alice", old); err != nil {
					t.Fatal(err)
				}
				before, err := env.store.Get(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				p := tt.new
				if p == "" {
					p = tt.old
				}
				c := newConn(name, p)
				c.BaseURL = base
				if !tt.resend {
					omitAll(c)
				}
				if tt.change != nil {
					tt.change(c)
				}
				err = svc.Replace(ctx, "bob", nil, c)
				after, gerr := env.store.Get(ctx, name)
				if gerr != nil {
					t.Fatal(gerr)
				}
				if tt.want != nil {
					if got := fields(err); !slices.Equal(got, tt.want) {
						t.Fatalf("Replace(%s) = %v, want errors for %q", tt.name, err, tt.want)
					}
					storetest.CheckSame(t, "stored after a refused Replace", after, before)
					return
				}
				if err != nil {
					t.Fatalf("Replace(%s) = %v, want it accepted", tt.name, err)
				}
				if after.Version != before.Version+1 {
					t.Errorf("stored version %d, want %d", after.Version, before.Version+1)
				}
				if tt.keepSecret {
					for _, r := range before.AllSecrets() {
						if nr, ok := after.SecretAt(r.Path); !ok || !nr.Value().Equal(r.Value()) {
							t.Errorf("secret %s was not kept", r.Path)
						}
					}
				}
			})
		}
	})
}

// TestServiceReplaceConcurrently races replacements of one connection.
// Without If-Match every one lands (the service retries a lost race);
// with the same If-Match exactly one does and the others get
// ErrVersionMismatch. No update is lost either way.
func TestServiceReplaceConcurrently(t *testing.T) {
	const n = 20
	tests := []struct {
		name      string
		match     connections.Match
		successes int
		bug       string
	}{
		{name: "without If-Match", match: nil, successes: n,
			bug: "Replace without If-Match gives up after 6 lost races and returns ErrVersionMismatch"},
		{name: "with If-Match", match: connections.Version(1), successes: 1},
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := fmt.Sprintf("Conn_Race_%d", i)
				if err := svc.Create(ctx, "alice", newConn(name, security.PolicyBasic)); err != nil {
					t.Fatal(err)
				}
				rec.changes = nil
				errs := make([]error, n)
				var wg sync.WaitGroup
				for g := range n {
					wg.Go(func() {
						c := newConn(name, security.PolicyBasic)
						sec[*security.Basic](t, c).Password = connections.Secret{}
						c.Description = fmt.Sprintf("writer %d", g)
						errs[g] = svc.Replace(ctx, fmt.Sprintf("writer-%d", g), tt.match, c)
					})
				}
				wg.Wait()
				successes, mismatches := 0, 0
				for g, err := range errs {
					switch {
					case err == nil:
						successes++
					case errors.Is(err, connections.ErrVersionMismatch):
						mismatches++
					default:
						t.Errorf("Replace by writer %d = %v", g, err)
					}
				}
				got, err := env.store.Get(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if got.Version != int64(1+successes) {
					t.Errorf("version = %d after %d successful replacements, want %d: an update was lost", got.Version, successes, 1+successes)
				}
				if len(rec.changes) != successes {
					t.Errorf("observers were called %d times, want %d", len(rec.changes), successes)
				}
				if want := fmt.Sprintf("writer %s", got.UpdatedBy[len("writer-"):]); got.Description != want {
					t.Errorf("stored description %q by %q: the row mixes two writes", got.Description, got.UpdatedBy)
				}
				expect(t, tt.bug, successes == tt.successes,
					"%d of %d replacements succeeded, %d got ErrVersionMismatch; want %d to succeed", successes, n, mismatches, tt.successes)
			})
		}
	})
}

func TestServiceUpdate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		if err := svc.Create(ctx, "alice", newConn("Conn_Update", security.PolicyAPIKey)); err != nil {
			t.Fatal(err)
		}
		rec.last(t)
		refused := errors.New("refused by change")
		tests := []struct {
			name   string
			change func(old *connections.Connection) (*connections.Connection, error)
			want   error
			desc   string
		}{
			{name: "patch keeps the rest", change: func(old *connections.Connection) (*connections.Connection, error) {
				c := old.Clone()
				c.Description = "patched"
				return c, nil
			}, desc: "patched"},
			{name: "change fails", change: func(*connections.Connection) (*connections.Connection, error) { return nil, refused },
				want: refused, desc: "patched"},
			{name: "rename is ignored", change: func(old *connections.Connection) (*connections.Connection, error) {
				c := old.Clone()
				c.Name, c.Description = "Conn_Other", "renamed"
				return c, nil
			}, desc: "renamed"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rec.changes = nil
				_, err := svc.Update(ctx, "bob", "Conn_Update", nil, tt.change)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Update(%s) = %v, want %v", tt.name, err, tt.want)
				}
				got, err := env.store.Get(ctx, "Conn_Update")
				if err != nil || got.Description != tt.desc {
					t.Errorf("stored %v, %v, want description %q", got, err, tt.desc)
				}
				if (len(rec.changes) == 1) != (tt.want == nil) {
					t.Errorf("observers were called %d times", len(rec.changes))
				}
			})
		}
		if _, err := env.store.Get(ctx, "Conn_Other"); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Get(Conn_Other) = %v, want ErrNotFound: Update renamed the connection", err)
		}
	})
}

func TestServiceDelete(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		c := newConn("Conn_Delete", security.PolicyBasic)
		if err := svc.Create(ctx, "alice", c); err != nil {
			t.Fatal(err)
		}
		rec.last(t)
		tests := []struct {
			name  string
			conn  string
			match connections.Match
			want  error
		}{
			{name: "stale If-Match", conn: c.Name, match: connections.Version(2), want: connections.ErrVersionMismatch},
			{name: "missing", conn: "Conn_Missing", want: connections.ErrNotFound},
			{name: "missing with If-Match", conn: "Conn_Missing", match: connections.Version(1), want: connections.ErrNotFound},
			{name: "current If-Match", conn: c.Name, match: connections.Version(1)},
			{name: "again", conn: c.Name, want: connections.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := svc.Delete(ctx, "bob", tt.conn, tt.match)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Delete(%q) = %v, want %v", tt.conn, err, tt.want)
				}
				if tt.want != nil {
					if len(rec.changes) != 0 {
						t.Errorf("observers were told of a refused Delete")
					}
					return
				}
				ch := rec.last(t)
				if ch.New != nil || ch.Old == nil || ch.Old.ID != c.ID || !ch.CredentialsReset || ch.Actor != "bob" || ch.Name() != c.Name {
					t.Errorf("observed %+v, want the deleted connection by bob, credentials reset", ch)
				}
			})
		}
	})
}

func TestServiceSetStatus(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		c := newConn("Conn_Status", security.PolicyBasic)
		if err := svc.Create(ctx, "alice", c); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			next   connections.Status
			reason string
			want   []string
			stored string // the status reason stored
		}{
			{connections.StatusConfigured, "test passed", []string{"Conn_Status: DRAFT -> CONFIGURED ()"}, ""},
			{connections.StatusConfigured, "token refreshed", nil, ""},
			{connections.StatusError, "token endpoint returned 503", []string{"Conn_Status: CONFIGURED -> ERROR (token endpoint returned 503)"},
				"token endpoint returned 503"},
			{connections.StatusError, "still failing", nil, "still failing"},
			{connections.StatusNeedsConsent, "invalid_grant", []string{"Conn_Status: ERROR -> NEEDS_CONSENT (invalid_grant)"}, "invalid_grant"},
			{connections.StatusDraft, "reconfigured", []string{"Conn_Status: NEEDS_CONSENT -> DRAFT ()"}, ""},
		}
		for _, tt := range tests {
			t.Run(string(tt.next)+"/"+tt.reason, func(t *testing.T) {
				rec.statuses = nil
				if err := svc.SetStatus(ctx, c, tt.next, tt.reason, nil); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(rec.statuses, tt.want) {
					t.Errorf("SetStatus(%s) told the status observers %q, want %q", tt.next, rec.statuses, tt.want)
				}
				got, err := env.store.Get(ctx, c.Name)
				if err != nil || got.Status != tt.next || got.StatusReason != tt.stored {
					t.Errorf("stored %v (%q), %v; want %s (%q)", got.Status, got.StatusReason, err, tt.next, tt.stored)
				}
			})
		}
		missing := &connections.Connection{ID: c.ID + 1000, Name: "Conn_Missing"}
		if err := svc.SetStatus(ctx, missing, connections.StatusError, "", nil); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("SetStatus(missing) = %v, want ErrNotFound", err)
		}
	})
}
