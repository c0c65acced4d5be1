package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store/storetest"
)

// tokenEndpoint answers client-credentials requests with a fresh token
// (a new one each time), or, when the secret is wrong, with invalid_client
// and a description that repeats the secret it was given (connmgr must
// redact it).
func tokenEndpoint(t *testing.T, secret string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		_, pw, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		if pw != secret {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]any{"error": "invalid_client",
				"error_description": "client secret " + pw + " is not the one registered"})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "CANARY-ACCESS-" + string(rune('A'+i%26)),
			"token_type": "bearer", "expires_in": 3600, "scope": "orders.read"})
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestTokenEndpoints(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		auth, requests := tokenEndpoint(t, "CANARY-SECRET")
		target, _ := echoTarget(t)
		body := oauthConn("OAuth")
		body["baseUrl"] = target.URL + "/v2"
		sec := body["security"].(map[string]any)
		sec["tokenUrl"], sec["clientSecret"] = auth.URL+"/token", "CANARY-SECRET"
		h.create(body)

		info := h.do("GET", "/api/v1/connections/OAuth/token", h.admin, nil).json(t)
		if info["present"] != false || info["refreshable"] != true {
			t.Errorf("token before any request = %v", info)
		}
		res := h.do("POST", "/api/v1/connections/OAuth/test", h.admin, nil)
		got := res.json(t)
		if got["result"] != "SUCCESS" || got["detail"] != "token obtained; GET /v2: HTTP 200" {
			t.Fatalf("test = %s", res.body)
		}
		if steps := got["steps"].([]any); len(steps) != 2 || steps[0].(map[string]any)["step"] != "token" ||
			steps[1].(map[string]any)["step"] != "request" || steps[1].(map[string]any)["result"] != "SUCCESS" {
			t.Errorf("test steps = %v, want token and request, both SUCCESS", steps)
		}
		conn := h.do("GET", "/api/v1/connections/OAuth", h.admin, nil).json(t)
		if conn["status"] != "CONFIGURED" || conn["lastTest"].(map[string]any)["result"] != "SUCCESS" {
			t.Errorf("after a good test: status %v lastTest %v", conn["status"], conn["lastTest"])
		}
		info = h.do("GET", "/api/v1/connections/OAuth/token", h.admin, nil).json(t)
		if info["present"] != true || info["expiresAt"] == nil || info["lastRefreshAt"] == nil || info["scopes"].([]any)[0] != "orders.read" {
			t.Errorf("token metadata = %v", info)
		}
		before := requests.Load()
		if res := h.do("POST", "/api/v1/connections/OAuth/token/refresh", h.admin, nil); res.status != 200 || requests.Load() != before+1 {
			t.Errorf("refresh = %d, token requests %d -> %d", res.status, before, requests.Load())
		}

		// A wrong secret: the test fails at the token step and says what
		// the provider said, without the secret; the request step is not
		// sent.
		sec["clientSecret"] = "CANARY-WRONG-SECRET"
		h.do("PUT", "/api/v1/connections/OAuth", h.admin, body)
		res = h.do("POST", "/api/v1/connections/OAuth/test", h.admin, nil)
		got = res.json(t)
		if got["result"] != "FAILURE" || !strings.HasPrefix(got["detail"].(string), "token: invalid_client: client secret") {
			t.Errorf("test with a wrong secret = %s", res.body)
		}
		if steps := got["steps"].([]any); len(steps) != 2 || steps[1].(map[string]any)["result"] != "SKIPPED" {
			t.Errorf("test steps = %v, want the request SKIPPED", steps)
		}
		if s := h.do("GET", "/api/v1/connections/OAuth", h.admin, nil).json(t)["status"]; s != "ERROR" {
			t.Errorf("status after a failed test = %v, want ERROR", s)
		}
		refresh := h.do("POST", "/api/v1/connections/OAuth/token/refresh", h.admin, nil)
		p := refresh.problem(t, 502, "token_unavailable")
		if !strings.Contains(p["detail"].(string), "invalid_client") {
			t.Errorf("refresh problem = %v", p)
		}
		failures := h.do("GET", "/api/v1/audit?action=token.refresh_failed&connection=OAuth", h.admin, nil).json(t)["items"].([]any)
		if len(failures) == 0 || !strings.HasPrefix(failures[0].(map[string]any)["detail"].(map[string]any)["reason"].(string), "invalid_client") {
			t.Errorf("audit of token failures = %v", failures)
		}
		conn = h.do("GET", "/api/v1/connections/OAuth", h.admin, nil).json(t)
		for _, b := range []string{string(res.body), string(refresh.body), string(mustJSON(t, conn)), h.logs.String()} {
			for _, canary := range []string{"CANARY-SECRET", "CANARY-WRONG-SECRET", "CANARY-ACCESS"} {
				if strings.Contains(b, canary) {
					t.Errorf("%s leaked: %s", canary, b)
				}
			}
		}

		// Policies without tokens, and consent on the wrong policy.
		h.create(basicConn("Basic"))
		h.do("GET", "/api/v1/connections/Basic/token", h.admin, nil).problem(t, 409, "policy_has_no_token")
		h.do("POST", "/api/v1/connections/Basic/token/refresh", h.admin, nil).problem(t, 409, "policy_has_no_token")
		h.do("POST", "/api/v1/connections/OAuth/consent", h.admin, nil).problem(t, 409, "not_authorization_code")
		viewer := h.key(access.RoleViewer)
		h.do("POST", "/api/v1/connections/OAuth/test", viewer, nil).problem(t, 403, "forbidden")
		if res := h.do("GET", "/api/v1/connections/OAuth/token", viewer, nil); res.status != 200 {
			t.Errorf("viewer reads token metadata = %d", res.status)
		}
	})
}

