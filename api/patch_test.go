package api_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// TestIfMatch (#9.14): If-Match as RFC 9110 says, on every operation that
// takes it. The connection is at version 1 before each case.
func TestIfMatch(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	tests := []struct {
		name, ifMatch string
		status        int
		code          string
	}{
		{"no If-Match", "", 200, ""},
		{"any", "*", 200, ""},
		{"the version", `"1"`, 200, ""},
		{"a list with the version", `"7", "1"`, 200, ""},
		{"a list with empty elements", `, "7",, "1"`, 200, ""},
		{"another version", `"2"`, 412, "precondition_failed"},
		{"a weak tag of the version", `W/"1"`, 412, "precondition_failed"},
		{"a tag connmgr never issued", `"stale"`, 412, "precondition_failed"},
		{"a list without the version", `"2", W/"1"`, 412, "precondition_failed"},
		{"unquoted", `1`, 400, "malformed_request"},
		{"unterminated", `"1`, 400, "malformed_request"},
		{"tags without a comma", `"1" "2"`, 400, "malformed_request"},
		{"star in a list", `"1", *`, 400, "malformed_request"},
	}
	n := 0
	for _, tt := range tests {
		for _, op := range []string{"PUT", "PATCH", "DELETE"} {
			t.Run(op+" "+tt.name, func(t *testing.T) {
				h := h.on(t)
				n++
				name := fmt.Sprintf("IfMatch_%d", n)
				h.create(basicConn(name))
				var hdr []string
				if tt.ifMatch != "" {
					hdr = []string{"If-Match", tt.ifMatch}
				}
				path := "/api/v1/connections/" + name
				var res *response
				switch op {
				case "PUT":
					b := basicConn(name)
					b["description"] = "changed"
					res = h.do("PUT", path, h.admin, b, hdr...)
				case "PATCH":
					res = h.patch(path, h.admin, map[string]any{"description": "changed"}, hdr...)
				case "DELETE":
					res = h.do("DELETE", path, h.admin, nil, hdr...)
				}
				want := tt.status
				if want == 200 && op == "DELETE" {
					want = 204
				}
				if tt.code != "" {
					res.problem(t, want, tt.code)
				} else if res.status != want {
					t.Fatalf("%s with If-Match %q = %d %s, want %d", op, tt.ifMatch, res.status, res.body, want)
				}
				// A refused change changed nothing.
				if tt.code != "" {
					got := h.do("GET", path, h.admin, nil)
					if got.status != 200 || got.header.Get("ETag") != `"1"` || got.json(t)["description"] != "Orders API" {
						t.Errorf("after a refused %s: %d %s", op, got.status, got.body)
					}
				}
			})
		}
	}
}

