package security_test

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
	oauthstore "github.com/go-oauth2/oauth2/v4/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/goleak"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
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
// token endpoint error bodies. None may show up in logs, metrics, error
// texts or database rows.
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
	Access string // access token answered
	// BasicID and BasicSecret are the Basic header's id and secret as
	// sent, before any form-decoding.
	BasicID, BasicSecret string
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
	expiresIn any             // JSON value of expires_in, or omitExpiresIn
	rotate    bool            // issue a new refresh token with each refresh
	delay     time.Duration   // before answering
	hold      <-chan struct{} // answer once closed (instead of delay)
	fail      *tokenFailure
	formBody  bool // answer application/x-www-form-urlencoded
	tokenType string
	// access makes the nth access token (default: a canary-marked text).
	access func(n int) string
	// description, when set, is the error_description of failures
	// (default: a text that echoes the client_secret sent, which connmgr
	// must redact).
	description *string
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
	if id, secret, ok := r.BasicAuth(); ok {
		req.BasicID, req.BasicSecret = id, secret
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
		ch := make(chan struct{})
		timer := time.AfterFunc(delay, func() { close(ch) })
		defer timer.Stop()
		wait = ch
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
		desc := "the endpoint explains, with " + req.Form.Get("client_secret")
		if s.description != nil {
			desc = *s.description
		}
		return status, map[string]any{"error": code, "error_description": desc}
	}
	if f := s.fail; f != nil {
		if f.code == "" {
			return f.status, nil
		}
		return oauthError(f.status, f.code)
	}
	s.issued++
	access := fmt.Sprintf("%s-AT-%s-%d", canary, req.Client, s.issued)
	if s.access != nil {
		access = s.access(s.issued)
	}
	body := map[string]any{"access_token": access, "token_type": s.tokenType}
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
	req.Access = access
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
// (RFC 9207); its metadata (/.well-known/openid-configuration) advertises
// that when issSupported is set.
type authServer struct {
	srv          *httptest.Server
	clientID     string
	clientSecret string
	deny         atomic.Bool
	issSupported atomic.Bool

	mu       sync.Mutex
	tokens   []asRequest
	hold     <-chan struct{} // token requests wait until it is closed
	inFlight int
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
	mgr.MustTokenStorage(oauthstore.NewMemoryTokenStore())
	mgr.MapAccessGenerate(canaryAccess{generates.NewAccessGenerate()})
	mgr.MapAuthorizeGenerate(canaryCode{generates.NewAuthorizeGenerate()})
	redirect, err := url.Parse(redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	clients := oauthstore.NewClientStore()
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
		as.mu.Lock()
		hold := as.hold
		as.inFlight++
		as.mu.Unlock()
		defer func() {
			as.mu.Lock()
			as.inFlight--
			as.mu.Unlock()
		}()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
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
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": as.Issuer(), "authorization_endpoint": as.AuthURL(),
			"token_endpoint": as.TokenURL(), "response_types_supported": []string{"code"},
			"authorization_response_iss_parameter_supported": as.issSupported.Load()})
	})
	as.srv = httptest.NewServer(mux)
	t.Cleanup(as.srv.Close)
	return as
}

// newHold returns a channel for a server's hold and the function that
// closes it, which the end of the test calls too.
func newHold(t testing.TB) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return ch, release
}

// holdTokens makes token requests wait until release is called.
func (as *authServer) holdTokens(t testing.TB) (release func()) {
	hold, open := newHold(t)
	as.mu.Lock()
	as.hold = hold
	as.mu.Unlock()
	return func() {
		as.mu.Lock()
		as.hold = nil
		as.mu.Unlock()
		open()
	}
}

