package invoke_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/outbound/outboundtest"
	"github.com/connmgr/connmgr/security"
)

// fakeTokens is the Tokens of a Tester: Refresh fails with err when set.
type fakeTokens struct {
	mu        sync.Mutex
	refreshes int
	err       error
}

func (f *fakeTokens) Refresh(_ context.Context, _ *connections.Connection) (*security.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	if f.err != nil {
		return nil, f.err
	}
	return &security.Token{AccessToken: connections.NewSecret("fresh-" + canary)}, nil
}

// statusLog records the statuses a Tester sets.
type statusLog struct {
	mu      sync.Mutex
	status  []connections.Status
	reasons []string
	tests   []*connections.TestResult
}

func (s *statusLog) SetStatus(_ context.Context, _ *connections.Connection, next connections.Status, reason string, test *connections.TestResult) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = append(s.status, next)
	s.reasons = append(s.reasons, reason)
	s.tests = append(s.tests, test)
	return nil
}

// step is a test step as the table expects it.
type step struct{ step, result, detail string }

func steps(r *connections.TestResult) []step {
	var out []step
	for _, s := range r.Steps {
		out = append(out, step{s.Step, s.Result, s.Detail})
	}
	return out
}

// The request step's success, failure and skip, as the table writes them.
func reqOK(detail string) step   { return step{invoke.StepRequest, connections.TestSuccess, detail} }
func reqFail(detail string) step { return step{invoke.StepRequest, connections.TestFailure, detail} }

var (
	tokenOK      = step{invoke.StepToken, connections.TestSuccess, "token obtained"}
	reqSkipped   = step{invoke.StepRequest, connections.TestSkipped, "not sent: no credential"}
	egressDetail = "refused by the egress guard: connection to 127.0.0.1 refused: loopback address; add it to CONNMGR_EGRESS_ALLOW to allow it"
)