// TestTokenExchangeSubjectRules: a token exchange whose subject
// connection exists is refused on create and replace (422) when that
// connection has no access token (AWS SigV4's token is its temporary
// credentials, secret key included) or its token would go to another
// origin; the answer names the field and holds no secret.
func TestTokenExchangeSubjectRules(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		h.create(map[string]any{"name": "AWS", "role": "INVOKE", "baseUrl": "https://api.example.com",
			"security": map[string]any{"policy": "AWS_SIGV4", "accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "CANARY-AWS-SECRET",
				"region": "eu-west-1", "service": "execute-api", "assumeRole": map[string]any{"roleArn": "arn:aws:iam::123456789012:role/r"}}})
		h.create(oauthConn("OAuth"))
		exchange := func(subject, tokenURL string) map[string]any {
			return map[string]any{"name": "Exchange", "role": "INVOKE", "baseUrl": "https://api.example.com",
				"security": map[string]any{"policy": "OAUTH2_TOKEN_EXCHANGE", "tokenUrl": tokenURL, "clientId": "c",
					"clientSecret": "CANARY-CLIENT-SECRET", "subjectConnection": subject}}
		}
		for _, tt := range []struct {
			name, method, path string
			body               map[string]any
			field              string
		}{
			{"an AWS_SIGV4 subject", "POST", "/api/v1/connections", exchange("AWS", "https://api.example.com/token"), "security.subjectConnection"},
			{"a subject's token to another origin", "POST", "/api/v1/connections", exchange("OAuth", "https://collector.example.com/token"),
				"security.tokenUrl"},
			{"a replace that sends the subject's token to another origin", "PUT", "/api/v1/connections/Exchange",
				exchange("OAuth", "https://collector.example.com/token"), "security.tokenUrl"},
		} {
			if tt.method == "PUT" {
				h.create(exchange("OAuth", "https://auth.example.com/token"))
			}
			res := h.do(tt.method, tt.path, h.admin, tt.body)
			p := res.problem(t, 422, "validation_failed")
			if !slices.Contains(fields(p), tt.field) || strings.Contains(string(res.body), "CANARY") {
				t.Errorf("%s: %s, want a validation error on %s and no secret", tt.name, res.body, tt.field)
			}
		}
	})
}

