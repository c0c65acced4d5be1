package invoke_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/outbound/outboundtest"
	"github.com/connmgr/connmgr/security"
)

// canary is part of every credential and upstream body in these tests; no
// error, detail or log may contain it.
const canary = "c4n4ry"

// fakeCreds is a Credentials that counts its calls. For token policies it
// sets "Bearer tok-N-<canary>", N counting applies, and returns the token;
// for others it sets an API key header.
type fakeCreds struct {
	mu       sync.Mutex
	applies  int
	rejected []string // the access tokens reported to Rejected
	err      error    // returned by Apply when set
	refuse   bool     // Rejected answers false (a cool-down is running)
}

func (f *fakeCreds) Apply(_ context.Context, c *connections.Connection, req *http.Request) (*security.Applied, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.applies++
	if !security.HasTokens(c.Security) {
		key := "key-" + canary
		req.Header.Set("X-Api-Key", key)
		return &security.Applied{Secrets: []string{key}}, nil
	}
	tok := &security.Token{AccessToken: connections.NewSecret(fmt.Sprintf("tok-%d-%s", f.applies, canary))}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken.Reveal())
	return &security.Applied{Token: tok, Secrets: []string{tok.AccessToken.Reveal()}}, nil
}

func (f *fakeCreds) Rejected(_ context.Context, _ *connections.Connection, tok *security.Token) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rejected = append(f.rejected, tok.AccessToken.Reveal())
	return !f.refuse
}

func (f *fakeCreds) counts() (applies int, rejected []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies, append([]string(nil), f.rejected...)
}

// seen is a request as the upstream got it.
type seen struct {
	method, uri, host string
	header            http.Header
	body              string
	chunked           bool
}

// upstream is a test target that records the requests it gets, then
// hands them to its handler with the body already read.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{method: r.Method, uri: r.RequestURI, host: r.Host, header: r.Header.Clone(),
			body: string(body), chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"})
		u.mu.Unlock()
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

// harness is a Proxy with fake credentials, called as the api calls it:
// an error Serve returns is rendered by the caller, with errStatus.
type harness struct {
	p     *invoke.Proxy
	creds *fakeCreds
	tr    *http.Transport
	reg   *prometheus.Registry

	mu    sync.Mutex
	errs  []error
	wrote []error // errors Serve returned after writing to the caller
}

// errStatus is what the harness writes for an error of Serve, so that a
// test can tell connmgr's errors from the target's answers.
const errStatus = 599

func newHarness(t testing.TB, g *outbound.Guard) *harness {
	t.Helper()
	h := &harness{creds: &fakeCreds{}, tr: g.Transport(0), reg: prometheus.NewRegistry()}
	t.Cleanup(h.tr.CloseIdleConnections)
	h.p = invoke.NewProxy(h.creds, func(*connections.Connection) (http.RoundTripper, error) { return h.tr, nil }, h.reg)
	return h
}

// serveHTTP calls Serve and renders its error with errStatus, noting an
// error that came after Serve had written to w.
func (h *harness) serveHTTP(w http.ResponseWriter, r *http.Request, call invoke.Call) {
	ww := &watchedWriter{ResponseWriter: w}
	err := h.p.Serve(ww, r, call)
	if err == nil {
		return
	}
	h.mu.Lock()
	h.errs = append(h.errs, err)
	if ww.wrote {
		h.wrote = append(h.wrote, err)
	}
	h.mu.Unlock()
	w.WriteHeader(errStatus)
}

// watchedWriter notes whether anything was written through it.
type watchedWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *watchedWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *watchedWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the Flusher beneath.
func (w *watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// err returns the one error Serve returned, or nil; it fails the test if
// there were several, if Serve had written to the caller before
// returning it, or if it leaks the canary.
func (h *harness) err(t *testing.T) error {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, err := range h.wrote {
		t.Errorf("Serve wrote to the caller and returned %v, want one or the other", err)
	}
	switch len(h.errs) {
	case 0:
		return nil
	case 1:
	default:
		t.Errorf("Serve returned %d errors (%v), want at most one", len(h.errs), h.errs)
	}
	if strings.Contains(h.errs[0].Error(), canary) {
		t.Errorf("error %q contains a secret or an upstream body", h.errs[0])
	}
	return h.errs[0]
}

// last returns the latest error Serve returned, or nil.
func (h *harness) last() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) == 0 {
		return nil
	}
	return h.errs[len(h.errs)-1]
}

func (h *harness) serve(call invoke.Call) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.serveHTTP(rec, httptest.NewRequest(http.MethodPost, "/invoke/Conn_Test/x", nil), call)
	return rec
}

// The policies of the tests' connections; fakeCreds applies them.
func none() connections.Security { return &security.None{} }
func apiKeyPolicy() connections.Security {
	return &security.APIKey{Key: connections.NewSecret("key-" + canary)}
}
func oauth() connections.Security { return &security.ClientCredentials{} }

func conn(base string, policy connections.Security) *connections.Connection {
	return &connections.Connection{Name: "Conn_Test", Role: connections.RoleInvoke, BaseURL: base,
		Security: policy, Timeout: 5 * time.Second}
}

func getCall(c *connections.Connection, rel string) invoke.Call {
	return invoke.Call{Conn: c, Target: invoke.Target{RelativeURI: rel}, Method: http.MethodGet,
		Header: http.Header{}, RequestID: "req-1"}
}

// body returns a call body of known length.
func body(s string) (io.ReadCloser, int64) { return io.NopCloser(strings.NewReader(s)), int64(len(s)) }

// stream is a body of unknown length that is not a known in-memory type.
type stream struct{ r io.Reader }

func (s *stream) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *stream) Close() error               { return nil }

func streamOf(s string) io.ReadCloser { return &stream{strings.NewReader(s)} }

