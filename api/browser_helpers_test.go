package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	oauth2 "github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	oauthstore "github.com/go-oauth2/oauth2/v4/store"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/store/storetest"
)

// envChromium names the variable with the path of the Chromium binary the
// browser tests drive.
const envChromium = "CONNMGR_CHROMIUM"

// browserHost is a host name the browser resolves to 127.0.0.1 (and
// nothing else resolves).
const browserHost = "connmgr.test"

// browserTimeout bounds the steps of one browser test, from the first page
// load to the last assertion.
const browserTimeout = 60 * time.Second

// chromiumPath returns the Chromium binary to drive: $CONNMGR_CHROMIUM,
// else /usr/bin/chromium, else chromium on PATH. Without one it skips the
// test, saying how to enable it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(envChromium); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", envChromium, p, err)
		}
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skipf("no Chromium found: set %s to a Chromium binary, or install Debian's chromium "+
		"(apt-get install chromium; .ci/run does this when it runs as root) to run the browser tests", envChromium)
	return ""
}

// browser is a headless Chromium with one tab, and what the tab did.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab; steps run under its child with a deadline

	mu       sync.Mutex
	requests []*network.Request // every request the tab sent
	problems []string           // JavaScript exceptions and console errors
}

// newBrowser starts headless Chromium with the flags this machine needs
// (no sandbox as root, and no background traffic to Google's hosts on a
// closed network) and a fresh profile. The browser is closed when the test
// ends; when the test failed, a screenshot of the tab is saved first to
// the test's temporary directory, named in the log.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1600),
		// The docs are opened as an admin opens them, by a host name and
		// not a loopback address (Swagger UI behaves differently on
		// localhost and 127.0.0.1). Only the browser resolves it.
		chromedp.Flag("host-resolver-rules", "MAP "+browserHost+" 127.0.0.1"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(testLogf(t)), chromedp.WithLogf(func(string, ...any) {}))
	b := &browser{t: t, ctx: ctx}
	// Listen starts the browser and opens the tab; they live as long as
	// ctx. Over the pipe the allocator waits for Chromium without a
	// deadline, so the wait is bounded here.
	start := time.Now()
	started := make(chan error, 1)
	go func() { started <- chromedp.Listen(ctx, b.record) }()
	var err error
	select {
	case err = <-started:
	case <-time.After(30 * time.Second):
		cancelTab()
		cancelAlloc() // kills Chromium; Listen returns
		err = fmt.Errorf("no DevTools connection within 30s (%v)", <-started)
	}
	if err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("start %s: %v", exe, err)
	}
	t.Logf("chromium started in %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		cancelTab() // closes the browser gracefully and waits for it
		cancelAlloc()
	})
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot()
		}
	})
	return b
}

// testLogf logs through t until the test ends, and drops what comes after
// (the browser's event loop may still report while it shuts down).
func testLogf(t *testing.T) func(string, ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		done = true
		mu.Unlock()
	})
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf("chromedp: "+format, args...)
		}
	}
}

// record is the tab's event listener. It runs on chromedp's event loop and
// must not block.
func (b *browser) record(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request)
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.problems = append(b.problems, "exception: "+msg)
	case *log.EventEntryAdded:
		// Network entries are failed loads and error statuses, which the
		// tests check themselves (a refused callback is meant to be 400).
		if ev.Entry.Level == log.EntryLevelError && ev.Entry.Source != log.EntrySourceNetwork {
			b.problems = append(b.problems, fmt.Sprintf("console %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	}
}

// do runs steps in the tab, bounded by ctx (a child of b.ctx), and logs
// how long they took.
func (b *browser) do(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	start := time.Now()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v (after %v)", what, err, time.Since(start).Round(time.Millisecond))
	}
	b.t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
}

// value runs a that returns a value in b's tab, as do does.
func value[T any](ctx context.Context, b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	start := time.Now()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v (after %v)", what, err, time.Since(start).Round(time.Millisecond))
	}
	b.t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
	return v
}

// steps returns the context the test's steps run under.
func (b *browser) steps() context.Context {
	ctx, cancel := context.WithTimeout(b.ctx, browserTimeout)
	b.t.Cleanup(cancel)
	return ctx
}

// screenshot saves the tab as a JPEG in the test's temporary directory, or
// in $CONNMGR_BROWSER_ARTIFACTS when set (the temporary directory goes
// when the test ends), and logs the start of the page's text.
func (b *browser) screenshot() {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
	if err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	dir := os.Getenv("CONNMGR_BROWSER_ARTIFACTS")
	if dir == "" {
		dir = b.t.TempDir()
	}
	path := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(b.t.Name())+".jpg")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	if len(text) > 2000 {
		text = text[:2000] + "..."
	}
	b.t.Logf("screenshot of %s saved to %s (set CONNMGR_BROWSER_ARTIFACTS to keep it); page text:\n%s", loc, path, text)
}

