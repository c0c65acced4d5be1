package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

func basicConn(name string) map[string]any {
	return map[string]any{
		"name": name, "role": "INVOKE", "baseUrl": "https://api.example.com/v2",
		"keywords": []string{"orders"}, "description": "Orders API",
		"security": map[string]any{"policy": "BASIC", "username": "svc", "password": "pw-1"},
	}
}

func oauthConn(name string) map[string]any {
	return map[string]any{
		"name": name, "role": "TRIGGER_INVOKE", "baseUrl": "https://api.example.com/v2",
		"headers": map[string]string{"X-Api-Version": "2"},
		"security": map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": "https://auth.example.com/token",
			"clientId": "orders-client", "clientSecret": "cs-1", "scopes": []string{"orders.read"}},
	}
}

// create creates a connection and fails the test unless it gets 201.
func (h *harness) create(body map[string]any) map[string]any {
	h.t.Helper()
	res := h.do("POST", "/api/v1/connections", h.admin, body)
	if res.status != http.StatusCreated {
		h.t.Fatalf("create %v = %d %s", body["name"], res.status, res.body)
	}
	return res.json(h.t)
}

func TestConnectionLifecycle(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		name := "Conn_REST_Orders_TriggerInvoke_OAuth"
		res := h.do("POST", "/api/v1/connections", h.admin, oauthConn(name))
		if res.status != http.StatusCreated {
			t.Fatalf("create = %d %s", res.status, res.body)
		}
		if loc := res.header.Get("Location"); loc != "/api/v1/connections/"+name {
			t.Errorf("Location = %q", loc)
		}
		if et := res.header.Get("ETag"); et != `"1"` {
			t.Errorf("ETag = %q, want \"1\"", et)
		}
		c := res.json(t)
		sec := c["security"].(map[string]any)
		for field, want := range map[string]any{"identifier": strings.ToUpper(name), "status": "DRAFT", "createdBy": "test-admin",
			"timeoutMs": 30000.0, "version": 1.0} {
			if c[field] != want {
				t.Errorf("%s = %v, want %v", field, c[field], want)
			}
		}
		if sec["clientSecret"] != connections.Mask || sec["clientAuth"] != "BASIC_HEADER" {
			t.Errorf("security = %v, want masked secret and default clientAuth", sec)
		}
		if c["statusSince"] == nil {
			t.Error("a new connection has no statusSince")
		}

		res = h.do("GET", "/api/v1/connections/"+name, h.admin, nil)
		if res.status != 200 || res.header.Get("ETag") != `"1"` {
			t.Fatalf("get = %d %s", res.status, res.body)
		}

		// Replace with the document read, changing the description.
		doc := res.json(t)
		doc["description"] = "changed"
		res = h.do("PUT", "/api/v1/connections/"+name, h.admin, doc, "If-Match", `"1"`)
		if res.status != 200 || res.header.Get("ETag") != `"2"` || res.json(t)["description"] != "changed" {
			t.Fatalf("put = %d %s", res.status, res.body)
		}
		if got := h.secret(name, "clientSecret"); got != "cs-1" {
			t.Fatalf("stored secret after PUT of the masked value = %q, want kept", got)
		}

		// A stale If-Match loses; so does a weak one (RFC 9110: weak tags
		// never match for If-Match).
		h.do("PUT", "/api/v1/connections/"+name, h.admin, doc, "If-Match", `"1"`).problem(t, 412, "precondition_failed")
		h.do("DELETE", "/api/v1/connections/"+name, h.admin, nil, "If-Match", `"1"`).problem(t, 412, "precondition_failed")
		h.do("PUT", "/api/v1/connections/"+name, h.admin, doc, "If-Match", `W/"2"`).problem(t, 412, "precondition_failed")

		// The name is immutable and unique (in any case).
		doc["name"] = "Other"
		h.do("PUT", "/api/v1/connections/"+name, h.admin, doc).problem(t, 422, "validation_failed")
		h.do("POST", "/api/v1/connections", h.admin, oauthConn(name)).problem(t, 409, "connection_exists")
		h.do("POST", "/api/v1/connections", h.admin, oauthConn(strings.ToLower(name))).problem(t, 409, "connection_exists")

		if res := h.do("DELETE", "/api/v1/connections/"+name, h.admin, nil, "If-Match", `"2"`); res.status != 204 {
			t.Fatalf("delete = %d %s", res.status, res.body)
		}
		h.do("GET", "/api/v1/connections/"+name, h.admin, nil).problem(t, 404, "connection_not_found")
		h.do("DELETE", "/api/v1/connections/"+name, h.admin, nil).problem(t, 404, "connection_not_found")
		h.do("PUT", "/api/v1/connections/"+name, h.admin, oauthConn(name)).problem(t, 404, "connection_not_found")
	})
}

