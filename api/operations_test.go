package api_test

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store/storetest"
)

func TestOperations(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	if res := h.do("GET", "/healthz", "", nil); res.status != 200 {
		t.Errorf("healthz = %d", res.status)
	}
	if res := h.do("GET", "/readyz", "", nil); res.status != 200 {
		t.Errorf("readyz = %d", res.status)
	}
	h.do("GET", "/api/v1/connections", h.admin, nil)
	m := h.do("GET", "/metrics", h.admin, nil)
	if !strings.Contains(string(m.body), `connmgr_http_requests_total{method="GET",route="/api/v1/connections",status="200"} 1`) {
		t.Errorf("metrics miss the request counter:\n%s", m.body)
	}
	if res := h.do("GET", "/openapi.yaml", "", nil); !bytes.Equal(res.body, connmgr.OpenAPI) {
		t.Error("/openapi.yaml is not openapi.yaml")
	}
	if res := h.do("GET", "/", "", nil); res.status != 200 || !strings.Contains(string(res.body), `href="/docs/"`) {
		t.Errorf("GET / = %d %s, want a page leading to /docs/", res.status, res.body)
	}
	docs := h.do("GET", "/docs/", "", nil)
	if docs.status != 200 || !strings.Contains(string(docs.body), "swagger-ui-bundle.js") ||
		!strings.Contains(docs.header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("/docs/ = %d %q", docs.status, docs.header)
	}
	for _, f := range []string{"swagger-ui-bundle.js", "swagger-ui.css", "swagger-initializer.js", "swagger-ui-standalone-preset.js"} {
		if res := h.do("GET", "/docs/"+f, "", nil); res.status != 200 || len(res.body) == 0 {
			t.Errorf("/docs/%s = %d", f, res.status)
		}
	}
	if res := h.do("GET", "/docs/swagger-initializer.js", "", nil); !strings.Contains(string(res.body), "openapi.yaml") {
		t.Error("the docs UI does not load openapi.yaml")
	}
	h.do("GET", "/docs/../../etc/passwd", "", nil).problem(t, 404, "route_not_found")
	h.do("GET", "/nope", "", nil).problem(t, 404, "route_not_found")
	h.do("PATCH", "/api/v1/connections", h.admin, nil).problem(t, 405, "method_not_allowed")
	// Methods are a metric label: one that anyone can make up, without a
	// key, counts as OTHER, or each would add a series forever.
	for i := range 3 {
		h.do(fmt.Sprintf("MADEUP%dMETHOD", i), "/healthz", "", nil)
	}
	m = h.do("GET", "/metrics", h.admin, nil)
	if strings.Contains(string(m.body), "MADEUP") || !strings.Contains(string(m.body), `method="OTHER"`) {
		t.Errorf("made-up methods in the metrics, want them as OTHER:\n%s", m.body)
	}

	// A caller's request id is echoed and used; a hostile one is replaced.
	if res := h.do("GET", "/healthz", "", nil, "X-Request-Id", "abc-123"); res.header.Get("X-Request-Id") != "abc-123" {
		t.Errorf("X-Request-Id = %q", res.header.Get("X-Request-Id"))
	}
	if res := h.do("GET", "/healthz", "", nil, "X-Request-Id", "a b\x01"); res.header.Get("X-Request-Id") == "a b\x01" {
		t.Error("hostile request id echoed")
	}
	if !strings.Contains(h.logs.String(), `"request_id":"abc-123"`) {
		t.Error("log lines lack the request id")
	}

	h.db.Close()
	h.do("GET", "/readyz", "", nil, "X-Request-Id", "ready-42").problem(t, 503, "not_ready")
	// A handler's own lines carry the request id too, not only the access line.
	var notReady string
	for line := range strings.Lines(h.logs.String()) {
		if strings.Contains(line, `"msg":"not ready"`) {
			notReady = line
		}
	}
	if !strings.Contains(notReady, `"request_id":"ready-42"`) {
		t.Errorf("the not-ready log line = %q, want it with the request id", notReady)
	}
}

