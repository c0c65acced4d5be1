package console_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// signOut signs the browser out and waits for the sign-in page.
func (b *browser) signOut() {
	b.t.Helper()
	b.click("#sign-out")
	b.wait("signed out", `location.pathname === "/console/signin" && document.querySelector("#api-key") !== null`)
}

// TestConsoleRoles: each page shows only what the key's role may see and
// do. A viewer reads, with no button that changes anything and no keys
// page; a developer changes connections but sees neither keys nor the
// audit log; an invoker sees its patterns and no connection at all. A key
// revoked while signed in, and a session that expires, send the open page
// back to sign-in.
func TestConsoleRoles(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	const name = "Conn_REST_Orders_Roles"
	s.create(map[string]any{"name": name, "role": "INVOKE", "baseUrl": "https://orders.example.com/roles",
		"security": map[string]any{"policy": "BASIC", "username": "svc", "password": "CANARY-role-password"}})
	visibleNav := `[...document.querySelectorAll("#nav a")].filter(a => !a.hidden).map(a => a.textContent).join(",")`

	t.Run("viewer", func(t *testing.T) {
		// By keyboard: the key field has the focus; Enter signs in.
		b.do("open the console", chromedp.Navigate(s.BrowserURL+"/console/"))
		b.wait("the key field has the focus", `document.activeElement && document.activeElement.id === "api-key"`)
		b.do("type the key and Enter", chromedp.KeyEvent(s.key("viewer", access.RoleViewer)+"\r"))
		b.wait("the list", `document.querySelector("#connections-body tr[data-name='`+name+`']") !== null`)
		if got := eval[string](b, visibleNav); got != "Connections,Audit log" {
			t.Errorf("viewer's navigation = %q, want Connections,Audit log", got)
		}
		if eval[bool](b, `document.querySelector("#new-connection") !== null`) {
			t.Error("a viewer is offered New connection")
		}
		b.click(`a[href="/console/connections/` + name + `"]`)
		b.wait("read only", `document.querySelector("#actions") && document.querySelector("#actions").textContent.includes("Read only (viewer)")`)
		if n := eval[int](b, `document.querySelectorAll("#actions button, #actions a").length`); n != 0 {
			t.Errorf("a viewer is offered %d actions", n)
		}
		if got := b.text(`[data-field="security.password"]`); got != "set" {
			t.Errorf("password shown as %q, want set", got)
		}
		if eval[bool](b, `document.documentElement.outerHTML.includes("CANARY")`) {
			t.Error("the page holds the password")
		}
		b.do("open the keys page", chromedp.Navigate(s.BrowserURL+"/console/keys"))
		b.wait("not allowed", `document.querySelector("h1") && document.querySelector("h1").textContent === "Not allowed"`)
		b.signOut()
	})

	t.Run("developer", func(t *testing.T) {
		audits := len(b.requestsTo("GET", "/api/v1/audit")) // the viewer's
		b.signIn(s, s.key("developer", access.RoleDeveloper))
		b.wait("the list", `document.querySelector("#new-connection") !== null`)
		if got := eval[string](b, visibleNav); got != "Connections" {
			t.Errorf("developer's navigation = %q, want Connections", got)
		}
		b.click(`a[href="/console/connections/` + name + `"]`)
		b.wait("the actions", `document.querySelector("#test") !== null && document.querySelector("#edit") !== null && document.querySelector("#delete") !== null`)
		if !eval[bool](b, `document.querySelector("#timeline").hidden && document.querySelector("#events").hidden`) {
			t.Error("a developer, who may not read the audit log, is shown its timeline or events")
		}
		if len(b.requestsTo("GET", "/api/v1/audit")) != audits {
			t.Error("the page asked for the audit log with a developer's session")
		}
		// Its key is revoked while the page is open: the page's next
		// refresh finds the session gone and asks to sign in again.
		s.revoke("developer")
		b.waitFor("signed out by the revocation", `location.pathname === "/console/signin" && document.querySelector("#notice").textContent.includes("revoked")`, 12*time.Second)
	})

	t.Run("expired session", func(t *testing.T) {
		b.signIn(s, s.admin)
		b.wait("the list", `document.querySelector("#connections-body tr[data-name]") !== null`)
		s.clock.advance(61 * time.Minute)
		b.waitFor("signed out when the session expired", `location.pathname === "/console/signin" && !document.querySelector("#notice").hidden`, 12*time.Second)
		if got := eval[string](b, `new URLSearchParams(location.search).get("next")`); got != "/console/" {
			t.Errorf("next = %q, want the page the session ended on", got)
		}
	})

	t.Run("invoker", func(t *testing.T) {
		b.signIn(s, s.key("orders-invoker", access.RoleInvoker, "Conn_REST_Orders_*"))
		b.wait("its own page", `document.querySelector("#invoker-patterns") !== null`)
		if got := b.text("#invoker-patterns"); got != "Conn_REST_Orders_*" {
			t.Errorf("patterns shown = %q", got)
		}
		if got := eval[string](b, visibleNav); got != "" {
			t.Errorf("invoker's navigation = %q, want none", got)
		}
		b.do("open a connection it matches", chromedp.Navigate(s.BrowserURL+"/console/connections/"+name))
		b.wait("not allowed", `document.querySelector("h1") && document.querySelector("h1").textContent === "Not allowed"`)
		text := eval[string](b, `document.body.innerText`)
		if strings.Contains(text, "orders.example.com") || strings.Contains(text, "svc") {
			t.Errorf("an invoker's page shows connection settings:\n%s", text)
		}
		b.signOut()
	})
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// hostile is markup in places where connmgr keeps text: if any page
// parsed it as HTML, an img element with src "x" would exist and its
// handler would set window.__pwned (unless the CSP stopped it, which the
// test would see as a violation).
const hostile = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>`

// TestConsoleHostile: hostile names, descriptions, keywords, header values
// and a provider's error_description are shown as text on every page.
func TestConsoleHostile(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.SQLite)
	tokens := newTokenEndpoint(t, 3600, "denied "+hostile)
	tokens.broken.Store(true)
	const name = "Conn_Hostile"
	s.create(map[string]any{"name": name, "role": "INVOKE", "baseUrl": "https://hostile.example.com/api",
		"description": hostile, "keywords": []string{`"><svg onload=window.__pwned=3>`},
		"headers": map[string]string{"X-Note": hostile},
		"security": map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": tokens.URL + "/token",
			"clientId": "c", "clientSecret": "s3cr3t-hostile", "scopes": []string{"a"}}})
	s.call("POST", "/api/v1/connections/"+name+"/test", nil, nil)
	var got struct{ StatusReason string }
	s.call("GET", "/api/v1/connections/"+name, nil, &got)
	if !strings.Contains(got.StatusReason, "<img src=x") {
		t.Fatalf("statusReason = %q, want the provider's hostile description in it", got.StatusReason)
	}
	b.signIn(s, s.admin)
	clean := `window.__pwned === undefined && !document.querySelector('img[src="x"], svg, main script')`
	for _, page := range []struct{ path, ready string }{
		{"/console/", `document.querySelector("#connections-body tr[data-name='` + name + `'] .reason")`},
		{"/console/connections/" + name, `document.querySelector("#status-reason") && document.querySelector("#events-body tr[data-action]")`},
		{"/console/connections/" + name + "/edit", `document.querySelector("[name=description]")`},
		{"/console/audit", `document.querySelector("#audit-body tr[data-action]")`},
	} {
		b.do("open "+page.path, chromedp.Navigate(s.BrowserURL+page.path))
		b.wait(page.path+" drawn", page.ready)
		time.Sleep(100 * time.Millisecond) // an injected handler would have run by now
		if !eval[bool](b, clean) {
			t.Errorf("%s: hostile markup became elements or ran", page.path)
		}
		if !eval[bool](b, `document.body.innerText.includes("<img src=x") || [...document.querySelectorAll("input, textarea")].some(e => e.value.includes("<img src=x"))`) {
			t.Errorf("%s: the hostile text is not shown as text", page.path)
		}
	}
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the pages reported problems (a CSP violation would mean markup was injected):\n%s", strings.Join(p, "\n"))
	}
}