// offMachine returns the requests that went, or tried to go, to a host
// other than this machine: loopback addresses and browserHost are local.
// data:, blob: and about: URLs never leave the browser.
func (b *browser) offMachine() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, r := range b.requests {
		u, err := url.Parse(r.URL)
		if err != nil {
			out = append(out, r.URL+" (unparsable)")
			continue
		}
		switch u.Scheme {
		case "data", "blob", "about":
			continue
		}
		if h := u.Hostname(); h != browserHost && !isLoopback(h) {
			out = append(out, r.Method+" "+r.URL)
		}
	}
	return out
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// requestsTo returns the requests whose URL path is path.
func (b *browser) requestsTo(path string) []*network.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*network.Request
	for _, r := range b.requests {
		if u, err := url.Parse(r.URL); err == nil && u.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// pageProblems returns the JavaScript exceptions and console errors so far.
func (b *browser) pageProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.problems)
}

// ---------------------------------------------------------------------------
// connmgr on a real socket.

// liveAPI is connmgr's API on an httptest server with a real SQLite
// database, whose consent callback is its own /oauth/callback.
type liveAPI struct {
	t   *testing.T
	URL string // http://127.0.0.1:port
	// BrowserURL is URL by browserHost, for the browser only.
	BrowserURL string
	admin      string
}

func newLiveAPI(t *testing.T) *liveAPI {
	t.Helper()
	// The callback URL must be known before the server is built.
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()

	db := storetest.Open(t, storetest.SQLite)
	g := build(t, db, base, slog.New(slog.NewJSONHandler(io.Discard, nil)), 0)
	_, admin, err := g.Keys.Create(context.Background(), access.NewKey{Name: "browser-admin", Role: access.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = g.API
	ts.Start()
	t.Cleanup(ts.Close)
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	return &liveAPI{t: t, URL: base, BrowserURL: "http://" + net.JoinHostPort(browserHost, port), admin: admin}
}

// call sends a request with the admin key over the socket and decodes a
// JSON answer into out (when not nil). It returns the status.
func (a *liveAPI) call(method, path string, body, out any) int {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.URL+path, r)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.admin)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 15 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s = %d, body is not JSON: %v: %s", method, path, res.StatusCode, err, raw)
		}
	}
	return res.StatusCode
}

// create creates a connection and fails the test unless it gets 201.
func (a *liveAPI) create(body map[string]any) {
	a.t.Helper()
	var got map[string]any
	if st := a.call("POST", "/api/v1/connections", body, &got); st != http.StatusCreated {
		a.t.Fatalf("create %v = %d: %v", body["name"], st, got)
	}
}

// ---------------------------------------------------------------------------
// An authorization server with a login form: go-oauth2, in memory.

// loginServer is an OAuth 2.0 authorization server with /authorize and
// /token. /authorize asks for a username and password with an HTML form
// (GET shows it, POST checks it) before it issues a code; PKCE S256 is
// required. It records the token requests it answered.
type loginServer struct {
	URL            string
	user, password string

	mu            sync.Mutex
	tokenRequests []loginTokenRequest
	formsShown    int // GET /authorize answered with the form
	logins        int // POST /authorize with the right password
}

// loginTokenRequest is a token request the server answered.
type loginTokenRequest struct {
	Grant       string
	HasVerifier bool
	Status      int
}

