package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/access"
)

// document is a connection document for the apply endpoint.
func document(name string, spec map[string]any) map[string]any {
	return map[string]any{"apiVersion": "connmgr/v1", "kind": "Connection",
		"metadata": map[string]any{"name": name, "labels": map[string]any{"team": "orders"}}, "spec": spec}
}

func basicSpec(password string) map[string]any {
	return map[string]any{"role": "INVOKE", "baseUrl": "https://api.example.com/v1",
		"security": map[string]any{"policy": "BASIC", "username": "svc", "password": password}}
}

// TestApplyEndpoint: the plan as the contract says, idempotent, every
// document checked before anything is written, errors naming the
// document and field, secrets never in an answer or log.
func TestApplyEndpoint(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		canary := "CANARY-APPLY-PASSWORD-51"
		docs := []any{document("Conn_REST_Orders_Invoke_Basic", basicSpec(canary)),
			document("Conn_REST_Misnamed_Invoke_OAuth", basicSpec(canary))}
		var seen strings.Builder
		apply := func(body map[string]any, key string) *response {
			res := h.do("POST", "/api/v1/connections:apply", key, body)
			seen.Write(res.body)
			return res
		}
		dry := apply(map[string]any{"documents": docs, "dryRun": true}, h.admin)
		if dry.status != http.StatusOK {
			t.Fatalf("dry run = %d %s", dry.status, dry.body)
		}
		if got := dry.json(t)["summary"].(map[string]any)["create"]; got != 2.0 {
			t.Errorf("dry run plans %v creates, want 2", got)
		}
		if h.do("GET", "/api/v1/connections/Conn_REST_Orders_Invoke_Basic", h.admin, nil).status != http.StatusNotFound {
			t.Fatal("a dry run created a connection")
		}
		first := apply(map[string]any{"documents": docs}, h.key(access.RoleDeveloper))
		if first.status != http.StatusOK {
			t.Fatalf("apply = %d %s", first.status, first.body)
		}
		items := first.json(t)["items"].([]any)
		if w, _ := items[1].(map[string]any)["warnings"].([]any); len(w) != 1 {
			t.Errorf("the plan of a misnamed connection has warnings %v, want one", w)
		}
		again := apply(map[string]any{"documents": docs}, h.admin).json(t)
		if s := again["summary"].(map[string]any); s["unchanged"] != 2.0 || s["create"] != 0.0 || s["update"] != 0.0 {
			t.Errorf("second apply = %v, want 2 unchanged", s)
		}
		if got := h.secret("Conn_REST_Orders_Invoke_Basic", "password"); got != canary {
			t.Errorf("stored password = %q, want the applied one", got)
		}
		read := h.do("GET", "/api/v1/connections/Conn_REST_Misnamed_Invoke_OAuth", h.admin, nil).json(t)
		if w, _ := read["warnings"].([]any); len(w) != 1 {
			t.Errorf("GET of a misnamed connection has warnings %v, want one", w)
		}

		tests := []struct {
			name   string
			body   map[string]any
			key    string
			status int
			fields []string
		}{
			{"unknown kind", map[string]any{"documents": []any{docs[0], map[string]any{"apiVersion": "connmgr/v1", "kind": "Secret"}}},
				h.admin, 422, []string{"documents[1].kind"}},
			{"wrong types", map[string]any{"documents": []any{document("Conn_X", map[string]any{"role": "INVOKE", "baseUrl": "https://a.example.com",
				"timeoutMs": "fast", "security": map[string]any{"policy": "NONE"}})}}, h.admin, 422, []string{"documents[0].spec.timeoutMs"}},
			{"fields of two policies", map[string]any{"documents": []any{document("Conn_X", map[string]any{"role": "INVOKE", "baseUrl": "https://a.example.com",
				"security": map[string]any{"policy": "BASIC", "username": "u", "password": canary, "tokenUrl": "https://a.example.com/t"}})}},
				h.admin, 422, []string{"documents[0].spec.security.tokenUrl"}},
			{"unresolved reference", map[string]any{"documents": []any{document("Conn_X", basicSpec("${env:ORDERS_PASSWORD}"))}},
				h.admin, 422, []string{"documents[0].spec.security.password"}},
			{"sealed without an identity", map[string]any{"documents": []any{document("Conn_X", basicSpec("${sealed:AAAA}"))}},
				h.admin, 422, []string{"documents[0].spec.security.password"}},
			{"references in fields that are not secrets", map[string]any{"documents": []any{document("Conn_X", map[string]any{"role": "INVOKE",
				"baseUrl": "https://a.example.com", "description": "${sealed:AAAA}", "headers": map[string]any{"X-A": "${env:X}"},
				"security": map[string]any{"policy": "BASIC", "username": "u", "password": canary}})}},
				h.admin, 422, []string{"documents[0].spec.description", "documents[0].spec.headers.X-A"}},
			{"invalid UTF-8", map[string]any{"documents": []any{docs[0], json.RawMessage("{\"apiVersion\": \"connmgr/v1\", \"kind\": \"Connection\", " +
				"\"metadata\": {\"name\": \"Conn_X\"}, \"spec\": {\"role\": \"INVOKE\", \"description\": \"\xff\", \"baseUrl\": \"https://a.example.com\", " +
				"\"security\": {\"policy\": \"NONE\"}}}")}}, h.admin, 400, nil},
			{"read-only field and name in spec", map[string]any{"documents": []any{document("Conn_X", map[string]any{"name": "Conn_X", "status": "CONFIGURED",
				"role": "INVOKE", "baseUrl": "https://a.example.com", "security": map[string]any{"policy": "NONE"}})}},
				h.admin, 422, []string{"documents[0].spec.name", "documents[0].spec.status"}},
			{"twice the same name", map[string]any{"documents": []any{docs[0], docs[0]}}, h.admin, 422, []string{"documents[1].metadata.name"}},
			{"prune without scope", map[string]any{"documents": docs, "prune": true}, h.admin, 422, []string{"prune"}},
			{"no documents", map[string]any{"dryRun": true}, h.admin, 422, []string{"documents"}},
			{"too many documents", map[string]any{"documents": slices.Repeat([]any{map[string]any{}}, 1001)}, h.admin, 422, []string{"documents"}},
			{"a viewer", map[string]any{"documents": docs}, h.key(access.RoleViewer), 403, nil},
		}
		h.checkRequests = false // some are refused by the contract too, on purpose
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := apply(tt.body, tt.key)
				if res.status != tt.status {
					t.Fatalf("status = %d, want %d: %s", res.status, tt.status, res.body)
				}
				if tt.fields == nil {
					return
				}
				p := res.json(t)
				if got := fields(p); !slices.Equal(got, tt.fields) {
					t.Errorf("errors on %v, want %v: %s", got, tt.fields, res.body)
				}
				if h.do("GET", "/api/v1/connections/Conn_X", h.admin, nil).status != http.StatusNotFound {
					t.Error("a refused apply created Conn_X")
				}
			})
		}
		if strings.Contains(seen.String()+h.logs.String(), canary) {
			t.Error("the password canary is in an answer or the log")
		}
	})
}

