package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// newToken returns a token obtained now, valid for an hour, with canary
// values.
func newToken(refresh bool) *security.Token {
	now := time.Now().UTC().Truncate(time.Millisecond)
	t := &security.Token{AccessToken: connections.NewSecret(storetest.Canary("access")), TokenType: "Bearer",
		Scopes: []string{"orders.read"}, ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}
	if refresh {
		t.RefreshToken = connections.NewSecret(storetest.Canary("refresh"))
	}
	return t
}

// saveToken stores a fresh token with a refresh token for c under
// fingerprint fp over whatever version is stored, and returns it.
func saveToken(t *testing.T, env *testEnv, c *connections.Connection, fp string) *security.Token {
	t.Helper()
	ctx := context.Background()
	st, err := env.tokens.Load(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	tok := newToken(true)
	if _, err := env.tokens.Save(ctx, c.ID, fp, st.Version, tok, tok.RefreshAt(), "test", time.Now().UTC()); err != nil {
		t.Fatalf("Save(%q) = %v", c.Name, err)
	}
	return tok
}

// consent returns a pending consent of c with a canary verifier.
func consent(c *connections.Connection, state string) *security.PendingConsent {
	h := sha256.Sum256([]byte(state))
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &security.PendingConsent{StateHash: hex.EncodeToString(h[:]), ConnectionID: c.ID, Fingerprint: c.Fingerprint,
		Verifier: connections.NewSecret(storetest.Canary("verifier")), Nonce: "nonce", RedirectURI: "https://connmgr.example/oauth/callback",
		CreatedBy: "alice", CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
}

// createConn stores a client-credentials connection with fingerprint fp.
func createConn(t *testing.T, env *testEnv, name, fp string) *connections.Connection {
	t.Helper()
	c := sample(name, security.PolicyClientCredentials)
	c.Fingerprint = fp
	if err := env.conns.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenRows counts the rows of the tokens table of connection id, and
// those that hold an access token.
func tokenRows(t *testing.T, env *testEnv, id int64) (rows, withToken int64) {
	t.Helper()
	return storetest.Count(t, env.db.DB, "SELECT COUNT(*) FROM tokens WHERE connection_id = ?", id),
		storetest.Count(t, env.db.DB, "SELECT COUNT(*) FROM tokens WHERE connection_id = ? AND access_token IS NOT NULL", id)
}

// TestTokensSave is the storage side of #8.1: a token belongs to the
// fingerprint of the connection it was obtained for, and Save checks it
// against the connection row in the same transaction.
func TestTokensSave(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		now := time.Now().UTC()
		tests := []struct {
			name    string
			prepare func(t *testing.T, c *connections.Connection) (fp string, prev int64)
			want    error
		}{
			{name: "first token", prepare: func(t *testing.T, c *connections.Connection) (string, int64) { return c.Fingerprint, 0 }},
			{name: "fingerprint of another configuration", want: security.ErrConfigChanged,
				prepare: func(t *testing.T, c *connections.Connection) (string, int64) { return "fp-before-the-change", 0 }},
			{name: "configuration changed during the request", want: security.ErrConfigChanged,
				prepare: func(t *testing.T, c *connections.Connection) (string, int64) {
					fp := c.Fingerprint
					c.Fingerprint = "fp-new"
					if err := env.conns.Update(ctx, c, true); err != nil {
						t.Fatal(err)
					}
					return fp, 0
				}},
			{name: "connection deleted during the request", want: connections.ErrNotFound,
				prepare: func(t *testing.T, c *connections.Connection) (string, int64) {
					if _, err := env.conns.Delete(ctx, c.Name, 0); err != nil {
						t.Fatal(err)
					}
					return c.Fingerprint, 0
				}},
			{name: "stale version", want: security.ErrStale,
				prepare: func(t *testing.T, c *connections.Connection) (string, int64) {
					saveToken(t, env, c, c.Fingerprint)
					return c.Fingerprint, 0
				}},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := createConn(t, env, fmt.Sprintf("Conn_Save_%d", i), fmt.Sprintf("fp-%d", i))
				fp, prev := tt.prepare(t, c)
				rowsBefore, _ := tokenRows(t, env, c.ID)
				before, err := env.tokens.Load(ctx, c.ID)
				if err != nil {
					t.Fatal(err)
				}
				tok := newToken(true)
				v, err := env.tokens.Save(ctx, c.ID, fp, prev, tok, tok.RefreshAt(), "owner", now)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Save(fingerprint %q, version %d) = %d, %v, want %v", fp, prev, v, err, tt.want)
				}
				after, lerr := env.tokens.Load(ctx, c.ID)
				if lerr != nil {
					t.Fatal(lerr)
				}
				if tt.want != nil {
					rows, _ := tokenRows(t, env, c.ID)
					if rows != rowsBefore || after.Version != before.Version ||
						after.Token != nil && after.Token.AccessToken.Equal(tok.AccessToken) {
						t.Errorf("after a refused Save: %d token rows (was %d), version %d (was %d); want nothing stored",
							rows, rowsBefore, after.Version, before.Version)
					}
					return
				}
				if v != prev+1 || after.Version != v || after.Fingerprint != fp || after.Token == nil ||
					!after.Token.AccessToken.Equal(tok.AccessToken) || !after.Token.RefreshToken.Equal(tok.RefreshToken) {
					t.Errorf("Save = %d; Load = version %d, fingerprint %q, token %v; want %d, %q, the token saved",
						v, after.Version, after.Fingerprint, after.Token, prev+1, fp)
				}
			})
		}
	})
}

