package security_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// callbackURL is connmgr's callback ({CONNMGR_PUBLIC_URL}/oauth/callback).
// Nothing listens there: the browser stand-in stops at the redirect.
const callbackURL = "http://connmgr.test/oauth/callback"

const (
	consentClient = "orders-app"
	consentSecret = canary + "-as-secret"
)

// consentEnv is a token env with a go-oauth2 authorization server and the
// consent flow.
type consentEnv struct {
	*tokenEnv
	as     *authServer
	k      *security.Consent
	states *recordingStates
}

// at returns the env for use in subtest t.
func (e *consentEnv) at(t *testing.T) *consentEnv {
	c := *e
	c.tokenEnv = e.tokenEnv.at(t)
	return &c
}

func newConsentEnv(t *testing.T, engine storetest.Engine, opts ...func(*security.ManagerConfig)) *consentEnv {
	t.Helper()
	e := newTokenEnv(t, engine, opts...)
	as := newAuthServer(t, consentClient, consentSecret, callbackURL)
	states := &recordingStates{ConsentStates: store.NewConsentStates(e.db, e.ring)}
	return &consentEnv{tokenEnv: e, as: as, states: states,
		k: security.NewConsent(states, e.conns, e.m, callbackURL)}
}

// recordingStates is the store's pending consents, keeping a copy of each
// consent created, so that the tests can check its verifier and nonce
// against what the authorization server saw.
type recordingStates struct {
	security.ConsentStates
	mu      sync.Mutex
	created []security.PendingConsent
}

func (r *recordingStates) Create(ctx context.Context, pc *security.PendingConsent) error {
	r.mu.Lock()
	r.created = append(r.created, *pc)
	r.mu.Unlock()
	return r.ConsentStates.Create(ctx, pc)
}

// last returns the consent created last.
func (r *recordingStates) last(t testing.TB) security.PendingConsent {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.created) == 0 {
		t.Fatal("no consent was started")
	}
	return r.created[len(r.created)-1]
}

// conn creates an authorization-code connection to the server; issuer is
// optional.
func (e *consentEnv) conn(name, issuer string) *connections.Connection {
	return e.connTo(e.as, name, issuer)
}

// connTo creates an authorization-code connection to as.
func (e *consentEnv) connTo(as *authServer, name, issuer string) *connections.Connection {
	c := authorizationCode(name, as.AuthURL(), as.TokenURL(), consentClient, consentSecret)
	c.Security.(*security.AuthorizationCode).Issuer = issuer
	return e.create(c)
}

// start begins consent for c and returns the authorization URL.
func (e *consentEnv) start(c *connections.Connection) string {
	e.t.Helper()
	u, _, err := e.k.Start(context.Background(), c, "alice")
	if e.record(err) != nil {
		e.t.Fatalf("Start(%s): %v", c.Name, err)
	}
	return u
}

// consent runs the whole flow for c and fails the test if it does not end
// with tokens.
func (e *consentEnv) consent(c *connections.Connection) {
	e.t.Helper()
	cb := authorize(e.t, e.start(c), callbackURL)
	if _, err := e.k.Complete(context.Background(), cb); e.record(err) != nil {
		e.t.Fatalf("Complete: %v", err)
	}
}