func TestSecretsAreWriteOnly(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		h.create(basicConn("Basic"))
		tests := []struct {
			name     string
			security map[string]any
			baseURL  string
			status   int
			field    string
			want     string
		}{
			{"omitted keeps", map[string]any{"policy": "BASIC", "username": "svc"}, "https://api.example.com/v3", 200, "", "pw-1"},
			{"mask keeps", map[string]any{"policy": "BASIC", "username": "svc", "password": "********"}, "https://api.example.com/v3", 200, "", "pw-1"},
			{"new value replaces", map[string]any{"policy": "BASIC", "username": "svc", "password": "pw-2"}, "https://api.example.com/v3", 200, "", "pw-2"},
			// #8.6: a kept secret may go only to the origins it went to.
			{"host change without secret", map[string]any{"policy": "BASIC", "username": "svc"}, "https://evil.example.net/v3", 422, "security.password", "pw-2"},
			{"port change without secret", map[string]any{"policy": "BASIC", "username": "svc", "password": "********"}, "https://api.example.com:8443/v3", 422, "security.password", "pw-2"},
			{"scheme change without secret", map[string]any{"policy": "BASIC", "username": "svc"}, "http://api.example.com/v3", 422, "security.password", "pw-2"},
			{"host change with secret", map[string]any{"policy": "BASIC", "username": "svc", "password": "pw-3"}, "https://other.example.net/v3", 200, "", "pw-3"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := h.on(t)
				body := basicConn("Basic")
				body["security"], body["baseUrl"] = tt.security, tt.baseURL
				res := h.do("PUT", "/api/v1/connections/Basic", h.admin, body)
				if tt.status != 200 {
					p := res.problem(t, tt.status, "validation_failed")
					if !slices.Contains(fields(p), tt.field) {
						t.Errorf("errors = %v, want field %s", p["errors"], tt.field)
					}
				} else if res.status != 200 {
					t.Fatalf("PUT = %d %s", res.status, res.body)
				}
				if strings.Contains(string(res.body), "pw-") {
					t.Errorf("response leaks the password: %s", res.body)
				}
				if got := h.secret("Basic", "password"); got != tt.want {
					t.Errorf("stored password = %q, want %q", got, tt.want)
				}
			})
		}

		// The token URL's origin is guarded too.
		h.create(oauthConn("OAuth"))
		body := oauthConn("OAuth")
		sec := body["security"].(map[string]any)
		delete(sec, "clientSecret")
		sec["tokenUrl"] = "https://attacker.example.net/token"
		p := h.do("PUT", "/api/v1/connections/OAuth", h.admin, body).problem(t, 422, "validation_failed")
		if !slices.Contains(fields(p), "security.clientSecret") {
			t.Errorf("problem %v does not name security.clientSecret", p)
		}
		// So is the base URL's for a policy that mints tokens with them.
		body = oauthConn("OAuth")
		delete(body["security"].(map[string]any), "clientSecret")
		body["baseUrl"] = "https://elsewhere.example.net"
		p = h.do("PUT", "/api/v1/connections/OAuth", h.admin, body).problem(t, 422, "validation_failed")
		if !slices.Contains(fields(p), "baseUrl") {
			t.Errorf("problem %v does not name baseUrl", p)
		}
		// A change of policy takes no secret along that the new policy lacks.
		body = basicConn("OAuth")
		body["baseUrl"] = "https://api.example.com/v2"
		body["security"] = map[string]any{"policy": "API_KEY", "key": "k-1"}
		if res := h.do("PUT", "/api/v1/connections/OAuth", h.admin, body); res.status != 200 {
			t.Fatalf("policy change = %d %s", res.status, res.body)
		}
		c, err := h.g.Store.Get(context.Background(), "OAuth")
		if err != nil {
			t.Fatal(err)
		}
		k, ok := c.Security.(*security.APIKey)
		if !ok || k.Key.Reveal() != "k-1" || k.ValuePrefix == nil || *k.ValuePrefix != "Bearer " || len(c.AllSecrets()) != 1 {
			t.Errorf("after the policy change security = %s with %d secrets", security.Encode(c.Security), len(c.AllSecrets()))
		}
	})
}

