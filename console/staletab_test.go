package console_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store/storetest"
)

// signInElsewhere signs the browser in with key as another tab of it
// would: the cookie changes under the open page, whose CSRF token is now
// that of a session that ended.
func (b *browser) signInElsewhere(key string) {
	b.t.Helper()
	eval[bool](b, fmt.Sprintf(`(() => { window.__elsewhere = 0; fetch("/console/session", {method: "POST",
		headers: {"Content-Type": "application/x-www-form-urlencoded", Accept: "application/json"},
		body: "key=" + encodeURIComponent(%s)}).then(r => { window.__elsewhere = r.status; }); return true; })()`, jsString(key)))
	b.wait("signed in in another tab", `window.__elsewhere === 200`)
}

// TestConsoleSignOutStaleTab: Sign out in a tab whose session was
// replaced by a sign-in in another tab of the same browser still ends the
// browser's session on the server: the person asked to be signed out.
func TestConsoleSignOutStaleTab(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	b.signIn(s, s.admin)
	b.wait("the list", `document.querySelector("#connections-body") !== null`)
	b.signInElsewhere(s.key("other-tab", access.RoleViewer))
	ck := sessionCookie(t, b)
	if ck == nil {
		t.Fatal("no session cookie after the other tab's sign-in")
	}
	b.signOut()
	if res := s.send("GET", "/api/v1/connections", nil, nil, "Cookie", ck.Name+"="+ck.Value); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("the browser's session after Sign out = %d on the API, want 401 (ended on the server)", res.StatusCode)
	}
	if sessionCookie(t, b) != nil {
		t.Error("the browser still holds a session cookie after Sign out")
	}
}

// TestConsoleStaleTab: a change from a tab whose session was replaced in
// another tab (by another key) is refused for its CSRF token; the page
// then says that the session changed, and shows what the new session's
// key may do, rather than a bare CSRF failure under the old key's name.
func TestConsoleStaleTab(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	s.create(s.newConn("Conn_Stale_Tab"))
	b.signIn(s, s.admin)
	b.do("open the connection", chromedp.Navigate(s.BrowserURL+"/console/connections/Conn_Stale_Tab"))
	b.wait("its actions", `document.querySelector("#test") !== null`)
	b.signInElsewhere(s.key("other-viewer", access.RoleViewer))
	b.click("#test")
	b.wait("the page follows the new session", `document.querySelector("#who-name").textContent === "other-viewer" && document.querySelector("#notice").textContent.includes("another")`)
	if eval[bool](b, `document.querySelector("#test") !== null || !document.querySelector('#nav a[href="/console/keys"]').hidden`) {
		t.Error("the page still offers what the viewer's session may not do")
	}
	var conn struct{ LastTest any }
	s.call("GET", "/api/v1/connections/Conn_Stale_Tab", nil, &conn)
	if conn.LastTest != nil {
		t.Errorf("the stale tab's change went through: %v", conn.LastTest)
	}
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}