func TestConsentFlow(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newConsentEnv(t, engine)
		ctx := context.Background()
		c := e.conn("Conn_Consent", "")

		authURL := e.start(c)
		u, err := url.Parse(authURL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if got := u.Scheme + "://" + u.Host + u.Path; got != e.as.AuthURL() {
			t.Errorf("authorization URL goes to %s, want %s", got, e.as.AuthURL())
		}
		for k, want := range map[string]string{"response_type": "code", "client_id": consentClient,
			"redirect_uri": callbackURL, "code_challenge_method": "S256", "scope": "orders.read"} {
			if got := q.Get(k); got != want {
				t.Errorf("authorization URL %s = %q, want %q", k, got, want)
			}
		}
		state := q.Get("state")
		if len(state) < 22 { // 128 bits in base64url
			t.Errorf("state %q is shorter than 128 bits", state)
		}
		if cc := q.Get("code_challenge"); len(cc) != 43 {
			t.Errorf("code_challenge %q is not a base64url SHA-256", cc)
		}
		if strings.Contains(authURL, "code_verifier") || strings.Contains(authURL, consentSecret) {
			t.Errorf("authorization URL carries the verifier or the client secret: %s", authURL)
		}
		// Stored: the state's hash and the verifier, encrypted.
		pc := e.states.last(t)
		if pc.State != state || pc.ConnectionID != c.ID || pc.Fingerprint != c.Fingerprint || pc.Nonce != "" {
			t.Errorf("pending consent = state ours %v, connection %d, fingerprint ours %v, nonce %q; want ours, %d, ours, none (no openid)",
				pc.State == state, pc.ConnectionID, pc.Fingerprint == c.Fingerprint, pc.Nonce, c.ID)
		}
		hash := sha256.Sum256([]byte(state))
		var rows int64
		if err := e.db.Table("oauth_states").Where("state_hash = ?", hex.EncodeToString(hash[:])).Count(&rows).Error; err != nil || rows != 1 {
			t.Fatalf("stored states with the hash of the authorization URL's state = %d, %v; want 1", rows, err)
		}
		verifier := pc.Verifier.Reveal()
		if got := oauth2.S256ChallengeFromVerifier(verifier); got != q.Get("code_challenge") {
			t.Errorf("code_challenge = %q, want S256 of the stored verifier %q", q.Get("code_challenge"), got)
		}
		for _, r := range storetest.TableText(t, e.db.DB, "oauth_states") {
			if strings.Contains(r, state) || strings.Contains(r, verifier) {
				t.Errorf("oauth_states holds the state or the verifier in plaintext")
			}
		}

		cb := authorize(t, authURL, callbackURL)
		if cb.Get("state") != state || !strings.HasPrefix(cb.Get("code"), canary+"-CODE-") {
			t.Fatalf("callback query = state %q, code set %v; want our state and a code", cb.Get("state"), cb.Get("code") != "")
		}
		got, err := e.k.Complete(ctx, cb)
		if e.record(err) != nil {
			t.Fatalf("Complete: %v", err)
		}
		if got.ID != c.ID {
			t.Errorf("Complete returned connection %s, want %s", got.Name, c.Name)
		}
		if n := e.as.count("authorization_code"); n != 1 {
			t.Errorf("code exchanges = %d, want 1", n)
		}
		if got := e.get(c.Name).Status; got != connections.StatusConfigured {
			t.Errorf("status after consent = %s, want CONFIGURED", got)
		}
		tok, err := e.m.Token(ctx, e.get(c.Name))
		if e.record(err) != nil {
			t.Fatalf("Token after consent: %v", err)
		}
		if !strings.HasPrefix(tok.AccessToken.Reveal(), canary+"-AT-") || tok.Lifetime() != time.Hour {
			t.Errorf("Token() = a %v token, want the server's 1h access token", tok.Lifetime())
		}
		if n := e.as.count(""); n != 1 {
			t.Errorf("token requests = %d, want 1 (Token served from the cache)", n)
		}

		// Refresh-token rotation through the scheduled refresh, twice.
		for i := range 2 {
			prev := e.stored(c)
			e.clock.Advance(55 * time.Minute) // past the jittered refresh point (48 to 54 minutes)
			refreshDue(e.m)
			st := e.stored(c)
			if n := e.as.count("refresh_token"); n != i+1 {
				t.Fatalf("refresh %d: refresh requests = %d, want %d", i+1, n, i+1)
			}
			if n := e.as.errors("invalid_grant"); n != 0 {
				t.Fatalf("refresh %d: the authorization server answered invalid_grant %d times", i+1, n)
			}
			if st.Version != prev.Version+1 || st.Token.AccessToken.Equal(prev.Token.AccessToken) ||
				st.Token.RefreshToken.Equal(prev.Token.RefreshToken) || !st.Token.RefreshToken.IsSet() {
				t.Errorf("refresh %d: stored version %d → %d, new access %v, new refresh %v; want one write of both",
					i+1, prev.Version, st.Version, !st.Token.AccessToken.Equal(prev.Token.AccessToken),
					!st.Token.RefreshToken.Equal(prev.Token.RefreshToken))
			}
			tok, err := e.m.Token(ctx, c)
			if e.record(err) != nil || !tok.AccessToken.Equal(st.Token.AccessToken) {
				t.Errorf("refresh %d: Token() = %v, want the refreshed token", i+1, err)
			}
		}

		// Replaying the callback: the state is used up, no token request.
		n := e.as.count("")
		if _, err := e.k.Complete(ctx, cb); !errors.Is(e.record(err), security.ErrInvalidState) {
			t.Errorf("Complete(replayed callback) = %v, want ErrInvalidState", err)
		}
		if got := e.as.count(""); got != n {
			t.Errorf("replayed callback made %d token requests, want 0", got-n)
		}
	})
}