func TestConfigChangeResetsStatus(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		h.create(basicConn("S"))
		c, err := h.g.Store.Get(ctx, "S")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.g.Service.SetStatus(ctx, c, connections.StatusConfigured, "", connections.NewTestResult(c.CreatedAt, true, "ok")); err != nil {
			t.Fatal(err)
		}
		body := basicConn("S")
		body["description"] = "only the description"
		if got := h.do("PUT", "/api/v1/connections/S", h.admin, body).json(t); got["status"] != "CONFIGURED" || got["lastTest"] == nil {
			t.Errorf("after a description change status = %v lastTest = %v, want CONFIGURED and kept", got["status"], got["lastTest"])
		}
		body["security"] = map[string]any{"policy": "BASIC", "username": "other"}
		if got := h.do("PUT", "/api/v1/connections/S", h.admin, body).json(t); got["status"] != "DRAFT" || got["lastTest"] != nil {
			t.Errorf("after a credential change status = %v lastTest = %v, want DRAFT and none", got["status"], got["lastTest"])
		}
	})
}

func TestListFiltersAndPages(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		for i := range 7 {
			b := basicConn(fmt.Sprintf("C%02d", i))
			if i%2 == 0 {
				b = oauthConn(fmt.Sprintf("C%02d", i))
			}
			if i == 5 {
				b["keywords"] = []string{"Billing_100%"}
			}
			h.create(b)
		}
		names := func(res *response) []string {
			var out []string
			for _, it := range res.json(t)["items"].([]any) {
				out = append(out, it.(map[string]any)["name"].(string))
			}
			return out
		}
		var all []string
		cursor, first := "", ""
		for page := 0; ; page++ {
			q := "/api/v1/connections?limit=3"
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			res := h.do("GET", q, h.admin, nil)
			all = append(all, names(res)...)
			next, _ := res.json(t)["nextCursor"].(string)
			if next == "" {
				if page != 2 {
					t.Errorf("last page is page %d, want 2", page)
				}
				break
			}
			if first == "" {
				first = next
			}
			cursor = next
		}
		if got := strings.Join(all, ","); got != "C00,C01,C02,C03,C04,C05,C06" {
			t.Errorf("pages = %s", got)
		}
		tests := []struct{ query, want string }{
			{"role=INVOKE", "C01,C03,C05"},
			{"policy=OAUTH2_CLIENT_CREDENTIALS", "C00,C02,C04,C06"},
			{"status=DRAFT&role=TRIGGER_INVOKE&limit=2", "C00,C02"},
			{"q=c0", "C00,C01,C02,C03,C04,C05,C06"},
			{"q=billing_100%25", "C05"},
			{"q=_100", "C05"},
			{"q=nothing", ""},
			{"status=ERROR", ""},
		}
		for _, tt := range tests {
			if got := strings.Join(names(h.do("GET", "/api/v1/connections?"+tt.query, h.admin, nil)), ","); got != tt.want {
				t.Errorf("list?%s = %q, want %q", tt.query, got, tt.want)
			}
		}
		h.checkRequests = false
		tampered := []byte(first)
		tampered[len(tampered)-1] ^= 1
		for _, q := range []string{"cursor=abc", "cursor=" + url.QueryEscape(string(tampered)), "cursor=" + strings.Repeat("A", 2000)} {
			h.do("GET", "/api/v1/connections?"+q, h.admin, nil).problem(t, 400, "invalid_cursor")
		}
		for _, q := range []string{"limit=0", "limit=501", "limit=99999999999999999999", "limit=x", "role=ADMIN",
			"policy=KERBEROS", "status=OK", "sort=name", "q=" + strings.Repeat("x", 101)} {
			h.do("GET", "/api/v1/connections?"+q, h.admin, nil).problem(t, 400, "malformed_request")
		}
	})
}

