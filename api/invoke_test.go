package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections/connectionstest"
	"github.com/connmgr/connmgr/security"
)

// echoTarget answers with what it received.
func echoTarget(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "upstream=1")
		json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI,
			"authorization": r.Header.Get("Authorization"), "cookie": r.Header.Get("Cookie"),
			"requestId": r.Header.Get("X-Request-Id"), "body": string(body), "contentType": r.Header.Get("Content-Type")})
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func invokeConn(name, role, baseURL string) map[string]any {
	return map[string]any{"name": name, "role": role, "baseUrl": baseURL,
		"security": map[string]any{"policy": "API_KEY", "key": "CANARY-TARGET-KEY"}}
}

func TestInvoke(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		target, hits := echoTarget(t)
		for _, c := range []map[string]any{
			invokeConn("Conn_REST_Orders_Invoke", "INVOKE", target.URL+"/v2?tenant=acme"),
			invokeConn("Conn_REST_Billing_Invoke", "TRIGGER_INVOKE", target.URL+"/billing"),
			invokeConn("Conn_REST_Orders_Trigger", "TRIGGER", target.URL),
		} {
			if res := h.do("POST", "/api/v1/connections", h.admin, c); res.status != 201 {
				t.Fatalf("create = %d %s", res.status, res.body)
			}
		}
		invoker := h.key(security.RoleInvoker, "Conn_REST_Orders_*")
		echo := func(res *response) map[string]any {
			t.Helper()
			if res.status != 200 {
				t.Fatalf("invoke = %d %s", res.status, res.body)
			}
			return res.json(t)
		}

		got := echo(h.do("GET", "/invoke/Conn_REST_Orders_Invoke/orders/A-17/lines?expand=items&expand=notes", invoker, nil,
			"Cookie", "caller=1", "X-Request-Id", "req-42"))
		if got["uri"] != "/v2/orders/A-17/lines?tenant=acme&expand=items&expand=notes" || got["authorization"] != "Bearer CANARY-TARGET-KEY" ||
			got["cookie"] != "" || got["requestId"] != "req-42" {
			t.Errorf("transparent invoke reached the target as %v", got)
		}
		res := h.do("POST", "/api/v1/connections/Conn_REST_Orders_Invoke/invoke", invoker, map[string]any{
			"method": "POST", "relativeUri": "/orders/{orderId}/notes", "pathParams": map[string]string{"orderId": "a/b?c#d"},
			"queryParams": map[string]any{"expand": []string{"items", "notes"}, "x": "1"}, "body": map[string]any{"note": "hi"}})
		got = echo(res)
		if got["method"] != "POST" || got["uri"] != "/v2/orders/a%2Fb%3Fc%23d/notes?tenant=acme&expand=items&expand=notes&x=1" ||
			got["body"] != `{"note":"hi"}` || got["contentType"] != "application/json" {
			t.Errorf("dynamic invoke reached the target as %v", got)
		}
		if res.header.Get("Set-Cookie") != "" {
			t.Error("the target's Set-Cookie reached the caller")
		}

		before := hits.Load()
		h.checkRequests = false
		tests := []struct {
			name, method, path, key string
			body                    any
			status                  int
			code                    string
		}{
			{"invoker outside its patterns", "GET", "/invoke/Conn_REST_Billing_Invoke/x", invoker, nil, 404, "connection_not_found"},
			{"unknown connection", "GET", "/invoke/Nope/x", h.admin, nil, 404, "connection_not_found"},
			{"trigger-only connection", "GET", "/invoke/Conn_REST_Orders_Trigger/x", invoker, nil, 403, "connection_not_invocable"},
			{"no key", "GET", "/invoke/Conn_REST_Orders_Invoke/x", "", nil, 401, "unauthorized"},
			{"viewer may not invoke", "GET", "/invoke/Conn_REST_Orders_Invoke/x", h.key(security.RoleViewer), nil, 403, "forbidden"},
			{"traversal", "GET", "/invoke/Conn_REST_Orders_Invoke/a/%2e%2e/%2e%2e/admin", invoker, nil, 400, "invalid_relative_uri"},
			{"encoded name", "GET", "/invoke/Conn_REST_Orders_Invoke%2Fx/y", invoker, nil, 400, "invalid_relative_uri"},
			{"TRACE", "TRACE", "/invoke/Conn_REST_Orders_Invoke/x", invoker, nil, 405, "method_not_allowed"},
			{"absolute relative URI", "POST", "/api/v1/connections/Conn_REST_Orders_Invoke/invoke", invoker,
				map[string]any{"relativeUri": "http://evil.example.com/"}, 400, "invalid_relative_uri"},
			{"missing parameter", "POST", "/api/v1/connections/Conn_REST_Orders_Invoke/invoke", invoker,
				map[string]any{"relativeUri": "/orders/{id}"}, 422, "template_mismatch"},
			{"unused parameter", "POST", "/api/v1/connections/Conn_REST_Orders_Invoke/invoke", invoker,
				map[string]any{"relativeUri": "/orders", "pathParams": map[string]string{"id": "1"}}, 422, "template_mismatch"},
			{"bad method", "POST", "/api/v1/connections/Conn_REST_Orders_Invoke/invoke", invoker,
				map[string]any{"method": "TRACE", "relativeUri": "/"}, 422, "validation_failed"},
			{"body and rawBody", "POST", "/api/v1/connections/Conn_REST_Orders_Invoke/invoke", invoker,
				map[string]any{"relativeUri": "/", "body": 1, "rawBody": "x"}, 422, "validation_failed"},
			{"bad query value", "POST", "/api/v1/connections/Conn_REST_Orders_Invoke/invoke", invoker,
				map[string]any{"relativeUri": "/", "queryParams": map[string]any{"a": 1}}, 422, "validation_failed"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h.do(tt.method, tt.path, tt.key, tt.body).problem(t, tt.status, tt.code)
			})
		}
		if hits.Load() != before {
			t.Errorf("refused invokes reached the target %d times", hits.Load()-before)
		}
		if strings.Contains(h.logs.String(), "CANARY-TARGET-KEY") {
			t.Error("the target's API key is in the log")
		}
	})
}