func TestServeForwardsRequest(t *testing.T) {
	for _, tt := range []struct {
		name    string
		base    string // path and query after the server's URL
		policy  connections.Security
		call    func(*connections.Connection) invoke.Call
		method  string
		uri     string
		body    string
		chunked bool
	}{
		{
			name: "GET with template and query merge", base: "/v2?fixed=1",
			call: func(c *connections.Connection) invoke.Call {
				call := getCall(c, "/orders/{id}/lines?expand=items")
				call.Target.Template = true
				call.Target.PathParams = map[string]string{"id": "A/17 x"}
				call.Target.Query = url.Values{"page": {"2", "3"}}
				return call
			},
			method: "GET", uri: "/v2/orders/A%2F17%20x/lines?fixed=1&expand=items&page=2&page=3",
		},
		{
			name: "empty method means GET", base: "/v2",
			call: func(c *connections.Connection) invoke.Call {
				call := getCall(c, "")
				call.Method = ""
				return call
			},
			method: "GET", uri: "/v2",
		},
		{
			name: "POST with a body of known length", base: "/v2",
			call: func(c *connections.Connection) invoke.Call {
				call := getCall(c, "orders")
				call.Method = http.MethodPost
				call.Body, call.ContentLength = body(`{"id":1}`)
				return call
			},
			method: "POST", uri: "/v2/orders", body: `{"id":1}`,
		},
		{
			name: "PUT streamed", base: "/v2",
			call: func(c *connections.Connection) invoke.Call {
				call := getCall(c, "orders/1")
				call.Method = http.MethodPut
				call.Body, call.ContentLength = streamOf("streamed body"), -1
				return call
			},
			method: "PUT", uri: "/v2/orders/1", body: "streamed body", chunked: true,
		},
		{
			name: "POST buffered for OAuth", base: "/v2", policy: oauth(),
			call: func(c *connections.Connection) invoke.Call {
				call := getCall(c, "orders")
				call.Method = http.MethodPost
				call.Body, call.ContentLength = body("small")
				return call
			},
			method: "POST", uri: "/v2/orders", body: "small",
		},
		{
			name: "PATCH replayable of unknown length", base: "/v2", policy: oauth(),
			call: func(c *connections.Connection) invoke.Call {
				call := getCall(c, "orders/1")
				call.Method = http.MethodPatch
				call.Body, call.ContentLength, call.Replayable = streamOf(`{"qty":2}`), -1, true
				return call
			},
			method: "PATCH", uri: "/v2/orders/1", body: `{"qty":2}`,
		},
		{
			name: "DELETE without body", base: "/v2/",
			call: func(c *connections.Connection) invoke.Call {
				call := getCall(c, "/orders/1")
				call.Method = http.MethodDelete
				call.Body = http.NoBody
				return call
			},
			method: "DELETE", uri: "/v2/orders/1",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, "answer")
			})
			h := newHarness(t, outboundtest.Loopback(t))
			policy := tt.policy
			if policy == nil {
				policy = none()
			}
			rec := h.serve(tt.call(conn(up.URL+tt.base, policy)))
			if err := h.err(t); err != nil {
				t.Fatalf("Serve(%s) error = %v", tt.name, err)
			}
			if rec.Code != http.StatusCreated || rec.Body.String() != "answer" {
				t.Errorf("Serve(%s) = %d %q, want 201 %q", tt.name, rec.Code, rec.Body, "answer")
			}
			reqs := up.requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			if got.method != tt.method || got.uri != tt.uri || got.body != tt.body || got.chunked != tt.chunked {
				t.Errorf("upstream got %s %s body %q chunked %v, want %s %s body %q chunked %v",
					got.method, got.uri, got.body, got.chunked, tt.method, tt.uri, tt.body, tt.chunked)
			}
			if want := strings.TrimPrefix(up.URL, "http://"); got.host != want {
				t.Errorf("upstream got Host %q, want %q", got.host, want)
			}
		})
	}
}

func TestServeRequestHeaders(t *testing.T) {
	up := newUpstream(t, nil)
	h := newHarness(t, outboundtest.Loopback(t))
	c := conn(up.URL, oauth())
	c.Headers = map[string]string{"X-Api-Version": "2"}
	// Forbidden names in ForwardHeaders would fail validation; they must
	// not pass even so.
	c.ForwardHeaders = []string{"x-tenant", "Authorization", "Cookie", "X-Forwarded-Host"}

	call := getCall(c, "orders")
	call.Header = http.Header{
		"Connection":          {"Authorization, Idempotency-Key", "X-Tenant-Extra"},
		"Authorization":       {"Bearer caller-" + canary},
		"Cookie":              {"session=" + canary},
		"X-Forwarded-For":     {"10.0.0.1"},
		"X-Forwarded-Host":    {"evil.example"},
		"Forwarded":           {"for=10.0.0.1"},
		"Proxy-Authorization": {"Basic " + canary},
		"Proxy-Foo":           {"1"},
		"Idempotency-Key":     {"k-1"},
		"Keep-Alive":          {"timeout=5"},
		"Te":                  {"trailers"},
		"Upgrade":             {"websocket"},
		"X-Tenant-Extra":      {"dropped"},
		"X-Request-Id":        {"spoofed"},
		"User-Agent":          {"curl/8"},
		"X-Internal":          {"1"},
		"Accept":              {"application/json"},
		"Accept-Encoding":     {"gzip"},
		"Content-Type":        {"application/json"},
		"If-None-Match":       {`"v1"`},
		"If-Modified-Since":   {"Wed, 21 Oct 2015 07:28:00 GMT"},
		"X-Tenant":            {"acme"},
	}
	call.RequestID = "req-42"
	if rec := h.serve(call); rec.Code != http.StatusOK {
		t.Fatalf("Serve() status = %d, want 200 (error %v)", rec.Code, h.err(t))
	}
	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	got := reqs[0].header
	for _, tt := range []struct {
		name string
		want string // "" means absent
	}{
		{"Authorization", "Bearer tok-1-" + canary},
		{"Cookie", ""},
		{"X-Forwarded-For", ""},
		{"X-Forwarded-Host", ""},
		{"Forwarded", ""},
		{"Proxy-Authorization", ""},
		{"Proxy-Foo", ""},
		{"Idempotency-Key", ""}, // named in Connection
		{"X-Tenant-Extra", ""},
		{"Connection", ""},
		{"Keep-Alive", ""},
		{"Te", ""},
		{"Upgrade", ""},
		{"X-Internal", ""},
		{"X-Request-Id", "req-42"},
		{"User-Agent", "connmgr"},
		{"Accept", "application/json"},
		{"Accept-Encoding", "gzip"},
		{"Content-Type", "application/json"},
		{"If-None-Match", `"v1"`},
		{"If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"},
		{"X-Tenant", "acme"},
		{"X-Api-Version", "2"},
		{"Via", "1.1 connmgr"},
	} {
		if v := strings.Join(got.Values(tt.name), ", "); v != tt.want {
			t.Errorf("upstream header %s = %q, want %q", tt.name, v, tt.want)
		}
	}
	if v := call.Header.Get("Authorization"); v != "Bearer caller-"+canary {
		t.Errorf("Serve changed the caller's headers: Authorization = %q", v)
	}
}

