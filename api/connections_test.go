package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
	"github.com/connmgr/connmgr/security"
)

// forEngine runs f on SQLite and, when configured, PostgreSQL.
func forEngine(t *testing.T, f func(t *testing.T, h *harness)) {
	for _, e := range connectionstest.Engines(t) {
		t.Run(string(e), func(t *testing.T) { f(t, newHarness(t, e)) })
	}
}

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
		stored, err := h.store.Get(context.Background(), name)
		if err != nil || stored.Security.ClientSecret.Reveal() != "cs-1" {
			t.Fatalf("stored secret after PUT of masked value = %v, %v; want kept", stored, err)
		}

		// A stale If-Match loses.
		h.do("PUT", "/api/v1/connections/"+name, h.admin, doc, "If-Match", `"1"`).problem(t, 412, "precondition_failed")
		h.do("DELETE", "/api/v1/connections/"+name, h.admin, nil, "If-Match", `"1"`).problem(t, 412, "precondition_failed")
		h.do("PUT", "/api/v1/connections/"+name, h.admin, doc, "If-Match", `W/"2"`).problem(t, 400, "malformed_request")

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
		ctx := context.Background()
		h.do("POST", "/api/v1/connections", h.admin, basicConn("Basic"))
		reveal := func() string {
			c, err := h.store.Get(ctx, "Basic")
			if err != nil {
				t.Fatal(err)
			}
			return c.Security.Password.Reveal()
		}
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
			{"host change without secret", map[string]any{"policy": "BASIC", "username": "svc"}, "https://evil.example.net/v3", 422, "baseUrl", "pw-2"},
			{"port change without secret", map[string]any{"policy": "BASIC", "username": "svc", "password": "********"}, "https://api.example.com:8443/v3", 422, "baseUrl", "pw-2"},
			{"host change with secret", map[string]any{"policy": "BASIC", "username": "svc", "password": "pw-3"}, "https://other.example.net/v3", 200, "", "pw-3"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				body := basicConn("Basic")
				body["security"], body["baseUrl"] = tt.security, tt.baseURL
				res := h.do("PUT", "/api/v1/connections/Basic", h.admin, body)
				if tt.status != 200 {
					p := res.problem(t, tt.status, "validation_failed")
					errs := p["errors"].([]any)
					if errs[0].(map[string]any)["field"] != tt.field {
						t.Errorf("errors = %v, want field %s", errs, tt.field)
					}
				} else if res.status != 200 {
					t.Fatalf("PUT = %d %s", res.status, res.body)
				}
				if strings.Contains(string(res.body), "pw-") {
					t.Errorf("response leaks the password: %s", res.body)
				}
				if got := reveal(); got != tt.want {
					t.Errorf("stored password = %q, want %q", got, tt.want)
				}
			})
		}

		// The token URL's host is guarded too.
		h.do("POST", "/api/v1/connections", h.admin, oauthConn("OAuth"))
		body := oauthConn("OAuth")
		sec := body["security"].(map[string]any)
		delete(sec, "clientSecret")
		sec["tokenUrl"] = "https://attacker.example.net/token"
		p := h.do("PUT", "/api/v1/connections/OAuth", h.admin, body).problem(t, 422, "validation_failed")
		if !strings.Contains(string(mustJSON(t, p)), "security.tokenUrl") {
			t.Errorf("problem %v does not name security.tokenUrl", p)
		}
		// A change of policy takes no secret along that the new policy lacks.
		body = basicConn("OAuth")
		body["baseUrl"] = "https://api.example.com/v2"
		body["security"] = map[string]any{"policy": "API_KEY", "key": "k-1"}
		if res := h.do("PUT", "/api/v1/connections/OAuth", h.admin, body); res.status != 200 {
			t.Fatalf("policy change = %d %s", res.status, res.body)
		}
		c, _ := h.store.Get(ctx, "OAuth")
		if c.Security.ClientSecret.IsSet() || c.Security.Key.Reveal() != "k-1" || *c.Security.ValuePrefix != "Bearer " {
			t.Errorf("after policy change security = %+v", c.Security)
		}
	})
}