var loginPage = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body><h1 id="login-title">Sign in to Test IdP</h1>
{{if .Error}}<p id="login-error">{{.Error}}</p>{{end}}
<p>{{.Client}} asks for access to: {{.Scope}}</p>
<form id="login" method="post" action="/authorize">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">
{{end}}<label>Username <input id="username" name="username" type="text" autocomplete="off"></label>
<label>Password <input id="password" name="password" type="password" autocomplete="off"></label>
<button id="sign-in" type="submit">Sign in</button>
</form></body></html>
`))

// authorizeParams are the parameters of an authorization request the login
// form carries over from the GET to the POST.
var authorizeParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state",
	"code_challenge", "code_challenge_method"}

func newLoginServer(t *testing.T, clientID, secret, redirectURI, user, password string) *loginServer {
	t.Helper()
	ls := &loginServer{user: user, password: password}
	mgr := manage.NewDefaultManager()
	mgr.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: time.Hour, RefreshTokenExp: 24 * time.Hour,
		IsGenerateRefresh: true})
	mgr.MustTokenStorage(newMapTokenStore(), nil)
	redirect, err := url.Parse(redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	clients := oauthstore.NewClientStore()
	if err := clients.Set(clientID, &models.Client{ID: clientID, Secret: secret,
		Domain: redirect.Scheme + "://" + redirect.Host}); err != nil {
		t.Fatal(err)
	}
	mgr.MapClientStorage(clients)
	srv := server.NewServer(&server.Config{
		TokenType:                   "Bearer",
		AllowedResponseTypes:        []oauth2.ResponseType{oauth2.Code},
		AllowedGrantTypes:           []oauth2.GrantType{oauth2.AuthorizationCode, oauth2.Refreshing},
		AllowedCodeChallengeMethods: []oauth2.CodeChallengeMethod{oauth2.CodeChallengeS256},
		ForcePKCE:                   true,
	}, mgr)
	srv.SetUserAuthorizationHandler(ls.login)

	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if err := srv.HandleAuthorizeRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		_ = srv.HandleTokenRequest(rec, r)
		ls.mu.Lock()
		ls.tokenRequests = append(ls.tokenRequests, loginTokenRequest{Grant: r.PostForm.Get("grant_type"),
			HasVerifier: r.PostForm.Get("code_verifier") != "", Status: rec.Code})
		ls.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	ls.URL = ts.URL
	return ls
}

// login is the user authorization handler: the form on GET, the check on
// POST. It returns the user id once the password is right, and "" (with
// the form written) until then.
func (ls *loginServer) login(w http.ResponseWriter, r *http.Request) (string, error) {
	page := struct {
		Error, Client, Scope string
		Params               map[string]string
	}{Client: r.FormValue("client_id"), Scope: r.FormValue("scope"), Params: map[string]string{}}
	for _, p := range authorizeParams {
		if v := r.FormValue(p); v != "" {
			page.Params[p] = v
		}
	}
	status := http.StatusOK
	ls.mu.Lock()
	if r.Method == http.MethodPost {
		if r.PostFormValue("username") == ls.user && r.PostFormValue("password") == ls.password {
			ls.logins++
			ls.mu.Unlock()
			return ls.user, nil
		}
		page.Error, status = "Wrong username or password.", http.StatusUnauthorized
	} else {
		ls.formsShown++
	}
	ls.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return "", loginPage.Execute(w, page)
}

// counts returns how many forms were shown and logins accepted.
func (ls *loginServer) counts() (forms, logins int) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.formsShown, ls.logins
}

// tokens returns the token requests answered so far.
func (ls *loginServer) tokens() []loginTokenRequest {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return slices.Clone(ls.tokenRequests)
}

// mapTokenStore is an in-memory oauth2.TokenStore without background
// goroutines (go-oauth2's own memory store runs one it cannot stop).
type mapTokenStore struct {
	mu                      sync.Mutex
	byCode, byAccess, byRef map[string]oauth2.TokenInfo
}

func newMapTokenStore() *mapTokenStore {
	return &mapTokenStore{byCode: map[string]oauth2.TokenInfo{}, byAccess: map[string]oauth2.TokenInfo{},
		byRef: map[string]oauth2.TokenInfo{}}
}

func (s *mapTokenStore) Create(_ context.Context, info oauth2.TokenInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := info.GetCode(); c != "" {
		s.byCode[c] = info
		return nil
	}
	if a := info.GetAccess(); a != "" {
		s.byAccess[a] = info
	}
	if r := info.GetRefresh(); r != "" {
		s.byRef[r] = info
	}
	return nil
}

func (s *mapTokenStore) remove(m map[string]oauth2.TokenInfo, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(m, k)
	return nil
}

func (s *mapTokenStore) get(m map[string]oauth2.TokenInfo, k string) (oauth2.TokenInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Not found is (nil, nil), as in go-oauth2's stores: the manager
	// turns it into invalid_grant.
	return m[k], nil
}

func (s *mapTokenStore) RemoveByCode(_ context.Context, code string) error {
	return s.remove(s.byCode, code)
}

func (s *mapTokenStore) RemoveByAccess(_ context.Context, access string) error {
	return s.remove(s.byAccess, access)
}

func (s *mapTokenStore) RemoveByRefresh(_ context.Context, refresh string) error {
	return s.remove(s.byRef, refresh)
}

func (s *mapTokenStore) GetByCode(_ context.Context, code string) (oauth2.TokenInfo, error) {
	return s.get(s.byCode, code)
}

func (s *mapTokenStore) GetByAccess(_ context.Context, access string) (oauth2.TokenInfo, error) {
	return s.get(s.byAccess, access)
}

func (s *mapTokenStore) GetByRefresh(_ context.Context, refresh string) (oauth2.TokenInfo, error) {
	return s.get(s.byRef, refresh)
}
