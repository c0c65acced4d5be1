package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/connmgr/connmgr/api"
	"github.com/connmgr/connmgr/store/storetest"
)

// notFoundTarget answers GET /missing with its own JSON 404 (which also
// tries to pass itself off as connmgr's with a Connmgr-Error header) and
// everything else with a 200 echo of the request URI.
func notFoundTarget(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/missing") {
			w.Header().Set(api.ErrorHeader, "connection_not_found")
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]any{"error": "no such order"})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"uri": r.RequestURI})
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestInvokeMarksOwnAnswers: every problem connmgr makes on an invoke
// route carries Connmgr-Error with its code; the target's answers never
// do, even when the target sends that header itself; other routes' problems
// don't carry it.
func TestInvokeMarksOwnAnswers(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	target, _ := notFoundTarget(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	h.create(invokeConn("Orders", "INVOKE", target.URL+"/v2"))
	h.create(invokeConn("Down", "INVOKE", closed.URL))
	h.create(invokeConn("Trigger", "TRIGGER", target.URL))
	h.create(map[string]any{"name": "Code", "role": "INVOKE", "baseUrl": target.URL,
		"security": map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": target.URL + "/authorize",
			"tokenUrl": target.URL + "/token", "clientId": "c", "clientSecret": "s"}})

	dynamic := func(name string) string { return "/api/v1/connections/" + name + "/invoke" }
	get := map[string]any{"method": "GET", "relativeUri": "/missing"}
	h.checkRequests = false
	tests := []struct {
		name, method, path, key string
		body                    any
		status                  int
		code                    string
		header                  []string
	}{
		{"unknown connection", "GET", "/invoke/Nope/missing", h.admin, nil, 404, "connection_not_found", nil},
		{"unknown connection, dynamic", "POST", dynamic("Nope"), h.admin, get, 404, "connection_not_found", nil},
		{"no key", "GET", "/invoke/Orders/missing", "", nil, 401, "unauthorized", nil},
		{"no key, dynamic", "POST", dynamic("Orders"), "", get, 401, "unauthorized", nil},
		{"trigger only", "GET", "/invoke/Trigger/x", h.admin, nil, 403, "connection_not_invocable", nil},
		{"one encoded path", "GET", "/invoke/Orders/orders%2F17", h.admin, nil, 400, "invalid_relative_uri", nil},
		{"traversal, dynamic", "POST", dynamic("Orders"), h.admin, map[string]any{"relativeUri": "/a/../b"}, 400, "invalid_relative_uri", nil},
		{"template mismatch", "POST", dynamic("Orders"), h.admin, map[string]any{"relativeUri": "/{id}"}, 422, "template_mismatch", nil},
		{"malformed body", "POST", dynamic("Orders"), h.admin, "{", 400, "malformed_request", nil},
		{"unreachable target", "GET", "/invoke/Down/x", h.admin, nil, 502, "upstream_unreachable", nil},
		{"unknown method", "TRACE", "/invoke/Orders/x", h.admin, nil, 405, "method_not_allowed", nil},
		{"unknown method, dynamic", "GET", dynamic("Orders"), h.admin, nil, 405, "method_not_allowed", nil},
		{"consent required", "GET", "/invoke/Code/x", h.admin, nil, 409, "consent_required", nil},
		{"consent required, dynamic", "POST", dynamic("Code"), h.admin, get, 409, "consent_required", nil},
		{"a loop", "GET", "/invoke/Orders/x", h.admin, nil, 508, "loop_detected", []string{"Via", "1.1 connmgr, 1.1 connmgr, 1.1 connmgr"}},
		{"unsupported media type, dynamic", "POST", dynamic("Orders"), h.admin, "x=1", 415, "unsupported_media_type", []string{"Content-Type", "application/x-www-form-urlencoded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.on(t).do(tt.method, tt.path, tt.key, tt.body, tt.header...)
			res.problem(t, tt.status, tt.code)
			if got := res.header.Get(api.ErrorHeader); got != tt.code {
				t.Errorf("%s %s: %s = %q, want %q", tt.method, tt.path, api.ErrorHeader, got, tt.code)
			}
		})
	}
	h.checkRequests = true

	// The target's own 404, through both forms: relayed without the marker,
	// even though the target sent one.
	for _, res := range []*response{
		h.do("GET", "/invoke/Orders/missing", h.admin, nil),
		h.do("POST", dynamic("Orders"), h.admin, get),
	} {
		if res.status != 404 || !strings.Contains(string(res.body), "no such order") {
			t.Fatalf("the target's 404 = %d %s", res.status, res.body)
		}
		if got, ok := res.header[api.ErrorHeader]; ok {
			t.Errorf("the target's 404 carries %s: %q", api.ErrorHeader, got)
		}
	}
	// Other routes' problems are not marked: they are all connmgr's.
	res := h.do("GET", "/api/v1/connections/Nope", h.admin, nil)
	res.problem(t, 404, "connection_not_found")
	if got, ok := res.header[api.ErrorHeader]; ok {
		t.Errorf("a management 404 carries %s: %q", api.ErrorHeader, got)
	}
}

// TestInvokeOneEncodedPath: a transparent relative path that is a single
// segment holding an encoded slash (what oapi-codegen and openapi-fetch
// send for the path parameter "orders/17") is refused before it reaches the
// target; with a literal slash, an encoded one stays data.
func TestInvokeOneEncodedPath(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	target, hits := notFoundTarget(t)
	h.create(invokeConn("Orders", "INVOKE", target.URL+"/v2"))
	refused := []string{
		"/invoke/Orders/orders%2F17",
		"/invoke/Orders/orders%2f17?expand=lines",
		"/invoke/Orders/%2Forders",
		"/invoke/Orders/a%5Cb",
		"/invoke/Orders/a%5cb",
	}
	for _, path := range refused {
		t.Run(path, func(t *testing.T) {
			p := h.on(t).do("GET", path, h.admin, nil).problem(t, 400, "invalid_relative_uri")
			if d, _ := p["detail"].(string); !strings.Contains(d, "one segment") || !strings.Contains(d, "invokeConnection") {
				t.Errorf("detail = %q, want it to explain the encoding and name invokeConnection", d)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("refused paths reached the target %d times", n)
	}
	passed := []struct{ path, upstream string }{
		{"/invoke/Orders/orders/17", "/v2/orders/17"},
		{"/invoke/Orders/projects/group%2Fproj", "/v2/projects/group%2Fproj"},
		{"/invoke/Orders/group%2Fproj/", "/v2/group%2Fproj/"},
		{"/invoke/Orders/orders", "/v2/orders"},
		{"/invoke/Orders/a%252Fb", "/v2/a%252Fb"},
		{"/invoke/Orders/search?q=a%2Fb", "/v2/search?q=a%2Fb"},
	}
	for _, tt := range passed {
		t.Run(tt.path, func(t *testing.T) {
			res := h.on(t).do("GET", tt.path, h.admin, nil)
			if res.status != 200 {
				t.Fatalf("GET %s = %d %s", tt.path, res.status, res.body)
			}
			if got := res.json(t)["uri"]; got != tt.upstream {
				t.Errorf("GET %s reached the target as %v, want %s", tt.path, got, tt.upstream)
			}
		})
	}
}