// TestConnectionHealth (#9.2): read and list answers carry status,
// statusReason, statusSince and, for token policies, the token summary.
func TestConnectionHealth(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		auth, _ := tokenEndpoint(t, "CANARY-SECRET")
		target, _ := echoTarget(t)
		good := oauthConn("Good")
		good["baseUrl"] = target.URL
		good["security"].(map[string]any)["tokenUrl"] = auth.URL
		good["security"].(map[string]any)["clientSecret"] = "CANARY-SECRET"
		bad := oauthConn("Bad")
		bad["baseUrl"] = target.URL
		bad["security"].(map[string]any)["tokenUrl"] = auth.URL
		bad["security"].(map[string]any)["clientSecret"] = "CANARY-WRONG-SECRET"
		basic := basicConn("Basic")
		basic["baseUrl"] = target.URL
		code := map[string]any{"name": "Code", "role": "INVOKE", "baseUrl": target.URL,
			"security": map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": auth.URL + "/authorize",
				"tokenUrl": auth.URL, "clientId": "c", "clientSecret": "s"}}
		for _, c := range []map[string]any{good, bad, basic, code} {
			h.create(c)
		}
		for _, name := range []string{"Good", "Bad", "Basic"} {
			h.do("POST", "/api/v1/connections/"+name+"/test", h.admin, nil)
		}
		read := map[string]map[string]any{}
		for _, name := range []string{"Good", "Bad", "Basic", "Code"} {
			read[name] = h.do("GET", "/api/v1/connections/"+name, h.admin, nil).json(t)
		}
		listed := map[string]map[string]any{}
		for _, it := range h.do("GET", "/api/v1/connections", h.admin, nil).json(t)["items"].([]any) {
			c := it.(map[string]any)
			listed[c["name"].(string)] = c
		}
		tests := []struct {
			name, status, reason, lastError string
			token, expires                  bool
		}{
			{"Good", "CONFIGURED", "", "", true, true},
			{"Bad", "ERROR", "test failed at token: invalid_client: client secret [redacted]", "invalid_client: client secret [redacted]", true, false},
			{"Basic", "CONFIGURED", "", "", false, false},
			{"Code", "NEEDS_CONSENT", "no consent given yet", "", true, false},
		}
		for _, tt := range tests {
			for form, c := range map[string]map[string]any{"read": read[tt.name], "list": listed[tt.name]} {
				t.Run(tt.name+" "+form, func(t *testing.T) {
					if c == nil {
						t.Fatal("missing")
					}
					reason, _ := c["statusReason"].(string)
					if c["status"] != tt.status || !strings.HasPrefix(reason, tt.reason) || (tt.reason == "") != (reason == "") {
						t.Errorf("status %v, statusReason %q; want %s, %q...", c["status"], reason, tt.status, tt.reason)
					}
					if c["statusSince"] == nil {
						t.Error("no statusSince")
					}
					tok, ok := c["token"].(map[string]any)
					if ok != tt.token {
						t.Fatalf("token = %v, want present %v", c["token"], tt.token)
					}
					if !ok {
						return
					}
					lastError, _ := tok["lastError"].(string)
					if !strings.HasPrefix(lastError, tt.lastError) || (tt.lastError == "") != (lastError == "") {
						t.Errorf("token.lastError = %q, want %q...", lastError, tt.lastError)
					}
					for _, f := range []string{"expiresAt", "refreshAt", "lastRefreshAt"} {
						if _, ok := tok[f]; ok != tt.expires {
							t.Errorf("token.%s = %v, want present %v", f, tok[f], tt.expires)
						}
					}
				})
			}
		}
		if out := string(mustJSON(t, listed)); strings.Contains(out, "CANARY") {
			t.Errorf("the list shows a secret or token: %s", out)
		}

		// The same health as metrics: connections by status, and how long
		// each token has left.
		m := string(h.do("GET", "/metrics", h.admin, nil).body)
		for _, want := range []string{`connmgr_connections{status="CONFIGURED"} 2`, `connmgr_connections{status="ERROR"} 1`,
			`connmgr_connections{status="NEEDS_CONSENT"} 1`, `connmgr_connections{status="DRAFT"} 0`} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics miss %s", want)
			}
		}
		var left float64
		for _, line := range strings.Split(m, "\n") {
			if v, ok := strings.CutPrefix(line, `connmgr_token_expiry_seconds{connection="Good"} `); ok {
				left, _ = strconv.ParseFloat(v, 64)
			}
			if strings.HasPrefix(line, `connmgr_token_expiry_seconds{connection="Bad"}`) {
				t.Errorf("metrics show an expiry for a connection without a token: %s", line)
			}
		}
		if left < 3000 || left > 3600 {
			t.Errorf("connmgr_token_expiry_seconds of Good = %v, want the hour the token lives", left)
		}
		if strings.Contains(m, "CANARY") {
			t.Error("the metrics show a secret or token")
		}
	})
}

