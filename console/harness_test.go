package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/cmd/connmgr/wire"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// Host names the browser resolves to 127.0.0.1 (host-resolver-rules) and
// nothing else does: connmgr and the identity provider are separate sites,
// as they are in use, so SameSite=Strict and the cross-site redirects of
// consent are what they would be.
const (
	consoleHost = "connmgr.test"
	idpHost     = "idp.test"
	// siblingHost is another host of connmgr's site: the browser sends
	// it SameSite=Strict cookies, so only connmgr's own checks stop its
	// pages.
	siblingHost = "evil." + consoleHost
)

// clock is the console's clock: the real time plus an offset a test
// moves, to age sessions.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// server is connmgr (wire.Build, the console included) on a real database
// and a real socket.
type server struct {
	t *testing.T
	// URL is http://127.0.0.1:port, for the test's own calls.
	URL string
	// BrowserURL is the same server by consoleHost, the browser's way in.
	BrowserURL string
	g          *wire.Graph
	db         *store.DB
	clock      *clock
	admin      string // an admin API key
	client     *http.Client
}

// newServer starts connmgr on engine with the console, loopback targets
// allowed (the test servers), and an admin key.
func newServer(t *testing.T, engine storetest.Engine) *server {
	t.Helper()
	db := storetest.Open(t, engine)
	return serverOn(t, db, storetest.KeyRing(t))
}

// serverOn starts connmgr on db with ring, as a replica does.
func serverOn(t *testing.T, db *store.DB, ring *keyring.KeyRing) *server {
	t.Helper()
	return serverWith(t, db, ring, "")
}

// openPostgres opens (another pool on) the PostgreSQL database at dbURL,
// as another replica does.
func openPostgres(t *testing.T, dbURL string) *store.DB {
	t.Helper()
	db, err := store.OpenDB(context.Background(), dbURL, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// serverWith starts connmgr on db with ring and, when not "", adminToken
// as CONNMGR_ADMIN_TOKEN.
func serverWith(t *testing.T, db *store.DB, ring *keyring.KeyRing, adminToken string) *server {
	t.Helper()
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	s := &server{t: t, URL: "http://" + ln.Addr().String(), BrowserURL: "http://" + net.JoinHostPort(consoleHost, port),
		db: db, clock: &clock{}, client: &http.Client{Timeout: 30 * time.Second}}
	s.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	g, err := wire.Build(ctx, db, ring, wire.Options{PublicURL: s.BrowserURL, OwnOrigins: []string{s.URL},
		EgressAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, AdminToken: adminToken,
		Console: &wire.ConsoleOptions{Now: s.clock.Now}})
	if err != nil {
		t.Fatalf("wire.Build: %v", err)
	}
	s.g = g
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: g.API}}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(g.CloseIdleConnections)
	_, s.admin, err = g.Keys.Create(ctx, access.NewKey{Name: "console-admin", Role: access.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// key creates an API key and returns it.
func (s *server) key(name string, role access.Role, patterns ...string) string {
	s.t.Helper()
	_, k, err := s.g.Keys.Create(context.Background(), access.NewKey{Name: name, Role: role, Connections: patterns})
	if err != nil {
		s.t.Fatal(err)
	}
	return k
}

// revoke revokes the API keys called name.
func (s *server) revoke(name string) {
	s.t.Helper()
	keys, err := s.g.Keys.List(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == name {
			if _, err := s.g.Keys.Revoke(context.Background(), k.ID); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

// call sends a request to connmgr with the admin key and decodes a JSON
// answer into out (when not nil). It returns the answer, body read.
func (s *server) call(method, path string, body, out any, header ...string) *http.Response {
	s.t.Helper()
	h := []string{"Authorization", "Bearer " + s.admin}
	return s.send(method, path, body, out, append(h, header...)...)
}

// send is call without a key: header holds name, value pairs.
func (s *server) send(method, path string, body, out any, header ...string) *http.Response {
	s.t.Helper()
	var r io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case url.Values:
		r, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		r, ctype = bytes.NewReader(raw), "application/json"
	}
	req, err := http.NewRequest(method, s.URL+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s = %d, not JSON: %v: %s", method, path, res.StatusCode, err, raw)
		}
	}
	res.Body = io.NopCloser(bytes.NewReader(raw))
	return res
}

// create creates a connection through the API, failing the test unless 201.
func (s *server) create(body map[string]any) {
	s.t.Helper()
	var got map[string]any
	if res := s.call("POST", "/api/v1/connections", body, &got); res.StatusCode != http.StatusCreated {
		s.t.Fatalf("create %v = %d: %v", body["name"], res.StatusCode, got)
	}
}

// ---------------------------------------------------------------------------
// Headless Chromium.

// envChromium names the variable with the Chromium binary to drive.
const envChromium = "CONNMGR_CHROMIUM"

// stepTimeout bounds one wait of a browser test.
const stepTimeout = 20 * time.Second

func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(envChromium); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", envChromium, p, err)
		}
		return p
	}
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skipf("the console's browser tests need Chromium: none found (set %s, or apt-get install chromium; .ci/run installs it)", envChromium)
	return ""
}

// browser is a headless Chromium tab and what it did: every request, and
// every script error, console error and CSP violation.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	requests []*network.Request
	problems []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("host-resolver-rules", "MAP "+consoleHost+" 127.0.0.1, MAP "+idpHost+" 127.0.0.1, MAP "+siblingHost+" 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(alloc, chromedp.WithLogf(func(string, ...any) {}))
	b := &browser{t: t, ctx: ctx}
	started := make(chan error, 1)
	go func() { started <- chromedp.Listen(ctx, b.record) }()
	select {
	case err := <-started:
		if err != nil {
			cancelTab()
			cancelAlloc()
			t.Fatalf("start %s: %v", exe, err)
		}
	case <-time.After(30 * time.Second):
		cancelTab()
		cancelAlloc()
		t.Fatalf("start %s: no DevTools connection within 30s", exe)
	}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	t.Cleanup(func() {
		if t.Failed() {
			b.shot("failure-" + t.Name())
		}
	})
	return b
}

func (b *browser) record(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request)
	case *runtime.EventExceptionThrown:
		msg := ev.ExceptionDetails.Text
		if e := ev.ExceptionDetails.Exception; e != nil {
			msg += " " + e.Description
		}
		b.problems = append(b.problems, "exception: "+msg)
	case *log.EventEntryAdded:
		// Failed loads and error statuses are the tests' to check (a 401
		// is how a page learns that its session ended).
		if ev.Entry.Level == log.EntryLevelError && ev.Entry.Source != log.EntrySourceNetwork {
			b.problems = append(b.problems, fmt.Sprintf("console %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	}
}

// do runs steps, failing the test with what when one fails.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait waits until the JavaScript expression is truthy; on a timeout it
// fails with what and the page's text.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	b.waitFor(what, expr, stepTimeout)
}

func (b *browser) waitFor(what, expr string, d time.Duration) {
	b.t.Helper()
	// Polled from here, not in the page: a navigation (consent goes to
	// the provider and back) ends an in-page poll.
	check := fmt.Sprintf(`(() => { try { return !!(%s); } catch (e) { return false; } })()`, expr)
	deadline := time.Now().Add(d)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](check))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 3000) : ""`))
	b.t.Fatalf("%s: not so after %v (%v)\npage text:\n%s\nproblems: %v", what, d, last, text, b.pageProblems())
}

// text returns the text of the first element matching a CSS selector, or
// "" when there is none.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%s) || {textContent: ""}).textContent`, jsString(sel)))
}

