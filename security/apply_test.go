package security

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
)

func strPtr(s string) *string { return &s }

func TestApplyStaticPolicies(t *testing.T) {
	m := NewManager(ManagerConfig{}) // no tokens involved
	tests := []struct {
		name      string
		sec       connections.Security
		url       string
		wantAuth  string // Authorization header after Apply
		wantQuery string // raw query after Apply
		check     func(t *testing.T, req *http.Request)
	}{
		{
			name:      "NONE adds nothing",
			sec:       connections.Security{Policy: connections.PolicyNone},
			url:       "https://api.example.com/v1/orders?a=1",
			wantQuery: "a=1",
		},
		{
			name:      "BASIC",
			sec:       connections.Security{Policy: connections.PolicyBasic, Username: "svc-user", Password: connections.NewSecret(canary + " p:ss/wörd")},
			url:       "https://api.example.com/v1/orders",
			wantAuth:  "Basic " + base64.StdEncoding.EncodeToString([]byte("svc-user:"+canary+" p:ss/wörd")),
			wantQuery: "",
		},
		{
			name:      "API_KEY header, default name and Bearer prefix",
			sec:       connections.Security{Policy: connections.PolicyAPIKey, Key: connections.NewSecret(canary + "-key")},
			url:       "https://api.example.com/v1/orders",
			wantAuth:  "Bearer " + canary + "-key",
			wantQuery: "",
		},
		{
			name:      "API_KEY custom header without prefix",
			sec:       connections.Security{Policy: connections.PolicyAPIKey, Key: connections.NewSecret(canary + "-key"), Name: "X-Api-Key"},
			url:       "https://api.example.com/v1/orders",
			wantAuth:  "caller's own", // untouched
			wantQuery: "",
			check: func(t *testing.T, req *http.Request) {
				if got := req.Header.Values("X-Api-Key"); !slices.Equal(got, []string{canary + "-key"}) {
					t.Errorf("X-Api-Key = %q, want [%s-key] (no prefix, caller's value replaced)", got, canary)
				}
			},
		},
		{
			name:      "API_KEY custom header with explicit prefix",
			sec:       connections.Security{Policy: connections.PolicyAPIKey, Key: connections.NewSecret(canary + "-key"), Name: "X-Api-Key", ValuePrefix: strPtr("Token ")},
			url:       "https://api.example.com/v1/orders",
			wantAuth:  "caller's own",
			wantQuery: "",
			check: func(t *testing.T, req *http.Request) {
				if got := req.Header.Get("X-Api-Key"); got != "Token "+canary+"-key" {
					t.Errorf("X-Api-Key = %q, want %q", got, "Token "+canary+"-key")
				}
			},
		},
		{
			name: "API_KEY in query replaces the caller's parameter",
			sec: connections.Security{Policy: connections.PolicyAPIKey, Key: connections.NewSecret(canary + " k&y=1"),
				In: connections.InQuery, Name: "api_key"},
			url:       "https://api.example.com/v1/orders?b=2&api_key=caller&a=%2F1+x&api%5Fkey=encoded&z",
			wantAuth:  "caller's own",
			wantQuery: "b=2&a=%2F1+x&z&api_key=" + url.QueryEscape(canary+" k&y=1"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &connections.Connection{Name: "Conn_Static", Role: connections.RoleInvoke,
				BaseURL: "https://api.example.com/v1", Security: tt.sec}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			req, err := http.NewRequest(http.MethodGet, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "caller's own")
			req.Header.Set("X-Api-Key", "caller's own")
			tok, err := m.Apply(context.Background(), c, req)
			if err != nil || tok != nil {
				t.Fatalf("Apply() = %v, %v, want nil, nil", tok, err)
			}
			want := tt.wantAuth
			if want == "" {
				want = "caller's own"
			}
			if got := req.Header.Get("Authorization"); got != want {
				t.Errorf("Authorization = %q, want %q", got, want)
			}
			if got := req.URL.RawQuery; got != tt.wantQuery {
				t.Errorf("query = %q, want %q", got, tt.wantQuery)
			}
			if tt.check != nil {
				tt.check(t, req)
			}
		})
	}
}

// testKey is a private key for private_key_jwt with its PEM.
type testKey struct {
	name   string
	alg    string
	pem    string
	public crypto.PublicKey
}

