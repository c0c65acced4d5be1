package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"go.yaml.in/yaml/v3"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// The browser tests drive headless Chromium through the console as an
// admin would, against connmgr built by wire.Build on a real database and
// reached over a real socket. They skip when no Chromium is installed.

// providerReason is what the broken token endpoint says: the list must
// show it.
const providerReason = "client orders-client was disabled at the provider"

// TestConsole signs in, creates an OAuth client-credentials connection
// with the form, tests it (CONFIGURED, a countdown), breaks its token
// endpoint and sees the list turn red with the provider's reason without
// a reload, gives consent to an authorization-code connection and to a
// custom three-legged one at an identity provider's login form, finds
// Consent / Reconnect on the pages of the consent policies and only
// there, edits with a conflict, meets the
// destination rule, creates and revokes an API key and signs out; and
// every request the browser sent went to connmgr or to the provider's
// login page, no script failed and the CSP refused nothing.
func TestConsole(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	tokens := newTokenEndpoint(t, 660, providerReason)
	target := newTarget(t)
	start := time.Now()
	const cc = "Conn_REST_Orders_TriggerInvoke_OAuth"
	// Neighbours in the list, in the states connections are found in.
	s.create(map[string]any{"name": "Conn_REST_Billing_Basic", "role": "INVOKE", "description": "Billing, EU tenant",
		"baseUrl": target + "/billing", "security": map[string]any{"policy": "BASIC", "username": "svc-billing", "password": "pw"}})
	s.create(map[string]any{"name": "Conn_REST_Weather_ApiKey", "role": "INVOKE", "baseUrl": "https://weather.example.com",
		"security": map[string]any{"policy": "API_KEY", "key": "k", "in": "QUERY", "name": "appid"}})
	s.create(map[string]any{"name": "Conn_SOAP_Legacy_Invoke", "role": "TRIGGER", "description": "Legacy ERP",
		"baseUrl": "http://127.0.0.1:1/soap", "security": map[string]any{"policy": "NONE"}})
	s.call("POST", "/api/v1/connections/Conn_REST_Billing_Basic/test", nil, nil)
	s.call("POST", "/api/v1/connections/Conn_SOAP_Legacy_Invoke/test", nil, nil)

	t.Run("sign in", func(t *testing.T) {
		b.do("open /", chromedp.Navigate(s.BrowserURL+"/"))
		b.click(`a[href="/console/"]`)
		b.wait("/ links the console, which leads to the sign-in page", `location.pathname === "/console/signin" && document.querySelector("#api-key") !== null`)
		b.shot("console-signin")
		b.fill("#api-key", "cmk_not-a-key")
		b.click("#sign-in")
		b.wait("a wrong key is refused", `document.querySelector("[data-field=key] .error").textContent.includes("unknown")`)
		b.fill("#api-key", s.admin)
		b.click("#sign-in")
		b.wait("signed in", `!document.querySelector("#who").hidden && document.querySelector("#connections") !== null`)
		if got := b.text("#who-name"); got != "console-admin" {
			t.Errorf("signed in as %q, want console-admin", got)
		}
		ck := sessionCookie(t, b)
		if ck == nil {
			t.Fatal("no session cookie after sign-in")
		}
		if !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteStrict || ck.Path != "/" || ck.Secure {
			t.Errorf("session cookie = HttpOnly %v, SameSite %v, Path %q, Secure %v; want HttpOnly, Strict, /, not Secure on http",
				ck.HTTPOnly, ck.SameSite, ck.Path, ck.Secure)
		}
		if !ck.Session {
			t.Errorf("session cookie expires %v, want a browser-session cookie (the server bounds its life)", ck.Expires)
		}
		if got := eval[string](b, `document.cookie + "|" + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)`); got != "|{}{}" {
			t.Errorf("document.cookie|storage = %q, want nothing readable by scripts", got)
		}
		// The wrong key and the right one, each posted once, in the body.
		posts := b.requestsTo("POST", "/console/session")
		if len(posts) != 2 || strings.Contains(posts[1].URL, s.admin) || !posts[1].HasPostData {
			t.Errorf("sign-in requests = %d (want 2), the key in the body, never the URL", len(posts))
		}
	})

	t.Run("create with the form", func(t *testing.T) {
		b.click("#new-connection")
		b.wait("the form", `document.querySelector("#connection-form") !== null`)
		if n := eval[int](b, `document.querySelectorAll("#policy-fields [name]").length`); n != 0 {
			t.Errorf("%d policy fields before a policy is chosen, want 0", n)
		}
		b.fill("#policy", "OAUTH2_CLIENT_CREDENTIALS")
		got := eval[[]string](b, `[...document.querySelectorAll("#policy-fields [data-field]")].map(e => e.dataset.field)`)
		for _, want := range []string{"security.tokenUrl", "security.clientId", "security.clientSecret", "security.scopes", "security.clientAuth"} {
			if !contains(got, want) {
				t.Errorf("client credentials fields = %v, want %s among them", got, want)
			}
		}
		if contains(got, "security.username") || contains(got, "security.authorizationUrl") {
			t.Errorf("client credentials fields = %v, want no field of another policy", got)
		}
		unlabelled := eval[[]string](b, `[...document.querySelectorAll("#connection-form input, #connection-form select, #connection-form textarea")]
			.filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby"))
			.map(e => e.name || e.id || e.outerHTML.slice(0, 60))`)
		if len(unlabelled) > 0 {
			t.Errorf("controls without a label: %v", unlabelled)
		}
		if eval[string](b, `document.querySelector("[name='security.clientSecret']").type`) != "password" {
			t.Error("the client secret is not a password field")
		}
		b.fillField("name", cc)
		b.fillField("description", "Orders API, production")
		b.fillField("keywords", "orders\nbilling")
		b.fillField("role", "TRIGGER_INVOKE")
		b.fillField("baseUrl", "ftp://orders.example.com")
		b.fillField("security.tokenUrl", tokens.URL+"/oauth2/token")
		b.fillField("security.clientId", "orders-client")
		b.fillField("security.clientSecret", "s3cr3t-orders")
		b.fillField("security.scopes", "orders.read")
		b.click("#save")
		b.wait("the API's 422 next to baseUrl", `!document.querySelector("[data-field=baseUrl] .error").hidden`)
		t.Logf("baseUrl error shown: %s", b.text("[data-field=baseUrl] .error"))
		b.fillField("baseUrl", target+"/v2")
		b.click("#save")
		b.wait("the connection page", `location.pathname === "/console/connections/`+cc+`" && document.querySelector("#status") !== null`)
		if got := b.text("#status"); got != "DRAFT" {
			t.Errorf("status after create = %q, want DRAFT", got)
		}
		if got := b.text(`[data-field="security.clientSecret"]`); got != "set" {
			t.Errorf("client secret shown as %q, want set", got)
		}
		if strings.Contains(eval[string](b, `document.body.innerText`), "s3cr3t-orders") {
			t.Error("the page shows the client secret")
		}
	})

	t.Run("test", func(t *testing.T) {
		b.click("#test")
		b.wait("the test's steps", `document.querySelectorAll("#test-steps li").length > 0`)
		steps := b.text("#test-steps")
		if !strings.Contains(steps, "token") || !strings.Contains(b.text("#action-result h2"), "SUCCESS") {
			t.Errorf("test shows %q / steps %q, want SUCCESS with a token step", b.text("#action-result h2"), steps)
		}
		b.wait("CONFIGURED", `document.querySelector("#status").textContent === "CONFIGURED"`)
		b.wait("the countdown", `/expires in 1[01] min/.test(document.querySelector("#token-expiry").textContent)`)
		b.wait("the timeline", `document.querySelector("#timeline-list") && document.querySelector("#timeline-list").textContent.includes("Token obtained")`)
		b.shot("console-connection")
		b.click(`a[href="/console/"]`)
		b.wait("the list", `document.querySelector("#connections-body tr[data-name='`+cc+`']") !== null`)
		row := b.text("#connections-body tr[data-name='" + cc + "']")
		if !strings.Contains(row, "CONFIGURED") || !regexp.MustCompile(`expires in 1[01] min`).MatchString(row) || !strings.Contains(row, "SUCCESS") {
			t.Errorf("list row = %q, want CONFIGURED, expires in 11 min and the last test", row)
		}
	})

	t.Run("broken token endpoint turns the list red", func(t *testing.T) {
		eval[bool](b, `window.__noReload = true`)
		tokens.broken.Store(true)
		if res := s.call("POST", "/api/v1/connections/"+cc+"/token/refresh", nil, nil); res.StatusCode < 400 {
			t.Fatalf("refresh with the endpoint broken = %d, want a failure", res.StatusCode)
		}
		sel := "#connections-body tr[data-name='" + cc + "']"
		b.waitFor("the row turns red with the provider's reason", `(() => { const r = document.querySelector("`+sel+`");
			return r && r.classList.contains("bad") && r.textContent.includes("ERROR") && r.textContent.includes(`+jsString(providerReason)+`); })()`,
			15*time.Second)
		if !eval[bool](b, `window.__noReload === true`) {
			t.Error("the list was reloaded; it should refresh itself")
		}
		if cls := eval[string](b, `document.querySelector("`+sel+` .countdown").className + ": " + document.querySelector("`+sel+` .countdown").textContent`); !strings.Contains(cls, "bad-text") {
			t.Errorf("the countdown of a connection whose refresh fails is %q, want it red (bad-text)", cls)
		}
		b.shot("console-list")

		b.do("a phone's screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
		b.wait("the list fits it", `document.documentElement.scrollWidth <= innerWidth + 1 && document.querySelector("`+sel+`").getBoundingClientRect().width <= innerWidth`)
		b.shot("console-list-phone")
		b.do("a wide screen", chromedp.EmulateViewport(1280, 900))
	})

	t.Run("consent for an authorization-code connection", func(t *testing.T) {
		p := newIDP(t, "orders-web", "web-secret", s.BrowserURL+"/oauth/callback")
		const ac = "Conn_REST_Orders_Web_AuthCode"
		s.create(map[string]any{"name": ac, "role": "INVOKE", "baseUrl": target + "/web",
			"security": map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": p.AuthorizeURL,
				"tokenUrl": p.TokenURL, "clientId": "orders-web", "clientSecret": "web-secret", "scopes": []string{"orders"}}})
		b.giveConsent(t, s, ac)
		if p.loginCount() != 1 {
			t.Errorf("logins at the provider = %d, want 1", p.loginCount())
		}
		b.wait("the timeline has the consent", `document.querySelector("#timeline-list") && document.querySelector("#timeline-list").textContent.includes("Consent given")`)
	})

	t.Run("consent for a custom three-legged connection", func(t *testing.T) {
		p := newIDP(t, "crm-web", "crm-secret", s.BrowserURL+"/oauth/callback")
		const tl = "Conn_REST_CRM_ThreeLegged"
		s.create(map[string]any{"name": tl, "role": "INVOKE", "baseUrl": target + "/crm",
			"security": map[string]any{"policy": "OAUTH2_CUSTOM_THREE_LEGGED",
				"authorizationRequest": map[string]any{"url": p.AuthorizeURL + "?response_type=code&client_id=${values.clientId}&scope=crm" +
					"&redirect_uri=${redirectUri}&state=${state}&code_challenge=${codeChallenge}&code_challenge_method=S256"},
				"values": map[string]any{"clientId": "crm-web"}, "secrets": map[string]any{"clientSecret": "crm-secret"},
				"tokenRequest": map[string]any{"url": p.TokenURL,
					"headers": map[string]any{"Authorization": "Basic ${base64(values.clientId:secrets.clientSecret)}"},
					"body":    "grant_type=authorization_code&code=${code}&code_verifier=${codeVerifier}&redirect_uri=${redirectUri}"}}})
		b.giveConsent(t, s, tl)
	})

	t.Run("Consent or Reconnect for the consent policies only", func(t *testing.T) {
		for policy, example := range policyExamples(t) {
			name := "Conn_Policy_" + policy
			s.create(map[string]any{"name": name, "role": "INVOKE", "baseUrl": target + "/p", "security": example})
			b.do("open "+name, chromedp.Navigate(s.BrowserURL+"/console/connections/"+name))
			b.wait(name+"'s buttons", `document.querySelector("#connection-name") && document.querySelector("#connection-name").textContent === "`+
				name+`" && document.querySelector("#edit") !== null`)
			if got, want := eval[bool](b, `document.querySelector("#consent") !== null`), slices.Contains(security.ConsentPolicies(), policy); got != want {
				t.Errorf("%s: a Consent or Reconnect button is %v, want %v", policy, got, want)
			}
			s.call("DELETE", "/api/v1/connections/"+name, nil, nil)
		}
	})

	t.Run("edit with a conflict", func(t *testing.T) {
		tokens.broken.Store(false)
		b.do("open the edit form", chromedp.Navigate(s.BrowserURL+"/console/connections/"+cc+"/edit"))
		b.wait("the edit form", `document.querySelector("#connection-form") !== null && document.querySelector("[name=description]").value === "Orders API, production"`)
		if eval[string](b, `document.querySelector("[data-field='security.clientSecret'] input[value=keep]").checked ? "keep" : ""`) != "keep" {
			t.Error("the stored client secret is not on Keep")
		}
		b.shot("console-edit")
		// Meanwhile, someone changes it through the API.
		if res := s.call("PATCH", "/api/v1/connections/"+cc, map[string]any{"description": "changed by someone else"}, nil); res.StatusCode != http.StatusOK {
			t.Fatalf("PATCH = %d", res.StatusCode)
		}
		b.fillField("description", "mine")
		b.click("#save")
		b.wait("the conflict", `!document.querySelector("#conflict").hidden`)
		if got := b.text("#conflict"); !strings.Contains(got, "Someone else changed") {
			t.Errorf("conflict says %q", got)
		}
		puts := b.requestsTo("PUT", "/api/v1/connections/"+cc)
		if len(puts) != 1 || headerValue(puts[0].Headers, "If-Match") != `"1"` {
			t.Errorf("PUTs = %d, If-Match %q; want one with the ETag read (\"1\")", len(puts), headerValue(puts[0].Headers, "If-Match"))
		}
		b.click("#conflict-reload")
		b.wait("the form reloaded with their change", `document.querySelector("[name=description]") && document.querySelector("[name=description]").value === "changed by someone else"`)

		// A new token endpoint origin with the secret kept: the rule shows,
		// and the API's refusal lands next to the secret.
		b.fillField("security.tokenUrl", "http://127.0.0.1:1/token")
		b.wait("the destination rule", `!document.querySelector("#destination-rule").hidden`)
		b.click("#save")
		b.wait("the API's error at the client secret", `!document.querySelector("[data-field='security.clientSecret'] .error").hidden`)
		t.Logf("client secret error: %s", b.text("[data-field='security.clientSecret'] .error"))
		b.click("[data-field='security.clientSecret'] input[value=replace]")
		b.fillField("security.clientSecret", "s3cr3t-orders")
		b.fillField("security.tokenUrl", tokens.URL+"/v2/token")
		b.click("#save")
		b.wait("saved", `location.pathname === "/console/connections/`+cc+`" && document.querySelector("#status") !== null`)
		var got map[string]any
		s.call("GET", "/api/v1/connections/"+cc, nil, &got)
		if sec := got["security"].(map[string]any); sec["tokenUrl"] != tokens.URL+"/v2/token" || got["description"] != "changed by someone else" {
			t.Errorf("after the edit: tokenUrl %v, description %v", sec["tokenUrl"], got["description"])
		}
	})

	t.Run("create and revoke a key", func(t *testing.T) {
		b.click(`#nav a[href="/console/keys"]`)
		b.wait("the keys page", `document.querySelector("#key-form") !== null && document.querySelector("#keys-body tr[data-name='console-admin']") !== null`)
		b.fillField("name", "orders-integration")
		b.fill("#key-role", "invoker")
		b.fill("#key-connections", "Conn_REST_Orders_*")
		b.click("#create-key")
		b.wait("the key, once", `document.querySelector("#new-key") && document.querySelector("#new-key").value.startsWith("cmk_")`)
		key := eval[string](b, `document.querySelector("#new-key").value`)
		b.click("#copy-key")
		b.wait("copied", `document.querySelector("#copy-status").textContent !== ""`)
		t.Logf("copy: %s", b.text("#copy-status"))
		b.wait("listed", `document.querySelector("#keys-body tr[data-name='orders-integration']") !== null`)
		b.shot("console-keys")
		if res := s.send("POST", "/api/v1/connections/"+cc+"/invoke", map[string]any{"relativeUri": "/x"}, nil, "Authorization", "Bearer "+key); res.StatusCode != http.StatusOK {
			t.Errorf("invoke with the new key = %d, want 200", res.StatusCode)
		}
		b.click("#keys-body tr[data-name='orders-integration'] [data-revoke]")
		b.click("#confirm-yes")
		b.wait("gone from the list", `document.querySelector("#keys-body tr[data-name='orders-integration']") === null`)
		if res := s.send("POST", "/api/v1/connections/"+cc+"/invoke", map[string]any{"relativeUri": "/x"}, nil, "Authorization", "Bearer "+key); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("invoke with the revoked key = %d, want 401", res.StatusCode)
		}
		if eval[bool](b, `document.body.innerText.includes(`+jsString(key)+`)`) {
			t.Error("the key is still on the page after the list was redrawn")
		}
	})

	t.Run("audit", func(t *testing.T) {
		b.click(`#nav a[href="/console/audit"]`)
		b.wait("the audit log", `document.querySelectorAll("#audit-body tr[data-action]").length > 0`)
		b.fill("#audit-action", "apikey.revoked")
		b.click("#audit-apply")
		b.wait("filtered", `[...document.querySelectorAll("#audit-body tr")].every(r => r.dataset.action === "apikey.revoked") && document.querySelectorAll("#audit-body tr[data-action]").length === 1`)
		b.fill("#audit-action", "")
		b.click("#audit-apply")
		b.wait("unfiltered", `document.querySelectorAll("#audit-body tr[data-action]").length > 1`)
		b.shot("console-audit")
	})

	t.Run("delete with confirmation", func(t *testing.T) {
		const ac = "Conn_REST_Orders_Web_AuthCode"
		b.do("open it", chromedp.Navigate(s.BrowserURL+"/console/connections/"+ac))
		b.click("#delete")
		b.wait("the confirmation", `document.querySelector("dialog[open]") !== null && document.activeElement.id === "confirm-no"`)
		b.do("Escape", chromedp.KeyEvent(kb.Escape))
		b.wait("cancelled", `document.querySelector("dialog") === null`)
		if res := s.call("GET", "/api/v1/connections/"+ac, nil, nil); res.StatusCode != http.StatusOK {
			t.Fatalf("after cancelling, GET = %d, want 200", res.StatusCode)
		}
		b.click("#delete")
		b.click("#confirm-yes")
		b.wait("back at the list", `location.pathname === "/console/" && document.querySelector("#notice").textContent.includes("Deleted")`)
		if res := s.call("GET", "/api/v1/connections/"+ac, nil, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("after Delete, GET = %d, want 404", res.StatusCode)
		}
	})

	t.Run("sign out", func(t *testing.T) {
		ck := sessionCookie(t, b)
		b.click("#sign-out")
		b.wait("the sign-in page", `location.pathname === "/console/signin" && document.querySelector("#api-key") !== null`)
		res := s.send("GET", "/api/v1/connections", nil, nil, "Cookie", ck.Name+"="+ck.Value)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("the signed-out session's cookie = %d on the API, want 401 (ended on the server)", res.StatusCode)
		}
		if sessionCookie(t, b) != nil {
			t.Error("the browser still holds the session cookie after sign-out")
		}
	})

	t.Run("nothing left the service", func(t *testing.T) {
		idpOrigin := regexp.MustCompile(`^http://` + regexp.QuoteMeta(idpHost) + `:\d+$`)
		for origin, n := range b.origins() {
			if origin != s.BrowserURL && !idpOrigin.MatchString(origin) {
				t.Errorf("%d requests to %s: only connmgr (%s) and the provider's login page may be asked", n, origin, s.BrowserURL)
			}
		}
		b.mu.Lock()
		for _, r := range b.requests {
			if strings.Contains(r.URL, s.admin) || strings.Contains(r.URL, url.QueryEscape(s.admin)) {
				t.Errorf("a request URL holds the API key: %s %s", r.Method, r.URL)
			}
		}
		b.mu.Unlock()
		if p := b.pageProblems(); len(p) > 0 {
			t.Errorf("the pages reported problems:\n%s", strings.Join(p, "\n"))
		}
	})
	t.Logf("console flow: %v", time.Since(start).Round(time.Millisecond))
}

