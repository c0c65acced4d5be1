package invoke_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/outbound/outboundtest"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// stack is the credential path of connmgr on a real database, wired as
// cmd/connmgr/wire wires it: the connection service on the store, the
// token manager on the token store, and a Proxy and a Tester over them,
// all going out through an egress guard that allows loopback.
type stack struct {
	db     *store.DB
	svc    *connections.Service
	tokens *security.Manager
	proxy  *invoke.Proxy
	tester *invoke.Tester
	clock  *clock
}

func newStack(t testing.TB, engine storetest.Engine) *stack {
	t.Helper()
	db := storetest.Open(t, engine)
	ring := storetest.KeyRing(t)
	s := &stack{db: db, clock: &clock{t: time.Now()}}
	s.svc = &connections.Service{Store: store.NewConnections(db, ring),
		Fingerprints: connections.NewFingerprinter([]byte("invoke-test-fingerprints"))}
	guard := outboundtest.Loopback(t)
	transport, client := guard.Transport(0), guard.Client(10*time.Second)
	t.Cleanup(transport.CloseIdleConnections)
	t.Cleanup(client.CloseIdleConnections)
	s.tokens = security.NewManager(security.ManagerConfig{Store: store.NewTokens(db, ring), Connections: s.svc,
		Status: s.svc, Clients: func(*connections.Connection) (*http.Client, error) { return client, nil },
		Now: s.clock.Now})
	s.svc.Observers = append(s.svc.Observers, s.tokens.Observe)
	s.proxy = invoke.NewProxy(s.tokens, func(*connections.Connection) (http.RoundTripper, error) { return transport, nil }, nil)
	s.tester = &invoke.Tester{Proxy: s.proxy, Tokens: s.tokens, Status: s.svc}
	return s
}

// create stores c through the service and returns it as stored (with its
// id and fingerprint).
func (s *stack) create(t testing.TB, c *connections.Connection) *connections.Connection {
	t.Helper()
	if err := s.svc.Create(context.Background(), "test", c); err != nil {
		t.Fatalf("Create(%s): %v", c.Name, err)
	}
	return s.get(t, c.Name)
}

func (s *stack) get(t testing.TB, name string) *connections.Connection {
	t.Helper()
	c, err := s.svc.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return c
}

// serve sends call through the stack's proxy as the api does, rendering
// an error with errStatus.
func (s *stack) serve(call invoke.Call) (*httptest.ResponseRecorder, error) {
	rec := httptest.NewRecorder()
	err := s.proxy.Serve(rec, httptest.NewRequest(http.MethodPost, "/invoke/"+call.Conn.Name+"/x", nil), call)
	if err != nil {
		rec.WriteHeader(errStatus)
	}
	return rec, err
}

// clock is a time that tests move on by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// tokenEndpoint is an OAuth token endpoint that counts its requests and
// answers each with tokens made by issue (n counts from 1), or with the
// status and body of fail when set.
type tokenEndpoint struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	fail     func(w http.ResponseWriter)
}

// accessToken and refreshToken are the tokens the endpoint's nth answer holds.
func accessToken(n int64) string  { return "at/" + canary + "+" + string(rune('a'+n%26)) + "=" }
func refreshToken(n int64) string { return "rt-" + canary + "-" + string(rune('a'+n%26)) }

func newTokenEndpoint(t testing.TB) *tokenEndpoint {
	t.Helper()
	e := &tokenEndpoint{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := e.requests.Add(1)
		e.mu.Lock()
		fail := e.fail
		e.mu.Unlock()
		if fail != nil {
			fail(w)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": accessToken(n), "refresh_token": refreshToken(n),
			"token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *tokenEndpoint) failWith(f func(w http.ResponseWriter)) {
	e.mu.Lock()
	e.fail = f
	e.mu.Unlock()
}

// clientSecret is the client secret of the stacks' OAuth connections.
const clientSecret = "cs/" + canary + "+secret="

// oauthConn returns an OAuth client credentials connection to base whose
// token endpoint is tokenURL.
func oauthConn(name, base, tokenURL string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: base,
		Security: &security.ClientCredentials{Client: security.Client{TokenURL: tokenURL, ClientID: "invoke-test",
			ClientSecret: connections.NewSecret(clientSecret)}}}
}
