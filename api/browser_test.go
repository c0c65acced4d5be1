package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser tests drive headless Chromium (see chromiumPath) against
// connmgr on a real socket, as an admin would: the docs page and the
// consent flow. They skip when no Chromium is installed.

// browserSecret marks the secrets of the connections the docs list; none
// may reach the page.
const browserSecret = "CANARY-browser-secret"

// TestBrowserDocs loads /docs/, authorizes with an admin key, runs "list
// connections" through Swagger UI and checks the response it shows.
func TestBrowserDocs(t *testing.T) {
	b := newBrowser(t)
	live := newLiveAPI(t)
	names := []string{"Conn_REST_Billing_Basic", "Conn_REST_Orders_TriggerInvoke_OAuth", "Conn_REST_Weather_ApiKey"}
	live.create(map[string]any{"name": names[1], "role": "TRIGGER_INVOKE", "baseUrl": "https://live.example.com/v2",
		"security": map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": "https://auth.example.com/oauth2/token",
			"clientId": "orders-client", "clientSecret": browserSecret, "scopes": []string{"orders.read"}}})
	live.create(map[string]any{"name": names[0], "role": "INVOKE", "baseUrl": "https://billing.example.com/api",
		"security": map[string]any{"policy": "BASIC", "username": "svc-billing", "password": browserSecret}})
	live.create(map[string]any{"name": names[2], "role": "INVOKE", "baseUrl": "https://weather.example.com",
		"security": map[string]any{"policy": "API_KEY", "key": browserSecret, "in": "QUERY", "name": "appid"}})

	ctx := b.steps()
	const op = "#operations-connections-listConnections"
	b.do(ctx, "load /docs/",
		chromedp.Navigate(live.BrowserURL+"/docs/"),
		chromedp.WaitVisible(chromedp.CSS(op+" .opblock-summary")))

	b.do(ctx, "authorize with the API key",
		chromedp.Click(chromedp.CSS(".auth-wrapper button.authorize")),
		chromedp.WaitVisible(chromedp.CSS("#auth-bearer-value")),
		chromedp.SendKeys(chromedp.CSS("#auth-bearer-value"), live.admin),
		chromedp.Click(chromedp.CSS(`.modal-ux .auth-btn-wrapper button[type="submit"]`)),
		// Once authorized, the dialog offers Logout instead of Authorize.
		chromedp.WaitVisible(chromedp.CSS(`.modal-ux .auth-btn-wrapper button[aria-label="Remove authorization"]`)),
		chromedp.Click(chromedp.CSS(".modal-ux button.btn-done")),
		chromedp.WaitNotPresent(chromedp.CSS(".modal-ux")))

	b.do(ctx, `expand "GET /api/v1/connections"`,
		chromedp.Click(chromedp.CSS(op+" .opblock-summary-control")),
		chromedp.WaitVisible(chromedp.CSS(op+" .opblock-body")))

	// The docs enable "Try it out" by default (tryItOutEnabled), so the
	// button may already read "Cancel"; click it only when it does not.
	b.do(ctx, "wait for the Try it out button", chromedp.WaitVisible(chromedp.CSS(op+" button.try-out__btn")))
	tryIt := value(ctx, b, "find Try it out", chromedp.Nodes(chromedp.CSSAll(op+" button.try-out__btn:not(.cancel)"), chromedp.AtLeast(0)))
	if len(tryIt) > 0 {
		b.do(ctx, "click Try it out", chromedp.Click(chromedp.CSS(op+" button.try-out__btn:not(.cancel)")))
	} else {
		t.Log(`"Try it out" is enabled already (tryItOutEnabled)`)
	}

	b.do(ctx, "execute",
		chromedp.Click(chromedp.CSS(op+" button.execute")),
		chromedp.WaitVisible(chromedp.CSS(op+" .live-responses-table tr.response .response-col_status")))
	type rendered struct {
		Status string `json:"status"`
		Body   string `json:"body"`
	}
	shown := value(ctx, b, "read the response shown", chromedp.Evaluate[rendered](`(() => {
		const row = document.querySelector(`+jsString(op+" .live-responses-table tr.response")+`);
		const h = [...row.querySelectorAll("h5")].find(e => e.textContent.trim() === "Response body");
		const code = h && h.nextElementSibling && h.nextElementSibling.querySelector("pre");
		return {status: row.querySelector(".response-col_status").innerText.trim(),
			body: code ? code.innerText : ""};
	})()`))

	if !strings.HasPrefix(shown.Status, "200") {
		t.Errorf("Swagger UI shows response code %q, want 200; body %s", shown.Status, shown.Body)
	}
	var list struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(shown.Body), &list); err != nil {
		t.Fatalf("the response body shown is not the JSON list: %v\n%s", err, shown.Body)
	}
	var got []string
	for _, it := range list.Items {
		got = append(got, it.Name)
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("Swagger UI shows connections %v, want %v", got, names)
	}
	for _, n := range names {
		if !strings.Contains(shown.Body, n) {
			t.Errorf("rendered response body lacks %s", n)
		}
	}
	if strings.Contains(shown.Body, browserSecret) || !strings.Contains(shown.Body, `"********"`) {
		t.Errorf("rendered response body does not mask secrets:\n%s", shown.Body)
	}

	// The page sent the list request itself, with the key it was given.
	reqs := b.requestsTo("/api/v1/connections")
	if len(reqs) != 1 || reqs[0].Method != http.MethodGet || header(reqs[0].Headers, "Authorization") != "Bearer "+live.admin {
		var seen []string
		for _, r := range reqs {
			seen = append(seen, r.Method+" "+r.URL)
		}
		t.Errorf("requests to /api/v1/connections = %v, want one GET with the key as bearer token", seen)
	}
	checkStayedLocal(t, b)
}