func newTestKeys(t *testing.T) []testKey {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(k any) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	sec1, err := x509.MarshalECPrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	return []testKey{
		{"RSA PKCS#8", "RS256", enc(rsaKey), &rsaKey.PublicKey},
		{"RSA PKCS#1", "RS256", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})), &rsaKey.PublicKey},
		{"P-256 SEC 1", "ES256", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), &p256.PublicKey},
		{"P-384", "ES384", enc(p384), &p384.PublicKey},
		{"Ed25519", "EdDSA", enc(edKey), edPub},
	}
}

// pemBody is a line from the middle of a PEM's base64 body: enough to
// recognise the key if it leaks.
func pemBody(p string) string {
	lines := strings.Split(strings.TrimSpace(p), "\n")
	return lines[len(lines)/2]
}

func TestApplyOAuthPolicies(t *testing.T) {
	e := newTokenEnv(t, connectionstest.SQLite)
	ts := newTokenServer(t, e.clock.Now)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Saw-Authorization", r.Header.Get("Authorization"))
	}))
	t.Cleanup(upstream.Close)

	type reqCheck func(t *testing.T, r tokenRequest)
	formHas := func(want map[string]string) reqCheck {
		return func(t *testing.T, r tokenRequest) {
			t.Helper()
			for k, v := range want {
				if got := r.Form[k]; !slices.Equal(got, []string{v}) {
					t.Errorf("form %s = %q, want [%q]", k, got, v)
				}
			}
		}
	}
	formLacks := func(keys ...string) reqCheck {
		return func(t *testing.T, r tokenRequest) {
			t.Helper()
			for _, k := range keys {
				if _, ok := r.Form[k]; ok {
					t.Errorf("form has %s = %q, want none", k, r.Form[k])
				}
			}
		}
	}
	authIs := func(want string) reqCheck {
		return func(t *testing.T, r tokenRequest) {
			t.Helper()
			if r.Auth != want {
				t.Errorf("token request Authorization = %q, want %q", r.Auth, want)
			}
		}
	}

	base := func(name, clientID string) *connections.Connection {
		c := clientCredentials(name, ts.URL(), clientID)
		c.Security.Scopes = []string{"orders.read", "orders.write"}
		c.Security.Audience = "https://api.example.com"
		c.Security.ExtraParams = map[string]string{"resource": "urn:orders", "tenant": "t 1"}
		return c
	}
	scopesEtc := formHas(map[string]string{"scope": "orders.read orders.write", "audience": "https://api.example.com",
		"resource": "urn:orders", "tenant": "t 1"})

	secret := canary + " s3cr:et/+%&="
	tests := []struct {
		name   string
		conn   func() *connections.Connection
		checks []reqCheck
	}{
		{
			name: "client credentials, BASIC_HEADER",
			conn: func() *connections.Connection {
				c := base("Conn_CC_Basic", "orders client:1")
				c.Security.ClientSecret = connections.NewSecret(secret)
				return c
			},
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials"}), scopesEtc,
				formLacks("client_secret", "client_id", "client_assertion"),
				authIs("Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape("orders client:1")+":"+url.QueryEscape(secret)))),
			},
		},
		{
			name: "client credentials, BODY",
			conn: func() *connections.Connection {
				c := base("Conn_CC_Body", "orders-body")
				c.Security.ClientSecret = connections.NewSecret(secret)
				c.Security.ClientAuth = connections.ClientAuthBody
				return c
			},
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials", "client_id": "orders-body", "client_secret": secret}),
				scopesEtc, formLacks("client_assertion"), authIs(""),
			},
		},
		{
			name: "password",
			conn: func() *connections.Connection {
				c := base("Conn_Password", "orders-ropc")
				c.Security.Policy = connections.PolicyPassword
				c.Security.Username = "alice@example.com"
				c.Security.Password = connections.NewSecret(canary + "-pw &=")
				return c
			},
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "password", "username": "alice@example.com", "password": canary + "-pw &="}),
				scopesEtc, formLacks("client_secret"),
				authIs("Basic " + base64.StdEncoding.EncodeToString([]byte("orders-ropc:"+url.QueryEscape(canary+"-secret-orders-ropc")))),
			},
		},
	}
	for i, k := range newTestKeys(t) {
		e.secret(pemBody(k.pem))
		kid := ""
		if i%2 == 0 {
			kid = "key-" + k.alg
		}
		clientID := "orders-jwt-" + strings.ToLower(k.alg)
		tests = append(tests, struct {
			name   string
			conn   func() *connections.Connection
			checks []reqCheck
		}{
			name: "client credentials, PRIVATE_KEY_JWT " + k.name,
			conn: func() *connections.Connection {
				c := base("Conn_CC_JWT_"+strings.NewReplacer(" ", "_", "#", "").Replace(k.name), clientID)
				c.Security.ClientAuth = connections.ClientAuthPrivateKeyJWT
				c.Security.ClientSecret = connections.Secret{}
				c.Security.PrivateKeyPEM = connections.NewSecret(k.pem)
				c.Security.KeyID = kid
				return c
			},
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials",
					"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}),
				scopesEtc, formLacks("client_secret"), authIs(""),
				func(t *testing.T, r tokenRequest) {
					checkAssertion(t, r.Form.Get("client_assertion"), k, clientID, ts.URL(), kid, e)
				},
			},
		})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.at(t)
			ctx := context.Background()
			c := e.create(tt.conn())
			before := ts.count()
			req, err := http.NewRequest(http.MethodGet, upstream.URL+"/orders", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer caller's own")
			tok, err := e.m.Apply(ctx, c, req)
			if e.record(err) != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tok == nil || !strings.HasPrefix(tok.AccessToken.Reveal(), canary+"-AT-") {
				t.Fatalf("Apply() token = %v, want one issued by the endpoint", tok)
			}
			if got := ts.count() - before; got != 1 {
				t.Fatalf("token requests = %d, want 1", got)
			}
			r := ts.log()[before]
			for _, check := range tt.checks {
				check(t, r)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("call upstream: %v", err)
			}
			res.Body.Close()
			if got, want := res.Header.Get("X-Saw-Authorization"), "Bearer "+tok.AccessToken.Reveal(); got != want {
				t.Errorf("upstream saw Authorization %q, want %q", got, want)
			}

			// A second token request signs a new assertion with its own jti.
			if _, err := e.m.Refresh(ctx, c); e.record(err) != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if got := ts.count() - before; got != 2 {
				t.Fatalf("token requests after Refresh = %d, want 2", got)
			}
			if c.Security.ClientAuth == connections.ClientAuthPrivateKeyJWT {
				first, second := ts.log()[before].Form.Get("client_assertion"), ts.log()[before+1].Form.Get("client_assertion")
				if a, b := jti(t, first), jti(t, second); a == b || a == "" {
					t.Errorf("jti of two token requests = %q and %q, want two different ones", a, b)
				}
			}
		})
	}
}