// TestServeVia checks that every outbound call carries connmgr's Via
// entry after the caller's, and that a call that has already passed
// through connmgr MaxHops times goes no further (#8.5).
func TestServeVia(t *testing.T) {
	for _, tt := range []struct {
		name string
		via  []string // the caller's Via headers
		want string   // the target's Via; "" means the call is refused
	}{
		{name: "first hop", want: "1.1 connmgr"},
		{name: "after the caller's proxies", via: []string{"1.0 fred, 1.1 p.example.net"},
			want: "1.0 fred, 1.1 p.example.net, 1.1 connmgr"},
		{name: "second pass", via: []string{"1.1 connmgr"}, want: "1.1 connmgr, 1.1 connmgr"},
		{name: "third pass", via: []string{"1.1 gw", "1.1 connmgr, 1.1 connmgr"},
			want: "1.1 gw, 1.1 connmgr, 1.1 connmgr, 1.1 connmgr"},
		{name: "other pseudonyms do not count", via: []string{"1.1 connmgr-edge, 1.1 connmgr-edge, 1.1 connmgr-edge"},
			want: "1.1 connmgr-edge, 1.1 connmgr-edge, 1.1 connmgr-edge, 1.1 connmgr"},
		{name: "three passes in one header", via: []string{"1.1 connmgr, 1.1 connmgr, 1.1 connmgr"}},
		{name: "three passes in several headers", via: []string{"1.1 connmgr", "1.0 fred, 1.1 connmgr", "1.1 connmgr"}},
		{name: "any case, protocol name and comment", via: []string{"HTTP/1.1 CONNMGR (x), 2 Connmgr", "1.1 connmgr"}},
		{name: "caller's header with room to spare", via: slices.Grow([]string{"1.1 a", "1.1 b"}, 4),
			want: "1.1 a, 1.1 b, 1.1 connmgr"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, nil)
			h := newHarness(t, outboundtest.Loopback(t))
			call := getCall(conn(up.URL, oauth()), "orders")
			if tt.via != nil {
				call.Header["Via"] = tt.via
			}
			before := strings.Join(call.Header.Values("Via"), "|")
			rec := h.serve(call)
			err := h.err(t)
			vias := call.Header["Via"]
			if after := strings.Join(vias, "|"); after != before || slices.ContainsFunc(vias[len(vias):cap(vias)],
				func(v string) bool { return v != "" }) {
				t.Errorf("Serve(%s) changed the caller's Via from %q to %q (array %q)", tt.name, before, after, vias[:cap(vias)])
			}
			reqs := up.requests()
			applies, _ := h.creds.counts()
			if tt.want == "" {
				if !errors.Is(err, invoke.ErrLoop) || rec.Code != errStatus {
					t.Errorf("Serve(%s) = %d, %v; want ErrLoop", tt.name, rec.Code, err)
				}
				if len(reqs) != 0 || applies != 0 {
					t.Errorf("Serve(%s) sent %d requests and applied the credential %d times, want none", tt.name, len(reqs), applies)
				}
				return
			}
			if err != nil || len(reqs) != 1 {
				t.Fatalf("Serve(%s) = %v with %d requests upstream, want 1", tt.name, err, len(reqs))
			}
			if got := strings.Join(reqs[0].header.Values("Via"), ", "); got != tt.want {
				t.Errorf("Serve(%s) sent Via %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

// TestServeLoop has a connection invoke the connmgr that serves it: the
// call passes through MaxHops times, then connmgr refuses it, and the
// refusal travels back as each hop's answer.
func TestServeLoop(t *testing.T) {
	h := newHarness(t, outboundtest.Loopback(t))
	var inbound atomic.Int64
	var front *httptest.Server
	front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inbound.Add(1)
		call := getCall(conn(front.URL+"/invoke/Conn_Test", none()), "x")
		call.Header = r.Header
		h.serveHTTP(w, r, call)
	}))
	defer front.Close()
	res, err := front.Client().Get(front.URL + "/invoke/Conn_Test/x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != errStatus {
		t.Errorf("looping call = %d, want %d (connmgr's refusal, passed back)", res.StatusCode, errStatus)
	}
	if n := inbound.Load(); n != invoke.MaxHops+1 {
		t.Errorf("connmgr got the call %d times, want %d", n, invoke.MaxHops+1)
	}
	if err := h.last(); !errors.Is(err, invoke.ErrLoop) {
		t.Errorf("last error = %v, want ErrLoop", err)
	}
}

// TestServeCompression checks that connmgr forwards the caller's own
// Accept-Encoding, adds none of its own, and passes compressed answers on
// as the target sent them: the transport never inflates a body.
func TestServeCompression(t *testing.T) {
	const text = "a body that the target compresses"
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	io.WriteString(zw, text)
	zw.Close()
	// The target answers in gzip when asked, and on /always whatever it
	// was asked (some do).
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") == "gzip" || r.URL.Path == "/always" {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(zipped.Bytes())
			return
		}
		io.WriteString(w, text)
	})
	for _, tt := range []struct {
		name           string
		path           string
		acceptEncoding string // the caller's; "" for none
		wantUpstream   string // the Accept-Encoding the target sees
		wantEncoding   string // the Content-Encoding the caller sees
		wantBody       []byte
	}{
		{name: "caller without Accept-Encoding", path: "plain", wantBody: []byte(text)},
		{name: "caller asks for gzip", path: "plain", acceptEncoding: "gzip", wantUpstream: "gzip",
			wantEncoding: "gzip", wantBody: zipped.Bytes()},
		{name: "target sends gzip unasked", path: "always", wantEncoding: "gzip", wantBody: zipped.Bytes()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			h := newHarness(t, outboundtest.Loopback(t))
			call := getCall(conn(up.URL, none()), tt.path)
			if tt.acceptEncoding != "" {
				call.Header.Set("Accept-Encoding", tt.acceptEncoding)
			}
			rec := h.serve(call)
			if rec.Code != http.StatusOK {
				t.Fatalf("Serve(%s) status = %d, want 200 (error %v)", tt.name, rec.Code, h.err(t))
			}
			reqs := up.requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			if got := reqs[0].header.Get("Accept-Encoding"); got != tt.wantUpstream {
				t.Errorf("upstream Accept-Encoding = %q, want %q", got, tt.wantUpstream)
			}
			if got := rec.Header().Get("Content-Encoding"); got != tt.wantEncoding {
				t.Errorf("Serve(%s) Content-Encoding = %q, want %q", tt.name, got, tt.wantEncoding)
			}
			if got := rec.Body.Bytes(); !bytes.Equal(got, tt.wantBody) {
				t.Errorf("Serve(%s) body = %q, want %q", tt.name, got, tt.wantBody)
			}
		})
	}
}