// TestBrowserConsent walks the authorization-code consent flow through the
// browser: connmgr's authorization URL, the provider's login form, the
// redirect to connmgr's callback, and a replay of that callback.
func TestBrowserConsent(t *testing.T) {
	b := newBrowser(t)
	live := newLiveAPI(t)
	const user, password = "alice", "alice-password"
	callback := live.URL + "/oauth/callback"
	ls := newLoginServer(t, "calendar-client", browserSecret, callback, user, password)
	const name = "Conn_REST_Calendar_AuthCode"
	live.create(map[string]any{"name": name, "role": "INVOKE", "baseUrl": "https://calendar.example.com/v1",
		"security": map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": ls.URL + "/authorize",
			"tokenUrl": ls.URL + "/token", "clientId": "calendar-client", "clientSecret": browserSecret,
			"scopes": []string{"calendar.read"}}})

	var conn struct {
		Status string `json:"status"`
	}
	if st := live.call("GET", "/api/v1/connections/"+name, nil, &conn); st != http.StatusOK || conn.Status != "NEEDS_CONSENT" {
		t.Fatalf("GET connection before consent = %d, status %q, want NEEDS_CONSENT", st, conn.Status)
	}
	var consent struct {
		AuthorizationURL string `json:"authorizationUrl"`
	}
	if st := live.call("POST", "/api/v1/connections/"+name+"/consent", nil, &consent); st != http.StatusOK {
		t.Fatalf("POST .../consent = %d", st)
	}
	au, err := url.Parse(consent.AuthorizationURL)
	if err != nil || !strings.HasPrefix(consent.AuthorizationURL, ls.URL+"/authorize?") ||
		au.Query().Get("redirect_uri") != callback || au.Query().Get("code_challenge_method") != "S256" {
		t.Fatalf("authorizationUrl = %q, want %s/authorize with redirect_uri %s and S256 (%v)", consent.AuthorizationURL, ls.URL, callback, err)
	}

	ctx := b.steps()
	res := value(ctx, b, "open the authorization URL", chromedp.NavigateResponse(consent.AuthorizationURL))
	title := value(ctx, b, "read the login form", chromedp.Text(chromedp.CSS("#login-title")))
	if res.Status != http.StatusOK || !strings.Contains(title, "Sign in") {
		t.Fatalf("authorization URL answered %d %q, want the login form", res.Status, title)
	}

	b.do(ctx, "fill the login form",
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password))
	// The form posts to the provider, which redirects to the callback;
	// res is the response of the page the browser ends on.
	start := time.Now()
	res, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#sign-in")))
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	t.Logf("sign in and follow the redirect: %v", time.Since(start).Round(time.Millisecond))
	landed := value(ctx, b, "read the location", chromedp.Location())
	heading := value(ctx, b, "read the heading", chromedp.Text(chromedp.CSS("h1")))
	page := value(ctx, b, "read the page", chromedp.Text(chromedp.CSS("body")))
	if !strings.HasPrefix(landed, callback+"?") {
		t.Fatalf("the browser ended on %s (%d %q), want %s", landed, res.Status, heading, callback)
	}
	if res.Status != http.StatusOK || heading != "Consent given" || !strings.Contains(page, "Connection: "+name) {
		t.Errorf("callback answered %d and shows %q:\n%s\nwant 200 and \"Consent given\" for %s", res.Status, heading, page, name)
	}
	if forms, logins := ls.counts(); forms != 1 || logins != 1 {
		t.Errorf("login server showed %d forms and accepted %d logins, want 1 and 1", forms, logins)
	}
	toks := ls.tokens()
	if len(toks) != 1 || toks[0].Grant != "authorization_code" || !toks[0].HasVerifier || toks[0].Status != http.StatusOK {
		t.Errorf("token requests = %+v, want one authorization_code exchange with a PKCE verifier, answered 200", toks)
	}

	if st := live.call("GET", "/api/v1/connections/"+name, nil, &conn); st != http.StatusOK || conn.Status != "CONFIGURED" {
		t.Errorf("GET connection = %d, status %q, want CONFIGURED", st, conn.Status)
	}
	var tok struct {
		Present     bool `json:"present"`
		Refreshable bool `json:"refreshable"`
	}
	if st := live.call("GET", "/api/v1/connections/"+name+"/token", nil, &tok); st != http.StatusOK || !tok.Present || !tok.Refreshable {
		t.Errorf("GET token = %d, %+v, want present and refreshable", st, tok)
	}

	// The same callback again (reused state): refused, and no second token
	// request.
	res = value(ctx, b, "replay the callback", chromedp.NavigateResponse(landed))
	heading = value(ctx, b, "read the heading", chromedp.Text(chromedp.CSS("h1.fail")))
	if res.Status != http.StatusBadRequest || !strings.Contains(heading, "expired or already used") {
		t.Errorf("replayed callback answered %d %q, want 400 and the expired or already used page", res.Status, heading)
	}
	if n := len(ls.tokens()); n != 1 {
		t.Errorf("token requests after the replay = %d, want still 1", n)
	}
	if st := live.call("GET", "/api/v1/connections/"+name, nil, &conn); st != http.StatusOK || conn.Status != "CONFIGURED" {
		t.Errorf("after the replay GET connection = %d, status %q, want CONFIGURED", st, conn.Status)
	}
	checkStayedLocal(t, b)
}

// checkStayedLocal fails t when the page sent a request off this machine,
// threw a JavaScript exception or logged an error (a Content-Security-Policy
// violation, say).
func checkStayedLocal(t *testing.T, b *browser) {
	t.Helper()
	if remote := b.offMachine(); len(remote) > 0 {
		hint := ""
		if strings.Contains(strings.Join(remote, " "), "validator.swagger.io") {
			hint = " (Swagger UI's validator badge: swaggerInit needs validatorUrl: null)"
		}
		t.Errorf("the page sent requests off this machine; the docs must work offline%s:\n%s", hint, strings.Join(remote, "\n"))
	}
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(p, "\n"))
	}
}

// header returns the value of the named header, in any case.
func header(h map[string]any, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
