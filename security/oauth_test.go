// These tests use package invoke, which imports security, so they live in
// the external test package. The internal tests get invoke's guarded
// client through security.GuardedClient, set here.
package security_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
)

func init() {
	security.GuardedClient = func(allow string, timeout time.Duration) (*http.Client, error) {
		prefixes, err := invoke.ParseAllow(allow)
		if err != nil {
			return nil, err
		}
		return (&invoke.Guard{Allow: prefixes}).Client(timeout), nil
	}
}

// TestTokenRequestsPassTheEgressGuard: a token URL is attacker-chosen
// input like a base URL; pointed at an internal address it must not be
// reached unless CONNMGR_EGRESS_ALLOW allows it.
func TestTokenRequestsPassTheEgressGuard(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"internal-token","token_type":"Bearer","expires_in":3600}`)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]

	tests := []struct {
		name   string
		allow  string // CONNMGR_EGRESS_ALLOW
		host   string
		denied bool
	}{
		{name: "loopback address, nothing allowed", host: "127.0.0.1", denied: true},
		{name: "name resolving to loopback, nothing allowed", host: "localhost", denied: true},
		{name: "loopback address, other range allowed", allow: "10.0.0.0/8", host: "127.0.0.1", denied: true},
		{name: "loopback address allowed", allow: "127.0.0.0/8", host: "127.0.0.1"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			client, err := security.GuardedClient(tt.allow, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer client.CloseIdleConnections()
			m, svc, store := newManager(t, client)
			c := &connections.Connection{Name: fmt.Sprintf("Conn_Egress_%d", i), Role: connections.RoleInvoke,
				BaseURL: "https://api.example.com", Security: connections.Security{
					Policy: connections.PolicyClientCredentials, TokenURL: "http://" + tt.host + ":" + port + "/token",
					ClientID: "egress", ClientSecret: connections.NewSecret("egress-secret")}}
			if err := svc.Create(ctx, "test", c); err != nil {
				t.Fatal(err)
			}
			before := hits.Load()
			_, err = m.Token(ctx, c)
			if !tt.denied {
				if err != nil || hits.Load()-before != 1 {
					t.Fatalf("Token() = %v with %d requests, want a token from 1 request", err, hits.Load()-before)
				}
				return
			}
			if !errors.Is(err, security.ErrTokenUnavailable) || !errors.Is(err, invoke.ErrEgressDenied) {
				t.Fatalf("Token() error = %v, want ErrTokenUnavailable caused by invoke.ErrEgressDenied", err)
			}
			var te *security.TokenError
			if !errors.As(err, &te) || !te.Permanent {
				t.Fatalf("Token() error = %#v, want a permanent *TokenError", err)
			}
			if !strings.Contains(te.Reason, "egress") || !strings.Contains(te.Reason, "CONNMGR_EGRESS_ALLOW") {
				t.Errorf("TokenError.Reason = %q, want it to name the egress guard and CONNMGR_EGRESS_ALLOW", te.Reason)
			}
			if got := hits.Load() - before; got != 0 {
				t.Errorf("token server received %d requests, want 0", got)
			}
			stored, err := store.Get(ctx, c.Name)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Status != connections.StatusError {
				t.Errorf("status = %s, want ERROR", stored.Status)
			}
			// Permanent: the scheduler leaves it alone, Token fails fast.
			m.RefreshDue(ctx)
			if _, err := m.Token(ctx, c); !errors.Is(err, security.ErrTokenUnavailable) || hits.Load() != before {
				t.Errorf("Token() again = %v (%d requests), want a fast failure", err, hits.Load()-before)
			}
		})
	}
}

// newManager starts a Manager with client on a fresh SQLite database.
func newManager(t *testing.T, client *http.Client) (*security.Manager, *connections.Service, *connections.GormStore) {
	t.Helper()
	db := connectionstest.Open(t, connectionstest.SQLite)
	spec, err := security.GenerateKeySpec("t1")
	if err != nil {
		t.Fatal(err)
	}
	ring, err := security.ParseKeyRing(spec)
	if err != nil {
		t.Fatal(err)
	}
	store := connections.NewGormStore(db.DB, ring)
	svc := &connections.Service{Store: store}
	m := security.NewManager(security.ManagerConfig{DB: db.DB, Sealer: ring, Connections: store, Status: svc, Client: client})
	return m, svc, store
}
