package connections_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/connmgr/connmgr/connections"
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

func (r *recorder) observeStatus(_ context.Context, c *connections.Connection, prev, next connections.Status, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, fmt.Sprintf("%s: %s -> %s (%s)", c.Name, prev, next, detail))
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
	return &connections.Service{Store: env.store, Observers: []func(context.Context, connections.Change){r.observe},
		StatusObservers: []func(context.Context, *connections.Connection, connections.Status, connections.Status, string){r.observeStatus}}, r
}

func TestServiceCreate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		for _, p := range policies {
			t.Run(string(p), func(t *testing.T) {
				c := newConn("Conn_"+string(p), p)
				c.Status = connections.StatusConfigured // a client cannot set these
				c.LastTest = connections.NewTestResult(c.CreatedAt, true, "forged")
				if err := svc.Create(ctx, "alice", c); err != nil {
					t.Fatalf("Create(%s) = %v", p, err)
				}
				want := connections.StatusDraft
				if p == connections.PolicyAuthorizationCode {
					want = connections.StatusNeedsConsent
				}
				got, err := env.store.Get(ctx, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != want || got.LastTest != nil || got.CreatedBy != "alice" || got.UpdatedBy != "alice" {
					t.Errorf("Create(%s) stored status %s, last test %v, by %q/%q; want %s, nil, alice/alice",
						p, got.Status, got.LastTest, got.CreatedBy, got.UpdatedBy, want)
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
			c := newConn("Conn_Invalid", connections.PolicyBasic)
			c.Security.Password = connections.Secret{}
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
		t.Run("exists", func(t *testing.T) {
			if err := svc.Create(ctx, "bob", newConn("CONN_NONE", connections.PolicyNone)); !errors.Is(err, connections.ErrExists) {
				t.Errorf("Create(CONN_NONE) = %v, want ErrExists", err)
			}
		})
	})
}

func TestServiceReplace(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		orig := newConn("Conn_Replace", connections.PolicyClientCredentials)
		if err := svc.Create(ctx, "alice", orig); err != nil {
			t.Fatal(err)
		}
		rec.last(t)
		secret := orig.Security.ClientSecret

		tests := []struct {
			name    string
			ifMatch int64
			mutate  func(c *connections.Connection)
			err     error // nil: success
			fields  []string
			reset   bool
			secret  connections.Secret
		}{
			{name: "description, secret omitted", mutate: func(c *connections.Connection) {
				c.Description = "new"
				c.Security.ClientSecret = connections.Secret{}
			}, secret: secret},
			{name: "if-match current", ifMatch: 2, mutate: func(c *connections.Connection) {
				c.Description = "newer"
				c.Security.ClientSecret = connections.Secret{}
			}, secret: secret},
			{name: "if-match stale", ifMatch: 2, mutate: func(c *connections.Connection) { c.Description = "lost" },
				err: connections.ErrVersionMismatch},
			{name: "host change without the secret", mutate: func(c *connections.Connection) {
				c.BaseURL = "https://other.example/v1"
				c.Security.ClientSecret = connections.Secret{}
			}, fields: []string{"baseUrl"}},
			{name: "invalid", mutate: func(c *connections.Connection) { c.Role = "" }, fields: []string{"role"}},
			{name: "host change with the secret", mutate: func(c *connections.Connection) {
				c.BaseURL = "https://other.example/v1"
			}, reset: true, secret: secret},
			{name: "new secret", mutate: func(c *connections.Connection) {
				c.BaseURL = "https://other.example/v1"
				c.Security.ClientSecret = connections.NewSecret("rotated")
			}, reset: true, secret: connections.NewSecret("rotated")},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before, err := env.store.Get(ctx, orig.Name)
				if err != nil {
					t.Fatal(err)
				}
				// The connection was tested and holds a token and a consent.
				if _, err := env.store.SetStatus(ctx, before.ID, connections.StatusConfigured, nil); err != nil {
					t.Fatal(err)
				}
				before.Status = connections.StatusConfigured
				addCredentialState(t, env.db.DB, before.ID)
				defer env.db.Exec("DELETE FROM tokens")
				defer env.db.Exec("DELETE FROM oauth_states")

				c := newConn(orig.Name, connections.PolicyClientCredentials)
				c.Security.ClientSecret = secret
				tt.mutate(c)
				err = svc.Replace(ctx, "bob", tt.ifMatch, c)
				after, gerr := env.store.Get(ctx, orig.Name)
				if gerr != nil {
					t.Fatal(gerr)
				}
				if tt.err != nil || tt.fields != nil {
					if tt.err != nil && !errors.Is(err, tt.err) || tt.fields != nil && !slices.Equal(fields(err), tt.fields) {
						t.Fatalf("Replace() = %v, want %v %q", err, tt.err, tt.fields)
					}
					checkSame(t, "stored after a refused Replace", after, before)
					if len(rec.changes) != 0 {
						t.Errorf("observers were told of a refused Replace")
					}
					return
				}
				if err != nil {
					t.Fatalf("Replace() = %v", err)
				}
				checkSame(t, "stored after Replace", after, c)
				if after.Version != before.Version+1 || after.UpdatedBy != "bob" || after.CreatedBy != "alice" {
					t.Errorf("stored version %d by %q/%q, want %d by alice/bob", after.Version, after.CreatedBy, after.UpdatedBy, before.Version+1)
				}
				if !after.Security.ClientSecret.Equal(tt.secret) {
					t.Errorf("stored client secret %q, want %q", after.Security.ClientSecret.Reveal(), tt.secret.Reveal())
				}
				wantStatus, wantState := connections.StatusConfigured, int64(1)
				if tt.reset {
					wantStatus, wantState = connections.StatusDraft, 0
				}
				tokens, states := credentialState(t, env.db.DB, after.ID)
				if after.Status != wantStatus || tokens != wantState || states != wantState {
					t.Errorf("after Replace: status %s, %d tokens, %d consents; want %s, %d, %d",
						after.Status, tokens, states, wantStatus, wantState, wantState)
				}
				ch := rec.last(t)
				if ch.Old == nil {
					t.Fatalf("observed a change without the old connection")
				}
				if ch.Old.Version != before.Version || ch.New != c || ch.CredentialsReset != tt.reset || ch.Actor != "bob" {
					t.Errorf("observed {Old v%d, New %p, reset %v, %q}, want {v%d, %p, %v, bob}",
						ch.Old.Version, ch.New, ch.CredentialsReset, ch.Actor, before.Version, c, tt.reset)
				}
			})
		}
		if err := svc.Replace(ctx, "bob", 0, newConn("Conn_Missing", connections.PolicyNone)); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Replace(missing) = %v, want ErrNotFound", err)
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
		ifMatch   int64
		successes int
		bug       string
	}{
		{name: "without If-Match", ifMatch: 0, successes: n,
			bug: "Replace without If-Match gives up after 6 lost races and returns ErrVersionMismatch"},
		{name: "with If-Match", ifMatch: 1, successes: 1},
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := fmt.Sprintf("Conn_Race_%d", i)
				if err := svc.Create(ctx, "alice", newConn(name, connections.PolicyBasic)); err != nil {
					t.Fatal(err)
				}
				rec.changes = nil
				errs := make([]error, n)
				var wg sync.WaitGroup
				for g := range n {
					wg.Go(func() {
						c := newConn(name, connections.PolicyBasic)
						c.Security.Password = connections.Secret{}
						c.Description = fmt.Sprintf("writer %d", g)
						errs[g] = svc.Replace(ctx, fmt.Sprintf("writer-%d", g), tt.ifMatch, c)
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

func TestServiceDelete(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, rec := newService(env)
		c := newConn("Conn_Delete", connections.PolicyBasic)
		if err := svc.Create(ctx, "alice", c); err != nil {
			t.Fatal(err)
		}
		rec.last(t)
		tests := []struct {
			name    string
			conn    string
			ifMatch int64
			want    error
		}{
			{name: "stale If-Match", conn: c.Name, ifMatch: 2, want: connections.ErrVersionMismatch},
			{name: "missing", conn: "Conn_Missing", want: connections.ErrNotFound},
			{name: "current If-Match", conn: c.Name, ifMatch: 1},
			{name: "again", conn: c.Name, want: connections.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := svc.Delete(ctx, "bob", tt.conn, tt.ifMatch)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Delete(%q, %d) = %v, want %v", tt.conn, tt.ifMatch, err, tt.want)
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
		c := newConn("Conn_Status", connections.PolicyBasic)
		if err := svc.Create(ctx, "alice", c); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			next   connections.Status
			detail string
			want   []string
		}{
			{connections.StatusConfigured, "test passed", []string{"Conn_Status: DRAFT -> CONFIGURED (test passed)"}},
			{connections.StatusConfigured, "token refreshed", nil},
			{connections.StatusError, "token endpoint returned 503", []string{"Conn_Status: CONFIGURED -> ERROR (token endpoint returned 503)"}},
			{connections.StatusError, "still failing", nil},
			{connections.StatusNeedsConsent, "invalid_grant", []string{"Conn_Status: ERROR -> NEEDS_CONSENT (invalid_grant)"}},
		}
		for _, tt := range tests {
			t.Run(string(tt.next)+"/"+tt.detail, func(t *testing.T) {
				rec.statuses = nil
				if err := svc.SetStatus(ctx, c, tt.next, nil, tt.detail); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(rec.statuses, tt.want) {
					t.Errorf("SetStatus(%s) told the status observers %q, want %q", tt.next, rec.statuses, tt.want)
				}
			})
		}
		missing := &connections.Connection{ID: c.ID + 1000, Name: "Conn_Missing"}
		if err := svc.SetStatus(ctx, missing, connections.StatusError, nil, ""); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("SetStatus(missing) = %v, want ErrNotFound", err)
		}
	})
}
