package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store/storetest"
)

func TestAPIKeys(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		res := h.do("POST", "/api/v1/apikeys", h.admin, map[string]any{"name": "orders-integration", "role": "invoker",
			"connections": []string{"Conn_REST_Orders_*"}})
		if res.status != 201 {
			t.Fatalf("create key = %d %s", res.status, res.body)
		}
		created := res.json(t)
		key, id := created["key"].(string), created["id"].(string)
		if !strings.HasPrefix(key, access.KeyPrefix) || len(key) < 40 || !strings.HasPrefix(key, created["prefix"].(string)) {
			t.Fatalf("key %q, prefix %v", key, created["prefix"])
		}
		if res.header.Get("Location") != "/api/v1/apikeys/"+id {
			t.Errorf("Location = %q", res.header.Get("Location"))
		}
		list := h.do("GET", "/api/v1/apikeys", h.admin, nil)
		if strings.Contains(string(list.body), key) || !strings.Contains(string(list.body), id) {
			t.Fatalf("list shows the key or misses it: %s", list.body)
		}
		for _, v := range storetest.TableText(t, h.db.DB, "api_keys") {
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
		h.do("GET", "/invoke/Conn_REST_Orders_A/x", key, nil).problem(t, 401, "unauthorized")
		// Revoking takes effect at once, also for a key already cached.
		adminID := h.do("GET", "/api/v1/apikeys", admin2, nil).json(t)["items"].([]any)[0].(map[string]any)["id"].(string)
		h.do("DELETE", "/api/v1/apikeys/"+adminID, h.admin, nil)
		h.do("GET", "/api/v1/apikeys", admin2, nil).problem(t, 401, "unauthorized")

		audit := h.do("GET", "/api/v1/audit?action=apikey.revoked", h.admin, nil).json(t)["items"].([]any)
		if len(audit) != 2 {
			t.Errorf("apikey.revoked events = %d, want 2", len(audit))
		}

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
		for _, k := range []string{key, admin2} {
			if strings.Contains(h.logs.String(), k) {
				t.Error("an API key is in the log")
			}
		}
	})
}

func TestExpiredKey(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	res := h.do("POST", "/api/v1/apikeys", h.admin, map[string]any{"name": "short", "role": "viewer",
		"expiresAt": "2099-01-01T00:00:00Z"})
	key := res.json(t)["key"].(string)
	if res := h.do("GET", "/api/v1/connections", key, nil); res.status != 200 {
		t.Fatalf("key before expiry = %d", res.status)
	}
	h.g.Keys.Now = func() time.Time { return time.Date(2099, 1, 1, 0, 0, 1, 0, time.UTC) }
	h.do("GET", "/api/v1/connections", key, nil).problem(t, 401, "unauthorized")
}