func TestServeResponseHeaders(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range map[string]string{
			"Content-Type":                "application/json",
			"Etag":                        `"v2"`,
			"Cache-Control":               "no-store",
			"Link":                        `</next>; rel="next"`,
			"X-Ratelimit-Remaining":       "9",
			"Ratelimit-Policy":            "10;w=1",
			"Set-Cookie":                  "session=" + canary,
			"Access-Control-Allow-Origin": "*",
			"Www-Authenticate":            "Bearer",
			"Server":                      "upstream/1.0",
			"Keep-Alive":                  "timeout=5",
			"Connection":                  "X-Hop",
			"X-Hop":                       "1",
			"Proxy-Authenticate":          "Basic",
			"X-Request-Id":                "upstream-id",
			"X-Internal":                  "1",
			"Strict-Transport-Security":   "max-age=1",
			"Trailer":                     "X-Announced",
		} {
			h.Set(k, v)
		}
		io.WriteString(w, "payload")
		h.Set("X-Announced", canary)
		h.Set(http.TrailerPrefix+"X-Unannounced", canary)
	})
	h := newHarness(t, outboundtest.Loopback(t))
	rec := h.serve(getCall(conn(up.URL, none()), ""))
	res := rec.Result()
	if res.StatusCode != http.StatusOK || rec.Body.String() != "payload" {
		t.Fatalf("Serve() = %d %q, want 200 %q (error %v)", res.StatusCode, rec.Body, "payload", h.err(t))
	}
	for _, tt := range []struct {
		name string
		want string
	}{
		{"Content-Type", "application/json"},
		{"Etag", `"v2"`},
		{"Cache-Control", "no-store"},
		{"Link", `</next>; rel="next"`},
		{"X-Ratelimit-Remaining", "9"},
		{"Ratelimit-Policy", "10;w=1"},
		{"X-Request-Id", "req-1"},
		{"Set-Cookie", ""},
		{"Access-Control-Allow-Origin", ""},
		{"Www-Authenticate", ""},
		{"Server", ""},
		{"Keep-Alive", ""},
		{"Connection", ""},
		{"X-Hop", ""},
		{"Proxy-Authenticate", ""},
		{"X-Internal", ""},
		{"Strict-Transport-Security", ""},
		{"Trailer", ""},
	} {
		if v := strings.Join(res.Header.Values(tt.name), ", "); v != tt.want {
			t.Errorf("response header %s = %q, want %q", tt.name, v, tt.want)
		}
	}
	if len(res.Trailer) != 0 {
		t.Errorf("response trailers = %v, want none", res.Trailer)
	}
}

// TestServeDrops1xx checks that informational responses, whose headers
// ReverseProxy would copy unfiltered, do not reach the caller.
func TestServeDrops1xx(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "early="+canary)
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Set-Cookie")
		w.Header().Del("Link")
		io.WriteString(w, "done")
	})
	h := newHarness(t, outboundtest.Loopback(t))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serveHTTP(w, r, getCall(conn(up.URL, none()), ""))
	}))
	defer front.Close()

	var informational atomic.Int64
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { informational.Add(1); return nil },
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL, nil)
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(b) != "done" || res.Header.Get("Set-Cookie") != "" {
		t.Errorf("Serve() = %d %q Set-Cookie %q, want 200 %q and no cookie", res.StatusCode, b, res.Header.Get("Set-Cookie"), "done")
	}
	if n := informational.Load(); n != 0 {
		t.Errorf("caller got %d informational responses, want 0", n)
	}
}