// click clicks the element matching a CSS selector, once it is visible.
func (b *browser) click(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// fill sets a control's value as typing would (input and change events).
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	b.wait("find "+sel, fmt.Sprintf(`document.querySelector(%s) !== null`, jsString(sel)))
	eval[bool](b, fmt.Sprintf(`(() => { const el = document.querySelector(%s); el.focus(); el.value = %s;
		el.dispatchEvent(new Event("input", {bubbles: true})); el.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`,
		jsString(sel), jsString(value)))
}

// fillField fills the form control named name (its API path).
func (b *browser) fillField(name, value string) {
	b.t.Helper()
	b.fill(fmt.Sprintf(`[name=%s]`, jsString(name)), value)
}

func jsString(s string) string {
	raw, _ := json.Marshal(s)
	return string(raw)
}

// artifacts is where screenshots go: $CONNMGR_BROWSER_ARTIFACTS, else a
// directory under the system's temporary one that outlives the test.
func artifacts(t *testing.T) string {
	dir := os.Getenv("CONNMGR_BROWSER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "connmgr-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// shot saves a PNG of the whole page as name.png in artifacts.
func (b *browser) shot(name string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(artifacts(b.t), strings.NewReplacer("/", "_", " ", "_").Replace(name)+".png")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// pageProblems returns the script errors, console errors and CSP
// violations so far.
func (b *browser) pageProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// origins returns the origins of every request the tab sent (data: and
// about: URLs stay in the browser).
func (b *browser) origins() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for _, r := range b.requests {
		u, err := url.Parse(r.URL)
		if err != nil {
			out["unparsable "+r.URL]++
			continue
		}
		if u.Scheme == "data" || u.Scheme == "about" || u.Scheme == "blob" {
			continue
		}
		out[u.Scheme+"://"+u.Host]++
	}
	return out
}

// requestsTo returns the requests the tab sent to path (any origin).
func (b *browser) requestsTo(method, path string) []*network.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*network.Request
	for _, r := range b.requests {
		if u, err := url.Parse(r.URL); err == nil && u.Path == path && (method == "" || r.Method == method) {
			out = append(out, r)
		}
	}
	return out
}

// signIn loads the console and signs in with key.
func (b *browser) signIn(s *server, key string) {
	b.t.Helper()
	b.do("open the console", chromedp.Navigate(s.BrowserURL+"/console/"))
	b.wait("the sign-in page", `document.querySelector("#api-key") !== null`)
	b.fill("#api-key", key)
	b.click("#sign-in")
	b.wait("signed in", `!document.querySelector("#who").hidden`)
}
