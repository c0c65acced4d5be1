package console_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store/storetest"
)

// TestSessionsOtherToken: the CSRF token of one live session does not
// pass with the cookie of another (each token is bound to its own
// session), nor does a session's token once that session was signed out
// and a new one began.
func TestSessionsOtherToken(t *testing.T) {
	t.Parallel()
	s := newServer(t, storetest.SQLite)
	mine := s.signIn(s.admin)
	theirs := s.signIn(s.key("other-admin", access.RoleAdmin))
	if mine.csrf == theirs.csrf || mine.csrf == "" {
		t.Fatalf("two sessions have the token %q", mine.csrf)
	}
	crossed := &session{cookie: mine.cookie, csrf: theirs.csrf}
	if got := s.as(crossed, "POST", "/api/v1/connections", s.newConn("Conn_Crossed"), nil); got != http.StatusForbidden {
		t.Errorf("a change with another live session's CSRF token = %d, want 403", got)
	}
	if got := s.as(crossed, "DELETE", "/console/session", nil, nil); got != http.StatusForbidden {
		t.Errorf("sign-out with another live session's CSRF token = %d, want 403", got)
	}
	if got := s.as(mine, "GET", "/console/session", nil, nil); got != http.StatusOK {
		t.Errorf("the session after the refused sign-out = %d, want 200 (still live)", got)
	}
	// Signed out, then in again: the old token does not go with the new
	// cookie.
	if got := s.as(mine, "DELETE", "/console/session", nil, nil); got != http.StatusNoContent {
		t.Fatalf("sign-out = %d", got)
	}
	again := s.signIn(s.admin)
	if got := s.as(&session{cookie: again.cookie, csrf: mine.csrf}, "POST", "/api/v1/connections", s.newConn("Conn_Stale"), nil); got != http.StatusForbidden {
		t.Errorf("a change with the ended session's token = %d, want 403", got)
	}
	if got := s.as(again, "POST", "/api/v1/connections", s.newConn("Conn_Right"), nil); got != http.StatusCreated {
		t.Errorf("a change with the session's own token = %d, want 201", got)
	}
	var list struct{ Items []map[string]any }
	s.call("GET", "/api/v1/connections", nil, &list)
	if len(list.Items) != 1 || list.Items[0]["name"] != "Conn_Right" {
		t.Errorf("connections = %v, want only Conn_Right", list.Items)
	}
}

// attacker serves a blank page, from which the test submits forms and
// fetches as that page's own script would.
func attacker(t *testing.T) (port string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!DOCTYPE html><title>another site</title><p>nothing to see</p>")
	}))
	t.Cleanup(srv.Close)
	_, port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