// TestPatch (#9.14): PATCH applies a JSON merge patch, honours If-Match,
// keeps the secret rules of replace, and never mixes the fields of two
// policies.
func TestPatch(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		create := func(name string) {
			b := basicConn(name)
			b["headers"] = map[string]string{"X-A": "1", "X-B": "2"}
			b["timeoutMs"] = 5000
			h.create(b)
		}
		tests := []struct {
			name   string
			patch  any
			ctype  string
			status int
			code   string
			field  string
			check  func(t *testing.T, h *harness, name string, got map[string]any)
		}{
			{name: "a description", patch: map[string]any{"description": "patched"}, status: 200,
				check: func(t *testing.T, h *harness, name string, got map[string]any) {
					if got["description"] != "patched" || got["baseUrl"] != "https://api.example.com/v2" ||
						got["timeoutMs"] != 5000.0 || got["version"] != 2.0 {
						t.Errorf("patched = %v", got)
					}
					if h.secret(name, "password") != "pw-1" {
						t.Error("the password did not survive the patch")
					}
				}},
			{name: "null removes a member", patch: map[string]any{"timeoutMs": nil, "keywords": nil, "headers": map[string]any{"X-A": nil}},
				status: 200, check: func(t *testing.T, h *harness, name string, got map[string]any) {
					if got["timeoutMs"] != 30000.0 || len(got["keywords"].([]any)) != 0 {
						t.Errorf("timeoutMs %v keywords %v, want the defaults", got["timeoutMs"], got["keywords"])
					}
					if hd := got["headers"].(map[string]any); hd["X-A"] != nil || hd["X-B"] != "2" {
						t.Errorf("headers = %v, want X-B only", hd)
					}
				}},
			{name: "a secret", patch: map[string]any{"security": map[string]any{"password": "pw-patched"}}, status: 200,
				check: func(t *testing.T, h *harness, name string, got map[string]any) {
					if h.secret(name, "password") != "pw-patched" || got["security"].(map[string]any)["username"] != "svc" {
						t.Errorf("password %q, security %v", h.secret(name, "password"), got["security"])
					}
					if strings.Contains(string(mustJSON(t, got)), "pw-patched") {
						t.Error("the answer shows the new password")
					}
				}},
			{name: "a secret set to null keeps it", patch: map[string]any{"security": map[string]any{"password": nil}}, status: 200,
				check: func(t *testing.T, h *harness, name string, got map[string]any) {
					if h.secret(name, "password") != "pw-1" {
						t.Errorf("password = %q, want kept", h.secret(name, "password"))
					}
				}},
			{name: "another policy replaces security", patch: map[string]any{"security": map[string]any{"policy": "API_KEY", "key": "k-1", "name": "X-Key"}},
				status: 200, check: func(t *testing.T, h *harness, name string, got map[string]any) {
					sec := got["security"].(map[string]any)
					if sec["policy"] != "API_KEY" || sec["username"] != nil || sec["name"] != "X-Key" {
						t.Errorf("security = %v, want API_KEY alone", sec)
					}
					c, _ := h.g.Store.Get(ctx, name)
					if k, ok := c.Security.(*security.APIKey); !ok || k.Key.Reveal() != "k-1" || len(c.AllSecrets()) != 1 {
						t.Errorf("stored security = %s", security.Encode(c.Security))
					}
				}},
			{name: "another policy without its secret", patch: map[string]any{"security": map[string]any{"policy": "API_KEY"}},
				status: 422, code: "validation_failed", field: "security.key"},
			{name: "a field of another policy", patch: map[string]any{"security": map[string]any{"tokenUrl": "https://a.example.com/t"}},
				status: 422, code: "validation_failed", field: "security.tokenUrl"},
			// #8.6: the secret was entered for api.example.com.
			{name: "baseUrl to another origin without the secret", patch: map[string]any{"baseUrl": "https://evil.example.net/v2"},
				status: 422, code: "validation_failed", field: "security.password"},
			{name: "baseUrl to another origin with the secret", patch: map[string]any{"baseUrl": "https://other.example.net/v2",
				"security": map[string]any{"password": "pw-2"}}, status: 200,
				check: func(t *testing.T, h *harness, name string, got map[string]any) {
					if got["baseUrl"] != "https://other.example.net/v2" || h.secret(name, "password") != "pw-2" {
						t.Errorf("baseUrl %v, password %q", got["baseUrl"], h.secret(name, "password"))
					}
				}},
			{name: "the same name", patch: map[string]any{"name": "SAME", "description": "x"}, status: 200},
			{name: "another name", patch: map[string]any{"name": "Other"}, status: 422, code: "validation_failed", field: "name"},
			{name: "security null", patch: map[string]any{"security": nil}, status: 422, code: "validation_failed", field: "security"},
			{name: "an unknown member", patch: map[string]any{"colour": "red"}, status: 422, code: "validation_failed", field: "colour"},
			{name: "an invalid value", patch: map[string]any{"timeoutMs": 5}, status: 422, code: "validation_failed", field: "timeoutMs"},
			{name: "read-only members are ignored", patch: map[string]any{"status": "CONFIGURED", "version": 99, "identifier": "X"},
				status: 200, check: func(t *testing.T, h *harness, name string, got map[string]any) {
					if got["status"] != "DRAFT" || got["version"] != 2.0 || got["identifier"] != strings.ToUpper(name) {
						t.Errorf("status %v version %v identifier %v", got["status"], got["version"], got["identifier"])
					}
				}},
			{name: "not an object", patch: []any{}, status: 400, code: "malformed_request"},
			{name: "null", patch: "null", status: 400, code: "malformed_request"},
			{name: "not JSON", patch: "{", status: 400, code: "malformed_request"},
			{name: "another media type", patch: map[string]any{"description": "x"}, ctype: "text/plain", status: 415, code: "unsupported_media_type"},
			{name: "as application/json", patch: map[string]any{"description": "plain JSON"}, ctype: "application/json", status: 200},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := h.on(t)
				name := fmt.Sprintf("Patch_%d", i)
				create(name)
				patch := tt.patch
				if m, ok := patch.(map[string]any); ok && m["name"] == "SAME" {
					m["name"] = name
				}
				if tt.code != "" {
					h.checkRequests = false
				}
				ctype := "application/merge-patch+json"
				if tt.ctype != "" {
					ctype = tt.ctype
				}
				res := h.do("PATCH", "/api/v1/connections/"+name, h.admin, patch, "Content-Type", ctype, "If-Match", `"1"`)
				if tt.code != "" {
					p := res.problem(t, tt.status, tt.code)
					if tt.field != "" && !slices.Contains(fields(p), tt.field) {
						t.Errorf("errors = %v, want field %s", p["errors"], tt.field)
					}
					if got := h.do("GET", "/api/v1/connections/"+name, h.admin, nil); got.header.Get("ETag") != `"1"` {
						t.Errorf("a refused patch changed the connection: %s", got.body)
					}
					return
				}
				if res.status != tt.status {
					t.Fatalf("PATCH = %d %s", res.status, res.body)
				}
				if res.header.Get("ETag") != `"2"` {
					t.Errorf("ETag = %q, want \"2\"", res.header.Get("ETag"))
				}
				if tt.check != nil {
					tt.check(t, h, name, res.json(t))
				}
			})
		}

		// A stale If-Match loses, and a patch of a connection that does
		// not exist is 404.
		create("Stale")
		h.patch("/api/v1/connections/Stale", h.admin, map[string]any{"description": "first"}, "If-Match", `"1"`)
		h.patch("/api/v1/connections/Stale", h.admin, map[string]any{"description": "second"}, "If-Match", `"1"`).problem(t, 412, "precondition_failed")
		if got := h.do("GET", "/api/v1/connections/Stale", h.admin, nil).json(t)["description"]; got != "first" {
			t.Errorf("description = %v, want first", got)
		}
		h.patch("/api/v1/connections/Nope", h.admin, map[string]any{"description": "x"}).problem(t, 404, "connection_not_found")

		// An OAuth connection: moving its base URL to another origin without
		// re-sending the secret is 422 (its tokens would go there).
		o := oauthConn("PatchOAuth")
		h.create(o)
		p := h.patch("/api/v1/connections/PatchOAuth", h.admin, map[string]any{"baseUrl": "https://elsewhere.example.net"}).
			problem(t, 422, "validation_failed")
		if !slices.Contains(fields(p), "baseUrl") {
			t.Errorf("errors = %v, want baseUrl", p["errors"])
		}
		if res := h.patch("/api/v1/connections/PatchOAuth", h.admin, map[string]any{"baseUrl": "https://elsewhere.example.net",
			"security": map[string]any{"clientSecret": "cs-2"}}); res.status != 200 {
			t.Errorf("move with the secret = %d %s", res.status, res.body)
		}
	})
}
