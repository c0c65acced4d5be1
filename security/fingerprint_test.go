package security_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// moveTo replaces the named connection through the service as a developer
// who does not know its secret would: a new base URL, and the secrets
// re-sent (a dummy), as the origin change demands.
func (e *tokenEnv) moveTo(name, baseURL, dummy string) *connections.Connection {
	e.t.Helper()
	moved := e.get(name).Clone()
	moved.BaseURL = baseURL
	oauthClient(moved).ClientSecret = connections.NewSecret(dummy)
	if err := e.svc.Replace(context.Background(), "developer", nil, moved); err != nil {
		e.t.Fatalf("Replace(%s): %v", name, err)
	}
	return e.get(name)
}

// checkNotStored fails if a tokens row holds access, in plaintext or
// sealed for connection id.
func (e *tokenEnv) checkNotStored(id int64, access string) {
	e.t.Helper()
	for _, row := range storetest.TableText(e.t, e.db.DB, "tokens") {
		if strings.Contains(row, access) {
			e.t.Errorf("tokens table holds the old configuration's token in plaintext")
		}
	}
	var sealed [][]byte
	if err := e.db.Raw("SELECT access_token FROM tokens WHERE access_token IS NOT NULL").Scan(&sealed).Error; err != nil {
		e.t.Fatal(err)
	}
	for _, ct := range sealed {
		if pt, err := e.ring.Open(ct, store.TokenAD(id, "access")); err == nil && string(pt) == access {
			e.t.Errorf("tokens table holds the token obtained under the old configuration")
		}
	}
}

// TestTokenFollowsConfiguration: a token belongs to the credential
// configuration it was obtained under. One whose request was in flight
// when the connection changed is neither stored nor cached nor served, and
// a replica that cached a token before the change does not serve it
// (#8 item 1).
func TestTokenFollowsConfiguration(t *testing.T) {
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		const elsewhere = "https://elsewhere.example.net/v1"
		dummy := canary + "-dummy-secret"

		t.Run("changed during the token request", func(t *testing.T) {
			e := e.at(t)
			c := e.create(clientCredentials("Conn_Moved_In_Flight", ts.URL(), "in-flight"))
			hold, release := newHold(t)
			ts.script(func(s *tokenServer) { s.hold = hold })
			type result struct {
				tok *security.Token
				err error
			}
			done := make(chan result, 1)
			go func() {
				tok, err := e.m.Token(ctx, c) // cold: asks the endpoint
				done <- result{tok, err}
			}()
			waitFor(5*time.Second, ts.busy)
			if !ts.busy() {
				t.Fatal("Token() did not reach the token endpoint within 5s")
			}
			ts.script(func(s *tokenServer) { s.hold = nil })

			moved := e.moveTo(c.Name, elsewhere, dummy)
			release()
			r := <-done
			if e.record(r.err) == nil {
				t.Fatalf("Token() = a token obtained under the old configuration, want an error")
			}
			if !errors.Is(r.err, security.ErrTokenUnavailable) {
				t.Errorf("Token() error = %v, want ErrTokenUnavailable", r.err)
			}
			waitFor(5*time.Second, func() bool { return ts.count() == 1 && !ts.busy() })
			old := ts.log()[0].Access
			if old == "" {
				t.Fatalf("the token endpoint issued no token for the old configuration")
			}
			e.checkNotStored(c.ID, old)
			if tok := e.m.Cached(c.ID); tok != nil && tok.AccessToken.Reveal() == old {
				t.Errorf("the Manager caches the token obtained under the old configuration")
			}

			tok, err := e.m.Token(ctx, moved)
			if e.record(err) != nil {
				t.Fatalf("Token() of the changed connection error = %v", err)
			}
			if got := ts.count(); got != 2 {
				t.Fatalf("token requests = %d, want 2 (a new one for the new configuration)", got)
			}
			if tok.AccessToken.Reveal() == old {
				t.Errorf("Token() of the changed connection = the old configuration's token, want a new one")
			}
			if got, want := ts.log()[1].BasicSecret, url.QueryEscape(dummy); got != want {
				t.Errorf("new token request authenticated with another secret than the one sent with the change")
			}
		})

		t.Run("cached by a replica before the change", func(t *testing.T) {
			e := e.at(t)
			c := e.create(clientCredentials("Conn_Moved_Cached", ts.URL(), "cached"))
			replica := e.replica() // hears of no change: no LISTEN here
			before, err := replica.Token(ctx, c)
			if e.record(err) != nil {
				t.Fatal(err)
			}
			n := ts.count()
			moved := e.moveTo(c.Name, elsewhere, dummy)
			tok, err := replica.Token(ctx, moved)
			if e.record(err) != nil {
				t.Fatalf("replica Token() of the changed connection error = %v", err)
			}
			if tok.AccessToken.Equal(before.AccessToken) {
				t.Errorf("replica Token() of the changed connection = the token of the old configuration, want a new one")
			}
			if got := ts.count() - n; got != 1 {
				t.Errorf("token requests after the change = %d, want 1", got)
			}
		})
	})
}