func TestServeRetry(t *testing.T) {
	for _, tt := range []struct {
		name     string
		policy   connections.Security
		rejects  []int // the connection's RejectedStatuses
		refuse   bool  // Rejected says not to retry
		statuses []int // the upstream's answers in turn; then 200
		body     func() (io.ReadCloser, int64, bool)
		want     int // status to the caller
		requests int
		applies  int
		rejected []string
	}{
		{
			name: "GET 401 then 200", policy: oauth(), statuses: []int{401},
			want: 200, requests: 2, applies: 2, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "POST small body 401 then 200", policy: oauth(), statuses: []int{401},
			body: func() (io.ReadCloser, int64, bool) { b, n := body("order"); return b, n, false },
			want: 200, requests: 2, applies: 2, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "replayable body of unknown length", policy: oauth(), statuses: []int{401},
			body: func() (io.ReadCloser, int64, bool) { return streamOf("order"), -1, true },
			want: 200, requests: 2, applies: 2, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "streamed body is not replayed", policy: oauth(), statuses: []int{401},
			body: func() (io.ReadCloser, int64, bool) { return streamOf("order"), -1, false },
			want: 401, requests: 1, applies: 1, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "large body is not replayed", policy: oauth(), statuses: []int{401},
			body: func() (io.ReadCloser, int64, bool) { b, n := body(strings.Repeat("x", 65<<10)); return b, n, false },
			want: 401, requests: 1, applies: 1, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "401 twice", policy: oauth(), statuses: []int{401, 401},
			want: 401, requests: 2, applies: 2, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "401 without a token", policy: apiKeyPolicy(), statuses: []int{401},
			want: 401, requests: 1, applies: 1,
		},
		{
			name: "403 is not retried", policy: oauth(), statuses: []int{403},
			want: 403, requests: 1, applies: 1,
		},
		{
			name: "403 listed: retried with the body replayed", policy: oauth(), rejects: []int{401, 403}, statuses: []int{403},
			body: func() (io.ReadCloser, int64, bool) { b, n := body("order"); return b, n, false },
			want: 200, requests: 2, applies: 2, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "403 listed, then 401", policy: oauth(), rejects: []int{401, 403}, statuses: []int{403, 401},
			want: 401, requests: 2, applies: 2, rejected: []string{"tok-1-" + canary},
		},
		{
			name: "401 not listed", policy: oauth(), rejects: []int{403}, statuses: []int{401},
			want: 401, requests: 1, applies: 1,
		},
		{
			name: "rejected within the cool-down", policy: oauth(), refuse: true, statuses: []int{401},
			body: func() (io.ReadCloser, int64, bool) { b, n := body("order"); return b, n, false },
			want: 401, requests: 1, applies: 1, rejected: []string{"tok-1-" + canary},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if i := int(n.Add(1)) - 1; i < len(tt.statuses) {
					w.Header().Set("Www-Authenticate", "Bearer")
					w.WriteHeader(tt.statuses[i])
					io.WriteString(w, "denied "+canary)
					return
				}
				io.WriteString(w, "ok")
			})
			h := newHarness(t, outboundtest.Loopback(t))
			h.creds.refuse = tt.refuse
			c := conn(up.URL, tt.policy)
			c.RejectedStatuses = tt.rejects
			call := getCall(c, "orders")
			var sent string
			if tt.body != nil {
				call.Method = http.MethodPost
				call.Body, call.ContentLength, call.Replayable = tt.body()
				b, _ := io.ReadAll(call.Body)
				sent = string(b)
				call.Body, _, _ = tt.body()
			}
			rec := h.serve(call)
			if err := h.err(t); err != nil {
				t.Fatalf("Serve(%s) error = %v", tt.name, err)
			}
			if rec.Code != tt.want {
				t.Errorf("Serve(%s) status = %d, want %d", tt.name, rec.Code, tt.want)
			}
			reqs := up.requests()
			if len(reqs) != tt.requests {
				t.Fatalf("upstream got %d requests, want %d", len(reqs), tt.requests)
			}
			for i, r := range reqs {
				if r.body != sent {
					t.Errorf("request %d body = %d bytes, want %d", i, len(r.body), len(sent))
				}
				if want := fmt.Sprintf("Bearer tok-%d-%s", i+1, canary); security.HasTokens(tt.policy) && r.header.Get("Authorization") != want {
					t.Errorf("request %d Authorization = %q, want %q", i, r.header.Get("Authorization"), want)
				}
			}
			applies, rejected := h.creds.counts()
			if applies != tt.applies || strings.Join(rejected, ",") != strings.Join(tt.rejected, ",") {
				t.Errorf("Apply called %d times, Rejected with %q; want %d and %q", applies, rejected, tt.applies, tt.rejected)
			}
		})
	}
}

func TestServeResetNotRetried(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy connections.Security
		header http.Header
	}{
		{name: "streamed POST", policy: none()},
		{name: "buffered POST", policy: oauth()},
		{name: "POST with Idempotency-Key", policy: oauth(),
			header: http.Header{"Idempotency-Key": {"k-1"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var posts atomic.Int64
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					return
				}
				posts.Add(1)
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				conn.(*net.TCPConn).SetLinger(0) // reset, not close
				conn.Close()
			})
			h := newHarness(t, outboundtest.Loopback(t))
			c := conn(up.URL, tt.policy)
			// A first call leaves an idle connection, which the transport
			// would retry a request on if it were replayable.
			if rec := h.serve(getCall(c, "")); rec.Code != http.StatusOK {
				t.Fatalf("Serve(GET) status = %d, want 200", rec.Code)
			}
			call := getCall(c, "orders")
			call.Method = http.MethodPost
			call.Body, call.ContentLength = body("order")
			if tt.header != nil {
				call.Header = tt.header
			}
			rec := h.serve(call)
			if err := h.err(t); !errors.Is(err, invoke.ErrUpstreamUnreachable) {
				t.Errorf("Serve(%s) error = %v, want ErrUpstreamUnreachable", tt.name, err)
			}
			if rec.Code != errStatus {
				t.Errorf("Serve(%s) status = %d, want %d", tt.name, rec.Code, errStatus)
			}
			if n := posts.Load(); n != 1 {
				t.Errorf("upstream got %d POSTs, want 1", n)
			}
		})
	}
}

func TestServeTimeout(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	t.Run("before the answer", func(t *testing.T) {
		unblocked := make(chan error, 1)
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				unblocked <- nil
			case <-time.After(10 * time.Second):
				unblocked <- errors.New("upstream handler still blocked after 10s")
			}
		})
		h := newHarness(t, outboundtest.Loopback(t))
		c := conn(up.URL, none())
		c.Timeout = 100 * time.Millisecond
		start := time.Now()
		rec := h.serve(getCall(c, ""))
		if err := h.err(t); !errors.Is(err, invoke.ErrUpstreamTimeout) || !strings.Contains(err.Error(), "100ms") {
			t.Errorf("Serve() error = %v, want ErrUpstreamTimeout naming 100ms", err)
		}
		if rec.Code != errStatus {
			t.Errorf("Serve() status = %d, want %d", rec.Code, errStatus)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Serve() took %v, want about 100ms", d)
		}
		if err := <-unblocked; err != nil {
			t.Error(err)
		}
	})

	// The timeout bounds the whole call: a body that stalls is cut off.
	t.Run("while streaming", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		})
		h := newHarness(t, outboundtest.Loopback(t))
		c := conn(up.URL, none())
		c.Timeout = 200 * time.Millisecond
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.serveHTTP(w, r, getCall(c, ""))
		}))
		defer front.Close()
		client := front.Client()
		defer client.CloseIdleConnections()
		res, err := client.Get(front.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err == nil || string(b) != "partial" {
			t.Errorf("reading the body = %q, %v; want %q and an error", b, err, "partial")
		}
	})
}

func TestServeEgressDenied(t *testing.T) {
	up := newUpstream(t, nil)
	h := newHarness(t, &outbound.Guard{})
	rec := h.serve(getCall(conn(up.URL, none()), ""))
	err := h.err(t)
	var denied *outbound.DeniedError
	if !errors.Is(err, outbound.ErrEgressDenied) || !errors.As(err, &denied) {
		t.Fatalf("Serve() error = %v, want a *DeniedError", err)
	}
	if denied.Reason != "loopback address" || !strings.Contains(err.Error(), "CONNMGR_EGRESS_ALLOW") {
		t.Errorf("Serve() error = %v, want a loopback refusal naming CONNMGR_EGRESS_ALLOW", err)
	}
	if rec.Code != errStatus {
		t.Errorf("Serve() status = %d, want %d", rec.Code, errStatus)
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream got %d requests, want 0", n)
	}
}