// giveConsent opens the page of connection name, which waits for consent,
// gives consent at the identity provider's login form, comes back to the
// page and finds the connection CONFIGURED, offering Reconnect.
func (b *browser) giveConsent(t *testing.T, s *server, name string) {
	t.Helper()
	b.do("open "+name, chromedp.Navigate(s.BrowserURL+"/console/connections/"+name))
	b.wait("NEEDS_CONSENT and the Consent button", `document.querySelector("#status") && document.querySelector("#status").textContent === "NEEDS_CONSENT" && document.querySelector("#consent") !== null`)
	b.click("#consent")
	b.wait("the provider's login form", `location.host.startsWith("`+idpHost+`") && document.querySelector("#idp-user") !== null`)
	b.fill("#idp-user", "alice")
	b.fill("#idp-password", "wonderland")
	b.click("#idp-sign-in")
	b.wait("connmgr's callback page", `location.pathname === "/oauth/callback" && document.body.textContent.includes("Consent given")`)
	b.click(`a[href="/console/connections/` + name + `"]`)
	b.wait("back in the console, CONFIGURED", `location.pathname === "/console/connections/`+name+`" && document.querySelector("#status") && document.querySelector("#status").textContent === "CONFIGURED"`)
	if got := b.text("#consent"); got != "Reconnect" {
		t.Errorf("%s: the consent button reads %q once consent is given, want Reconnect", name, got)
	}
}

// policyExamples returns each security policy's example from the
// contract (SecurityCreate's), by policy.
func policyExamples(t *testing.T) map[string]map[string]any {
	t.Helper()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Discriminator struct {
					Mapping map[string]string `yaml:"mapping"`
				} `yaml:"discriminator"`
				Example any `yaml:"example"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(connmgr.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for policy, ref := range doc.Components.Schemas["SecurityCreate"].Discriminator.Mapping {
		if ex, ok := doc.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")].Example.(map[string]any); ok {
			out[policy] = ex
		}
	}
	if len(out) < len(security.Policies()) {
		t.Fatalf("the contract has examples of %d policies, want all %d", len(out), len(security.Policies()))
	}
	return out
}

// sessionCookie returns the browser's connmgr session cookie, or nil.
func sessionCookie(t *testing.T, b *browser) *network.Cookie {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	res, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
	})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if strings.HasSuffix(c.Name, "connmgr_session") {
			return c
		}
	}
	return nil
}

func headerValue(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			if s, ok := v.(string); ok {
				return s
			}
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