func TestConfigChangeResetsStatus(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		h.do("POST", "/api/v1/connections", h.admin, basicConn("S"))
		c, _ := h.store.Get(ctx, "S")
		if _, err := h.store.SetStatus(ctx, c.ID, connections.StatusConfigured, connections.NewTestResult(c.CreatedAt, true, "ok")); err != nil {
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
			if res := h.do("POST", "/api/v1/connections", h.admin, b); res.status != 201 {
				t.Fatalf("create = %d %s", res.status, res.body)
			}
		}
		names := func(res *response) []string {
			var out []string
			for _, it := range res.json(t)["items"].([]any) {
				out = append(out, it.(map[string]any)["name"].(string))
			}
			return out
		}
		var all []string
		cursor := ""
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
		forged := cursors{[]byte("another key")}.encode("connections", "C02")
		for _, q := range []string{"cursor=abc", "cursor=" + url.QueryEscape(forged), "cursor=" + strings.Repeat("A", 2000)} {
			h.do("GET", "/api/v1/connections?"+q, h.admin, nil).problem(t, 400, "invalid_cursor")
		}
		for _, q := range []string{"limit=0", "limit=501", "limit=99999999999999999999", "limit=x", "role=ADMIN",
			"policy=KERBEROS", "status=OK", "sort=name", "q=" + strings.Repeat("x", 101)} {
			h.do("GET", "/api/v1/connections?"+q, h.admin, nil).problem(t, 400, "malformed_request")
		}
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAccessControl(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		h.do("POST", "/api/v1/connections", h.admin, basicConn("Conn_REST_Orders_A"))
		h.do("POST", "/api/v1/connections", h.admin, basicConn("Conn_REST_Billing_A"))
		invoker := h.key(security.RoleInvoker, "Conn_REST_Orders_*")
		viewer, developer := h.key(security.RoleViewer), h.key(security.RoleDeveloper)

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
			{"viewer may not delete", "DELETE", "/api/v1/connections/Conn_REST_Orders_A", viewer, nil, 403},
			{"viewer may not list keys", "GET", "/api/v1/apikeys", viewer, nil, 403},
			{"developer creates", "POST", "/api/v1/connections", developer, basicConn("D"), 201},
			{"developer may not create keys", "POST", "/api/v1/apikeys", developer, map[string]any{"name": "x", "role": "admin"}, 403},
			{"invoker may not list", "GET", "/api/v1/connections", invoker, nil, 403},
			{"invoker may not read its own", "GET", "/api/v1/connections/Conn_REST_Orders_A", invoker, nil, 403},
			{"invoker does not see others", "GET", "/api/v1/connections/Conn_REST_Billing_A", invoker, nil, 404},
			{"invoker does not see others on delete", "DELETE", "/api/v1/connections/Conn_REST_Billing_A", invoker, nil, 404},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := h.do(tt.method, tt.path, tt.key, tt.body)
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

func TestAPIKeys(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		res := h.do("POST", "/api/v1/apikeys", h.admin, map[string]any{"name": "orders-integration", "role": "invoker",
			"connections": []string{"Conn_REST_Orders_*"}})
		if res.status != 201 {
			t.Fatalf("create key = %d %s", res.status, res.body)
		}
		created := res.json(t)
		key, id := created["key"].(string), created["id"].(string)
		if !strings.HasPrefix(key, security.KeyPrefix) || len(key) < 40 || !strings.HasPrefix(key, created["prefix"].(string)) {
			t.Fatalf("key %q, prefix %v", key, created["prefix"])
		}
		list := h.do("GET", "/api/v1/apikeys", h.admin, nil)
		if strings.Contains(string(list.body), key) || !strings.Contains(string(list.body), id) {
			t.Fatalf("list shows the key or misses it: %s", list.body)
		}
		for _, v := range connectionstest.TableText(t, h.db.DB, "api_keys") {
			if strings.Contains(v, key) {
				t.Error("the key is stored in plaintext")
			}
		}
		admin2 := h.do("POST", "/api/v1/apikeys", h.admin, map[string]any{"name": "second admin", "role": "admin"}).json(t)["key"].(string)
		if res := h.do("GET", "/api/v1/apikeys", admin2, nil); res.status != 200 {
			t.Fatalf("new admin key = %d", res.status)
		}
		if res := h.do("DELETE", "/api/v1/apikeys/"+id, admin2, nil); res.status != 204 {
			t.Fatalf("revoke = %d %s", res.status, res.body)
		}
		h.do("DELETE", "/api/v1/apikeys/"+id, admin2, nil).problem(t, 404, "api_key_not_found")
		if strings.Contains(string(h.do("GET", "/api/v1/apikeys", h.admin, nil).body), id) {
			t.Error("revoked key still listed")
		}
		// Revoking takes effect at once, also for a key already cached.
		adminID := h.do("GET", "/api/v1/apikeys", admin2, nil).json(t)["items"].([]any)[0].(map[string]any)["id"].(string)
		h.do("DELETE", "/api/v1/apikeys/"+adminID, h.admin, nil)
		h.do("GET", "/api/v1/apikeys", admin2, nil).problem(t, 401, "unauthorized")

		h.checkRequests = false
		bad := []map[string]any{
			{"name": "x", "role": "invoker"},
			{"name": "x", "role": "root"},
			{"name": "", "role": "viewer"},
			{"name": "x", "role": "viewer", "connections": []string{"A*"}},
			{"name": "x", "role": "invoker", "connections": []string{"A/../B"}},
			{"name": "x", "role": "viewer", "expiresAt": "2001-01-01T00:00:00Z"},
		}
		for _, b := range bad {
			h.do("POST", "/api/v1/apikeys", h.admin, b).problem(t, 422, "validation_failed")
		}
	})
}

func TestExpiredKey(t *testing.T) {
	h := newHarness(t, connectionstest.SQLite)
	res := h.do("POST", "/api/v1/apikeys", h.admin, map[string]any{"name": "short", "role": "viewer",
		"expiresAt": "2099-01-01T00:00:00Z"})
	key := res.json(t)["key"].(string)
	if res := h.do("GET", "/api/v1/connections", key, nil); res.status != 200 {
		t.Fatalf("key before expiry = %d", res.status)
	}
	h.keys.Now = func() time.Time { return time.Date(2099, 1, 1, 0, 0, 1, 0, time.UTC) }
	h.do("GET", "/api/v1/connections", key, nil).problem(t, 401, "unauthorized")
}