// TestMetricsAccess (#8.8): /metrics names every connection, so it needs a
// key that may read everything (viewer, admin); and no answer to a caller
// without a key names a connection.
func TestMetricsAccess(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	target, _ := echoTarget(t)
	const name = "Conn_REST_Secret_Project_Falcon"
	h.create(invokeConn(name, "INVOKE", target.URL))
	if res := h.do("GET", "/invoke/"+name+"/x", h.admin, nil); res.status != 200 {
		t.Fatalf("invoke = %d", res.status)
	}
	tests := []struct {
		name, key string
		status    int
	}{
		{"no key", "", 401},
		{"unknown key", "cmk_nope", 401},
		{"invoker", h.key(access.RoleInvoker, "*"), 403},
		{"developer", h.key(access.RoleDeveloper), 403},
		{"viewer", h.key(access.RoleViewer), 200},
		{"admin", h.admin, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.on(t).do("GET", "/metrics", tt.key, nil)
			if res.status != tt.status {
				t.Fatalf("GET /metrics = %d, want %d: %s", res.status, tt.status, res.body)
			}
			if named := strings.Contains(string(res.body), name); named != (tt.status == 200) {
				t.Errorf("the answer names the connection: %v, want %v", named, tt.status == 200)
			}
			if tt.status == 401 && res.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// Everything a caller without a key can reach, answered without the name.
	h.checkRequests = false
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/openapi.yaml", "/", "/docs/", "/docs/swagger-initializer.js",
		"/oauth/callback?state=x&code=y", "/nope", "/api/v1/connections", "/api/v1/connections/" + name,
		"/api/v1/connections/" + name + "/token", "/api/v1/audit", "/invoke/" + name + "/x"} {
		res := h.do("GET", path, "", nil)
		for k, vs := range res.header {
			if strings.Contains(strings.Join(vs, " "), name) {
				t.Errorf("GET %s without a key: header %s names the connection", path, k)
			}
		}
		if strings.Contains(string(res.body), name) {
			t.Errorf("GET %s without a key = %d names the connection", path, res.status)
		}
	}
}

// TestContractCoversRoutes: every served route is in openapi.yaml and every
// path of openapi.yaml is served.
func TestContractCoversRoutes(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	param := regexp.MustCompile(`/:([a-z]+)`)
	var served []string
	for _, r := range h.g.API.Routes() {
		if strings.HasPrefix(r.Path, "/docs") {
			continue
		}
		if r.Path == "/invoke/:name" {
			continue // the same operation as /invoke/{name}/{relativePath} with an empty path
		}
		path := strings.Replace(r.Path, "*path", "{relativePath}", 1)
		path = strings.ReplaceAll(path, `\:`, ":") // an escaped colon is a literal one (connections:apply)
		served = append(served, r.Method+" "+param.ReplaceAllString(path, "/{$1}"))
	}
	var documented []string
	for path, item := range contract(t).Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	if !slices.Equal(served, documented) {
		t.Errorf("served routes and openapi.yaml differ:\nserved:     %v\ndocumented: %v", served, documented)
	}
}

// TestNoSecretsLeak pushes canary secrets of every kind through the API and
// looks for them in every response, header and log line (debug level).
func TestNoSecretsLeak(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		canaries := map[string]string{"password": "CANARY-PASSWORD-41", "key": "CANARY-APIKEY-42",
			"clientSecret": "CANARY-CLIENTSECRET-43", "patched": "CANARY-PATCHED-44", "tls": "CANARY-TLSKEY-45"}
		bodies := []map[string]any{
			{"name": "P1", "role": "INVOKE", "baseUrl": "https://a.example.com",
				"security": map[string]any{"policy": "BASIC", "username": "u", "password": canaries["password"]}},
			{"name": "P2", "role": "INVOKE", "baseUrl": "https://a.example.com",
				"security": map[string]any{"policy": "API_KEY", "key": canaries["key"], "in": "QUERY", "name": "api_key"}},
			{"name": "P3", "role": "INVOKE", "baseUrl": "https://a.example.com",
				"security": map[string]any{"policy": "OAUTH2_PASSWORD", "tokenUrl": "https://a.example.com/t", "clientId": "c",
					"clientSecret": canaries["clientSecret"], "username": "u", "password": canaries["password"]}},
			// A key that does not parse: refused, and not echoed either.
			{"name": "P4", "role": "INVOKE", "baseUrl": "https://a.example.com", "security": map[string]any{"policy": "NONE"},
				"tls": map[string]any{"clientCertificatePem": "x", "clientKeyPem": canaries["tls"]}},
		}
		var seen bytes.Buffer
		record := func(res *response) {
			seen.Write(res.body)
			for k, vs := range res.header {
				seen.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
			}
		}
		h.checkRequests = false
		for _, b := range bodies {
			name := b["name"].(string)
			record(h.do("POST", "/api/v1/connections", h.admin, b))
			record(h.do("GET", "/api/v1/connections/"+name, h.admin, nil))
			record(h.patch("/api/v1/connections/"+name, h.admin, map[string]any{"description": "patched"}))
			b["baseUrl"] = "https://moved.example.com" // refused: secrets not re-sent
			record(h.do("PUT", "/api/v1/connections/"+name, h.admin, b))
			record(h.patch("/api/v1/connections/"+name, h.admin, map[string]any{"baseUrl": "https://moved.example.com"}))
		}
		record(h.patch("/api/v1/connections/P1", h.admin, map[string]any{"security": map[string]any{"password": canaries["patched"]}}))
		record(h.do("GET", "/api/v1/connections", h.admin, nil))
		record(h.do("GET", "/api/v1/audit?limit=500", h.admin, nil))
		record(h.do("GET", "/metrics", h.admin, nil))
		newKey := h.do("POST", "/api/v1/apikeys", h.admin, map[string]any{"name": "n", "role": "viewer"}).json(t)["key"].(string)
		out := seen.String() + h.logs.String()
		for field, c := range canaries {
			if strings.Contains(out, c) {
				t.Errorf("the %s canary leaked", field)
			}
		}
		for _, k := range []string{h.admin, newKey} {
			if strings.Contains(h.logs.String(), k) {
				t.Error("an API key is in the log")
			}
		}
		if !strings.Contains(seen.String(), "********") {
			t.Error("responses do not show masked secrets")
		}
		if got := h.secret("P1", "password"); got != canaries["patched"] {
			t.Errorf("P1's password = %q, want the patched one", got)
		}
	})
}

// TestProblemsNotEscaped (#9.15): problems, like every JSON answer, come
// without HTML escaping.
func TestProblemsNotEscaped(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	h.checkRequests = false
	res := h.do("GET", "/api/v1/connections?a%26b%3Cc=1", h.admin, nil)
	p := res.problem(t, 400, "malformed_request")
	if !strings.Contains(p["detail"].(string), `"a&b<c"`) || bytes.Contains(res.body, []byte(`\u00`)) {
		t.Errorf("problem = %s, want the parameter's name as it is", res.body)
	}
}
