package api_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/access"
)

func TestAuditLog(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		start := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
		target, _ := echoTarget(t)
		conn := basicConn("A")
		conn["baseUrl"] = target.URL
		h.create(conn)
		b := basicConn("A")
		b["baseUrl"] = target.URL
		b["description"] = "new"
		b["security"] = map[string]any{"policy": "BASIC", "username": "svc", "password": "CANARY-NEW-PASSWORD"}
		h.do("PUT", "/api/v1/connections/A", h.admin, b)
		h.patch("/api/v1/connections/A", h.admin, map[string]any{"security": map[string]any{"password": "CANARY-PATCHED-PASSWORD"}})
		h.do("POST", "/api/v1/connections/A/test", h.admin, nil)
		h.do("DELETE", "/api/v1/connections/A", h.admin, nil)
		key := h.do("POST", "/api/v1/apikeys", h.admin, map[string]any{"name": "auditor", "role": "viewer"}).json(t)

		actions := func(query string) []string {
			var out []string
			for _, e := range h.do("GET", "/api/v1/audit?"+query, key["key"].(string), nil).json(t)["items"].([]any) {
				out = append(out, e.(map[string]any)["action"].(string))
			}
			return out
		}
		got := strings.Join(actions("connection=A"), ",")
		for _, want := range []string{"connection.created", "secret.set", "connection.updated", "secret.changed",
			"connection.tested", "status.changed", "connection.deleted"} {
			if !strings.Contains(got, want) {
				t.Errorf("audit of A = %s; missing %s", got, want)
			}
		}
		if got := actions("action=apikey.created&actor=test-admin"); len(got) != 1 {
			t.Errorf("apikey.created by test-admin = %v", got)
		}
		if got := actions("since=" + url.QueryEscape(start) + "&until=2000-01-01T00:00:00Z"); len(got) != 0 {
			t.Errorf("empty time range = %v", got)
		}
		// Pages follow the cursor, newest first.
		first := h.do("GET", "/api/v1/audit?limit=2", h.admin, nil).json(t)
		next := h.do("GET", "/api/v1/audit?limit=2&cursor="+url.QueryEscape(first["nextCursor"].(string)), h.admin, nil).json(t)
		a := first["items"].([]any)[1].(map[string]any)["id"].(float64)
		b2 := next["items"].([]any)[0].(map[string]any)["id"].(float64)
		if b2 >= a {
			t.Errorf("second page starts at id %v, after %v", b2, a)
		}
		all := h.do("GET", "/api/v1/audit?limit=500", h.admin, nil)
		if strings.Contains(string(all.body), "CANARY") || strings.Contains(string(all.body), "pw-1") {
			t.Error("the audit log shows a secret")
		}
		if !strings.Contains(string(all.body), "hmac-sha256:") {
			t.Error("the audit log has no secret fingerprints")
		}
		h.do("GET", "/api/v1/audit", h.key(access.RoleDeveloper), nil).problem(t, 403, "forbidden")
		h.checkRequests = false
		h.do("GET", "/api/v1/audit?since=yesterday", h.admin, nil).problem(t, 400, "malformed_request")
		h.do("GET", "/api/v1/audit?cursor=x", h.admin, nil).problem(t, 400, "invalid_cursor")
	})
}