// TestInvokeEgressAndUpstreamErrors: connmgr's own errors on the invoke
// path are problems with stable codes.
func TestInvokeEgressAndUpstreamErrors(t *testing.T) {
	h := newHarness(t, connectionstest.SQLite)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	h.do("POST", "/api/v1/connections", h.admin, invokeConn("Down", "INVOKE", closed.URL))
	h.do("POST", "/api/v1/connections", h.admin, invokeConn("Metadata", "INVOKE", "http://169.254.169.254/latest"))
	h.checkRequests = false
	h.do("GET", "/invoke/Down/x", h.admin, nil).problem(t, 502, "upstream_unreachable")
	p := h.do("GET", "/invoke/Metadata/meta-data", h.admin, nil).problem(t, 403, "egress_denied")
	if !strings.Contains(p["detail"].(string), "CONNMGR_EGRESS_ALLOW") {
		t.Errorf("egress problem does not name the variable: %v", p["detail"])
	}
}

// TestWarmInvokeMakesNoQueries proves the warm invoke path (key check,
// connection lookup, credential) reads nothing from the database.
func TestWarmInvokeMakesNoQueries(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		target, _ := echoTarget(t)
		auth, _ := tokenEndpoint(t, "CANARY-SECRET")
		body := oauthConn("OAuth")
		body["baseUrl"] = target.URL
		sec := body["security"].(map[string]any)
		sec["tokenUrl"], sec["clientSecret"] = auth.URL, "CANARY-SECRET"
		h.do("POST", "/api/v1/connections", h.admin, body)
		h.do("POST", "/api/v1/connections", h.admin, invokeConn("Key", "INVOKE", target.URL))
		invoker := h.key(security.RoleInvoker, "*")
		for _, path := range []string{"/invoke/OAuth/x", "/invoke/Key/x"} {
			if res := h.do("GET", path, invoker, nil); res.status != 200 { // warms the caches
				t.Fatalf("GET %s = %d %s", path, res.status, res.body)
			}
		}
		var queries atomic.Int64
		count := func(*gorm.DB) { queries.Add(1) }
		cb := h.db.Callback()
		for _, p := range []interface {
			Register(string, func(*gorm.DB)) error
		}{cb.Query().Before("*"), cb.Row().Before("*"), cb.Raw().Before("*"), cb.Create().Before("*"),
			cb.Update().Before("*"), cb.Delete().Before("*")} {
			if err := p.Register("test:count", count); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 20; i++ {
			for _, path := range []string{"/invoke/OAuth/x", "/invoke/Key/x"} {
				if res := h.do("GET", path, invoker, nil); res.status != 200 {
					t.Fatalf("GET %s = %d", path, res.status)
				}
			}
		}
		if n := queries.Load(); n != 0 {
			t.Errorf("warm invokes made %d database queries, want 0", n)
		}
		// The counter works: a management call is counted.
		h.do("GET", "/api/v1/connections/Key", h.admin, nil)
		if queries.Load() == 0 {
			t.Error("the query counter counts nothing")
		}
	})
}

func TestInvokeRateLimit(t *testing.T) {
	h := newHarness(t, connectionstest.SQLite)
	target, hits := echoTarget(t)
	c := invokeConn("Limited", "INVOKE", target.URL)
	c["rateLimit"] = map[string]any{"requestsPerSecond": 0.5, "burst": 2}
	h.do("POST", "/api/v1/connections", h.admin, c)
	for i := range 2 {
		if res := h.do("GET", "/invoke/Limited/x", h.admin, nil); res.status != 200 {
			t.Fatalf("call %d = %d", i, res.status)
		}
	}
	res := h.do("GET", "/invoke/Limited/x", h.admin, nil)
	res.problem(t, 429, "rate_limited")
	if ra := res.header.Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After = %q, want 2", ra)
	}
	if hits.Load() != 2 {
		t.Errorf("the target got %d calls, want 2", hits.Load())
	}
}
