package security

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goauth "github.com/go-oauth2/oauth2/v4"
	oautherrors "github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/generates"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/goleak"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// buntdb (the go-oauth2 in-memory token store) runs a background
		// goroutine per store that its TokenStore cannot stop.
		goleak.IgnoreAnyFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"),
	)
}

// canary marks every secret value in these tests: client secrets,
// passwords, issued access and refresh tokens, authorization codes and
// token endpoint error bodies. None may show up in logs, metrics or error
// texts.
const canary = "CANARY"

// testClock is an injected clock the tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	// Whole seconds, so that times survive the databases' precision.
	return &testClock{now: time.Now().UTC().Truncate(time.Second)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// lockedBuffer collects log output from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// ---------------------------------------------------------------------------
// A scriptable token endpoint.

// omitExpiresIn, as tokenServer.expiresIn, leaves expires_in out of token
// responses.
var omitExpiresIn = struct{}{}

// tokenRequest is one request the token endpoint received and its answer.
type tokenRequest struct {
	At     time.Time // on the test's clock
	Grant  string
	Client string // from the Basic header or the form
	Form   url.Values
	Auth   string // the Authorization header
	Status int    // answered
	Error  string // OAuth error code answered
}

// tokenFailure is what the endpoint answers instead of a token.
type tokenFailure struct {
	status     int
	code       string // OAuth error code; "" answers a plain-text body
	retryAfter string
}

type tokenFamily struct {
	current string
	revoked bool
}

// tokenServer is an httptest token endpoint the tests script: lifetimes,
// refresh token rotation with reuse detection, delays and failures. It
// records every request.
type tokenServer struct {
	srv *httptest.Server
	now func() time.Time

	mu        sync.Mutex
	requests  []tokenRequest
	issued    int
	families  map[string]*tokenFamily // by every refresh token ever issued in them
	reuses    int
	inFlight  int
	expiresIn any           // JSON value of expires_in, or omitExpiresIn
	rotate    bool          // issue a new refresh token with each refresh
	delay     time.Duration // before answering
	hold      chan struct{} // answer once closed (instead of delay)
	fail      *tokenFailure
	formBody  bool // answer application/x-www-form-urlencoded
	tokenType string
}

func newTokenServer(t testing.TB, now func() time.Time) *tokenServer {
	s := &tokenServer{now: now, families: map[string]*tokenFamily{}, expiresIn: 3600, rotate: true,
		tokenType: "Bearer"}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the token endpoint.
func (s *tokenServer) URL() string { return s.srv.URL + "/oauth2/token" }

// script changes the endpoint's behaviour under its lock.
func (s *tokenServer) script(f func(s *tokenServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *tokenServer) failWith(status int, code, retryAfter string) {
	s.script(func(s *tokenServer) { s.fail = &tokenFailure{status: status, code: code, retryAfter: retryAfter} })
}

func (s *tokenServer) recover() { s.script(func(s *tokenServer) { s.fail = nil }) }

// newFamily starts a refresh token family for client, as a consent would,
// and returns its refresh token.
func (s *tokenServer) newFamily(client string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issued++
	rt := fmt.Sprintf("%s-RT-%s-%d", canary, client, s.issued)
	s.families[rt] = &tokenFamily{current: rt}
	return rt
}

// current returns the refresh token the endpoint accepts next in the
// family of rt.
func (s *tokenServer) current(rt string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.families[rt]
	if f == nil || f.revoked {
		return "", false
	}
	return f.current, true
}

// log returns a copy of the requests so far.
func (s *tokenServer) log() []tokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// busy reports whether a request is being answered.
func (s *tokenServer) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight > 0
}

// count returns how many requests were received.
func (s *tokenServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// countBy returns the number of requests per key.
func (s *tokenServer) countBy(key func(tokenRequest) string) map[string]int {
	n := map[string]int{}
	for _, r := range s.log() {
		n[key(r)]++
	}
	return n
}

// reused returns how many refresh tokens were presented a second time.
func (s *tokenServer) reused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reuses
}

// errors counts the answers with OAuth error code.
func (s *tokenServer) errors(code string) int {
	n := 0
	for _, r := range s.log() {
		if r.Error == code {
			n++
		}
	}
	return n
}

func (s *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	req := tokenRequest{At: s.now(), Grant: r.PostForm.Get("grant_type"), Form: r.PostForm,
		Auth: r.Header.Get("Authorization"), Client: r.PostForm.Get("client_id")}
	if id, _, ok := r.BasicAuth(); ok {
		req.Client, _ = url.QueryUnescape(id)
	}
	s.mu.Lock()
	delay, hold := s.delay, s.hold
	s.inFlight++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	wait := hold
	if wait == nil && delay > 0 {
		wait = make(chan struct{})
		timer := time.AfterFunc(delay, func() { close(wait) })
		defer timer.Stop()
	}
	if wait != nil {
		select {
		case <-wait:
		case <-r.Context().Done():
			s.mu.Lock()
			req.Status = -1 // the client gave up
			s.requests = append(s.requests, req)
			s.mu.Unlock()
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status, body := s.answer(&req)
	req.Status = status
	s.requests = append(s.requests, req)
	w.Header().Set("Cache-Control", "no-store")
	if s.fail != nil && s.fail.retryAfter != "" {
		w.Header().Set("Retry-After", s.fail.retryAfter)
	}
	switch {
	case body == nil:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s-BODY upstream failure details", canary)
	case s.formBody && status == http.StatusOK:
		form := url.Values{}
		for k, v := range body {
			form.Set(k, fmt.Sprint(v))
		}
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		w.WriteHeader(status)
		fmt.Fprint(w, form.Encode())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

// answer decides the response to req, holding s.mu. A nil body means a
// plain-text error body.
func (s *tokenServer) answer(req *tokenRequest) (int, map[string]any) {
	oauthError := func(status int, code string) (int, map[string]any) {
		req.Error = code
		return status, map[string]any{"error": code,
			"error_description": canary + "-BODY the endpoint explains, with " + req.Form.Get("client_secret")}
	}
	if f := s.fail; f != nil {
		if f.code == "" {
			return f.status, nil
		}
		return oauthError(f.status, f.code)
	}
	s.issued++
	body := map[string]any{"access_token": fmt.Sprintf("%s-AT-%s-%d", canary, req.Client, s.issued),
		"token_type": s.tokenType}
	if s.expiresIn != omitExpiresIn {
		body["expires_in"] = s.expiresIn
	}
	if sc := req.Form.Get("scope"); sc != "" {
		body["scope"] = sc
	}
	switch req.Grant {
	case "client_credentials", "password":
	case "refresh_token":
		rt := req.Form.Get("refresh_token")
		f := s.families[rt]
		switch {
		case f == nil || f.revoked:
			return oauthError(http.StatusBadRequest, "invalid_grant")
		case f.current != rt:
			// A refresh token used a second time: it leaked, or a client
			// lost the rotated one. Revoke the whole family (RFC 9700 4.14.2).
			s.reuses++
			f.revoked = true
			return oauthError(http.StatusBadRequest, "invalid_grant")
		}
		if s.rotate {
			next := fmt.Sprintf("%s-RT-%s-%d", canary, req.Client, s.issued)
			f.current = next
			s.families[next] = f
			body["refresh_token"] = next
		}
	default:
		return oauthError(http.StatusBadRequest, "unsupported_grant_type")
	}
	return http.StatusOK, body
}

// ---------------------------------------------------------------------------
// A real authorization server: go-oauth2, in memory.

// canaryAccess marks the tokens the authorization server issues.
type canaryAccess struct{ next goauth.AccessGenerate }

func (g canaryAccess) Token(ctx context.Context, data *goauth.GenerateBasic, isGenRefresh bool) (string, string, error) {
	access, refresh, err := g.next.Token(ctx, data, isGenRefresh)
	if refresh != "" {
		refresh = canary + "-RT-" + refresh
	}
	return canary + "-AT-" + access, refresh, err
}

// canaryCode marks the authorization codes the server issues.
type canaryCode struct{ next goauth.AuthorizeGenerate }

func (g canaryCode) Token(ctx context.Context, data *goauth.GenerateBasic) (string, error) {
	code, err := g.next.Token(ctx, data)
	return canary + "-CODE-" + code, err
}

// asRequest is a token request the authorization server answered.
type asRequest struct {
	Grant  string
	Status int
	Error  string
}

// authServer runs go-oauth2's server with /authorize and /token: PKCE
// S256 required, refresh tokens rotated (the old one removed at once, so
// a reused one is invalid_grant), a user who approves every request
// unless deny is set, and client credentials. Its redirect carries iss
// (RFC 9207).
type authServer struct {
	srv          *httptest.Server
	clientID     string
	clientSecret string
	deny         atomic.Bool

	mu     sync.Mutex
	tokens []asRequest
}

func newAuthServer(t testing.TB, clientID, clientSecret, redirectURI string) *authServer {
	t.Helper()
	as := &authServer{clientID: clientID, clientSecret: clientSecret}
	mgr := manage.NewDefaultManager()
	mgr.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: time.Hour, RefreshTokenExp: 30 * 24 * time.Hour,
		IsGenerateRefresh: true})
	mgr.SetClientTokenCfg(&manage.Config{AccessTokenExp: time.Hour})
	mgr.SetRefreshTokenCfg(&manage.RefreshingConfig{IsGenerateRefresh: true, IsRemoveRefreshing: true,
		IsRemoveAccess: true})
	mgr.MustTokenStorage(store.NewMemoryTokenStore())
	mgr.MapAccessGenerate(canaryAccess{generates.NewAccessGenerate()})
	mgr.MapAuthorizeGenerate(canaryCode{generates.NewAuthorizeGenerate()})
	redirect, err := url.Parse(redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	clients := store.NewClientStore()
	if err := clients.Set(clientID, &models.Client{ID: clientID, Secret: clientSecret,
		Domain: redirect.Scheme + "://" + redirect.Host}); err != nil {
		t.Fatal(err)
	}
	mgr.MapClientStorage(clients)

	srv := server.NewServer(&server.Config{
		TokenType:                   "Bearer",
		AllowedResponseTypes:        []goauth.ResponseType{goauth.Code},
		AllowedGrantTypes:           []goauth.GrantType{goauth.AuthorizationCode, goauth.ClientCredentials, goauth.Refreshing},
		AllowedCodeChallengeMethods: []goauth.CodeChallengeMethod{goauth.CodeChallengeS256},
		ForcePKCE:                   true,
	}, mgr)
	srv.SetUserAuthorizationHandler(func(http.ResponseWriter, *http.Request) (string, error) {
		if as.deny.Load() {
			return "", oautherrors.ErrAccessDenied
		}
		return "user-1", nil
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		iw := &issWriter{ResponseWriter: w, iss: "http://" + r.Host} // = Issuer()
		if err := srv.HandleAuthorizeRequest(iw, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		_ = srv.HandleTokenRequest(rec, r)
		var body struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		as.mu.Lock()
		as.tokens = append(as.tokens, asRequest{Grant: r.PostForm.Get("grant_type"), Status: rec.Code, Error: body.Error})
		as.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	as.srv = httptest.NewServer(mux)
	t.Cleanup(as.srv.Close)
	return as
}

// Issuer is the server's issuer identifier.
func (as *authServer) Issuer() string { return as.srv.URL }

// AuthURL and TokenURL are the server's endpoints.
func (as *authServer) AuthURL() string  { return as.srv.URL + "/authorize" }
func (as *authServer) TokenURL() string { return as.srv.URL + "/token" }

// requests returns the token requests answered so far.
func (as *authServer) requests() []asRequest {
	as.mu.Lock()
	defer as.mu.Unlock()
	return slices.Clone(as.tokens)
}

// count returns how many token requests of grant (all for "") came.
func (as *authServer) count(grant string) int {
	n := 0
	for _, r := range as.requests() {
		if grant == "" || r.Grant == grant {
			n++
		}
	}
	return n
}

// errors counts the token requests answered with OAuth error code.
func (as *authServer) errors(code string) int {
	n := 0
	for _, r := range as.requests() {
		if r.Error == code {
			n++
		}
	}
	return n
}

// issWriter adds iss (RFC 9207) to the authorization response's redirect.
type issWriter struct {
	http.ResponseWriter
	iss string
}

func (w *issWriter) WriteHeader(code int) {
	if loc := w.Header().Get("Location"); code/100 == 3 && loc != "" {
		if u, err := url.Parse(loc); err == nil {
			q := u.Query()
			q.Set("iss", w.iss)
			u.RawQuery = q.Encode()
			w.Header().Set("Location", u.String())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// authorize plays the browser: it opens authURL and follows redirects
// until one points at the callback's host, and returns that redirect's
// query (code, state, iss, or error).
func authorize(t testing.TB, authURL, callback string) url.Values {
	t.Helper()
	cb, err := url.Parse(callback)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == cb.Host {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	defer client.CloseIdleConnections()
	res, err := client.Get(authURL)
	if err != nil {
		t.Fatalf("GET authorization URL: %v", err)
	}
	defer res.Body.Close()
	loc, err := res.Location()
	if res.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorization answered %d (Location %v), want 302 to the callback", res.StatusCode, err)
	}
	if loc.Host != cb.Host || loc.Path != cb.Path {
		t.Fatalf("authorization redirected to %s://%s%s, want the callback %s", loc.Scheme, loc.Host, loc.Path, callback)
	}
	return loc.Query()
}

// ---------------------------------------------------------------------------
// A connmgr process stand-in: database, key ring, connection store and
// service, and a Manager with the egress-guarded client.

// GuardedClient returns package invoke's egress-guarded HTTP client, the
// one connmgr gives the Manager, with the CIDRs in allow allowed (the
// syntax of CONNMGR_EGRESS_ALLOW). invoke imports this package, so only
// the external test package can build that client: oauth_test.go sets
// GuardedClient in its init.
var GuardedClient func(allow string, timeout time.Duration) (*http.Client, error)

// loopbackClient is the egress-guarded client with 127.0.0.0/8 allowed, as
// CONNMGR_EGRESS_ALLOW=127.0.0.0/8 would allow it.
func loopbackClient(t testing.TB, timeout time.Duration) *http.Client {
	t.Helper()
	if GuardedClient == nil {
		t.Fatal("GuardedClient is not set (oauth_test.go sets it)")
	}
	c, err := GuardedClient("127.0.0.0/8", timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// tokenEnv is one database with the Managers ("processes") on it, a shared
// test clock, and captured logs and metrics.
type tokenEnv struct {
	t     *testing.T
	db    *connections.DB
	dbURL string // PostgreSQL URL, "" for SQLite
	dir   string // SQLite data directory
	ring  *KeyRing
	store *connections.GormStore
	svc   *connections.Service
	clock *testClock
	logs  *lockedBuffer
	log   *slog.Logger
	m     *Manager
	reg   *prometheus.Registry

	seen *seen // shared by the copies at
}

// seen collects what the canary check looks at, from every process of an
// env.
type seen struct {
	mu     sync.Mutex
	regs   []*prometheus.Registry
	errs   []string
	extras []string // secrets without the canary mark (private keys)
}

// at returns the env for use in subtest t: its helpers then fail t.
func (e *tokenEnv) at(t *testing.T) *tokenEnv {
	c := *e
	c.t = t
	return &c
}

// newTokenEnv opens a database on engine and starts one Manager on it;
// opts adjust its configuration. When the test ends, it checks that no
// canary reached the logs or the metrics.
func newTokenEnv(t *testing.T, engine connectionstest.Engine, opts ...func(*ManagerConfig)) *tokenEnv {
	t.Helper()
	db, where := connectionstest.OpenURL(t, engine)
	ring, _ := newRing(t, "t1") // one key ring for all the "processes" of the env
	e := &tokenEnv{t: t, db: db, ring: ring, clock: newTestClock(), logs: &lockedBuffer{},
		seen: &seen{}}
	if engine == connectionstest.Postgres {
		e.dbURL = where
	} else {
		e.dir = where
	}
	e.log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.m, e.store, e.svc, e.reg = e.process(db, opts...)
	t.Cleanup(func() { e.checkCanaries(t) })
	return e
}

// process starts a Manager ("a connmgr process") on db.
func (e *tokenEnv) process(db *connections.DB, opts ...func(*ManagerConfig)) (*Manager, *connections.GormStore, *connections.Service, *prometheus.Registry) {
	st := connections.NewGormStore(db.DB, e.ring)
	svc := &connections.Service{Store: st}
	reg := prometheus.NewRegistry()
	cfg := ManagerConfig{DB: db.DB, Sealer: e.ring, Connections: st, Status: svc,
		Client: loopbackClient(e.t, 5*time.Second), Now: e.clock.Now, Logger: e.log, Registerer: reg}
	for _, o := range opts {
		o(&cfg)
	}
	e.seen.mu.Lock()
	e.seen.regs = append(e.seen.regs, reg)
	e.seen.mu.Unlock()
	m := NewManager(cfg)
	svc.Observers = append(svc.Observers, m.Observe)
	return m, st, svc, reg
}

// replica starts another Manager on the same database: on PostgreSQL over
// its own connection pool, on SQLite on the same handle (one process with
// one SQLite connection, as connmgr runs it).
func (e *tokenEnv) replica(opts ...func(*ManagerConfig)) *Manager {
	e.t.Helper()
	db := e.db
	if e.dbURL != "" {
		db = e.reopen()
	}
	m, _, _, _ := e.process(db, opts...)
	return m
}

// restarted starts a Manager as a new process would: over a new database
// handle, with an empty cache.
func (e *tokenEnv) restarted(opts ...func(*ManagerConfig)) *Manager {
	e.t.Helper()
	m, _, _, _ := e.process(e.reopen(), opts...)
	return m
}

// reopen opens another handle on the env's database.
func (e *tokenEnv) reopen() *connections.DB {
	e.t.Helper()
	db, err := connections.OpenDB(context.Background(), e.dbURL, e.dir)
	if err != nil {
		e.t.Fatalf("open the database again: %v", err)
	}
	e.t.Cleanup(func() { db.Close() })
	return db
}

// record keeps the text of an error the test got, for the canary check.
func (e *tokenEnv) record(err error) error {
	if err != nil {
		e.seen.mu.Lock()
		e.seen.errs = append(e.seen.errs, err.Error())
		e.seen.mu.Unlock()
	}
	return err
}

// secret adds s to the values that must not leak (for secrets that
// cannot carry the canary mark, like private keys).
func (e *tokenEnv) secret(s string) {
	e.seen.mu.Lock()
	e.seen.extras = append(e.seen.extras, s)
	e.seen.mu.Unlock()
}

// metricsText returns every metric of every Manager in the text format.
func (e *tokenEnv) metricsText() string {
	e.t.Helper()
	var b bytes.Buffer
	e.seen.mu.Lock()
	regs := slices.Clone(e.seen.regs)
	e.seen.mu.Unlock()
	for _, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			e.t.Fatalf("gather metrics: %v", err)
		}
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	return b.String()
}

// checkCanaries fails the test if a secret reached the logs, the metrics
// or a recorded error.
func (e *tokenEnv) checkCanaries(t *testing.T) {
	t.Helper()
	places := map[string]string{"logs": e.logs.String(), "metrics": e.metricsText()}
	e.seen.mu.Lock()
	places["errors"] = strings.Join(e.seen.errs, "\n")
	secrets := append([]string{canary}, e.seen.extras...)
	e.seen.mu.Unlock()
	for where, text := range places {
		for _, c := range secrets {
			if i := strings.Index(text, c); i >= 0 {
				t.Errorf("%s contain a secret (%q): ...%s...", where, c, text[max(0, i-80):min(len(text), i+80)])
			}
		}
	}
}

// cacheCount returns connmgr_token_cache_total{result} of the env's
// first Manager.
func (e *tokenEnv) cacheCount(result string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "connmgr_token_cache_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// create stores c through the service and returns it as stored.
func (e *tokenEnv) create(c *connections.Connection) *connections.Connection {
	e.t.Helper()
	if err := e.svc.Create(context.Background(), "test", c); err != nil {
		e.t.Fatalf("create %s: %v", c.Name, err)
	}
	return e.get(c.Name)
}

// get loads the named connection (status included) from the store.
func (e *tokenEnv) get(name string) *connections.Connection {
	e.t.Helper()
	c, err := e.store.Get(context.Background(), name)
	if err != nil {
		e.t.Fatalf("get %s: %v", name, err)
	}
	return c
}

// seed stores a token for c as if obtained at obtained with lifetime,
// over whatever is stored.
func (e *tokenEnv) seed(c *connections.Connection, access, refresh string, obtained time.Time, lifetime time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.m.store.load(ctx, c.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	tok := &Token{AccessToken: connections.NewSecret(access), RefreshToken: connections.NewSecret(refresh),
		TokenType: "Bearer", ObtainedAt: obtained, ExpiresAt: obtained.Add(lifetime)}
	if _, err := e.m.store.save(ctx, c.ID, st.Version, tok, "seed", e.clock.Now()); err != nil {
		e.t.Fatalf("seed token of %s: %v", c.Name, err)
	}
}

// stored loads c's token state from the database.
func (e *tokenEnv) stored(c *connections.Connection) *tokenState {
	e.t.Helper()
	st, err := e.m.store.load(context.Background(), c.ID)
	if err != nil {
		e.t.Fatalf("load token of %s: %v", c.Name, err)
	}
	return st
}

// clientCredentials returns a client credentials connection to tokenURL.
func clientCredentials(name, tokenURL, clientID string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: connections.Security{Policy: connections.PolicyClientCredentials, TokenURL: tokenURL,
			ClientID: clientID, ClientSecret: connections.NewSecret(canary + "-secret-" + clientID)}}
}

// authorizationCode returns an authorization-code connection.
func authorizationCode(name, authURL, tokenURL, clientID, clientSecret string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: connections.Security{Policy: connections.PolicyAuthorizationCode, AuthorizationURL: authURL,
			TokenURL: tokenURL, ClientID: clientID, ClientSecret: connections.NewSecret(clientSecret),
			Scopes: []string{"orders.read"}}}
}

// waitFor polls cond until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// forEngine runs f as a subtest on every engine under test.
func forEngine(t *testing.T, f func(t *testing.T, engine connectionstest.Engine)) {
	for _, engine := range connectionstest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) { f(t, engine) })
	}
}