// TestTokenRejectedStatuses (#9.6): the statuses a connection lists as
// "token rejected" drop the token and retry once with a new one; other
// statuses are the target's answer.
func TestTokenRejectedStatuses(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	auth, requests := tokenEndpoint(t, "s")
	// The target refuses the first token it sees with 403, as Microsoft
	// Fabric does for an expired one.
	var first atomic.Value
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first.CompareAndSwap(nil, r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") == first.Load() {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(target.Close)
	tests := []struct {
		name     string
		statuses []int
		status   int
		requests int64
	}{
		{"default", nil, 403, 1},
		{"403 listed", []int{401, 403}, 200, 2},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h.on(t)
			first = atomic.Value{}
			requests.Store(0)
			c := oauthConn("Fabric" + string(rune('A'+i)))
			c["baseUrl"] = target.URL
			c["security"].(map[string]any)["tokenUrl"], c["security"].(map[string]any)["clientSecret"] = auth.URL, "s"
			if tt.statuses != nil {
				c["tokenRejectedStatuses"] = tt.statuses
			}
			if got := h.create(c)["tokenRejectedStatuses"]; tt.statuses != nil && got == nil {
				t.Errorf("tokenRejectedStatuses = %v, want %v", got, tt.statuses)
			}
			if res := h.do("GET", "/invoke/"+c["name"].(string)+"/x", h.admin, nil); res.status != tt.status {
				t.Errorf("invoke = %d, want %d", res.status, tt.status)
			}
			if n := requests.Load(); n != tt.requests {
				t.Errorf("token requests = %d, want %d", n, tt.requests)
			}
		})
	}
	h.checkRequests = false
	bad := oauthConn("Bad")
	bad["tokenRejectedStatuses"] = []int{302}
	if p := h.do("POST", "/api/v1/connections", h.admin, bad).problem(t, 422, "validation_failed"); fields(p)[0] != "tokenRejectedStatuses[0]" {
		t.Errorf("errors = %v", p["errors"])
	}
}

func authCodeConn(name, authURL, tokenURL string) map[string]any {
	return map[string]any{"name": name, "role": "INVOKE", "baseUrl": "https://api.example.com",
		"security": map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": authURL,
			"tokenUrl": tokenURL, "clientId": "cid", "clientSecret": "cs", "scopes": []string{"read"},
			"extraParams": map[string]string{"access_type": "offline"}}}
}

func TestConsentEndpoints(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	if got := h.create(authCodeConn("Code", "https://auth.example.com/authorize", "https://auth.example.com/token"))["status"]; got != "NEEDS_CONSENT" {
		t.Errorf("new authorization-code connection status = %v", got)
	}
	res := h.do("POST", "/api/v1/connections/Code/test", h.admin, nil).json(t)
	if res["result"] != "FAILURE" || !strings.Contains(res["detail"].(string), "consent") {
		t.Errorf("test before consent = %v", res)
	}
	consent := h.do("POST", "/api/v1/connections/Code/consent", h.admin, nil)
	c := consent.json(t)
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
	// #9.15: the URL comes as it is, ready to paste into a browser.
	if bytes.Contains(consent.body, []byte(`\u0026`)) || !bytes.Contains(consent.body, []byte("&state=")) {
		t.Errorf("the consent answer HTML-escapes the URL: %s", consent.body)
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

// authServer is an authorization server for callback tests: RFC 8414
// metadata (advertising iss in authorization responses when iss is set)
// and a token endpoint that, for the authorization code grant, waits for
// hold (when not nil) before it answers with tokens.
type authServer struct {
	*httptest.Server
	advertiseIss bool
	hold         chan struct{}
	exchanges    atomic.Int64
	inFlight     chan struct{}
}

func newAuthServer(t *testing.T, advertiseIss bool) *authServer {
	a := &authServer{advertiseIss: advertiseIss, inFlight: make(chan struct{}, 10)}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"issuer": a.URL, "authorization_endpoint": a.URL + "/authorize",
			"token_endpoint": a.URL + "/token", "authorization_response_iss_parameter_supported": a.advertiseIss})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		a.exchanges.Add(1)
		a.inFlight <- struct{}{}
		if a.hold != nil {
			<-a.hold
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "CANARY-ACCESS", "refresh_token": "CANARY-REFRESH",
			"token_type": "bearer", "expires_in": 3600})
	})
	a.Server = httptest.NewServer(mux)
	t.Cleanup(a.Close)
	return a
}

