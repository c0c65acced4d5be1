package api

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
)

func TestOperations(t *testing.T) {
	h := newHarness(t, connectionstest.SQLite)
	if res := h.do("GET", "/healthz", "", nil); res.status != 200 {
		t.Errorf("healthz = %d", res.status)
	}
	if res := h.do("GET", "/readyz", "", nil); res.status != 200 {
		t.Errorf("readyz = %d", res.status)
	}
	h.do("GET", "/api/v1/connections", h.admin, nil)
	m := h.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(m.body), `connmgr_http_requests_total{method="GET",route="/api/v1/connections",status="200"} 1`) {
		t.Errorf("metrics miss the request counter:\n%s", m.body)
	}
	if res := h.do("GET", "/openapi.yaml", "", nil); !bytes.Equal(res.body, connmgr.OpenAPI) {
		t.Error("/openapi.yaml is not openapi.yaml")
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

// TestContractCoversRoutes: every served route is in openapi.yaml and every
// path of openapi.yaml is served.
func TestContractCoversRoutes(t *testing.T) {
	h := newHarness(t, connectionstest.SQLite)
	param := regexp.MustCompile(`:([a-z]+)`)
	var served []string
	for _, r := range h.srv.engine.Routes() {
		if strings.HasPrefix(r.Path, "/docs") {
			continue
		}
		if r.Path == "/invoke/:name" {
			continue // the same operation as /invoke/{name}/{relativePath} with an empty path
		}
		path := strings.Replace(r.Path, "*path", "{relativePath}", 1)
		served = append(served, r.Method+" "+param.ReplaceAllString(path, "{$1}"))
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
// looks for them in every response and log line (debug level).
func TestNoSecretsLeak(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		canaries := map[string]string{"password": "CANARY-PASSWORD-41", "key": "CANARY-APIKEY-42",
			"clientSecret": "CANARY-CLIENTSECRET-43"}
		bodies := []map[string]any{
			{"name": "P1", "role": "INVOKE", "baseUrl": "https://a.example.com",
				"security": map[string]any{"policy": "BASIC", "username": "u", "password": canaries["password"]}},
			{"name": "P2", "role": "INVOKE", "baseUrl": "https://a.example.com",
				"security": map[string]any{"policy": "API_KEY", "key": canaries["key"], "in": "QUERY", "name": "api_key"}},
			{"name": "P3", "role": "INVOKE", "baseUrl": "https://a.example.com",
				"security": map[string]any{"policy": "OAUTH2_PASSWORD", "tokenUrl": "https://a.example.com/t", "clientId": "c",
					"clientSecret": canaries["clientSecret"], "username": "u", "password": canaries["password"]}},
		}
		var seen bytes.Buffer
		for _, b := range bodies {
			seen.Write(h.do("POST", "/api/v1/connections", h.admin, b).body)
			seen.Write(h.do("GET", "/api/v1/connections/"+b["name"].(string), h.admin, nil).body)
			b["baseUrl"] = "https://moved.example.com" // refused: secrets not re-sent
			seen.Write(h.do("PUT", "/api/v1/connections/"+b["name"].(string), h.admin, b).body)
		}
		seen.Write(h.do("GET", "/api/v1/connections", h.admin, nil).body)
		seen.Write(h.do("GET", "/metrics", "", nil).body)
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
	})
}

// FuzzCreateBody feeds arbitrary bodies to the create decoder and
// validation: never a panic, and every rejection is a 4xx problem.
func FuzzCreateBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"X","role":"INVOKE","baseUrl":"https://api.example.com","security":{"policy":"NONE"}}`,
		`{"name":"X","role":"INVOKE","baseUrl":"https://a.example.com","security":{"policy":"API_KEY","key":"k","in":"QUERY","name":"k"}}`,
		`{"name":"X","role":"TRIGGER","baseUrl":"http://[::1]:80/x?y=1","timeoutMs":100,"security":{"policy":"OAUTH2_AUTHORIZATION_CODE","authorizationUrl":"https://a.example.com/a","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s","scopes":["a"],"extraParams":{"x":"y"}}}`,
		`{"security":null}`, `{"rateLimit":{"requestsPerSecond":1e309}}`, `[`, `{"headers":{"":""}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b connectionBody
		err := decodeJSON(bytes.NewReader(body), &b)
		if err == nil {
			var conn *connections.Connection
			if conn, err = b.toConnection(b.Name); err == nil {
				err = conn.Validate()
			}
		}
		if err != nil {
			if p := problemFor(err); p.status < 400 || p.status >= 500 {
				t.Fatalf("body %q: error %v maps to %d", body, err, p.status)
			}
		}
	})
}