func TestTester(t *testing.T) {
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
	untrusted := outboundtest.UntrustedTLS(t)
	noHost := &outbound.Guard{Lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}}
	for _, tt := range []struct {
		name     string
		base     string // "" means the upstream's URL + "/v2"
		policy   connections.Security
		request  *connections.TestRequest
		timeout  time.Duration
		guard    *outbound.Guard // nil means loopback allowed
		tokenErr error           // of Tokens.Refresh
		credErr  error           // of Credentials.Apply
		want     []step
		status   connections.Status
		sentURI  string // the request the upstream must get; "" for none
		answered bool   // whether Latency must be positive
	}{
		{name: "2xx", request: &connections.TestRequest{Method: "HEAD", RelativeURI: "/health/204"},
			want: []step{reqOK("HEAD /v2/health/204: HTTP 204")}, sentURI: "HEAD /v2/health/204", answered: true},
		{name: "probe", want: []step{reqOK("GET /v2: HTTP 200")}, sentURI: "GET /v2", answered: true},
		{name: "probe answered 404 is reachable", base: up.URL + "/v2/404",
			want:    []step{reqOK("GET /v2/404: HTTP 404 (reachable; set testRequest to check an answer)")},
			sentURI: "GET /v2/404", answered: true},
		{name: "probe answered 500 is reachable", base: up.URL + "/500",
			want:    []step{reqOK("GET /500: HTTP 500 (reachable; set testRequest to check an answer)")},
			sentURI: "GET /500", answered: true},
		{name: "token and request", policy: oauth(),
			want: []step{tokenOK, reqOK("GET /v2: HTTP 200")}, sentURI: "GET /v2", answered: true},
		{name: "testRequest 401", request: &connections.TestRequest{RelativeURI: "/401"},
			want: []step{reqFail("GET /v2/401: HTTP 401 from the target")}, sentURI: "GET /v2/401", answered: true},
		{name: "testRequest 404", policy: oauth(), request: &connections.TestRequest{RelativeURI: "/orders/404"},
			want:    []step{tokenOK, reqFail("GET /v2/orders/404: HTTP 404 from the target")},
			sentURI: "GET /v2/orders/404", answered: true},
		{name: "testRequest 500", request: &connections.TestRequest{Method: "GET", RelativeURI: "check/500"},
			want: []step{reqFail("GET /v2/check/500: HTTP 500 from the target")}, sentURI: "GET /v2/check/500", answered: true},
		{name: "testRequest redirect", request: &connections.TestRequest{RelativeURI: "/302"},
			want: []step{reqFail("GET /v2/302: HTTP 302 from the target")}, sentURI: "GET /v2/302", answered: true},
		{name: "timeout", request: &connections.TestRequest{RelativeURI: "/slow"}, timeout: 100 * time.Millisecond,
			want: []step{reqFail("GET /v2/slow: timeout after 100ms")}, sentURI: "GET /v2/slow"},
		{name: "refused", base: "http://" + outboundtest.ClosedPort(t),
			want: []step{reqFail("GET /: connection refused")}},
		{name: "token obtained, target refused", policy: oauth(), base: "http://" + outboundtest.ClosedPort(t) + "/api",
			want: []step{tokenOK, reqFail("GET /api: connection refused")}},
		{name: "TLS to a plain server", base: plain,
			want: []step{reqFail("GET /: TLS handshake failed: the server did not answer in TLS (is it plain HTTP?)")}},
		{name: "untrusted certificate", base: untrusted.URL,
			want: []step{reqFail("GET /: TLS handshake failed: the server's certificate is self-signed and not trusted")}},
		{name: "DNS failure", base: "http://nowhere.test", guard: noHost,
			want: []step{reqFail(`GET /: no such host "nowhere.test"`)}},
		{name: "egress denied", guard: &outbound.Guard{}, want: []step{reqFail("GET /v2: " + egressDetail)}},
		{name: "bad test URI", request: &connections.TestRequest{RelativeURI: "/a/../../admin"},
			want: []step{reqFail("invalid test request: relative URI contains a dot segment")}},
		{name: "bad base URL", base: "http://[::1", want: []step{reqFail("invalid base URL")}},
		{name: "token failure", policy: oauth(),
			tokenErr: fmt.Errorf("%w: %w", security.ErrTokenUnavailable, &security.TokenError{Reason: "invalid_client: bad secret"}),
			want:     []step{{invoke.StepToken, connections.TestFailure, "invalid_client: bad secret"}, reqSkipped}},
		{name: "consent needed", policy: oauth(), status: connections.StatusNeedsConsent,
			tokenErr: fmt.Errorf("%w: %w", security.ErrNeedsConsent, &security.TokenError{Reason: "invalid_grant", Permanent: true}),
			want:     []step{{invoke.StepToken, connections.TestFailure, "invalid_grant"}, reqSkipped}},
		{name: "no credential", policy: oauth(),
			credErr: fmt.Errorf("%w: %w", security.ErrTokenUnavailable, &security.TokenError{Reason: "invalid_client"}),
			want:    []step{tokenOK, reqFail("no credential: invalid_client")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			g := tt.guard
			if g == nil {
				g = outboundtest.Loopback(t)
			}
			h := newHarness(t, g)
			h.creds.err = tt.credErr
			tokens, status := &fakeTokens{err: tt.tokenErr}, &statusLog{}
			var heard []*connections.TestResult
			tester := &invoke.Tester{Proxy: h.p, Tokens: tokens, Status: status,
				Tested: func(_ context.Context, _ *connections.Connection, r *connections.TestResult) {
					heard = append(heard, r)
				}}
			base := tt.base
			if base == "" {
				base = up.URL + "/v2"
			}
			policy := tt.policy
			if policy == nil {
				policy = apiKeyPolicy()
			}
			c := conn(base, policy)
			c.TestRequest = tt.request
			c.Headers = map[string]string{"X-Api-Version": "2"}
			if tt.timeout != 0 {
				c.Timeout = tt.timeout
			}

			got, err := tester.Test(t.Context(), c)
			if err != nil {
				t.Fatalf("Test(%s) error = %v", tt.name, err)
			}
			wantResult, wantStatus, wantDetail := connections.TestSuccess, connections.StatusConfigured, ""
			var details []string
			for _, s := range tt.want {
				if s.result == connections.TestFailure {
					wantResult, wantStatus, wantDetail = connections.TestFailure, connections.StatusError, s.step+": "+s.detail
				}
				if s.result == connections.TestSuccess {
					details = append(details, s.detail)
				}
			}
			if wantResult == connections.TestSuccess {
				wantDetail = strings.Join(details, "; ")
			}
			if tt.status != "" {
				wantStatus = tt.status
			}
			if got.Result != wantResult || got.Detail != wantDetail {
				t.Errorf("Test(%s) = %s %q, want %s %q", tt.name, got.Result, got.Detail, wantResult, wantDetail)
			}
			if s := steps(got); fmt.Sprint(s) != fmt.Sprint(tt.want) {
				t.Errorf("Test(%s) steps = %q, want %q", tt.name, s, tt.want)
			}
			if tt.answered && got.Latency <= 0 {
				t.Errorf("Test(%s) latency = %v, want > 0", tt.name, got.Latency)
			}
			if got.At.IsZero() || got.At.Location() != time.UTC {
				t.Errorf("Test(%s) at = %v, want a UTC time", tt.name, got.At)
			}
			if security.HasTokens(policy) && tokens.refreshes != 1 {
				t.Errorf("Test(%s) refreshed the token %d times, want 1", tt.name, tokens.refreshes)
			}

			wantReason := ""
			if wantStatus != connections.StatusConfigured {
				wantReason = "test failed at " + wantDetail
			}
			if len(status.status) != 1 || status.status[0] != wantStatus || status.reasons[0] != wantReason || status.tests[0] != got {
				t.Errorf("Test(%s) recorded statuses %v reasons %q, want %s %q with the result", tt.name, status.status,
					status.reasons, wantStatus, wantReason)
			}
			if len(heard) != 1 || heard[0] != got {
				t.Errorf("Test(%s) told Tested %d results, want the one result", tt.name, len(heard))
			}
			for _, text := range append([]string{got.Detail, wantReason}, status.reasons...) {
				if strings.Contains(text, canary) {
					t.Errorf("Test(%s) detail or reason %q holds a credential or the response body", tt.name, text)
				}
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
			if security.HasTokens(policy) {
				credential = r.header.Get("Authorization")
			}
			if !strings.Contains(credential, canary) || r.header.Get("X-Api-Version") != "2" ||
				r.header.Get("User-Agent") != "connmgr" || r.header.Get("Via") != "1.1 connmgr" {
				t.Errorf("Test(%s) sent headers %v, want the credential, the static header, User-Agent and Via", tt.name, r.header)
			}
		})
	}
}