// TestExportEndpoint: admin only, references by default with the variables
// listed, JSON on request, bad parameters 400, never a secret.
func TestExportEndpoint(t *testing.T) {
	h := newHarness(t, "sqlite")
	canary := "CANARY-EXPORT-PASSWORD-52"
	h.do("POST", "/api/v1/connections:apply", h.admin, map[string]any{"documents": []any{
		document("Conn_REST_Orders_Invoke_Basic", basicSpec(canary))}})
	h.do("POST", "/api/v1/connections", h.admin, map[string]any{"name": "Other", "role": "INVOKE",
		"baseUrl": "https://b.example.com", "security": map[string]any{"policy": "NONE"}})
	h.checkRequests = false
	tests := []struct {
		name, query, key string
		status           int
		want, notWant    []string
	}{
		{"yaml", "", h.admin, 200, []string{"kind: Connection", "password: ${env:CONN_REST_ORDERS_INVOKE_BASIC_PASSWORD}",
			"#   CONN_REST_ORDERS_INVOKE_BASIC_PASSWORD", "team: orders", "name: Other"}, nil},
		{"selector", "?selector=team=orders", h.admin, 200, []string{"Conn_REST_Orders_Invoke_Basic"}, []string{"name: Other"}},
		{"prefix and json", "?prefix=Oth&format=json", h.admin, 200, []string{`"name":"Other"`}, []string{"Conn_REST_Orders"}},
		{"developer", "", h.key(access.RoleDeveloper), 403, nil, nil},
		{"refresh tokens without sealTo", "?includeRefreshTokens=true", h.admin, 400, []string{"sealTo"}, nil},
		{"not a recipient", "?sealTo=" + canary, h.admin, 400, []string{"sealTo"}, nil},
		{"unknown parameter", "?token=1", h.admin, 400, nil, nil},
		{"bad selector", "?selector=team", h.admin, 400, nil, nil},
		{"unknown policy", "?policy=KERBEROS", h.admin, 400, []string{"unknown policy"}, nil},
		{"q over two lines", "?q=a%0Ab", h.admin, 400, []string{"one line"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.do("GET", "/api/v1/export"+tt.query, tt.key, nil)
			if res.status != tt.status {
				t.Fatalf("GET /api/v1/export%s = %d, want %d: %s", tt.query, res.status, tt.status, res.body)
			}
			body := string(res.body)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the export lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(body, w) {
					t.Errorf("the export holds %q:\n%s", w, body)
				}
			}
			if strings.Contains(body, canary) && tt.name != "not a recipient" {
				t.Error("the export holds the password")
			}
		})
	}
	if a, b := h.do("GET", "/api/v1/export", h.admin, nil), h.do("GET", "/api/v1/export", h.admin, nil); string(a.body) != string(b.body) {
		t.Errorf("two exports of the same connections differ: a file kept in git would change for nothing")
	}
	if res := h.do("GET", "/schemas/connection.json", "", nil); res.status != 200 || !strings.Contains(string(res.body), `"ConnectionSpec"`) {
		t.Errorf("GET /schemas/connection.json = %d, want the schema", res.status)
	}
	if strings.Contains(h.logs.String(), canary) {
		t.Error("the password is in the log")
	}
}
