package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
)

// logBuffer collects log output for canary checks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is a running API on a real database, with a client that holds
// every request and response to openapi.yaml.
type harness struct {
	t      *testing.T
	srv    *Server
	db     *connections.DB
	store  *connections.GormStore
	keys   *security.KeyStore
	admin  string
	logs   *logBuffer
	router routers.Router
	// checkRequests validates requests too; hostile-input tests turn it off.
	checkRequests bool
}

var (
	contractOnce sync.Once
	contractDoc  *openapi3.T
	contractErr  error
)

func contract(t testing.TB) *openapi3.T {
	contractOnce.Do(func() {
		openapi3filter.RegisterBodyDecoder("text/html", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(r)
			return string(b), err
		})
		loader := openapi3.NewLoader()
		contractDoc, contractErr = loader.LoadFromData(connmgr.OpenAPI)
		if contractErr == nil {
			contractErr = contractDoc.Validate(context.Background())
		}
	})
	if contractErr != nil {
		t.Fatalf("openapi.yaml: %v", contractErr)
	}
	return contractDoc
}

func testKeyRing(t testing.TB) *security.KeyRing {
	spec, err := security.GenerateKeySpec("test")
	if err != nil {
		t.Fatal(err)
	}
	ring, err := security.ParseKeyRing(spec)
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

// newTestServer wires a Server on db as the service does: connections
// with an audit log, a token manager and consent flow (redirecting to
// callbackURL), the invoke cache and a proxy that may reach loopback
// targets. maxBody 0 keeps the default body limits.
func newTestServer(t testing.TB, db *connections.DB, log *slog.Logger, callbackURL string, maxBody int64) (*Server, *connections.GormStore, *security.KeyStore) {
	t.Helper()
	ring := testKeyRing(t)
	store := connections.NewGormStore(db.DB, ring)
	keys := security.NewKeyStore(db.DB)
	svc := &connections.Service{Store: store}
	auditLog := audit.NewStore(db.DB, ring.Derive("audit"))
	svc.Observers = append(svc.Observers, auditLog.ConnectionChanged)
	svc.StatusObservers = append(svc.StatusObservers, auditLog.StatusChanged)
	allow, err := invoke.ParseAllow("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	guard := &invoke.Guard{Allow: allow}
	tokens := security.NewManager(security.ManagerConfig{DB: db.DB, Sealer: ring, Connections: store, Status: svc,
		Client: guard.Client(10 * time.Second), Logger: log, OnFailure: auditLog.TokenFailed})
	svc.Observers = append(svc.Observers, tokens.Observe)
	consent := security.NewConsent(db.DB, ring, tokens, callbackURL)
	cache := connections.NewCache(store)
	svc.Observers = append(svc.Observers, cache.Observe)
	proxy := invoke.NewProxy(tokens, guard.Transport(0), nil)
	proxy.MaxBody = maxBody
	srv := New(Config{Connections: svc, Keys: keys, Tokens: tokens, Consent: consent, Tester: proxy.Test,
		Cache: cache, Proxy: proxy, Audit: auditLog,
		OpenAPI: connmgr.OpenAPI, CursorKey: ring.Derive("cursor"), MaxBody: maxBody, Ready: db.Ping, Logger: log})
	return srv, store, keys
}

func newHarness(t *testing.T, e connectionstest.Engine) *harness {
	t.Helper()
	db := connectionstest.Open(t, e)
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, store, keys := newTestServer(t, db, log, "http://connmgr.test/oauth/callback", 64<<10)
	_, admin, err := keys.Create(context.Background(), security.NewKey{Name: "test-admin", Role: security.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(contract(t))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: srv, db: db, store: store, keys: keys, admin: admin, logs: logs, router: router,
		checkRequests: true}
}

// key creates an API key with role and patterns and returns it.
func (h *harness) key(role security.Role, patterns ...string) string {
	h.t.Helper()
	_, k, err := h.keys.Create(context.Background(), security.NewKey{Name: "k-" + string(role), Role: role, Connections: patterns})
	if err != nil {
		h.t.Fatal(err)
	}
	return k
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// problem asserts that r is a problem+json with status and code.
func (r *response) problem(t testing.TB, status int, code string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	p := r.json(t)
	if p["code"] != code {
		t.Fatalf("code = %v, want %s; body %s", p["code"], code, r.body)
	}
	if p["instance"] == "" || p["instance"] != r.header.Get("X-Request-Id") {
		t.Fatalf("instance %v is not the request id %q", p["instance"], r.header.Get("X-Request-Id"))
	}
	return p
}

// do sends a request with key (none if ""), body (marshalled unless it is
// a string or []byte) and header pairs, and checks it against the contract.
func (h *harness) do(method, path, key string, body any, headerPairs ...string) *response {
	h.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(raw))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headerPairs); i += 2 {
		req.Header.Set(headerPairs[i], headerPairs[i+1])
	}
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, req)
	res := &response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	h.validate(req, raw, res)
	return res
}

// validate holds the exchange to openapi.yaml: every documented route's
// request (when checkRequests) and every response, status included.
func (h *harness) validate(req *http.Request, raw []byte, res *response) {
	h.t.Helper()
	if strings.HasPrefix(req.URL.Path, "/docs") {
		return
	}
	// The router matches on the URL as the client sent it.
	vreq := req.Clone(context.Background())
	vreq.URL.Scheme, vreq.URL.Host = "", ""
	vreq.Body = io.NopCloser(bytes.NewReader(raw))
	if rest, ok := strings.CutPrefix(vreq.URL.Path, "/invoke/"); ok {
		// OpenAPI path parameters hold one segment; the relative path is many.
		name, _, _ := strings.Cut(rest, "/")
		vreq.URL.Path, vreq.URL.RawPath = "/invoke/"+name+"/relative", ""
	}
	route, params, err := h.router.FindRoute(vreq)
	if err != nil {
		if res.status == http.StatusNotFound || res.status == http.StatusMethodNotAllowed {
			return // unknown routes are meant to be unknown
		}
		h.t.Fatalf("%s %s answered %d but is not in openapi.yaml: %v", req.Method, req.URL.Path, res.status, err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: opts}
	if h.checkRequests {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			h.t.Fatalf("%s %s: request does not match openapi.yaml: %v", req.Method, req.URL.Path, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.status,
		Header: res.header, Body: io.NopCloser(bytes.NewReader(res.body)), Options: opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		h.t.Fatalf("%s %s: response %d does not match openapi.yaml: %v\nbody: %s", req.Method, req.URL.Path, res.status, err, res.body)
	}
}
