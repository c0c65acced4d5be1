package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/connmgr/connmgr/connections/connectionstest"
)

// tokenEndpoint answers client-credentials requests with a fresh token, or
// with invalid_client when the secret is wrong.
func tokenEndpoint(t *testing.T, secret string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, pw, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		if pw != secret {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"invalid_client","error_description":"CANARY-BODY bad secret"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "CANARY-ACCESS-" + r.FormValue("scope"),
			"token_type": "bearer", "expires_in": 3600, "scope": "orders.read"})
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestTokenEndpoints(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		auth, requests := tokenEndpoint(t, "CANARY-SECRET")
		body := oauthConn("OAuth")
		sec := body["security"].(map[string]any)
		sec["tokenUrl"], sec["clientSecret"] = auth.URL+"/token", "CANARY-SECRET"
		h.do("POST", "/api/v1/connections", h.admin, body)

		info := h.do("GET", "/api/v1/connections/OAuth/token", h.admin, nil).json(t)
		if info["present"] != false || info["refreshable"] != true {
			t.Errorf("token before any request = %v", info)
		}
		res := h.do("POST", "/api/v1/connections/OAuth/test", h.admin, nil)
		if got := res.json(t); got["result"] != "SUCCESS" || got["detail"] != "token obtained" {
			t.Fatalf("test = %s", res.body)
		}
		conn := h.do("GET", "/api/v1/connections/OAuth", h.admin, nil).json(t)
		if conn["status"] != "CONFIGURED" || conn["lastTest"].(map[string]any)["result"] != "SUCCESS" {
			t.Errorf("after a good test: status %v lastTest %v", conn["status"], conn["lastTest"])
		}
		info = h.do("GET", "/api/v1/connections/OAuth/token", h.admin, nil).json(t)
		if info["present"] != true || info["expiresAt"] == nil || info["scopes"].([]any)[0] != "orders.read" {
			t.Errorf("token metadata = %v", info)
		}
		before := requests.Load()
		if res := h.do("POST", "/api/v1/connections/OAuth/token/refresh", h.admin, nil); res.status != 200 || requests.Load() != before+1 {
			t.Errorf("refresh = %d, token requests %d -> %d", res.status, before, requests.Load())
		}

		// A wrong secret: the test fails and says why, without the body.
		sec["clientSecret"] = "wrong"
		h.do("PUT", "/api/v1/connections/OAuth", h.admin, body)
		res = h.do("POST", "/api/v1/connections/OAuth/test", h.admin, nil)
		if got := res.json(t); got["result"] != "FAILURE" || got["detail"] != "invalid_client" {
			t.Errorf("test with a wrong secret = %s", res.body)
		}
		if s := h.do("GET", "/api/v1/connections/OAuth", h.admin, nil).json(t)["status"]; s != "ERROR" {
			t.Errorf("status after a failed test = %v, want ERROR", s)
		}
		p := h.do("POST", "/api/v1/connections/OAuth/token/refresh", h.admin, nil).problem(t, 502, "token_unavailable")
		if !strings.Contains(p["detail"].(string), "invalid_client") {
			t.Errorf("refresh problem = %v", p)
		}
		failures := h.do("GET", "/api/v1/audit?action=token.refresh_failed&connection=OAuth", h.admin, nil).json(t)["items"].([]any)
		if len(failures) == 0 || failures[0].(map[string]any)["detail"].(map[string]any)["reason"] != "invalid_client" {
			t.Errorf("audit of token failures = %v", failures)
		}
		for _, b := range []string{string(res.body), h.logs.String()} {
			if strings.Contains(b, "CANARY") {
				t.Errorf("a canary leaked: %s", b)
			}
		}

		// Policies without tokens, and consent on the wrong policy.
		h.do("POST", "/api/v1/connections", h.admin, basicConn("Basic"))
		h.do("GET", "/api/v1/connections/Basic/token", h.admin, nil).problem(t, 409, "policy_has_no_token")
		h.do("POST", "/api/v1/connections/Basic/token/refresh", h.admin, nil).problem(t, 409, "policy_has_no_token")
		h.do("POST", "/api/v1/connections/OAuth/consent", h.admin, nil).problem(t, 409, "not_authorization_code")
		viewer := h.key("viewer")
		h.do("POST", "/api/v1/connections/OAuth/test", viewer, nil).problem(t, 403, "forbidden")
		if res := h.do("GET", "/api/v1/connections/OAuth/token", viewer, nil); res.status != 200 {
			t.Errorf("viewer reads token metadata = %d", res.status)
		}
	})
}

func TestConsentEndpoints(t *testing.T) {
	h := newHarness(t, connectionstest.SQLite)
	body := map[string]any{"name": "Code", "role": "INVOKE", "baseUrl": "https://api.example.com",
		"security": map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": "https://auth.example.com/authorize",
			"tokenUrl": "https://auth.example.com/token", "clientId": "cid", "clientSecret": "cs", "scopes": []string{"read"},
			"extraParams": map[string]string{"access_type": "offline"}}}
	if got := h.do("POST", "/api/v1/connections", h.admin, body).json(t)["status"]; got != "NEEDS_CONSENT" {
		t.Errorf("new authorization-code connection status = %v", got)
	}
	res := h.do("POST", "/api/v1/connections/Code/test", h.admin, nil).json(t)
	if res["result"] != "FAILURE" || !strings.Contains(res["detail"].(string), "consent") {
		t.Errorf("test before consent = %v", res)
	}
	c := h.do("POST", "/api/v1/connections/Code/consent", h.admin, nil).json(t)
	u, err := url.Parse(c["authorizationUrl"].(string))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, want := range map[string]string{"client_id": "cid", "response_type": "code", "code_challenge_method": "S256",
		"redirect_uri": "http://connmgr.test/oauth/callback", "scope": "read", "access_type": "offline"} {
		if q.Get(k) != want {
			t.Errorf("authorization URL %s = %q, want %q", k, q.Get(k), want)
		}
	}
	if len(q.Get("state")) < 22 || len(q.Get("code_challenge")) != 43 || u.Host != "auth.example.com" {
		t.Errorf("authorization URL = %s", u)
	}
	// The callback refuses unknown and missing states, says so in HTML,
	// and never logs the code.
	for _, query := range []string{"?state=forged&code=CANARY-CODE", "?code=CANARY-CODE", ""} {
		res := h.do("GET", "/oauth/callback"+query, "", nil)
		if res.status != 400 || !strings.Contains(res.header.Get("Content-Type"), "text/html") ||
			res.header.Get("Referrer-Policy") != "no-referrer" || !strings.Contains(string(res.body), "expired or already used") {
			t.Errorf("callback%s = %d %v %s", query, res.status, res.header, res.body)
		}
	}
	if strings.Contains(h.logs.String(), "CANARY-CODE") {
		t.Error("the authorization code is in the log")
	}
}
