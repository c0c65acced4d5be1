package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/cmd/connmgr/wire"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
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

// harness is connmgr's API wired by wire.Build, as serve wires it, on a
// real database, with a client that holds every request and response to
// openapi.yaml.
type harness struct {
	t      *testing.T
	g      *wire.Graph
	db     *store.DB
	admin  string
	logs   *logBuffer
	router routers.Router
	// checkRequests fails the test when the server accepts (2xx, 3xx) a
	// request that openapi.yaml refuses; hostile-input tests turn it off.
	checkRequests bool
}

var (
	contractOnce sync.Once
	contractDoc  *openapi3.T
	contractErr  error
)

// contract is openapi.yaml, loaded and validated once.
func contract(t testing.TB) *openapi3.T {
	contractOnce.Do(func() {
		openapi3filter.RegisterBodyDecoder("text/html", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(r)
			return string(b), err
		})
		contractDoc, contractErr = openapi3.NewLoader().LoadFromData(connmgr.OpenAPI)
		if contractErr == nil {
			contractErr = contractDoc.Validate(context.Background())
		}
	})
	if contractErr != nil {
		t.Fatalf("openapi.yaml: %v", contractErr)
	}
	return contractDoc
}

// build wires connmgr on db with wire.Build, the function serve uses, for
// publicURL (the OAuth callback's base): loopback targets allowed, bodies
// limited to maxBody (0: the default), logs to log.
func build(t testing.TB, db *store.DB, publicURL string, log *slog.Logger, maxBody int64) *wire.Graph {
	t.Helper()
	allow, err := outbound.ParseAllow("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	g, err := wire.Build(context.Background(), db, storetest.KeyRing(t), wire.Options{PublicURL: publicURL,
		EgressAllow: allow, MaxBody: maxBody, Logger: log})
	if err != nil {
		t.Fatalf("wire.Build: %v", err)
	}
	t.Cleanup(g.CloseIdleConnections)
	return g
}

// newHarness wires connmgr on a fresh database of engine e, logging at
// debug level into h.logs, with bodies limited to 64 KiB.
func newHarness(t *testing.T, e storetest.Engine) *harness {
	t.Helper()
	return newHarnessWith(t, e, 64<<10)
}

func newHarnessWith(t *testing.T, e storetest.Engine, maxBody int64) *harness {
	t.Helper()
	db := storetest.Open(t, e)
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g := build(t, db, "http://connmgr.test", log, maxBody)
	_, admin, err := g.Keys.Create(context.Background(), access.NewKey{Name: "test-admin", Role: access.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(contract(t))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, g: g, db: db, admin: admin, logs: logs, router: router, checkRequests: true}
}

// on returns h for the subtest t: its failures end t, not its parent.
func (h *harness) on(t *testing.T) *harness {
	c := *h
	c.t = t
	return &c
}

// forEngine runs f on SQLite and, when configured, PostgreSQL.
func forEngine(t *testing.T, f func(t *testing.T, h *harness)) {
	for _, e := range storetest.Engines(t) {
		t.Run(string(e), func(t *testing.T) { f(t, newHarness(t, e)) })
	}
}

// key creates an API key with role and patterns and returns it.
func (h *harness) key(role access.Role, patterns ...string) string {
	h.t.Helper()
	_, k, err := h.g.Keys.Create(context.Background(), access.NewKey{Name: "k-" + string(role), Role: role, Connections: patterns})
	if err != nil {
		h.t.Fatal(err)
	}
	return k
}

// secret returns the stored value of the secret at path ("password",
// "tls.clientKeyPem") of the named connection, "" when it has none.
func (h *harness) secret(name, path string) string {
	h.t.Helper()
	c, err := h.g.Store.Get(context.Background(), name)
	if err != nil {
		h.t.Fatalf("get %s: %v", name, err)
	}
	r, ok := c.SecretAt(path)
	if !ok {
		return ""
	}
	return r.Value().Reveal()
}

type response struct {
	status int
	header http.Header
	body   []byte
	// contractErr is why openapi.yaml refuses the request, nil if it
	// accepts it (or the route is not in it).
	contractErr error
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

// fields returns the fields the problem's errors name.
func fields(p map[string]any) []string {
	var out []string
	errs, _ := p["errors"].([]any)
	for _, e := range errs {
		f, _ := e.(map[string]any)["field"].(string)
		out = append(out, f)
	}
	return out
}

// do sends a request with key (none if ""), body (marshalled unless it is
// a string or []byte; sent as application/json) and header pairs, and
// checks it against the contract.
func (h *harness) do(method, path, key string, body any, headerPairs ...string) *response {
	h.t.Helper()
	req, raw := h.request(method, path, key, body, headerPairs...)
	res := h.serve(req)
	h.validate(req, raw, res)
	return res
}

// request makes the request that do sends, and returns it with its body.
func (h *harness) request(method, path, key string, body any, headerPairs ...string) (*http.Request, []byte) {
	h.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		raw = mustJSON(h.t, b)
	}
	// Without a body the request has none (http.NoBody), as a server
	// reads a request without Content-Length.
	var r io.Reader
	if raw != nil {
		r = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headerPairs); i += 2 {
		req.Header.Set(headerPairs[i], headerPairs[i+1])
	}
	return req, raw
}

// serve has the API answer req. It may run on any goroutine; validate the
// answer on the test's.
func (h *harness) serve(req *http.Request) *response {
	rec := httptest.NewRecorder()
	h.g.API.ServeHTTP(rec, req)
	return &response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// patch sends a JSON merge patch (application/merge-patch+json).
func (h *harness) patch(path, key string, patch any, headerPairs ...string) *response {
	h.t.Helper()
	return h.do("PATCH", path, key, patch, append([]string{"Content-Type", "application/merge-patch+json"}, headerPairs...)...)
}

// validate holds the exchange to openapi.yaml: every documented route's
// request and every response, status included.
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
	for _, v := range params {
		if v == "" && err == nil {
			// The router reads /api/v1/connections as .../{name} with an
			// empty name; no documented route has an empty parameter.
			err = errors.New("a path parameter is empty")
		}
	}
	if err != nil {
		if res.status == http.StatusNotFound || res.status == http.StatusMethodNotAllowed {
			return // unknown routes are meant to be unknown
		}
		h.t.Fatalf("%s %s answered %d but is not in openapi.yaml: %v", req.Method, req.URL.Path, res.status, err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: opts}
	res.contractErr = openapi3filter.ValidateRequest(context.Background(), in)
	// A request that the contract refuses must be refused by the server
	// too (any 4xx).
	if h.checkRequests && res.contractErr != nil && (res.status < 400 || res.status >= 500) {
		h.t.Fatalf("%s %s: request does not match openapi.yaml, yet the server answered %d: %v", req.Method, req.URL.Path, res.status, res.contractErr)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.status,
		Header: res.header, Body: io.NopCloser(bytes.NewReader(res.body)), Options: opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		h.t.Fatalf("%s %s: response %d does not match openapi.yaml: %v\nbody: %s", req.Method, req.URL.Path, res.status, err, res.body)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
