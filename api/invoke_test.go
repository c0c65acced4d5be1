package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store/storetest"
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
			"requestId": r.Header.Get("X-Request-Id"), "body": string(body), "contentType": r.Header.Get("Content-Type"),
			"via": r.Header.Values("Via")})
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
			h.create(c)
		}
		invoker := h.key(access.RoleInvoker, "Conn_REST_Orders_*")
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
		if via, _ := got["via"].([]any); len(via) != 1 || !strings.Contains(via[0].(string), "connmgr") {
			t.Errorf("the target got Via %v, want connmgr's entry", got["via"])
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
		dynamic := "/api/v1/connections/Conn_REST_Orders_Invoke/invoke"
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
			{"viewer may not invoke", "GET", "/invoke/Conn_REST_Orders_Invoke/x", h.key(access.RoleViewer), nil, 403, "forbidden"},
			{"traversal", "GET", "/invoke/Conn_REST_Orders_Invoke/a/%2e%2e/%2e%2e/admin", invoker, nil, 400, "invalid_relative_uri"},
			{"encoded name", "GET", "/invoke/Conn_REST_Orders_Invoke%2Fx/y", invoker, nil, 400, "invalid_relative_uri"},
			{"TRACE", "TRACE", "/invoke/Conn_REST_Orders_Invoke/x", invoker, nil, 405, "method_not_allowed"},
			{"absolute relative URI", "POST", dynamic, invoker, map[string]any{"relativeUri": "http://evil.example.com/"}, 400, "invalid_relative_uri"},
			// #8.2: a parameter whose decoded value climbs out of the base path.
			{"parameter with a dot segment", "POST", dynamic, invoker,
				map[string]any{"relativeUri": "/{f}", "pathParams": map[string]string{"f": "../admin/x"}}, 400, "invalid_relative_uri"},
			{"parameter with an encoded dot segment", "POST", dynamic, invoker,
				map[string]any{"relativeUri": "/{f}", "pathParams": map[string]string{"f": "%2e%2e%2fadmin"}}, 400, "invalid_relative_uri"},
			{"parameter that is a dot segment with a parameter", "POST", dynamic, invoker,
				map[string]any{"relativeUri": "/{f}/x", "pathParams": map[string]string{"f": "..;"}}, 400, "invalid_relative_uri"},
			{"missing parameter", "POST", dynamic, invoker, map[string]any{"relativeUri": "/orders/{id}"}, 422, "template_mismatch"},
			{"unused parameter", "POST", dynamic, invoker,
				map[string]any{"relativeUri": "/orders", "pathParams": map[string]string{"id": "1"}}, 422, "template_mismatch"},
			{"bad method", "POST", dynamic, invoker, map[string]any{"method": "TRACE", "relativeUri": "/"}, 422, "validation_failed"},
			{"body and rawBody", "POST", dynamic, invoker, map[string]any{"relativeUri": "/", "body": 1, "rawBody": "x"}, 422, "validation_failed"},
			{"bad query value", "POST", dynamic, invoker, map[string]any{"relativeUri": "/", "queryParams": map[string]any{"a": 1}}, 422, "validation_failed"},
			// #8.12: the merged query is bounded.
			{"query over 16 KiB", "POST", dynamic, invoker,
				map[string]any{"relativeUri": "/", "queryParams": map[string]any{"a": strings.Repeat("x", 17<<10)}}, 400, "invalid_relative_uri"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h.on(t).do(tt.method, tt.path, tt.key, tt.body).problem(t, tt.status, tt.code)
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
	h := newHarness(t, storetest.SQLite)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	h.create(invokeConn("Down", "INVOKE", closed.URL))
	h.create(invokeConn("Metadata", "INVOKE", "http://169.254.169.254/latest"))
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
		h.create(body)
		h.create(invokeConn("Key", "INVOKE", target.URL))
		invoker := h.key(access.RoleInvoker, "*")
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
		for range 20 {
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
	h := newHarness(t, storetest.SQLite)
	target, hits := echoTarget(t)
	c := invokeConn("Limited", "INVOKE", target.URL)
	c["rateLimit"] = map[string]any{"requestsPerSecond": 0.5, "burst": 2}
	h.create(c)
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

// TestInvokeLoop (#8.5): an invoke that already passed through connmgr
// MaxHops times is 508 loop_detected, in both forms; and a connection whose
// target is connmgr's own invoke route ends after a few hops instead of
// recursing.
func TestInvokeLoop(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	target, hits := echoTarget(t)
	h.create(invokeConn("Orders", "INVOKE", target.URL))
	h.checkRequests = false
	twice, thrice := "1.1 connmgr, 1.1 connmgr", "1.1 proxy.example, 1.1 connmgr, 1.1 connmgr, 1.1 connmgr"
	if res := h.do("GET", "/invoke/Orders/x", h.admin, nil, "Via", twice); res.status != 200 {
		t.Fatalf("an invoke with two connmgr hops = %d %s, want it passed on", res.status, res.body)
	}
	for _, res := range []*response{
		h.do("GET", "/invoke/Orders/x", h.admin, nil, "Via", thrice),
		h.do("POST", "/api/v1/connections/Orders/invoke", h.admin, map[string]any{"relativeUri": "/x"}, "Via", thrice),
	} {
		res.problem(t, 508, "loop_detected")
		if got := res.header.Get("Connmgr-Error"); got != "loop_detected" {
			t.Errorf("Connmgr-Error = %q, want loop_detected", got)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the target got %d calls, want 1", n)
	}

	// The real loop: connmgr on a socket, and a connection whose base URL
	// is that socket's /invoke/Self with an admin key as its API key.
	var inbound atomic.Int64
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Should the loop check fail, this ends the recursion before it
		// takes the machine's file descriptors.
		if inbound.Add(1) > 10 {
			http.Error(w, "the test's loop breaker", http.StatusServiceUnavailable)
			return
		}
		h.g.API.ServeHTTP(w, r)
	}))
	t.Cleanup(live.Close)
	self := invokeConn("Self", "INVOKE", live.URL+"/invoke/Self")
	self["security"] = map[string]any{"policy": "API_KEY", "key": h.admin}
	self["timeoutMs"] = 5000
	h.create(self)
	req, _ := http.NewRequest("GET", live.URL+"/invoke/Self/x", nil)
	req.Header.Set("Authorization", "Bearer "+h.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusLoopDetected || !strings.Contains(string(body), "loop_detected") {
		t.Errorf("a connection that invokes itself = %d %s, want 508 loop_detected", res.StatusCode, body)
	}
	// The caller's request and connmgr's hops: 1 + MaxHops.
	if n := inbound.Load(); n != 4 {
		t.Errorf("connmgr received %d requests for one call, want 4", n)
	}
}

// TestInvokeKeepsSecretsOutOfHeaders (#8.3): with API_KEY in the query, a
// target that redirects to a URL holding the key (as nginx does when it
// adds a trailing slash), links to it or echoes it in other headers gives
// the caller none of it: the key's parameter is taken out of Location,
// Content-Location and Link, and a header that still holds the key, raw or
// URL-encoded, is dropped.
func TestInvokeKeepsSecretsOutOfHeaders(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	const key = "CANARY-qk+/=:1"
	var got atomic.Value
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.URL.Query().Get("api_key"))
		self := "http://" + r.Host + r.URL.Path + "/?" + r.URL.RawQuery
		w.Header().Set("Location", self)
		w.Header().Set("Content-Location", r.URL.Path+"?"+r.URL.RawQuery)
		w.Header().Set("Link", "<"+self+">; rel=\"canonical\", <"+r.URL.Path+"?page=2&"+r.URL.RawQuery+">; rel=\"next\"")
		w.Header().Set("Cache-Control", "private, key="+r.URL.Query().Get("api_key"))
		w.Header().Set("ETag", `"`+url.QueryEscape(r.URL.Query().Get("api_key"))+`"`)
		w.Header().Set("Warning", `199 - "`+url.PathEscape(r.URL.Query().Get("api_key"))+`"`)
		w.Header().Set("X-Debug-Key", r.URL.Query().Get("api_key"))
		w.WriteHeader(http.StatusMovedPermanently)
	}))
	t.Cleanup(target.Close)
	c := invokeConn("Weather", "INVOKE", target.URL+"/v1?units=metric")
	c["security"] = map[string]any{"policy": "API_KEY", "key": key, "in": "QUERY", "name": "api_key"}
	h.create(c)
	invoker := h.key(access.RoleInvoker, "Weather")
	for _, res := range []*response{
		h.do("GET", "/invoke/Weather/forecast?city=Oslo", invoker, nil),
		h.do("POST", "/api/v1/connections/Weather/invoke", invoker, map[string]any{"relativeUri": "/forecast?city=Oslo"}),
	} {
		if res.status != http.StatusMovedPermanently {
			t.Fatalf("invoke = %d %s, want the target's 301", res.status, res.body)
		}
		if got.Load() != key {
			t.Fatalf("the target got api_key %q, want the key", got.Load())
		}
		loc, _ := url.Parse(res.header.Get("Location"))
		if loc == nil || loc.Path != "/v1/forecast/" || loc.Query().Get("city") != "Oslo" || loc.Query().Get("units") != "metric" || loc.Query().Has("api_key") {
			t.Errorf("Location = %q, want the target's URL with city and units but no api_key", res.header.Get("Location"))
		}
		if cl := res.header.Get("Content-Location"); cl == "" || strings.Contains(cl, "api_key") {
			t.Errorf("Content-Location = %q, want it without api_key", cl)
		}
		if l := res.header.Get("Link"); !strings.Contains(l, `rel="next"`) || !strings.Contains(l, "page=2") || strings.Contains(l, "api_key") {
			t.Errorf("Link = %q, want both links without api_key", l)
		}
		for name, vs := range res.header {
			for _, v := range vs {
				for _, form := range []string{key, url.QueryEscape(key), url.PathEscape(key)} {
					if strings.Contains(v, form) {
						t.Errorf("header %s = %q holds the key (as %q)", name, v, form)
					}
				}
			}
		}
	}
}
