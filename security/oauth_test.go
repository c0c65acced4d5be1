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
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

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
			client, err := guardedClient(tt.allow, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer client.CloseIdleConnections()
			e := newTokenEnv(t, storetest.SQLite, withClient(client))
			c := clientCredentials(fmt.Sprintf("Conn_Egress_%d", i), "http://"+tt.host+":"+port+"/token", "egress")
			c = e.create(c)
			before := hits.Load()
			_, err = e.m.Token(ctx, c)
			e.record(err)
			if !tt.denied {
				if err != nil || hits.Load()-before != 1 {
					t.Fatalf("Token() = %v with %d requests, want a token from 1 request", err, hits.Load()-before)
				}
				return
			}
			if !errors.Is(err, security.ErrTokenUnavailable) || !errors.Is(err, outbound.ErrEgressDenied) {
				t.Fatalf("Token() error = %v, want ErrTokenUnavailable caused by outbound.ErrEgressDenied", err)
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
			if got := e.get(c.Name).Status; got != connections.StatusError {
				t.Errorf("status = %s, want ERROR", got)
			}
			// Permanent: the scheduler leaves it alone, Token fails fast.
			refreshDue(e.m)
			_, err = e.m.Token(ctx, c)
			if !errors.Is(e.record(err), security.ErrTokenUnavailable) || hits.Load() != before {
				t.Errorf("Token() again = %v (%d requests), want a fast failure", err, hits.Load()-before)
			}
		})
	}
}