// TestConsoleCrossSite: a signed-in admin's browser visits pages of
// another site (idp.test: SameSite=Strict keeps the cookie home) and of
// another host of connmgr's own site (evil.connmgr.test: the browser sends
// the cookie, so only connmgr's Origin and Sec-Fetch-Site checks stand),
// whose forms and fetches post to the API (a connection, an admin API
// key, a test) and to sign-in (to swap in the attacker's session). None
// succeeds, and the admin is still signed in as themself.
func TestConsoleCrossSite(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	s.create(s.newConn("Conn_Victim"))
	own := s.key("attacker", access.RoleViewer)
	port := attacker(t)
	b.signIn(s, s.admin)
	b.wait("the list", `document.querySelector("#connections-body tr[data-name='Conn_Victim']") !== null`)

	// A text/plain form whose body is JSON: name={"..., value "}.
	jsonForm := func(target, body string) string {
		cut := strings.LastIndex(body, "}")
		return fmt.Sprintf(`(() => { const f = document.createElement("form"); f.method = "POST"; f.action = %s;
			f.enctype = "text/plain"; const i = document.createElement("input"); i.name = %s; i.value = %s;
			f.append(i); document.body.append(f); f.submit(); return true; })()`,
			jsString(s.BrowserURL+target), jsString(body[:cut]+`,"pad":"`), jsString(`"}`))
	}
	urlForm := func(target string, fields map[string]string) string {
		var inputs strings.Builder
		for k, v := range fields {
			fmt.Fprintf(&inputs, `{ const i = document.createElement("input"); i.name = %s; i.value = %s; f.append(i); }`,
				jsString(k), jsString(v))
		}
		return fmt.Sprintf(`(() => { const f = document.createElement("form"); f.method = "POST"; f.action = %s;
			%s document.body.append(f); f.submit(); return true; })()`, jsString(s.BrowserURL+target), inputs.String())
	}
	for _, site := range []struct {
		host string
		// status is what connmgr answers: 401 where the cookie stays
		// home, 403 (csrf_failed) where it came along.
		status int
	}{{idpHost, http.StatusUnauthorized}, {siblingHost, http.StatusForbidden}} {
		page := "http://" + net.JoinHostPort(site.host, port) + "/"
		for _, post := range []struct{ what, script string }{
			{"a connection", jsonForm("/api/v1/connections",
				`{"name":"Conn_Forged","role":"INVOKE","baseUrl":"https://evil.example","security":{"policy":"NONE"}}`)},
			{"an admin key", jsonForm("/api/v1/apikeys", `{"name":"forged","role":"ADMIN"}`)},
			{"a test", urlForm("/api/v1/connections/Conn_Victim/test", map[string]string{"x": "y"})},
			{"a sign-in with the attacker's key", urlForm("/console/session", map[string]string{"key": own})},
		} {
			b.do("open "+page, chromedp.Navigate(page))
			b.wait("the other site's page", `document.title === "another site"`)
			eval[bool](b, post.script)
			b.wait("connmgr's answer to the form post of "+post.what,
				`location.origin === `+jsString(s.BrowserURL)+` && document.body && document.body.innerText.includes('"status"')`)
			text := eval[string](b, `document.body.innerText`)
			if want := fmt.Sprintf(`"status":%d`, site.status); !strings.Contains(text, want) {
				// The sign-in takes no cookie: another site's post is
				// refused for its origin either way.
				if !(strings.Contains(post.what, "sign-in") && strings.Contains(text, `"status":403`)) {
					t.Errorf("form post of %s from %s: connmgr answered %s, want %s", post.what, site.host, text, want)
				}
			}
		}
		// Scripted requests the page may send without CORS: no-cors
		// POSTs with credentials.
		b.do("open "+page, chromedp.Navigate(page))
		b.wait("the other site's page", `document.title === "another site"`)
		eval[bool](b, fmt.Sprintf(`(() => { window.__sent = false; (async () => {
				const opts = (body, type) => ({method: "POST", mode: "no-cors", credentials: "include", body,
					headers: {"Content-Type": type}});
				await fetch(%s, opts(%s, "text/plain")).catch(() => {});
				await fetch(%s, opts(%s, "text/plain")).catch(() => {});
				await fetch(%s, opts("key=" + encodeURIComponent(%s), "application/x-www-form-urlencoded")).catch(() => {});
				window.__sent = true; })(); return true; })()`,
			jsString(s.BrowserURL+"/api/v1/connections"),
			jsString(`{"name":"Conn_Fetched","role":"INVOKE","baseUrl":"https://evil.example","security":{"policy":"NONE"}}`),
			jsString(s.BrowserURL+"/api/v1/apikeys"), jsString(`{"name":"fetched","role":"ADMIN"}`),
			jsString(s.BrowserURL+"/console/session"), jsString(own)))
		b.wait("the fetches answered", `window.__sent === true`)
	}

	var conns struct{ Items []map[string]any }
	s.call("GET", "/api/v1/connections", nil, &conns)
	if len(conns.Items) != 1 {
		t.Errorf("connections after the attacks = %d, want only Conn_Victim", len(conns.Items))
	}
	var victim struct{ LastTest any }
	s.call("GET", "/api/v1/connections/Conn_Victim", nil, &victim)
	if victim.LastTest != nil {
		t.Errorf("Conn_Victim was tested by another site's form: %v", victim.LastTest)
	}
	keys, err := s.g.Keys.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == "forged" || k.Name == "fetched" {
			t.Errorf("another site's page created the API key %q (%s)", k.Name, k.Role)
		}
	}
	b.do("back to the console", chromedp.Navigate(s.BrowserURL+"/console/"))
	b.wait("still signed in", `!document.querySelector("#who").hidden`)
	if got := b.text("#who-name"); got != "console-admin" {
		t.Errorf("signed in as %q after the attacks, want console-admin (not the attacker's key)", got)
	}
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the console's pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// TestConsoleReplicas: on PostgreSQL with two replicas, a browser signed
// in on replica a uses replica b's console as the same person (its
// changes carry the session's CSRF token, which b accepts), a key revoked
// on a sends b's open page to sign-in, and a sign-out on b ends the
// session on a.
func TestConsoleReplicas(t *testing.T) {
	t.Parallel()
	storetest.RequirePostgres(t)
	ring := storetest.KeyRing(t)
	dbURL := storetest.CreatePostgres(t)
	a := serverOn(t, openPostgres(t, dbURL), ring)
	rb := serverOn(t, openPostgres(t, dbURL), ring)
	b := newBrowser(t)
	a.create(a.newConn("Conn_Replicated"))
	dev := a.key("ops", access.RoleDeveloper)

	b.signIn(a, dev)
	b.wait("a's list", `document.querySelector("#connections-body tr[data-name='Conn_Replicated']") !== null`)
	b.do("open b's console", chromedp.Navigate(rb.BrowserURL+"/console/connections/Conn_Replicated"))
	b.wait("signed in on b", `!document.querySelector("#who").hidden && document.querySelector("#delete") !== null`)
	if got := b.text("#who-name"); got != "ops" {
		t.Errorf("on b, signed in as %q, want ops", got)
	}
	b.click("#delete")
	b.click("#confirm-yes")
	b.wait("deleted on b", `location.pathname === "/console/" && document.querySelector("#notice").textContent.includes("Deleted")`)
	if res := a.call("GET", "/api/v1/connections/Conn_Replicated", nil, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("after Delete on b, GET on a = %d, want 404", res.StatusCode)
	}

	a.revoke("ops")
	b.waitFor("b's page signed out by the revocation on a", `location.pathname === "/console/signin" && document.querySelector("#notice").textContent.includes("revoked")`, 12*time.Second)

	b.signIn(rb, a.key("ops2", access.RoleDeveloper))
	ck := sessionCookie(t, b)
	if ck == nil {
		t.Fatal("no session cookie")
	}
	b.signOut()
	if res := a.send("GET", "/api/v1/connections", nil, nil, "Cookie", ck.Name+"="+ck.Value); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("the cookie on a after sign-out on b = %d, want 401", res.StatusCode)
	}
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// TestConsoleHostilePath: a hostile name in the page's URL (links can
// carry anything) and hostile test steps are shown as text.
func TestConsoleHostilePath(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	tokens := newTokenEndpoint(t, 3600, "denied "+hostile)
	tokens.broken.Store(true)
	const name = "Conn_Hostile_Steps"
	s.create(map[string]any{"name": name, "role": "INVOKE", "baseUrl": "https://hostile.example.com/api",
		"security": map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": tokens.URL + "/token",
			"clientId": "c", "clientSecret": "s3cr3t-hostile", "scopes": []string{"a"}}})
	b.signIn(s, s.admin)
	clean := `window.__pwned === undefined && !document.querySelector('img[src="x"], svg, main script')`

	for _, p := range []string{"/console/connections/" + url.PathEscape(hostile), "/console/connections/" + url.PathEscape(hostile) + "/edit",
		"/console/signin?next=" + url.QueryEscape("/console/connections/"+hostile)} {
		b.do("open "+p, chromedp.Navigate(s.BrowserURL+p))
		b.wait(p+" drawn", `document.querySelector("main h1") !== null && !document.querySelector("main").textContent.includes("Loading")`)
		time.Sleep(150 * time.Millisecond)
		if !eval[bool](b, clean) {
			t.Errorf("%s: hostile markup in the URL became elements or ran", p)
		}
	}

	b.do("open the connection", chromedp.Navigate(s.BrowserURL+"/console/connections/"+name))
	b.click("#test")
	b.wait("the test's steps", `document.querySelector("#test-steps li") !== null`)
	time.Sleep(150 * time.Millisecond)
	if !eval[bool](b, clean) {
		t.Error("the test's steps: hostile markup became elements or ran")
	}
	if !eval[bool](b, `document.querySelector("#action-result").innerText.includes("<img src=x")`) {
		t.Errorf("the test's result does not show the provider's text as text: %q", b.text("#action-result"))
	}
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// TestConsoleRevokeOwnKey: an admin who revokes, on the API keys page,
// the key they are signed in with is warned first, then signed out at
// once; the key signs in no more.
func TestConsoleRevokeOwnKey(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	own := s.key("short-lived-admin", access.RoleAdmin)
	b.signIn(s, own)
	b.click(`#nav a[href="/console/keys"]`)
	b.wait("the keys", `document.querySelector("#keys-body tr[data-name='short-lived-admin'] [data-revoke]") !== null`)
	b.click("#keys-body tr[data-name='short-lived-admin'] [data-revoke]")
	b.wait("the warning", `document.querySelector("dialog") && document.querySelector("dialog").textContent.includes("your own session")`)
	b.click("#confirm-yes")
	b.wait("signed out", `location.pathname === "/console/signin" && document.querySelector("#api-key") !== null && document.querySelector("#notice").textContent.includes("revoked")`)
	b.fill("#api-key", own)
	b.click("#sign-in")
	b.wait("the revoked key is refused", `document.querySelector("[data-field=key] .error").textContent.includes("revoked")`)
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}