func TestConsentRefused(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newConsentEnv(t, engine)
		ctx := context.Background()
		// A connection whose issuer is another server's: the callback's iss
		// (this server's) differs.
		other := e.conn("Conn_Issuer_Other", newAuthServer(t, consentClient, consentSecret, callbackURL).Issuer())
		tests := []struct {
			name     string
			callback func(t *testing.T, e *consentEnv) url.Values
			want     error
		}{
			{
				name: "expired state",
				callback: func(t *testing.T, e *consentEnv) url.Values {
					authURL := e.start(e.conn("Conn_Expired_State", ""))
					cb := authorize(t, authURL, callbackURL)
					e.clock.Advance(security.StateLifetime + time.Minute)
					return cb
				},
				want: security.ErrInvalidState,
			},
			{
				name: "unknown state",
				callback: func(t *testing.T, e *consentEnv) url.Values {
					e.start(e.conn("Conn_Unknown_State", ""))
					return url.Values{"state": {rand.Text()}, "code": {canary + "-CODE-forged"}}
				},
				want: security.ErrInvalidState,
			},
			{
				name:     "no state",
				callback: func(*testing.T, *consentEnv) url.Values { return url.Values{"code": {canary + "-CODE-forged"}} },
				want:     security.ErrInvalidState,
			},
			{
				name: "issuer mismatch",
				callback: func(t *testing.T, e *consentEnv) url.Values {
					return authorize(t, e.start(other), callbackURL)
				},
				want: security.ErrIssuerMismatch,
			},
			{
				name: "access denied",
				callback: func(t *testing.T, e *consentEnv) url.Values {
					e.as.deny.Store(true)
					defer e.as.deny.Store(false)
					cb := authorize(t, e.start(e.conn("Conn_Denied", "")), callbackURL)
					if cb.Get("error") != "access_denied" {
						t.Fatalf("the authorization server answered %v, want error=access_denied", cb)
					}
					return cb
				},
				want: security.ErrConsentDenied,
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				cb := tt.callback(t, e)
				n := e.as.count("")
				_, err := e.k.Complete(ctx, cb)
				if !errors.Is(e.record(err), tt.want) {
					t.Fatalf("Complete() = %v, want %v", err, tt.want)
				}
				if got := e.as.count(""); got != n {
					t.Errorf("Complete() made %d token requests, want 0", got-n)
				}
				// The state, if it was good, is used up either way.
				if _, err := e.k.Complete(ctx, cb); !errors.Is(e.record(err), security.ErrInvalidState) {
					t.Errorf("Complete() again = %v, want ErrInvalidState", err)
				}
			})
		}

		t.Run("issuer matching", func(t *testing.T) {
			e := e.at(t)
			c := e.conn("Conn_Issuer_OK", e.as.Issuer())
			e.consent(c)
			if got := e.get(c.Name).Status; got != connections.StatusConfigured {
				t.Errorf("status = %s, want CONFIGURED", got)
			}
		})

		t.Run("state bound to its connection", func(t *testing.T) {
			e := e.at(t)
			a, b := e.conn("Conn_State_A", ""), e.conn("Conn_State_B", "")
			e.start(a)
			cb := authorize(t, e.start(b), callbackURL)
			got, err := e.k.Complete(ctx, cb)
			if e.record(err) != nil {
				t.Fatal(err)
			}
			if got.ID != b.ID {
				t.Errorf("Complete() completed %s, want %s", got.Name, b.Name)
			}
			if e.stored(a).Token != nil || e.stored(b).Token == nil {
				t.Errorf("tokens stored for A: %v, for B: %v; want B only", e.stored(a).Token != nil, e.stored(b).Token != nil)
			}
		})

		t.Run("not an authorization-code connection", func(t *testing.T) {
			e := e.at(t)
			c := e.create(clientCredentials("Conn_Not_AC", e.as.TokenURL(), consentClient))
			if _, _, err := e.k.Start(ctx, c, "alice"); !errors.Is(err, security.ErrNoConsent) {
				t.Errorf("Start() = %v, want ErrNoConsent", err)
			}
		})
	})
}