// state starts consent for the named connection and returns its state.
func (h *harness) state(name string) string {
	h.t.Helper()
	res := h.do("POST", "/api/v1/connections/"+name+"/consent", h.admin, nil)
	if res.status != 200 {
		h.t.Fatalf("consent for %s = %d %s", name, res.status, res.body)
	}
	u, err := url.Parse(res.json(h.t)["authorizationUrl"].(string))
	if err != nil {
		h.t.Fatal(err)
	}
	return u.Query().Get("state")
}

// TestCallbackOutcomes: the callback page says what happened, with its
// status, and asks for no token when the callback is refused (RFC 9207
// issuer checks) or the connection changed meanwhile.
func TestCallbackOutcomes(t *testing.T) {
	h := newHarness(t, storetest.SQLite)
	advertising, plain := newAuthServer(t, true), newAuthServer(t, false)
	conn := func(name string, a *authServer, requireIss bool) {
		c := authCodeConn(name, a.URL+"/authorize", a.URL+"/token")
		c["security"].(map[string]any)["issuer"] = a.URL
		if requireIss {
			c["security"].(map[string]any)["requireIss"] = true
		}
		h.create(c)
	}
	conn("Advertised", advertising, false)
	conn("Required", plain, true)
	conn("Plain", plain, false)
	tests := []struct {
		name, conn string
		query      func(state string) url.Values
		status     int
		heading    string
		exchanged  bool
	}{
		{"iss missing, advertised", "Advertised", func(s string) url.Values { return url.Values{"state": {s}, "code": {"c"}} },
			400, "Issuer missing", false},
		{"iss missing, required", "Required", func(s string) url.Values { return url.Values{"state": {s}, "code": {"c"}} },
			400, "Issuer missing", false},
		{"wrong iss", "Plain", func(s string) url.Values {
			return url.Values{"state": {s}, "code": {"c"}, "iss": {"https://evil.example.com"}}
		}, 400, "Wrong issuer", false},
		{"iss missing, neither advertised nor required", "Plain", func(s string) url.Values { return url.Values{"state": {s}, "code": {"c"}} },
			200, "Consent given", true},
		{"right iss", "Advertised", func(s string) url.Values { return url.Values{"state": {s}, "code": {"c"}, "iss": {advertising.URL}} },
			200, "Consent given", true},
		{"consent denied", "Plain", func(s string) url.Values {
			return url.Values{"state": {s}, "error": {"access_denied"}, "error_description": {"the user said no"}}
		}, 400, "Consent not given", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h.on(t)
			before := advertising.exchanges.Load() + plain.exchanges.Load()
			res := h.do("GET", "/oauth/callback?"+tt.query(h.state(tt.conn)).Encode(), "", nil)
			if res.status != tt.status || !strings.Contains(string(res.body), tt.heading) {
				t.Errorf("callback = %d %s, want %d %q", res.status, res.body, tt.status, tt.heading)
			}
			if n := advertising.exchanges.Load() + plain.exchanges.Load() - before; (n == 1) != tt.exchanged || n > 1 {
				t.Errorf("code exchanges = %d, want exchanged %v", n, tt.exchanged)
			}
		})
	}

	// #8.1 for consent: the connection's credentials change while the code
	// exchange is in flight; the tokens are not stored and the page says
	// the connection changed.
	held := newAuthServer(t, false)
	held.hold = make(chan struct{})
	conn("Changing", held, false)
	req, raw := h.request("GET", "/oauth/callback?"+url.Values{"state": {h.state("Changing")}, "code": {"c"}}.Encode(), "", nil)
	done := make(chan *response)
	go func() { done <- h.serve(req) }()
	<-held.inFlight
	h.patch("/api/v1/connections/Changing", h.admin, map[string]any{"security": map[string]any{"clientSecret": "rotated"}})
	close(held.hold)
	res := <-done
	h.validate(req, raw, res)
	if res.status != http.StatusConflict || !strings.Contains(string(res.body), "Connection changed") {
		t.Errorf("callback across a change = %d %s, want 409 Connection changed", res.status, res.body)
	}
	if info := h.do("GET", "/api/v1/connections/Changing/token", h.admin, nil).json(t); info["present"] != false {
		t.Errorf("token after a change during the exchange = %v, want none", info)
	}
	if s := h.do("GET", "/api/v1/connections/Changing", h.admin, nil).json(t)["status"]; s != "NEEDS_CONSENT" {
		t.Errorf("status = %v, want NEEDS_CONSENT", s)
	}
	if strings.Contains(h.logs.String(), "CANARY-") {
		t.Error("a token is in the log")
	}
}