func TestServeBodyTooLarge(t *testing.T) {
	const limit = 1 << 10
	big := strings.Repeat("x", 64<<10)
	for _, tt := range []struct {
		name     string
		policy   connections.Security
		body     func() (io.ReadCloser, int64, bool)
		upstream bool // whether the upstream may see the request start
	}{
		{
			name: "by Content-Length", policy: none(),
			body: func() (io.ReadCloser, int64, bool) { b, n := body(big); return b, n, false },
		},
		{
			name: "by Content-Length, OAuth", policy: oauth(),
			body: func() (io.ReadCloser, int64, bool) { b, n := body(big); return b, n, false },
		},
		{
			name: "replayable", policy: oauth(),
			body: func() (io.ReadCloser, int64, bool) { return streamOf(big), -1, true },
		},
		{
			name: "streamed", policy: none(), upstream: true,
			body: func() (io.ReadCloser, int64, bool) { return streamOf(big), -1, false },
		},
		{
			name: "streamed, one byte over", policy: none(), upstream: true,
			body: func() (io.ReadCloser, int64, bool) { return streamOf(big[:limit+1]), -1, false },
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, nil)
			h := newHarness(t, outboundtest.Loopback(t))
			h.p.MaxBody = limit
			call := getCall(conn(up.URL, tt.policy), "upload")
			call.Method = http.MethodPost
			call.Body, call.ContentLength, call.Replayable = tt.body()
			rec := h.serve(call)
			if err := h.err(t); !errors.Is(err, invoke.ErrBodyTooLarge) {
				t.Errorf("Serve(%s) error = %v, want ErrBodyTooLarge", tt.name, err)
			}
			if rec.Code != errStatus {
				t.Errorf("Serve(%s) status = %d, want %d", tt.name, rec.Code, errStatus)
			}
			for _, r := range up.requests() {
				if !tt.upstream || len(r.body) > limit {
					t.Errorf("upstream got %s with %d bytes, want nothing or at most %d", r.method, len(r.body), limit)
				}
			}
		})
	}

	t.Run("exactly the limit", func(t *testing.T) {
		up := newUpstream(t, nil)
		h := newHarness(t, outboundtest.Loopback(t))
		h.p.MaxBody = limit
		call := getCall(conn(up.URL, none()), "upload")
		call.Method = http.MethodPost
		call.Body, call.ContentLength = streamOf(big[:limit]), -1
		if rec := h.serve(call); rec.Code != http.StatusOK {
			t.Errorf("Serve(%d bytes) status = %d, want 200 (error %v)", limit, rec.Code, h.err(t))
		}
	})
}

func TestServePassesAnswersThrough(t *testing.T) {
	for _, tt := range []struct {
		name    string
		status  int
		header  map[string]string
		body    string
		follows bool // whether /elsewhere may be requested
	}{
		{name: "redirect not followed", status: http.StatusFound, header: map[string]string{"Location": "/elsewhere"}},
		{name: "permanent redirect", status: http.StatusPermanentRedirect, header: map[string]string{"Location": "https://other.example/x"}},
		{name: "429 with Retry-After", status: http.StatusTooManyRequests,
			header: map[string]string{"Retry-After": "7", "Content-Type": "application/problem+json"}, body: `{"title":"slow down"}`},
		{name: "not modified", status: http.StatusNotModified, header: map[string]string{"Etag": `"v1"`}},
		{name: "upstream 500", status: http.StatusInternalServerError, body: "boom"},
		{name: "upstream 404", status: http.StatusNotFound, body: "no such order"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					return
				}
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			h := newHarness(t, outboundtest.Loopback(t))
			rec := h.serve(getCall(conn(up.URL, none()), "start"))
			if err := h.err(t); err != nil {
				t.Fatalf("Serve(%s) error = %v, want none", tt.name, err)
			}
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Errorf("Serve(%s) = %d %q, want %d %q", tt.name, rec.Code, rec.Body, tt.status, tt.body)
			}
			for k, v := range tt.header {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("Serve(%s) header %s = %q, want %q", tt.name, k, got, v)
				}
			}
			if n := len(up.requests()); n != 1 {
				t.Errorf("upstream got %d requests, want 1", n)
			}
		})
	}
}

func TestServeStreams(t *testing.T) {
	const chunk, chunks = 64 << 10, 128 // 8 MiB
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		b := bytes.Repeat([]byte("x"), chunk)
		for range chunks {
			if _, err := w.Write(b); err != nil {
				return
			}
		}
	})
	h := newHarness(t, outboundtest.Loopback(t))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serveHTTP(w, r, getCall(conn(up.URL, none()), "big"))
	}))
	defer front.Close()
	client := front.Client()
	defer client.CloseIdleConnections()

	// If Serve waited for the whole body, the upstream would never be
	// released and this would time out.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL, nil)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("Serve() before the upstream finished: %v", err)
	}
	defer res.Body.Close()
	first := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("first bytes = %q, %v; want %q before the upstream finished", first, err, "first")
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	once.Do(func() { close(release) })
	n, err := io.Copy(io.Discard, res.Body)
	runtime.ReadMemStats(&after)
	if err != nil || n != chunk*chunks {
		t.Errorf("rest of the body = %d bytes, %v; want %d", n, err, chunk*chunks)
	}
	// Proxying, serving and reading 8 MiB allocates far less than the body
	// unless something holds it in memory.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > chunk*chunks/2 {
		t.Errorf("streaming %d bytes allocated %d bytes, want less than half", chunk*chunks, alloc)
	}
}