// TestConsentRenewed: invalid_grant stops automatic refresh until a new
// consent, which starts it again.
func TestConsentRenewed(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newConsentEnv(t, engine)
		ctx := context.Background()
		c := e.conn("Conn_Renewed", "")
		e.consent(c)
		// The user revokes the grant at the server: here, the stored refresh
		// token becomes unknown to it.
		st := e.stored(c)
		e.seed(c, st.Token.AccessToken.Reveal(), canary+"-RT-revoked", st.Token.ObtainedAt, st.Token.Lifetime())
		e.clock.Advance(50 * time.Minute)
		refreshDue(e.m)
		if got := e.as.errors("invalid_grant"); got != 1 {
			t.Fatalf("invalid_grant answers = %d, want 1", got)
		}
		if got := e.get(c.Name).Status; got != connections.StatusNeedsConsent {
			t.Errorf("status = %s, want NEEDS_CONSENT", got)
		}
		e.clock.Advance(15 * time.Minute)
		n := e.as.count("")
		refreshDue(e.m)
		if _, err := e.m.Token(ctx, e.get(c.Name)); !errors.Is(e.record(err), security.ErrNeedsConsent) {
			t.Errorf("Token() = %v, want ErrNeedsConsent", err)
		}
		if got := e.as.count(""); got != n {
			t.Errorf("token requests while consent is needed = %d, want 0", got-n)
		}

		e.consent(c)
		if got := e.get(c.Name).Status; got != connections.StatusConfigured {
			t.Errorf("status after new consent = %s, want CONFIGURED", got)
		}
		if info, _ := e.m.Info(ctx, c); info.Blocked || !info.Refreshable {
			t.Errorf("Info() after new consent: blocked %v, refreshable %v; want refreshable", info.Blocked, info.Refreshable)
		}
		e.clock.Advance(55 * time.Minute)
		n = e.as.count("refresh_token")
		refreshDue(e.m)
		if got := e.as.count("refresh_token"); got != n+1 {
			t.Errorf("scheduled refreshes after new consent = %d, want 1", got-n)
		}
		if got := e.as.errors("invalid_grant"); got != 1 {
			t.Errorf("invalid_grant answers = %d, want still 1", got)
		}
	})
}