// TestTokensResetWithUpdate: a connection update with resetCredentials
// drops the token and pending consents in the update's transaction: an
// update that fails drops nothing, one that succeeds leaves no token, and
// a token of the old configuration can no longer be saved.
func TestTokensResetWithUpdate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := createConn(t, env, "Conn_Reset", "fp-1")
		saveToken(t, env, c, c.Fingerprint)
		if err := env.states.Create(ctx, consent(c, "state-1")); err != nil {
			t.Fatal(err)
		}
		stale := c.Clone()
		c.Description = "moved on"
		if err := env.conns.Update(ctx, c, false); err != nil {
			t.Fatal(err)
		}

		stale.Fingerprint = "fp-2"
		if err := env.conns.Update(ctx, stale, true); !errors.Is(err, connections.ErrVersionMismatch) {
			t.Fatalf("Update(stale, reset) = %v, want ErrVersionMismatch", err)
		}
		if tokens, states := storetest.CredentialState(t, env.db.DB, c.ID); tokens != 1 || states != 1 {
			t.Errorf("after a failed Update with reset: %d tokens, %d consents, want 1, 1", tokens, states)
		}

		c.Fingerprint = "fp-2"
		if err := env.conns.Update(ctx, c, true); err != nil {
			t.Fatal(err)
		}
		if tokens, states := storetest.CredentialState(t, env.db.DB, c.ID); tokens != 0 || states != 0 {
			t.Errorf("after Update with reset: %d tokens, %d consents, want 0, 0", tokens, states)
		}
		if _, err := env.tokens.Save(ctx, c.ID, "fp-1", 1, newToken(true), time.Now(), "owner", time.Now()); !errors.Is(err, security.ErrConfigChanged) {
			t.Errorf("Save(old fingerprint) after the reset = %v, want ErrConfigChanged", err)
		}
		if st, err := env.tokens.Load(ctx, c.ID); err != nil || st.Token != nil || st.Version != 0 {
			t.Errorf("Load after the reset = %+v, %v, want no token", st, err)
		}
	})
}

// TestTokensSaveRacesUpdate races token writes of the old configuration
// with a change of the configuration: whatever the order, what is stored
// afterwards is never a token of the old fingerprint.
func TestTokensSaveRacesUpdate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for i := range 10 {
			c := createConn(t, env, fmt.Sprintf("Conn_Race_%d", i), "fp-old")
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() {
					tok := newToken(true)
					_, _ = env.tokens.Save(ctx, c.ID, "fp-old", 0, tok, tok.RefreshAt(), "owner", time.Now().UTC())
				})
			}
			wg.Go(func() {
				u := c.Clone()
				u.Fingerprint = "fp-new"
				if err := env.conns.Update(ctx, u, true); err != nil {
					t.Errorf("Update = %v", err)
				}
			})
			wg.Wait()
			if st, err := env.tokens.Load(ctx, c.ID); err != nil || st.Token != nil && st.Fingerprint != "fp-new" {
				t.Errorf("round %d: stored token of fingerprint %q (%v) after the change to fp-new", i, st.Fingerprint, err)
			}
		}
	})
}

// TestTokensSaveKeepsRefreshToken: a token response without a refresh
// token keeps the stored one (TokenStore.Save's contract), but never one
// obtained under another configuration.
func TestTokensSaveKeepsRefreshToken(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		tests := []struct {
			name string
			fp   string // the connection's fingerprint when the new token is saved
			kept bool
		}{
			{name: "same configuration", fp: "fp-1", kept: true},
			{name: "stored under another configuration", fp: "fp-2", kept: false},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := createConn(t, env, fmt.Sprintf("Conn_Refresh_%d", i), "fp-1")
				first := saveToken(t, env, c, c.Fingerprint)
				c.Fingerprint = tt.fp
				if err := env.conns.Update(ctx, c, false); err != nil {
					t.Fatal(err)
				}
				second := newToken(false)
				if _, err := env.tokens.Save(ctx, c.ID, tt.fp, 1, second, second.RefreshAt(), "owner", time.Now().UTC()); err != nil {
					t.Fatal(err)
				}
				st, err := env.tokens.Load(ctx, c.ID)
				if err != nil || st.Token == nil {
					t.Fatalf("Load = %+v, %v", st, err)
				}
				if kept := st.Token.RefreshToken.Equal(first.RefreshToken); !st.Token.AccessToken.Equal(second.AccessToken) ||
					kept != tt.kept || !kept && st.Token.RefreshToken.IsSet() {
					t.Errorf("after Save without a refresh token: access token new %v, refresh token kept %v (set %v); want true, %v",
						st.Token.AccessToken.Equal(second.AccessToken), kept, st.Token.RefreshToken.IsSet(), tt.kept)
				}
			})
		}
	})
}