func TestServeInvalidTarget(t *testing.T) {
	for _, tt := range []struct {
		name   string
		base   string // "" means the upstream's URL
		target invoke.Target
		want   error // nil: an error wrapping neither
	}{
		{name: "dot segment", target: invoke.Target{RelativeURI: "/a/../../admin"}, want: invoke.ErrInvalidRelativeURI},
		{name: "encoded dot segment", target: invoke.Target{RelativeURI: "/%2e%2e/admin"}, want: invoke.ErrInvalidRelativeURI},
		{name: "absolute URL", target: invoke.Target{RelativeURI: "http://evil.example/"}, want: invoke.ErrInvalidRelativeURI},
		{name: "other host", target: invoke.Target{RelativeURI: "//evil.example/x"}, want: invoke.ErrInvalidRelativeURI},
		{name: "missing parameter", target: invoke.Target{RelativeURI: "/orders/{id}", Template: true}, want: invoke.ErrTemplate},
		{name: "unused parameter", target: invoke.Target{RelativeURI: "/orders", Template: true,
			PathParams: map[string]string{"id": "1"}}, want: invoke.ErrTemplate},
		{name: "parameter climbs out", target: invoke.Target{RelativeURI: "/{f}", Template: true,
			PathParams: map[string]string{"f": "../admin/x"}}, want: invoke.ErrInvalidRelativeURI},
		{name: "parameter climbs out, encoded", target: invoke.Target{RelativeURI: "/files/{f}", Template: true,
			PathParams: map[string]string{"f": "..%2F..%2Fadmin"}}, want: invoke.ErrInvalidRelativeURI},
		{name: "query over 16 KiB", target: invoke.Target{RelativeURI: "/x",
			Query: url.Values{"q": {strings.Repeat("q", 16<<10)}}}, want: invoke.ErrInvalidRelativeURI},
		{name: "bad base URL", base: "http://[::1", target: invoke.Target{RelativeURI: "/x"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, nil)
			h := newHarness(t, outboundtest.Loopback(t))
			base := tt.base
			if base == "" {
				base = up.URL
			}
			call := getCall(conn(base, oauth()), "")
			call.Target = tt.target
			rec := h.serve(call)
			err := h.err(t)
			switch {
			case err == nil:
				t.Errorf("Serve(%s) error = nil, want one", tt.name)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Errorf("Serve(%s) error = %v, want %v", tt.name, err, tt.want)
			case tt.want == nil && (errors.Is(err, invoke.ErrInvalidRelativeURI) || errors.Is(err, invoke.ErrTemplate)):
				t.Errorf("Serve(%s) error = %v, want a configuration error", tt.name, err)
			}
			if rec.Code != errStatus {
				t.Errorf("Serve(%s) status = %d, want %d", tt.name, rec.Code, errStatus)
			}
			if applies, _ := h.creds.counts(); applies != 0 || len(up.requests()) != 0 {
				t.Errorf("Serve(%s) applied credentials %d times and sent %d requests, want 0 and 0",
					tt.name, applies, len(up.requests()))
			}
		})
	}
}

func TestServeCredentialErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want error
	}{
		{name: "needs consent", err: fmt.Errorf("%w: %w", security.ErrNeedsConsent,
			&security.TokenError{Reason: "consent is needed", Permanent: true}), want: security.ErrNeedsConsent},
		{name: "token unavailable", err: fmt.Errorf("%w: %w", security.ErrTokenUnavailable,
			&security.TokenError{Reason: "invalid_client", Permanent: true}), want: security.ErrTokenUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, nil)
			h := newHarness(t, outboundtest.Loopback(t))
			h.creds.err = tt.err
			rec := h.serve(getCall(conn(up.URL, oauth()), ""))
			if err := h.err(t); err != tt.err || !errors.Is(err, tt.want) {
				t.Errorf("Serve(%s) error = %v, want %v as it is", tt.name, err, tt.err)
			}
			if rec.Code != errStatus {
				t.Errorf("Serve(%s) status = %d, want %d", tt.name, rec.Code, errStatus)
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("upstream got %d requests, want 0", n)
			}
		})
	}
}

func TestServeUnreachable(t *testing.T) {
	plain := newUpstream(t, nil)
	closing := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})
	for _, tt := range []struct {
		name   string
		base   string
		lookup bool // resolve every name to nothing
		reason string
	}{
		{name: "connection refused", base: "http://" + outboundtest.ClosedPort(t), reason: "connection refused"},
		{name: "TLS to a plain server", base: strings.Replace(plain.URL, "http:", "https:", 1),
			reason: "TLS handshake failed: the server did not answer in TLS (is it plain HTTP?)"},
		{name: "DNS failure", base: "http://nowhere.test", lookup: true, reason: `no such host "nowhere.test"`},
		{name: "closed before an answer", base: closing.URL, reason: "the server closed the connection before answering"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := outboundtest.Loopback(t)
			if tt.lookup {
				g.Lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
					return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
				}
			}
			h := newHarness(t, g)
			var logs bytes.Buffer
			h.p.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			rec := h.serve(getCall(conn(tt.base, oauth()), ""))
			err := h.err(t)
			if !errors.Is(err, invoke.ErrUpstreamUnreachable) || err.Error() != "upstream unreachable: "+tt.reason {
				t.Errorf("Serve(%s) error = %v, want ErrUpstreamUnreachable: %s", tt.name, err, tt.reason)
			}
			if rec.Code != errStatus {
				t.Errorf("Serve(%s) status = %d, want %d", tt.name, rec.Code, errStatus)
			}
			if l := logs.String(); !strings.Contains(l, `"connection":"Conn_Test"`) || strings.Contains(l, canary) {
				t.Errorf("Serve(%s) logged %q, want a line naming the connection and no secret", tt.name, l)
			}
		})
	}
}

// TestServeErrorWritesNothing checks that Serve leaves the answer to its
// caller when it returns an error: nothing is written, so the caller's
// own status and body go out.
func TestServeErrorWritesNothing(t *testing.T) {
	h := newHarness(t, outboundtest.Loopback(t))
	rec := httptest.NewRecorder()
	err := h.p.Serve(rec, httptest.NewRequest(http.MethodGet, "/invoke/Conn_Test/x", nil),
		getCall(conn("http://"+outboundtest.ClosedPort(t), none()), "x"))
	if !errors.Is(err, invoke.ErrUpstreamUnreachable) {
		t.Fatalf("Serve() error = %v, want ErrUpstreamUnreachable", err)
	}
	if rec.Body.Len() != 0 || rec.Flushed {
		t.Errorf("Serve() wrote %q (flushed %v) and returned an error, want nothing written", rec.Body, rec.Flushed)
	}
	rec.WriteHeader(http.StatusBadGateway)
	if rec.Code != http.StatusBadGateway {
		t.Errorf("status after the caller's WriteHeader(502) = %d: Serve had written one", rec.Code)
	}
	for k := range rec.Header() {
		if k != "X-Request-Id" {
			t.Errorf("Serve() set the response header %s and returned an error", k)
		}
	}
}

