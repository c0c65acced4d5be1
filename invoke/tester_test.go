package invoke_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
)

func TestProxyTest(t *testing.T) {
	// The upstream answers with the status named by the path's last
	// segment, a body holding the canary, and blocks on "/slow".
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			<-r.Context().Done()
			return
		}
		status := http.StatusOK
		fmt.Sscanf(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:], "%d", &status)
		w.WriteHeader(status)
		io.WriteString(w, "secret body "+canary)
	})
	plain := strings.Replace(up.URL, "http:", "https:", 1)
	untrusted := httptest.NewUnstartedServer(http.NotFoundHandler())
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshake is expected
	untrusted.StartTLS()
	defer untrusted.Close()
	for _, tt := range []struct {
		name     string
		base     string // "" means the upstream's URL + "/v2"
		policy   connections.Policy
		request  *connections.TestRequest
		timeout  time.Duration
		guard    *invoke.Guard // nil means loopback allowed
		credErr  error
		ok       bool
		detail   string
		sentURI  string // the request the upstream must get; "" for none
		answered bool   // whether Latency must be positive
	}{
		{name: "2xx", request: &connections.TestRequest{Method: "HEAD", RelativeURI: "/health/204"},
			ok: true, detail: "HTTP 204", sentURI: "HEAD /v2/health/204", answered: true},
		{name: "default request", ok: true, detail: "HTTP 200", sentURI: "GET /v2", answered: true},
		{name: "OAuth token sent", policy: connections.PolicyClientCredentials,
			ok: true, detail: "HTTP 200", sentURI: "GET /v2", answered: true},
		{name: "401", request: &connections.TestRequest{RelativeURI: "/401"},
			detail: "HTTP 401 from the target", sentURI: "GET /v2/401", answered: true},
		{name: "500", request: &connections.TestRequest{Method: "GET", RelativeURI: "check/500"},
			detail: "HTTP 500 from the target", sentURI: "GET /v2/check/500", answered: true},
		{name: "redirect", request: &connections.TestRequest{RelativeURI: "/302"},
			detail: "HTTP 302 from the target", sentURI: "GET /v2/302", answered: true},
		{name: "timeout", request: &connections.TestRequest{RelativeURI: "/slow"}, timeout: 100 * time.Millisecond,
			detail: "timeout after 100ms", sentURI: "GET /v2/slow"},
		{name: "refused", base: "http://" + closedPort(t), detail: "connection refused"},
		{name: "TLS to a plain server", base: plain, detail: "TLS handshake failed"},
		{name: "untrusted certificate", base: untrusted.URL, detail: "TLS handshake failed"},
		{name: "DNS failure", base: "http://nowhere.test", detail: "DNS lookup failed",
			guard: &invoke.Guard{Lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}}},
		{name: "egress denied", guard: &invoke.Guard{},
			detail: "refused by the egress guard: connection to 127.0.0.1 refused: loopback address; add it to CONNMGR_EGRESS_ALLOW to allow it"},
		{name: "bad test URI", request: &connections.TestRequest{RelativeURI: "/a/../../admin"},
			detail: "invalid test request: relative URI contains a dot segment"},
		{name: "bad base URL", base: "http://[::1", detail: "invalid test request: connection base URL does not parse"},
		{name: "no credential", policy: connections.PolicyClientCredentials,
			credErr: fmt.Errorf("%w: %w", security.ErrTokenUnavailable, &security.TokenError{Reason: "invalid_client"}),
			detail:  "no credential: token unavailable: token request failed: invalid_client"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			g := tt.guard
			if g == nil {
				g = allowLoopback(t)
			}
			h := newHarness(t, g)
			h.creds.err = tt.credErr
			base := tt.base
			if base == "" {
				base = up.URL + "/v2"
			}
			policy := tt.policy
			if policy == "" {
				policy = connections.PolicyAPIKey
			}
			c := conn(base, policy)
			c.TestRequest = tt.request
			c.Headers = map[string]string{"X-Api-Version": "2"}
			if tt.timeout != 0 {
				c.Timeout = tt.timeout
			}

			got := h.p.Test(t.Context(), c)
			if got.OK != tt.ok || got.Detail != tt.detail {
				t.Errorf("Test(%s) = %v %q, want %v %q", tt.name, got.OK, got.Detail, tt.ok, tt.detail)
			}
			if strings.Contains(got.Detail, canary) {
				t.Errorf("Test(%s) detail %q contains a secret or the response body", tt.name, got.Detail)
			}
			if tt.answered && got.Latency <= 0 {
				t.Errorf("Test(%s) latency = %v, want > 0", tt.name, got.Latency)
			}
			reqs := up.requests()[before:]
			if tt.sentURI == "" {
				if len(reqs) != 0 && tt.base == "" && tt.guard == nil {
					t.Errorf("Test(%s) sent %d requests, want 0", tt.name, len(reqs))
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("Test(%s) sent %d requests, want 1", tt.name, len(reqs))
			}
			r := reqs[0]
			if uri := r.method + " " + r.uri; uri != tt.sentURI {
				t.Errorf("Test(%s) sent %s, want %s", tt.name, uri, tt.sentURI)
			}
			credential := r.header.Get("X-Api-Key")
			if policy.OAuth() {
				credential = r.header.Get("Authorization")
			}
			if !strings.Contains(credential, canary) || r.header.Get("X-Api-Version") != "2" || r.header.Get("User-Agent") != "connmgr" {
				t.Errorf("Test(%s) sent headers %v, want the credential, the static header and User-Agent connmgr", tt.name, r.header)
			}
		})
	}
}

func TestProxyTestCanceled(t *testing.T) {
	h := newHarness(t, allowLoopback(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	got := h.p.Test(ctx, conn("http://"+closedPort(t), connections.PolicyNone))
	if got.OK || got.Detail != "canceled" {
		t.Errorf("Test(canceled) = %v %q, want false %q", got.OK, got.Detail, "canceled")
	}
}