// TestCanariesNeverLeak runs every kind of secret through successful and
// failing flows, with logs captured at debug level, and looks for them in
// the logs, the metrics, the errors and the token metadata.
func TestCanariesNeverLeak(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newConsentEnv(t, engine)
		ts := newTokenServer(t, e.clock.Now)
		ctx := context.Background()
		var conns []*connections.Connection

		// Client credentials, Basic and in the body (the error body echoes it).
		basic := e.create(clientCredentials("Conn_Leak_Basic", ts.URL(), "canary-basic"))
		body := clientCredentials("Conn_Leak_Body", ts.URL(), "canary-body")
		oauthClient(body).ClientAuth = security.ClientAuthBody
		body = e.create(body)
		// private_key_jwt
		key := newTestKeys(t)[2]
		e.secret(pemBody(key.pem))
		jwtConn := clientCredentials("Conn_Leak_JWT", ts.URL(), "canary-jwt")
		jcl := oauthClient(jwtConn)
		jcl.ClientSecret, jcl.ClientAuth = connections.Secret{}, security.ClientAuthPrivateKeyJWT
		jcl.PrivateKeyPEM = connections.NewSecret(key.pem)
		jwtConn = e.create(jwtConn)
		// Resource owner password
		pw := e.create(password("Conn_Leak_Password", ts.URL(), "canary-password"))
		conns = append(conns, basic, body, jwtConn, pw)

		for _, c := range conns {
			if _, err := e.m.Token(ctx, c); e.record(err) != nil {
				t.Fatalf("Token(%s): %v", c.Name, err)
			}
		}
		// Failures of every class, each with a body full of canaries.
		failures := []struct {
			status      int
			code, after string
		}{
			{http.StatusUnauthorized, "invalid_client", ""},
			{http.StatusBadRequest, "invalid_grant", ""},
			{http.StatusServiceUnavailable, "", ""},
			{http.StatusTooManyRequests, "", "7"},
			{http.StatusBadRequest, "invalid_request\"\n" + canary, ""},
		}
		for _, f := range failures {
			ts.failWith(f.status, f.code, f.after)
			for _, c := range conns {
				_, err := e.m.Refresh(ctx, c)
				e.record(err)
			}
		}
		ts.recover()

		// Authorization code with the go-oauth2 server: codes, rotated
		// refresh tokens, a failed exchange, a refused refresh.
		ac := e.conn("Conn_Leak_AC", e.as.Issuer())
		conns = append(conns, ac)
		e.consent(ac)
		e.clock.Advance(55 * time.Minute)
		refreshDue(e.m)
		cb := authorize(t, e.start(ac), callbackURL)
		cb.Set("code", cb.Get("code")+"-tampered")
		_, err := e.k.Complete(ctx, cb)
		if e.record(err) == nil {
			t.Errorf("Complete() with a tampered code = nil, want an error")
		}
		st := e.stored(ac)
		e.seed(ac, st.Token.AccessToken.Reveal(), canary+"-RT-unknown", st.Token.ObtainedAt, st.Token.Lifetime())
		e.clock.Advance(49 * time.Minute)
		refreshDue(e.m)
		e.clock.Advance(12 * time.Minute) // the access token expired
		_, err = e.m.Token(ctx, ac)
		if !errors.Is(e.record(err), security.ErrNeedsConsent) {
			t.Errorf("Token() after a refused refresh = %v, want ErrNeedsConsent", err)
		}

		// What the API shows: token metadata, and tokens printed by mistake.
		for _, c := range conns {
			info, err := e.m.Info(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(info)
			e.record(errors.New(string(b)))
			if st := e.stored(c); st.Token != nil {
				e.record(fmt.Errorf("%v %+v %#v %s", st.Token, *st.Token, st.Token, st.Token.AccessToken))
			}
		}

		// The checks are not vacuous: the flows did log, at debug level.
		logs := e.logs.String()
		for _, want := range []string{`"level":"DEBUG"`, `"msg":"token obtained"`, `"msg":"token request failed"`,
			"Conn_Leak_Body", "invalid_client", "HTTP 503"} {
			if !strings.Contains(logs, want) {
				t.Errorf("logs lack %s", want)
			}
		}
		if m := e.metricsText(); !strings.Contains(m, `connmgr_token_requests_total{connection="Conn_Leak_AC",outcome="success"}`) {
			t.Errorf("metrics lack the token requests of Conn_Leak_AC")
		}
		e.checkCanaries(t)
	})
}

// TestConsentFollowsConfiguration: a pending consent belongs to the
// credential configuration it was started under; a change of the
// connection makes its callback fail without storing a token (#8 item 1).
func TestConsentFollowsConfiguration(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newConsentEnv(t, engine)
		ctx := context.Background()
		const elsewhere = "https://elsewhere.example.net/v1"
		dummy := canary + "-dummy-secret"
		tests := []struct {
			name string
			// complete changes the connection at its point of the flow and
			// returns Complete's error.
			complete func(t *testing.T, e *consentEnv, c *connections.Connection, cb url.Values) error
			want     []error
		}{
			{
				name: "changed before the callback",
				complete: func(t *testing.T, e *consentEnv, c *connections.Connection, cb url.Values) error {
					e.moveTo(c.Name, elsewhere, dummy)
					_, err := e.k.Complete(ctx, cb)
					return err
				},
				// The change dropped the pending consent with the tokens:
				// its state is unknown now, or found stale.
				want: []error{security.ErrConsentStale, security.ErrInvalidState},
			},
			{
				name: "changed during the code exchange",
				complete: func(t *testing.T, e *consentEnv, c *connections.Connection, cb url.Values) error {
					release := e.as.holdTokens(t)
					done := make(chan error, 1)
					go func() {
						_, err := e.k.Complete(ctx, cb)
						done <- err
					}()
					waitFor(5*time.Second, e.as.busy)
					if !e.as.busy() {
						t.Fatal("Complete() did not reach the token endpoint within 5s")
					}
					e.moveTo(c.Name, elsewhere, dummy)
					release()
					return <-done
				},
				want: []error{security.ErrConsentStale},
			},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				c := e.conn(fmt.Sprintf("Conn_Consent_Moved_%d", i), "")
				cb := authorize(t, e.start(c), callbackURL)
				err := e.record(tt.complete(t, e, c, cb))
				if !slices.ContainsFunc(tt.want, func(w error) bool { return errors.Is(err, w) }) {
					t.Fatalf("Complete() = %v, want %v", err, tt.want)
				}
				if st := e.stored(c); st.Token != nil {
					t.Errorf("a token of the old configuration is stored (version %d)", st.Version)
				}
				if e.m.Cached(c.ID) != nil {
					t.Errorf("the Manager caches a token of the old configuration")
				}
				if got := e.get(c.Name).Status; got != connections.StatusNeedsConsent {
					t.Errorf("status = %s, want NEEDS_CONSENT", got)
				}
			})
		}
	})
}