// checkAssertion verifies an RFC 7523 client assertion with the public key.
func checkAssertion(t *testing.T, assertion string, k testKey, clientID, tokenURL, kid string, e *tokenEnv) {
	t.Helper()
	tok, err := jwt.Parse(assertion, func(*jwt.Token) (any, error) { return k.public, nil },
		jwt.WithValidMethods([]string{k.alg}), jwt.WithIssuer(clientID), jwt.WithSubject(clientID),
		jwt.WithAudience(tokenURL), jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(e.clock.Now))
	if err != nil {
		t.Fatalf("client assertion does not verify: %v", err)
	}
	if got, _ := tok.Header["kid"].(string); got != kid {
		t.Errorf("assertion kid = %q, want %q", got, kid)
	}
	if id, _ := tok.Claims.(jwt.MapClaims)["jti"].(string); len(id) < 16 {
		t.Errorf("assertion jti = %q, want a random id", id)
	}
}

// jti returns the jti claim of a JWT without verifying it.
func jti(t *testing.T, assertion string) string {
	t.Helper()
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, &claims); err != nil {
		t.Fatalf("parse assertion: %v", err)
	}
	return claims.ID
}

func TestApplyTokenType(t *testing.T) {
	e := newTokenEnv(t, connectionstest.SQLite)
	ts := newTokenServer(t, e.clock.Now)
	ts.script(func(s *tokenServer) { s.tokenType = "bearer" })
	c := e.create(clientCredentials("Conn_Lowercase_Bearer", ts.URL(), "lower"))
	req := httptest.NewRequest(http.MethodGet, "https://api.example.com/v1/x", nil)
	tok, err := e.m.Apply(context.Background(), c, req)
	if e.record(err) != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := req.Header.Get("Authorization"), "Bearer "+tok.AccessToken.Reveal(); got != want {
		t.Errorf("Authorization = %q, want %q", got, want)
	}
}