// TestConsoleThousand: 1,000 connections page through by the API's
// cursors, in order and without a gap; broken ones come first when asked;
// on each engine.
func TestConsoleThousand(t *testing.T) {
	t.Parallel()
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			t.Parallel()
			consoleThousand(t, engine)
		})
	}
}

func consoleThousand(t *testing.T, engine storetest.Engine) {
	b := newBrowser(t)
	s := newServer(t, engine)
	ctx := context.Background()
	start := time.Now()
	var broken []string
	// The first 120 through the service, audited (the audit page's
	// paging needs them); the rest without the observers, which would
	// only slow the seeding.
	lean := &connections.Service{Store: s.g.Store, Fingerprints: s.g.Service.Fingerprints}
	for i := range 1000 {
		c := storetest.ValidConnection(fmt.Sprintf("Conn_Bulk_%04d", i), security.PolicyNone)
		c.Description = fmt.Sprintf("bulk connection %d", i)
		svc := lean
		if i < 120 {
			svc = s.g.Service
		}
		if err := svc.Create(ctx, "seed", c); err != nil {
			t.Fatal(err)
		}
		if i%199 == 7 {
			if err := s.g.Service.SetStatus(ctx, c, connections.StatusError, "HTTP 503 from the target", nil); err != nil {
				t.Fatal(err)
			}
			broken = append(broken, c.Name)
		}
	}
	t.Logf("1000 connections created in %v", time.Since(start).Round(time.Millisecond))

	b.signIn(s, s.admin)
	b.wait("the first page", `document.querySelectorAll("#connections-body tr[data-name]").length === 50`)
	b.fill("#filter-limit", "100")
	b.wait("pages of 100", `document.querySelectorAll("#connections-body tr[data-name]").length === 100`)
	var names []string
	var slowest time.Duration
	for page := 1; ; page++ {
		names = append(names, eval[[]string](b, `[...document.querySelectorAll("#connections-body tr[data-name]")].map(r => r.dataset.name)`)...)
		if eval[bool](b, `document.querySelector("#next-page").disabled`) {
			break
		}
		first := eval[string](b, `document.querySelector("#connections-body tr[data-name]").dataset.name`)
		t0 := time.Now()
		b.click("#next-page")
		b.wait(fmt.Sprintf("page %d", page+1), `document.querySelector("#connections-body tr[data-name]").dataset.name !== `+jsString(first))
		slowest = max(slowest, time.Since(t0))
		if page > 20 {
			t.Fatal("more than 20 pages of 100")
		}
	}
	t.Logf("10 pages of 100: slowest page change %v", slowest.Round(time.Millisecond))
	if len(names) != 1000 || !sort.StringsAreSorted(names) || names[0] != "Conn_Bulk_0000" || names[999] != "Conn_Bulk_0999" {
		t.Errorf("paged through %d names (sorted %v), want the 1000 in order", len(names), sort.StringsAreSorted(names))
	}
	if slowest > 2*time.Second {
		t.Errorf("a page of 100 took %v to draw, want well under 2s", slowest)
	}
	if got := b.text("#page-label"); got != "Page 10" {
		t.Errorf("last page label = %q, want Page 10", got)
	}
	b.click("#prev-page")
	b.wait("back to page 9", `document.querySelector("#page-label").textContent === "Page 9" && document.querySelector("#connections-body tr[data-name]").dataset.name === "Conn_Bulk_0800"`)

	t0 := time.Now()
	b.fill("#filter-order", "attention")
	b.wait("broken first", `document.querySelector("#page-label").textContent === "Page 1 of 10" && document.querySelector("#connections-body tr").classList.contains("bad")`)
	t.Logf("broken first over 1000: %v", time.Since(t0).Round(time.Millisecond))
	top := eval[[]string](b, fmt.Sprintf(`[...document.querySelectorAll("#connections-body tr[data-name]")].slice(0, %d).map(r => r.dataset.name)`, len(broken)+1))
	if strings.Join(top[:len(broken)], ",") != strings.Join(broken, ",") || top[len(broken)] != "Conn_Bulk_0000" {
		t.Errorf("first rows = %v, want the broken %v, then the rest by name", top, broken)
	}
	b.fill("#filter-q", "bulk_0999")
	b.wait("the search", `document.querySelectorAll("#connections-body tr[data-name]").length === 1 && document.querySelector("#connections-body tr[data-name]").dataset.name === "Conn_Bulk_0999"`)
	b.fill("#filter-q", "")
	b.fill("#filter-status", "ERROR")
	b.wait("the status filter", fmt.Sprintf(`document.querySelectorAll("#connections-body tr[data-name]").length === %d`, len(broken)))

	b.click(`#nav a[href="/console/audit"]`)
	b.wait("the audit log's first page", `document.querySelectorAll("#audit-body tr[data-action]").length === 50`)
	seen := map[string]bool{}
	for page := 1; page <= 3; page++ {
		for _, id := range eval[[]string](b, `[...document.querySelectorAll("#audit-body tr[data-action] td:nth-child(3)")].map(td => td.textContent)`) {
			seen[id] = true
		}
		if page < 3 {
			first := b.text("#audit-body tr[data-action] td:nth-child(3)")
			b.click("#audit-next")
			b.wait("the next page", `document.querySelector("#audit-page").textContent === "Page `+fmt.Sprint(page+1)+`" && document.querySelector("#audit-body tr[data-action] td:nth-child(3)").textContent !== `+jsString(first))
		}
	}
	if len(seen) < 120 || !eval[bool](b, `document.querySelector("#audit-next").disabled`) {
		t.Errorf("three audit pages showed %d events (want the 120 connection.created and the status changes), last page's Older enabled: %v",
			len(seen), !eval[bool](b, `document.querySelector("#audit-next").disabled`))
	}
	b.click("#audit-prev")
	b.wait("back a page", `document.querySelector("#audit-page").textContent === "Page 2"`)
	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the pages reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// TestConsoleShortPages: a search on PostgreSQL may answer short pages
// (the store bounds what one page reads); the list follows the cursor
// until its page is full, so that a search shows its matches on the first
// page rather than an empty page with Next.
func TestConsoleShortPages(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := newServer(t, storetest.Postgres)
	ctx := context.Background()
	var want []string
	for i := range 30 {
		c := storetest.ValidConnection(fmt.Sprintf("Conn_Short_%02d", i), security.PolicyNone)
		if i%3 == 2 {
			c.Keywords = []string{"needle"}
			want = append(want, c.Name)
		}
		if err := s.g.Service.Create(ctx, "seed", c); err != nil {
			t.Fatal(err)
		}
	}
	// Every page of a search reads 3 names: at most one match each.
	s.g.Store.SetSearchBounds(0, 3)

	b.signIn(s, s.admin)
	b.wait("the first page", `document.querySelectorAll("#connections-body tr[data-name]").length === 30`)
	b.fill("#filter-q", "needle")
	b.wait("the search", fmt.Sprintf(`document.querySelectorAll("#connections-body tr[data-name]").length === %d`, len(want)))
	if got := eval[[]string](b, `[...document.querySelectorAll("#connections-body tr[data-name]")].map(r => r.dataset.name)`); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("the search shows %v, want %v", got, want)
	}
}