func TestAccessControl(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		h.create(basicConn("Conn_REST_Orders_A"))
		h.create(basicConn("Conn_REST_Billing_A"))
		invoker := h.key(access.RoleInvoker, "Conn_REST_Orders_*")
		viewer, developer := h.key(access.RoleViewer), h.key(access.RoleDeveloper)

		h.do("GET", "/api/v1/connections", "", nil).problem(t, 401, "unauthorized")
		if res := h.do("GET", "/api/v1/connections", "", nil); res.header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
		h.do("GET", "/api/v1/connections", "cmk_not-a-key", nil).problem(t, 401, "unauthorized")
		h.do("GET", "/api/v1/connections", strings.Repeat("x", 1000), nil).problem(t, 401, "unauthorized")
		tests := []struct {
			name, method, path, key string
			body                    any
			status                  int
		}{
			{"viewer lists", "GET", "/api/v1/connections", viewer, nil, 200},
			{"viewer reads", "GET", "/api/v1/connections/Conn_REST_Orders_A", viewer, nil, 200},
			{"viewer may not create", "POST", "/api/v1/connections", viewer, basicConn("V"), 403},
			{"viewer may not patch", "PATCH", "/api/v1/connections/Conn_REST_Orders_A", viewer, map[string]any{"description": "x"}, 403},
			{"viewer may not delete", "DELETE", "/api/v1/connections/Conn_REST_Orders_A", viewer, nil, 403},
			{"viewer may not list keys", "GET", "/api/v1/apikeys", viewer, nil, 403},
			{"developer creates", "POST", "/api/v1/connections", developer, basicConn("D"), 201},
			{"developer patches", "PATCH", "/api/v1/connections/D", developer, map[string]any{"description": "x"}, 200},
			{"developer may not create keys", "POST", "/api/v1/apikeys", developer, map[string]any{"name": "x", "role": "admin"}, 403},
			{"invoker may not list", "GET", "/api/v1/connections", invoker, nil, 403},
			{"invoker may not read its own", "GET", "/api/v1/connections/Conn_REST_Orders_A", invoker, nil, 403},
			{"invoker does not see others", "GET", "/api/v1/connections/Conn_REST_Billing_A", invoker, nil, 404},
			{"invoker does not see others on patch", "PATCH", "/api/v1/connections/Conn_REST_Billing_A", invoker, map[string]any{"description": "x"}, 404},
			{"invoker does not see others on delete", "DELETE", "/api/v1/connections/Conn_REST_Billing_A", invoker, nil, 404},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var hdr []string
				if tt.method == "PATCH" {
					hdr = []string{"Content-Type", "application/merge-patch+json"}
				}
				res := h.on(t).do(tt.method, tt.path, tt.key, tt.body, hdr...)
				if res.status != tt.status {
					t.Fatalf("%s %s = %d, want %d: %s", tt.method, tt.path, res.status, tt.status, res.body)
				}
				if tt.status == 404 {
					res.problem(t, 404, "connection_not_found")
				}
			})
		}
	})
}