func TestConsentStates(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := createConn(t, env, "Conn_Consent", "fp-1")
		pc := consent(c, "state-1")
		if err := env.states.Create(ctx, pc); err != nil {
			t.Fatal(err)
		}
		gone := consent(&connections.Connection{ID: c.ID + 1000}, "state-2")
		if err := env.states.Create(ctx, gone); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Create(consent of a missing connection) = %v, want ErrNotFound", err)
		}
		tests := []struct {
			name string
			hash string
			now  time.Time
			want error
		}{
			{name: "unknown", hash: "nope", now: pc.CreatedAt, want: security.ErrInvalidState},
			{name: "expired", hash: pc.StateHash, now: pc.ExpiresAt, want: security.ErrInvalidState},
			{name: "taken", hash: pc.StateHash, now: pc.CreatedAt.Add(time.Minute)},
			{name: "taken again", hash: pc.StateHash, now: pc.CreatedAt.Add(time.Minute), want: security.ErrInvalidState},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := env.states.Take(ctx, tt.hash, tt.now)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Take(%s) = %v, want %v", tt.name, err, tt.want)
				}
				if err == nil && (got.ConnectionID != c.ID || got.Fingerprint != pc.Fingerprint || !got.Verifier.Equal(pc.Verifier) ||
					got.Nonce != pc.Nonce || got.RedirectURI != pc.RedirectURI || !got.ExpiresAt.Equal(pc.ExpiresAt)) {
					t.Errorf("Take = %+v, want %+v", got, pc)
				}
			})
		}
	})
}

// TestTokensFail: a failed request is recorded with the fingerprint it
// was made under. Bookkeeping of another configuration (a row a lease
// made) takes the failure's fingerprint; a failure of a configuration
// that has changed since says nothing about the current one and leaves
// its token alone.
func TestTokensFail(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Millisecond)
		failure := func(fp string) security.Failure {
			next := now.Add(time.Minute)
			return security.Failure{Fingerprint: fp, Reason: "token endpoint: 503", Failures: 1, NextAttempt: &next}
		}
		tests := []struct {
			name      string
			prepare   func(t *testing.T, c *connections.Connection)
			fp        string // the failure's fingerprint
			wantToken bool
			wantFP    string
			recorded  bool
		}{
			{name: "no token yet", prepare: func(*testing.T, *connections.Connection) {}, fp: "fp-1", wantFP: "fp-1", recorded: true},
			{name: "lease row without a fingerprint", prepare: func(t *testing.T, c *connections.Connection) {
				if _, err := env.tokens.Lease(ctx, c.ID, "owner", now, now.Add(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}, fp: "fp-1", wantFP: "fp-1", recorded: true},
			{name: "token of the same configuration", prepare: func(t *testing.T, c *connections.Connection) {
				saveToken(t, env, c, c.Fingerprint)
			}, fp: "fp-1", wantToken: true, wantFP: "fp-1", recorded: true},
			{name: "failure of an older configuration", prepare: func(t *testing.T, c *connections.Connection) {
				saveToken(t, env, c, c.Fingerprint)
			}, fp: "fp-0", wantToken: true, wantFP: "fp-1", recorded: false},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := createConn(t, env, fmt.Sprintf("Conn_Fail_%d", i), "fp-1")
				tt.prepare(t, c)
				if err := env.tokens.Fail(ctx, c.ID, "owner", failure(tt.fp), now); err != nil {
					t.Fatalf("Fail = %v", err)
				}
				st, err := env.tokens.Load(ctx, c.ID)
				if err != nil {
					t.Fatal(err)
				}
				if (st.Token != nil) != tt.wantToken || st.Fingerprint != tt.wantFP || (st.LastError != "") != tt.recorded {
					t.Errorf("after Fail(%s): token %v, fingerprint %q, last error %q; want token %v, %q, recorded %v",
						tt.fp, st.Token != nil, st.Fingerprint, st.LastError, tt.wantToken, tt.wantFP, tt.recorded)
				}
				if st.LeaseOwner != "" {
					t.Errorf("after Fail: lease held by %q, want released", st.LeaseOwner)
				}
			})
		}
		if err := env.tokens.Fail(ctx, 999999, "owner", failure("fp"), now); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Fail(missing connection) = %v, want ErrNotFound", err)
		}
	})
}