// busy reports whether a token request is waiting or being answered.
func (as *authServer) busy() bool {
	as.mu.Lock()
	defer as.mu.Unlock()
	return as.inFlight > 0
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
// service, token store, and a Manager with the egress-guarded client.

// guardedClient returns the egress-guarded HTTP client connmgr gives the
// Manager, with the CIDRs in allow allowed (the syntax of
// CONNMGR_EGRESS_ALLOW).
func guardedClient(allow string, timeout time.Duration) (*http.Client, error) {
	prefixes, err := outbound.ParseAllow(allow)
	if err != nil {
		return nil, err
	}
	return (&outbound.Guard{Allow: prefixes}).Client(timeout), nil
}

// loopbackClient is the egress-guarded client with 127.0.0.0/8 allowed, as
// CONNMGR_EGRESS_ALLOW=127.0.0.0/8 would allow it.
func loopbackClient(t testing.TB, timeout time.Duration) *http.Client {
	t.Helper()
	c, err := guardedClient("127.0.0.0/8", timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// withClient makes the Manager use client for every connection.
func withClient(client *http.Client) func(*security.ManagerConfig) {
	return func(cfg *security.ManagerConfig) {
		cfg.Clients = func(*connections.Connection) (*http.Client, error) { return client, nil }
	}
}

// process is one connmgr process on the env's database.
type process struct {
	m      *security.Manager
	conns  *store.Connections
	tokens *store.Tokens
	svc    *connections.Service
	reg    *prometheus.Registry
}

// tokenEnv is one database with the Managers ("processes") on it, a shared
// test clock, and captured logs and metrics.
type tokenEnv struct {
	*process
	t     *testing.T
	db    *store.DB
	dbURL string // PostgreSQL URL, "" for SQLite
	dir   string // SQLite data directory
	ring  *keyring.KeyRing
	fp    *connections.Fingerprinter
	clock *testClock
	logs  *lockedBuffer
	log   *slog.Logger

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
// canary reached the logs, the metrics, the errors or the database rows.
func newTokenEnv(t *testing.T, engine storetest.Engine, opts ...func(*security.ManagerConfig)) *tokenEnv {
	t.Helper()
	db, where := storetest.OpenURL(t, engine)
	e := &tokenEnv{t: t, db: db, ring: storetest.KeyRing(t), clock: newTestClock(), logs: &lockedBuffer{},
		seen: &seen{}, fp: connections.NewFingerprinter([]byte("test fingerprint key"))}
	if engine == storetest.Postgres {
		e.dbURL = where
	} else {
		e.dir = where
	}
	e.log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.process = e.start(db, opts...)
	t.Cleanup(func() { e.checkCanaries(t) })
	return e
}

// start starts a Manager ("a connmgr process") on db, wired as
// cmd/connmgr/wire wires it.
func (e *tokenEnv) start(db *store.DB, opts ...func(*security.ManagerConfig)) *process {
	p := &process{conns: store.NewConnections(db, e.ring), tokens: store.NewTokens(db, e.ring),
		reg: prometheus.NewRegistry()}
	p.svc = &connections.Service{Store: p.conns, Fingerprints: e.fp, Now: e.clock.Now}
	cfg := security.ManagerConfig{Store: p.tokens, Connections: p.conns, Status: p.svc, Now: e.clock.Now,
		Logger: e.log, Registerer: p.reg}
	withClient(loopbackClient(e.t, 5*time.Second))(&cfg)
	for _, o := range opts {
		o(&cfg)
	}
	e.seen.mu.Lock()
	e.seen.regs = append(e.seen.regs, p.reg)
	e.seen.mu.Unlock()
	p.m = security.NewManager(cfg)
	p.svc.Observers = append(p.svc.Observers, p.m.Observe)
	return p
}

// replica starts another Manager on the same database: on PostgreSQL over
// its own connection pool, on SQLite on the same handle (one process with
// one SQLite connection, as connmgr runs it).
func (e *tokenEnv) replica(opts ...func(*security.ManagerConfig)) *security.Manager {
	e.t.Helper()
	db := e.db
	if e.dbURL != "" {
		db = e.reopen()
	}
	return e.start(db, opts...).m
}

// restarted starts a Manager as a new process would: over a new database
// handle, with an empty cache.
func (e *tokenEnv) restarted(opts ...func(*security.ManagerConfig)) *security.Manager {
	e.t.Helper()
	return e.start(e.reopen(), opts...).m
}

// reopen opens another handle on the env's database.
func (e *tokenEnv) reopen() *store.DB {
	e.t.Helper()
	db, err := store.OpenDB(context.Background(), e.dbURL, e.dir)
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

// checkCanaries fails the test if a secret reached the logs, the metrics,
// a recorded error or, in plaintext, a row of the database.
func (e *tokenEnv) checkCanaries(t *testing.T) {
	t.Helper()
	places := map[string]string{"logs": e.logs.String(), "metrics": e.metricsText()}
	for _, table := range []string{"connections", "connection_secrets", "tokens", "oauth_states"} {
		places[table+" rows"] = strings.Join(storetest.TableText(t, e.db.DB, table), "\n")
	}
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
	c, err := e.conns.Get(context.Background(), name)
	if err != nil {
		e.t.Fatalf("get %s: %v", name, err)
	}
	return c
}

// seed stores a token for c as if obtained at obtained with lifetime,
// over whatever is stored, due for refresh at its unjittered time.
func (e *tokenEnv) seed(c *connections.Connection, access, refresh string, obtained time.Time, lifetime time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	st := e.stored(c)
	tok := &security.Token{AccessToken: connections.NewSecret(access), RefreshToken: connections.NewSecret(refresh),
		TokenType: "Bearer", ObtainedAt: obtained, ExpiresAt: obtained.Add(lifetime)}
	if _, err := e.tokens.Save(ctx, c.ID, c.Fingerprint, st.Version, tok, tok.RefreshAt(), "seed", e.clock.Now()); err != nil {
		e.t.Fatalf("seed token of %s: %v", c.Name, err)
	}
}

// stored loads c's token state from the database.
func (e *tokenEnv) stored(c *connections.Connection) *security.TokenState {
	e.t.Helper()
	st, err := e.tokens.Load(context.Background(), c.ID)
	if err != nil {
		e.t.Fatalf("load token of %s: %v", c.Name, err)
	}
	return st
}

// refreshDue runs a scheduled refresh on the test clock: RefreshDue for
// the tokens due now, then Wait for them.
func refreshDue(m *security.Manager) {
	m.RefreshDue(context.Background(), 0)
	m.Wait()
}

// clientCredentials returns a client credentials connection to tokenURL.
func clientCredentials(name, tokenURL, clientID string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: &security.ClientCredentials{Client: security.Client{TokenURL: tokenURL, ClientID: clientID,
			ClientSecret: connections.NewSecret(canary + "-secret-" + clientID)}}}
}

// authorizationCode returns an authorization-code connection.
func authorizationCode(name, authURL, tokenURL, clientID, clientSecret string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: &security.AuthorizationCode{AuthorizationURL: authURL, Client: security.Client{TokenURL: tokenURL,
			ClientID: clientID, ClientSecret: connections.NewSecret(clientSecret), Scopes: []string{"orders.read"}}}}
}

// password returns a resource owner password connection.
func password(name, tokenURL, clientID string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: &security.Password{Client: security.Client{TokenURL: tokenURL, ClientID: clientID,
			ClientSecret: connections.NewSecret(canary + "-secret-" + clientID)},
			Username: "alice", Password: connections.NewSecret(canary + "-password-" + clientID)}}
}

// oauthClient returns the OAuth client settings of c's policy.
func oauthClient(c *connections.Connection) *security.Client {
	switch p := c.Security.(type) {
	case *security.ClientCredentials:
		return &p.Client
	case *security.Password:
		return &p.Client
	case *security.AuthorizationCode:
		return &p.Client
	}
	panic(fmt.Sprintf("policy %s has no OAuth client", c.Policy()))
}

// waitFor polls cond until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// forTokenEnvs runs f as a subtest on every engine under test, with an
// env (its Manager configured by cfg, when not nil) and a token endpoint on
// the env's clock.
func forTokenEnvs(t *testing.T, cfg func(*security.ManagerConfig), f func(t *testing.T, e *tokenEnv, ts *tokenServer)) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		var opts []func(*security.ManagerConfig)
		if cfg != nil {
			opts = append(opts, cfg)
		}
		e := newTokenEnv(t, engine, opts...)
		f(t, e, newTokenServer(t, e.clock.Now))
	})
}

// forEngine runs f as a subtest on every engine under test.
func forEngine(t *testing.T, f func(t *testing.T, engine storetest.Engine)) {
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) { f(t, engine) })
	}
}