// TestConsentIssuer checks the callback's iss as RFC 9207 says, through
// Consent.Complete against the authorization server, and discovery of
// the endpoints from the issuer alone (#9 item 9).
func TestConsentIssuer(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newConsentEnv(t, engine)
		ctx := context.Background()
		tests := []struct {
			name       string
			issuer     bool // configure the server's issuer
			discover   bool // configure the issuer only, no endpoints
			requireIss bool
			advertise  bool // the metadata has authorization_response_iss_parameter_supported
			callback   func(cb url.Values)
			want       error
		}{
			{name: "iss equal", issuer: true},
			{name: "iss different", issuer: true, callback: func(cb url.Values) { cb.Set("iss", "https://evil.example") },
				want: security.ErrIssuerMismatch},
			{name: "iss given twice", issuer: true, callback: func(cb url.Values) { cb.Add("iss", cb.Get("iss")) },
				want: security.ErrIssuerMismatch},
			{name: "iss missing", issuer: true, callback: func(cb url.Values) { cb.Del("iss") }},
			{name: "iss missing, advertised by the server", issuer: true, advertise: true,
				callback: func(cb url.Values) { cb.Del("iss") }, want: security.ErrIssuerMissing},
			{name: "iss missing, required by the connection", issuer: true, requireIss: true,
				callback: func(cb url.Values) { cb.Del("iss") }, want: security.ErrIssuerMissing},
			{name: "iss advertised and given", issuer: true, advertise: true},
			{name: "no issuer configured", callback: func(cb url.Values) { cb.Set("iss", "https://other.example") }},
			{name: "endpoints discovered from the issuer", issuer: true, discover: true, advertise: true},
			{name: "endpoints discovered, iss different", issuer: true, discover: true,
				callback: func(cb url.Values) { cb.Set("iss", "https://evil.example") }, want: security.ErrIssuerMismatch},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				as := newAuthServer(t, consentClient, consentSecret, callbackURL)
				as.issSupported.Store(tt.advertise)
				c := authorizationCode(fmt.Sprintf("Conn_Issuer_%d", i), as.AuthURL(), as.TokenURL(), consentClient, consentSecret)
				p := c.Security.(*security.AuthorizationCode)
				if tt.issuer {
					p.Issuer = as.Issuer()
				}
				if tt.discover {
					p.AuthorizationURL, p.TokenURL = "", ""
				}
				p.RequireIss = tt.requireIss
				c = e.create(c)

				authURL := e.start(c)
				if u, err := url.Parse(authURL); err != nil || u.Scheme+"://"+u.Host+u.Path != as.AuthURL() {
					t.Fatalf("authorization URL %s, want one at %s", authURL, as.AuthURL())
				}
				cb := authorize(t, authURL, callbackURL)
				if tt.callback != nil {
					tt.callback(cb)
				}
				_, err := e.k.Complete(ctx, cb)
				if !errors.Is(e.record(err), tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("Complete() = %v, want %v", err, tt.want)
				}
				st := e.stored(c)
				if tt.want != nil {
					if n := as.count(""); n != 0 || st.Token != nil {
						t.Errorf("refused callback: %d token requests, token stored %v; want none", n, st.Token != nil)
					}
					return
				}
				if n := as.count("authorization_code"); n != 1 || st.Token == nil {
					t.Errorf("accepted callback: %d code exchanges, token stored %v; want 1 and a token", n, st.Token != nil)
				}
				if got := e.get(c.Name).Status; got != connections.StatusConfigured {
					t.Errorf("status = %s, want CONFIGURED", got)
				}
			})
		}
	})
}
