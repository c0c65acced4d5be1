package api_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/store/storetest"
)

// TestBadInput sends hostile bodies and headers; each gets a clear 4xx
// problem naming what is wrong, never a 500, and nothing is stored.
func TestBadInput(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	h.checkRequests = false
	valid := `{"name":"X","role":"INVOKE","baseUrl":"https://api.example.com","security":{"policy":"NONE"}}`
	with := func(old, new string) string { return strings.Replace(valid, old, new, 1) }
	tests := []struct {
		name   string
		body   string
		ctype  string
		status int
		code   string
		field  string
	}{
		{"empty body", "", "", 400, "malformed_request", ""},
		{"not JSON", "name=X", "", 400, "malformed_request", ""},
		{"truncated", `{"name":"X"`, "", 400, "malformed_request", ""},
		{"array", `[]`, "", 400, "malformed_request", ""},
		{"string", `"x"`, "", 400, "malformed_request", ""},
		{"null", `null`, "", 422, "validation_failed", "security"},
		{"two values", valid + valid, "", 400, "malformed_request", ""},
		{"trailing garbage", valid + "x", "", 400, "malformed_request", ""},
		{"invalid UTF-8 in a string", with(`"role"`, "\"description\":\"caf\xe9\",\"role\""), "", 400, "malformed_request", ""},
		{"form content type", valid, "application/x-www-form-urlencoded", 415, "unsupported_media_type", ""},
		{"bad content type", valid, "application/json; charset", 415, "unsupported_media_type", ""},
		{"unknown field", with(`"role"`, `"colour":"red","role"`), "", 422, "validation_failed", "colour"},
		{"unknown security field", with(`"policy":"NONE"`, `"policy":"NONE","kerberos":1`), "", 422, "validation_failed", "security.kerberos"},
		{"name is a number", with(`"name":"X"`, `"name":7`), "", 422, "validation_failed", "name"},
		{"keywords is a string", with(`"role"`, `"keywords":"a","role"`), "", 422, "validation_failed", "keywords"},
		{"timeout is a string", with(`"role"`, `"timeoutMs":"5","role"`), "", 422, "validation_failed", "timeoutMs"},
		{"timeout is huge", with(`"role"`, `"timeoutMs":1e300,"role"`), "", 422, "validation_failed", "timeoutMs"},
		{"timeout is negative", with(`"role"`, `"timeoutMs":-1,"role"`), "", 422, "validation_failed", "timeoutMs"},
		{"timeout too small", with(`"role"`, `"timeoutMs":5,"role"`), "", 422, "validation_failed", "timeoutMs"},
		{"missing name", with(`"name":"X",`, ``), "", 422, "validation_failed", "name"},
		{"name with slash", with(`"name":"X"`, `"name":"a/b"`), "", 422, "validation_failed", "name"},
		{"name with dots", with(`"name":"X"`, `"name":".."`), "", 422, "validation_failed", "name"},
		{"name starts with digit", with(`"name":"X"`, `"name":"1abc"`), "", 422, "validation_failed", "name"},
		{"name too long", with(`"name":"X"`, `"name":"`+strings.Repeat("a", 101)+`"`), "", 422, "validation_failed", "name"},
		{"name with unicode", with(`"name":"X"`, `"name":"Ä"`), "", 422, "validation_failed", "name"},
		{"missing role", with(`"role":"INVOKE",`, ``), "", 422, "validation_failed", "role"},
		{"bad role", with(`"INVOKE"`, `"ADMIN"`), "", 422, "validation_failed", "role"},
		{"relative base", with(`https://api.example.com`, `/api`), "", 422, "validation_failed", "baseUrl"},
		{"ftp base", with(`https://api.example.com`, `ftp://api.example.com`), "", 422, "validation_failed", "baseUrl"},
		{"userinfo base", with(`https://api.example.com`, `https://u:p@api.example.com`), "", 422, "validation_failed", "baseUrl"},
		{"fragment base", with(`https://api.example.com`, `https://api.example.com/#x`), "", 422, "validation_failed", "baseUrl"},
		{"decimal IP base", with(`https://api.example.com`, `http://2130706433/`), "", 422, "validation_failed", "baseUrl"},
		{"octal IP base", with(`https://api.example.com`, `http://0177.0.0.1/`), "", 422, "validation_failed", "baseUrl"},
		{"hex IP base", with(`https://api.example.com`, `http://0x7f.1/`), "", 422, "validation_failed", "baseUrl"},
		{"bad port", with(`https://api.example.com`, `https://api.example.com:99999`), "", 422, "validation_failed", "baseUrl"},
		{"CRLF in base", with(`https://api.example.com`, `https://api.example.com/\r\nX: y`), "", 422, "validation_failed", "baseUrl"},
		{"space in host", with(`https://api.example.com`, `https://api example.com`), "", 422, "validation_failed", "baseUrl"},
		{"missing security", with(`,"security":{"policy":"NONE"}`, ``), "", 422, "validation_failed", "security"},
		{"unknown policy", with(`"NONE"`, `"KERBEROS"`), "", 422, "validation_failed", "security.policy"},
		{"field of another policy", with(`"policy":"NONE"`, `"policy":"NONE","password":"x"`), "", 422, "validation_failed", "security.password"},
		{"basic without password", with(`"policy":"NONE"`, `"policy":"BASIC","username":"u"`), "", 422, "validation_failed", "security.password"},
		{"basic with mask only", with(`"policy":"NONE"`, `"policy":"BASIC","username":"u","password":"********"`), "", 422, "validation_failed", "security.password"},
		{"api key in query without name", with(`"policy":"NONE"`, `"policy":"API_KEY","key":"k","in":"QUERY"`), "", 422, "validation_failed", "security.name"},
		{"api key with CRLF", with(`"policy":"NONE"`, `"policy":"API_KEY","key":"k\r\nX-Evil: 1"`), "", 422, "validation_failed", "security.key"},
		{"oauth without token URL", with(`"policy":"NONE"`, `"policy":"OAUTH2_CLIENT_CREDENTIALS","clientId":"c","clientSecret":"s"`), "", 422, "validation_failed", "security.tokenUrl"},
		{"oauth bad client auth", with(`"policy":"NONE"`, `"policy":"OAUTH2_CLIENT_CREDENTIALS","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s","clientAuth":"MTLS"`), "", 422, "validation_failed", "security.clientAuth"},
		{"private key JWT with bad PEM", with(`"policy":"NONE"`, `"policy":"OAUTH2_CLIENT_CREDENTIALS","tokenUrl":"https://a.example.com/t","clientId":"c","clientAuth":"PRIVATE_KEY_JWT","privateKeyPem":"nope"`), "", 422, "validation_failed", "security.privateKeyPem"},
		{"reserved extra param", with(`"policy":"NONE"`, `"policy":"OAUTH2_CLIENT_CREDENTIALS","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s","extraParams":{"grant_type":"password"}`), "", 422, "validation_failed", "security.extraParams.grant_type"},
		{"scope with space", with(`"policy":"NONE"`, `"policy":"OAUTH2_CLIENT_CREDENTIALS","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s","scopes":["a b"]`), "", 422, "validation_failed", "security.scopes[0]"},
		{"auth code without authorization URL", with(`"policy":"NONE"`, `"policy":"OAUTH2_AUTHORIZATION_CODE","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s"`), "", 422, "validation_failed", "security.authorizationUrl"},
		{"auth code with openid and no issuer", with(`"policy":"NONE"`, `"policy":"OAUTH2_AUTHORIZATION_CODE","authorizationUrl":"https://a.example.com/a","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s","scopes":["openid"]`), "", 422, "validation_failed", "security.issuer"},
		{"auth code requiring iss without issuer", with(`"policy":"NONE"`, `"policy":"OAUTH2_AUTHORIZATION_CODE","authorizationUrl":"https://a.example.com/a","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s","requireIss":true`), "", 422, "validation_failed", "security.requireIss"},
		{"TLS client auth without a certificate", with(`"policy":"NONE"`, `"policy":"OAUTH2_CLIENT_CREDENTIALS","tokenUrl":"https://a.example.com/t","clientId":"c","clientAuth":"TLS_CLIENT_AUTH"`), "", 422, "validation_failed", "security.clientAuth"},
		{"TLS key without a certificate", with(`"role"`, `"tls":{"clientKeyPem":"k"},"role"`), "", 422, "validation_failed", "tls.clientCertificatePem"},
		{"TLS certificate that is no PEM", with(`"role"`, `"tls":{"clientCertificatePem":"x","clientKeyPem":"k"},"role"`), "", 422, "validation_failed", "tls.clientCertificatePem"},
		{"TLS unknown field", with(`"role"`, `"tls":{"pin":"x"},"role"`), "", 422, "validation_failed", "pin"},
		{"rejected status not 4xx", with(`"role"`, `"tokenRejectedStatuses":[500],"role"`), "", 422, "validation_failed", "tokenRejectedStatuses[0]"},
		{"rejected statuses not numbers", with(`"role"`, `"tokenRejectedStatuses":["401"],"role"`), "", 422, "validation_failed", "tokenRejectedStatuses"},
		{"forbidden static header", with(`"role"`, `"headers":{"Authorization":"Bearer x"},"role"`), "", 422, "validation_failed", "headers.Authorization"},
		{"header with CRLF", with(`"role"`, `"headers":{"X-A":"a\r\nb"},"role"`), "", 422, "validation_failed", "headers.X-A"},
		{"bad header name", with(`"role"`, `"headers":{"X A":"a"},"role"`), "", 422, "validation_failed", "headers.X A"},
		{"forward cookie", with(`"role"`, `"forwardHeaders":["Cookie"],"role"`), "", 422, "validation_failed", "forwardHeaders[0]"},
		{"bad test method", with(`"role"`, `"testRequest":{"method":"TRACE","relativeUri":"/"},"role"`), "", 422, "validation_failed", "testRequest.method"},
		{"zero rate", with(`"role"`, `"rateLimit":{"requestsPerSecond":0},"role"`), "", 422, "validation_failed", "rateLimit.requestsPerSecond"},
		{"too many keywords", with(`"role"`, `"keywords":[`+strings.Repeat(`"k",`, 40)+`"k"],"role"`), "", 422, "validation_failed", "keywords"},
		{"control char in description", with(`"role"`, `"description":"a\u0000b","role"`), "", 422, "validation_failed", "description"},
		{"oversized body", with(`"role"`, `"description":"`+strings.Repeat("a", 70<<10)+`","role"`), "", 413, "payload_too_large", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h.on(t)
			hdr := []string{}
			if tt.ctype != "" {
				hdr = append(hdr, "Content-Type", tt.ctype)
			}
			res := h.do("POST", "/api/v1/connections", h.admin, tt.body, hdr...)
			p := res.problem(t, tt.status, tt.code)
			if tt.field != "" && !hasField(p, tt.field) {
				t.Errorf("errors = %v, want field %q", p["errors"], tt.field)
			}
		})
	}
	if res := h.do("GET", "/api/v1/connections", h.admin, nil); strings.Contains(string(res.body), `"name"`) {
		t.Errorf("a rejected request stored something: %s", res.body)
	}

	// Oversized without Content-Length (streamed) also gets 413.
	req, _ := http.NewRequest("POST", "/api/v1/connections", struct{ *bytes.Reader }{bytes.NewReader(bytes.Repeat([]byte(" "), 100<<10))})
	req.Header.Set("Authorization", "Bearer "+h.admin)
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	h.g.API.ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Errorf("streamed oversized body = %d, want 413: %s", rec.Code, rec.Body)
	}
}

func hasField(p map[string]any, field string) bool {
	errs, _ := p["errors"].([]any)
	for _, e := range errs {
		if e.(map[string]any)["field"] == field {
			return true
		}
	}
	return false
}