func TestServeMetrics(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			w.WriteHeader(http.StatusNotFound)
		}
	})
	h := newHarness(t, outboundtest.Loopback(t))
	c := conn(up.URL, none())
	h.serve(getCall(c, "found"))
	h.serve(getCall(c, "found"))
	h.serve(getCall(c, "missing"))
	h.serve(getCall(conn("http://"+outboundtest.ClosedPort(t), none()), ""))

	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	var observed uint64
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetName() {
			case "connmgr_invoke_responses_total":
				counts[labels["connection"]+"/"+labels["class"]] = m.GetCounter().GetValue()
			case "connmgr_invoke_duration_seconds":
				observed += m.GetHistogram().GetSampleCount()
			}
		}
	}
	for key, want := range map[string]float64{"Conn_Test/2xx": 2, "Conn_Test/4xx": 1, "Conn_Test/error": 1, "Conn_Test/5xx": 0} {
		if counts[key] != want {
			t.Errorf("connmgr_invoke_responses_total{%s} = %v, want %v", key, counts[key], want)
		}
	}
	if observed != 4 {
		t.Errorf("connmgr_invoke_duration_seconds count = %d, want 4", observed)
	}
}

func ExampleProxy_Serve() {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Method, r.URL)
	}))
	defer target.Close()

	allow, _ := outbound.ParseAllow("127.0.0.0/8") // tests only: targets are public
	transport := (&outbound.Guard{Allow: allow}).Transport(0)
	p := invoke.NewProxy(nil, func(*connections.Connection) (http.RoundTripper, error) { return transport, nil }, nil)
	c := &connections.Connection{Name: "Conn_Orders", BaseURL: target.URL + "/v2", Security: &security.None{}}
	r := httptest.NewRequest(http.MethodGet, "/invoke/Conn_Orders/orders/A-17", nil)

	w := httptest.NewRecorder()
	err := p.Serve(w, r, invoke.Call{
		Conn:   c,
		Target: invoke.Target{RelativeURI: "orders/{id}", Template: true, PathParams: map[string]string{"id": "A 17"}},
		Method: http.MethodGet,
	})
	fmt.Println(w.Code, w.Body, err)

	// connmgr's own errors are returned, not written: the caller renders
	// them.
	w = httptest.NewRecorder()
	err = p.Serve(w, r, invoke.Call{Conn: c, Target: invoke.Target{RelativeURI: "/{f}", Template: true,
		PathParams: map[string]string{"f": "../admin"}}})
	fmt.Println(w.Body.Len(), err)
	// Output:
	// 200 GET /v2/orders/A%2017 <nil>
	// 0 invalid relative URI: value of {f} holds a dot segment
}

// The two benchmarks compare Serve with a bare ReverseProxy over the same
// kind of transport and target (benchUpstream).

func BenchmarkServe(b *testing.B) {
	srv := benchUpstream(b)
	tr := outboundtest.Loopback(b).Transport(0)
	b.Cleanup(tr.CloseIdleConnections)
	p := invoke.NewProxy(&fakeCreds{}, func(*connections.Connection) (http.RoundTripper, error) { return tr, nil },
		prometheus.NewRegistry())
	c := conn(srv.URL+"/v2", apiKeyPolicy())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodGet, "/invoke/Conn_Test/orders/A-17", nil)
			r.Header.Set("Accept", "application/json")
			w := httptest.NewRecorder()
			err := p.Serve(w, r, invoke.Call{Conn: c, Target: invoke.Target{RelativeURI: "orders/A-17"},
				Method: r.Method, Header: r.Header, Body: r.Body, ContentLength: r.ContentLength, RequestID: "req-1"})
			if err != nil || w.Code != http.StatusOK {
				b.Fatalf("Serve() = %d, %v; want 200", w.Code, err)
			}
		}
	})
}

func BenchmarkReverseProxy(b *testing.B) {
	srv := benchUpstream(b)
	tr := outboundtest.Loopback(b).Transport(0)
	b.Cleanup(tr.CloseIdleConnections)
	target, _ := url.Parse(srv.URL + "/v2")
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }, Transport: tr}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodGet, "/orders/A-17", nil)
			r.Header.Set("Accept", "application/json")
			w := httptest.NewRecorder()
			rp.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("ServeHTTP() status = %d, want 200", w.Code)
			}
		}
	})
}

func TestServeLimits(t *testing.T) {
	unblock := make(chan struct{})
	release := sync.OnceFunc(func() { close(unblock) })
	slow := make(chan struct{}, 2) // one send per slow call that reached the upstream
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slow <- struct{}{}
			<-unblock
		}
	})
	t.Cleanup(release) // runs before the upstream closes, also when a check fails early
	tests := []struct {
		name   string
		set    func(c *connections.Connection)
		calls  int
		wantOK int
	}{
		{"burst of 3 at 1/s", func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{RequestsPerSecond: 1, Burst: 3} }, 5, 3},
		{"no limits", func(c *connections.Connection) {}, 5, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, outboundtest.Loopback(t))
			c := conn(up.URL, none())
			tt.set(c)
			ok := 0
			for range tt.calls {
				rec := h.serve(getCall(c, "fast"))
				switch {
				case rec.Code == http.StatusOK:
					ok++
				case !errors.Is(h.last(), invoke.ErrRateLimited):
					t.Fatalf("Serve(%s) = %d, %v; want 200 or ErrRateLimited", tt.name, rec.Code, h.last())
				}
			}
			if ok != tt.wantOK {
				t.Errorf("Serve(%s) answered %d of %d, want %d", tt.name, ok, tt.calls, tt.wantOK)
			}
		})
	}
	t.Run("maxConcurrent 2", func(t *testing.T) {
		h := newHarness(t, outboundtest.Loopback(t))
		c := conn(up.URL, none())
		c.MaxConcurrent = 2
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); h.serve(getCall(c, "slow")) }()
		}
		for range 2 { // both slots are taken once both slow calls are upstream
			select {
			case <-slow:
			case <-time.After(5 * time.Second):
				t.Fatal("the slow calls never reached the upstream")
			}
		}
		h.serve(getCall(c, "fast"))
		var le *invoke.LimitError
		if !errors.As(h.last(), &le) || le.RetryAfter < time.Second {
			t.Errorf("third concurrent call: %v, want a *LimitError with Retry-After", h.last())
		}
		release()
		wg.Wait()
		if rec := h.serve(getCall(c, "fast")); rec.Code != http.StatusOK {
			t.Errorf("after the slow calls ended: %d, want 200", rec.Code)
		}
	})
}