func TestTesterCanceled(t *testing.T) {
	h := newHarness(t, outboundtest.Loopback(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	status := &statusLog{}
	tester := &invoke.Tester{Proxy: h.p, Tokens: &fakeTokens{}, Status: status}
	got, err := tester.Test(ctx, conn("http://"+outboundtest.ClosedPort(t), none()))
	if err != nil {
		t.Fatalf("Test(canceled) error = %v", err)
	}
	if got.OK() || got.Detail != "request: GET /: canceled" {
		t.Errorf("Test(canceled) = %s %q, want FAILURE %q", got.Result, got.Detail, "request: GET /: canceled")
	}
	// The status is recorded even though the caller's context has ended.
	if len(status.status) != 1 || status.status[0] != connections.StatusError {
		t.Errorf("Test(canceled) recorded %v, want ERROR", status.status)
	}
}

// printedStatus is a StatusRecorder that prints what it records.
type printedStatus struct{}

func (printedStatus) SetStatus(_ context.Context, _ *connections.Connection, next connections.Status, reason string, _ *connections.TestResult) error {
	fmt.Printf("status %s %q\n", next, reason)
	return nil
}

func ExampleTester_Test() {
	target := httptest.NewServer(http.NotFoundHandler())
	defer target.Close()

	allow, _ := outbound.ParseAllow("127.0.0.0/8") // tests only: targets are public
	transport := (&outbound.Guard{Allow: allow}).Transport(0)
	p := invoke.NewProxy(nil, func(*connections.Connection) (http.RoundTripper, error) { return transport, nil }, nil)
	tester := &invoke.Tester{Proxy: p, Status: printedStatus{}}
	c := &connections.Connection{Name: "Conn_Orders", BaseURL: target.URL + "/v2", Security: &security.None{}}

	// Without a testRequest, any answer shows the target is reachable.
	r, _ := tester.Test(context.Background(), c)
	fmt.Println(r.Result, r.Detail)

	// A testRequest must be answered with a 2xx.
	c.TestRequest = &connections.TestRequest{Method: http.MethodGet, RelativeURI: "/health"}
	r, _ = tester.Test(context.Background(), c)
	fmt.Println(r.Result, r.Detail)
	// Output:
	// status CONFIGURED ""
	// SUCCESS GET /v2: HTTP 404 (reachable; set testRequest to check an answer)
	// status ERROR "test failed at request: GET /v2/health: HTTP 404 from the target"
	// FAILURE request: GET /v2/health: HTTP 404 from the target
}
