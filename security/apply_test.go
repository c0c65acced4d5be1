package security_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

func strPtr(s string) *string { return &s }

func TestApplyStaticPolicies(t *testing.T) {
	m := security.NewManager(security.ManagerConfig{}) // no tokens involved
	tests := []struct {
		name        string
		sec         connections.Security
		url         string
		wantAuth    string // Authorization header after Apply
		wantQuery   string // raw query after Apply
		wantParam   string // Applied.QueryParam
		wantSecrets []string
		check       func(t *testing.T, req *http.Request)
	}{
		{
			name:      "NONE adds nothing",
			sec:       &security.None{},
			url:       "https://api.example.com/v1/orders?a=1",
			wantQuery: "a=1",
		},
		{
			name:     "BASIC",
			sec:      &security.Basic{Username: "svc-user", Password: connections.NewSecret(canary + " p:ss/wörd")},
			url:      "https://api.example.com/v1/orders",
			wantAuth: "Basic " + base64.StdEncoding.EncodeToString([]byte("svc-user:"+canary+" p:ss/wörd")),
			// The password, and the credential as sent.
			wantSecrets: []string{canary + " p:ss/wörd", base64.StdEncoding.EncodeToString([]byte("svc-user:" + canary + " p:ss/wörd"))},
		},
		{
			name:        "API_KEY header, default name and Bearer prefix",
			sec:         &security.APIKey{Key: connections.NewSecret(canary + "-key")},
			url:         "https://api.example.com/v1/orders",
			wantAuth:    "Bearer " + canary + "-key",
			wantSecrets: []string{canary + "-key"},
		},
		{
			name:        "API_KEY custom header without prefix",
			sec:         &security.APIKey{Key: connections.NewSecret(canary + "-key"), Name: "X-Api-Key"},
			url:         "https://api.example.com/v1/orders",
			wantAuth:    "caller's own", // untouched
			wantSecrets: []string{canary + "-key"},
			check: func(t *testing.T, req *http.Request) {
				if got := req.Header.Values("X-Api-Key"); !slices.Equal(got, []string{canary + "-key"}) {
					t.Errorf("X-Api-Key = %q, want [%s-key] (no prefix, caller's value replaced)", got, canary)
				}
			},
		},
		{
			name:        "API_KEY custom header with explicit prefix",
			sec:         &security.APIKey{Key: connections.NewSecret(canary + "-key"), Name: "X-Api-Key", ValuePrefix: strPtr("Token ")},
			url:         "https://api.example.com/v1/orders",
			wantAuth:    "caller's own",
			wantSecrets: []string{canary + "-key"},
			check: func(t *testing.T, req *http.Request) {
				if got := req.Header.Get("X-Api-Key"); got != "Token "+canary+"-key" {
					t.Errorf("X-Api-Key = %q, want %q", got, "Token "+canary+"-key")
				}
			},
		},
		{
			name:        "API_KEY in query replaces the caller's parameter",
			sec:         &security.APIKey{Key: connections.NewSecret(canary + " k&y=1"), In: security.InQuery, Name: "api_key"},
			url:         "https://api.example.com/v1/orders?b=2&api_key=caller&a=%2F1+x&api%5Fkey=encoded&z",
			wantAuth:    "caller's own",
			wantQuery:   "b=2&a=%2F1+x&z&api_key=" + url.QueryEscape(canary+" k&y=1"),
			wantParam:   "api_key",
			wantSecrets: []string{canary + " k&y=1"},
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
			a, err := m.Apply(context.Background(), c, req)
			if err != nil || a == nil || a.Token != nil {
				t.Fatalf("Apply() = %+v, %v, want no token and no error", a, err)
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
			if a.QueryParam != tt.wantParam {
				t.Errorf("Applied.QueryParam = %q, want %q", a.QueryParam, tt.wantParam)
			}
			if !slices.Equal(a.Secrets, tt.wantSecrets) {
				t.Errorf("Applied.Secrets = %d values, want %d (the policy's secrets and the credential as sent)", len(a.Secrets), len(tt.wantSecrets))
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
	sec1, err := x509.MarshalECPrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	return []testKey{
		{"RSA PKCS#8", "RS256", pkcs8PEM(t, rsaKey), &rsaKey.PublicKey},
		{"RSA PKCS#1", "RS256", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})), &rsaKey.PublicKey},
		{"P-256 SEC 1", "ES256", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), &p256.PublicKey},
		{"P-384", "ES384", pkcs8PEM(t, p384), &p384.PublicKey},
		{"Ed25519", "EdDSA", pkcs8PEM(t, edKey), edPub},
	}
}

func pkcs8PEM(t testing.TB, k any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// newClientCertificate returns a self-signed client certificate and its
// key, PEM-encoded.
func newClientCertificate(t testing.TB) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "orders-mtls"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), pkcs8PEM(t, key)
}

// pemBody is a line from the middle of a PEM's base64 body: enough to
// recognise the key if it leaks.
func pemBody(p string) string {
	lines := strings.Split(strings.TrimSpace(p), "\n")
	return lines[len(lines)/2]
}

// assertionWant is what a client assertion must carry and verify with.
type assertionWant struct {
	alg      string
	key      any // the public key, or the HMAC secret
	clientID string
	aud      string
	kid      string
}

// TestApplyOAuthPolicies obtains a token with each OAuth policy and
// client authentication, checks the token request as the endpoint saw it,
// and the token on the target call (#9 items 7 and 8).
func TestApplyOAuthPolicies(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
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
	basicIs := func(id, secret string) reqCheck {
		return func(t *testing.T, r tokenRequest) {
			t.Helper()
			if r.BasicID != id || r.BasicSecret != secret {
				t.Errorf("token request Basic credentials = %q:%q, want %q:%q", r.BasicID, r.BasicSecret, id, secret)
			}
		}
	}
	assertionIs := func(want assertionWant) reqCheck {
		return func(t *testing.T, r tokenRequest) {
			t.Helper()
			checkAssertion(t, r.Form.Get("client_assertion"), want, e.clock.Now)
		}
	}

	// base returns a connection of policy p (client credentials, password)
	// with scopes, audience and extra parameters; adjust sets its client
	// authentication.
	base := func(name, clientID string, p connections.Policy, adjust func(c *connections.Connection, cl *security.Client)) func() *connections.Connection {
		return func() *connections.Connection {
			c := clientCredentials(name, ts.URL(), clientID)
			if p == security.PolicyPassword {
				c = password(name, ts.URL(), clientID)
			}
			cl := oauthClient(c)
			cl.Scopes = []string{"orders.read", "orders.write"}
			cl.Audience = "https://api.example.com"
			cl.ExtraParams = map[string]string{"prompt": "none", "tenant": "t 1"}
			if adjust != nil {
				adjust(c, cl)
			}
			return c
		}
	}
	scopesEtc := formHas(map[string]string{"scope": "orders.read orders.write", "audience": "https://api.example.com",
		"prompt": "none", "tenant": "t 1"})
	secretIs := func(s string) func(*connections.Connection, *security.Client) {
		return func(_ *connections.Connection, cl *security.Client) { cl.ClientSecret = connections.NewSecret(s) }
	}

	secret := canary + " s3cr:et/+%&="
	// A generated secret that servers which do not form-decode reject
	// with BASIC_HEADER.
	const generated = canary + "k+/=%41-x=="
	certPEM, keyPEM := newClientCertificate(t)
	e.secret(pemBody(keyPEM))
	type test struct {
		name   string
		conn   func() *connections.Connection
		checks []reqCheck
	}
	tests := []test{
		{
			name: "client credentials, BASIC_HEADER",
			conn: base("Conn_CC_Basic", "orders client:1", security.PolicyClientCredentials, secretIs(secret)),
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials"}), scopesEtc,
				formLacks("client_secret", "client_id", "client_assertion"),
				authIs("Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape("orders client:1")+":"+url.QueryEscape(secret)))),
			},
		},
		{
			name:   "client credentials, BASIC_HEADER form-encodes + / = %",
			conn:   base("Conn_CC_Basic_Generated", "orders-generated", security.PolicyClientCredentials, secretIs(generated)),
			checks: []reqCheck{basicIs("orders-generated", url.QueryEscape(generated))},
		},
		{
			name: "client credentials, BASIC_HEADER_RAW sends + / = % as they are",
			conn: base("Conn_CC_Basic_Raw", "orders-raw", security.PolicyClientCredentials, func(c *connections.Connection, cl *security.Client) {
				cl.ClientSecret, cl.ClientAuth = connections.NewSecret(generated), security.ClientAuthBasicRaw
			}),
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials"}), scopesEtc,
				formLacks("client_secret", "client_id", "client_assertion"),
				basicIs("orders-raw", generated),
				authIs("Basic " + base64.StdEncoding.EncodeToString([]byte("orders-raw:"+generated))),
			},
		},
		{
			name: "client credentials, BODY",
			conn: base("Conn_CC_Body", "orders-body", security.PolicyClientCredentials, func(c *connections.Connection, cl *security.Client) {
				cl.ClientSecret, cl.ClientAuth = connections.NewSecret(secret), security.ClientAuthBody
			}),
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials", "client_id": "orders-body", "client_secret": secret}),
				scopesEtc, formLacks("client_assertion"), authIs(""),
			},
		},
		{
			name: "client credentials, TLS_CLIENT_AUTH sends client_id without a secret",
			conn: base("Conn_CC_TLS", "orders-mtls", security.PolicyClientCredentials, func(c *connections.Connection, cl *security.Client) {
				cl.ClientSecret, cl.ClientAuth = connections.Secret{}, security.ClientAuthTLS
				c.TLS = &connections.TLS{ClientCertificatePEM: certPEM, ClientKeyPEM: connections.NewSecret(keyPEM)}
			}),
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials", "client_id": "orders-mtls"}),
				scopesEtc, formLacks("client_secret", "client_assertion", "client_assertion_type"), authIs(""),
			},
		},
		{
			name: "client credentials, CLIENT_SECRET_JWT",
			conn: base("Conn_CC_Secret_JWT", "orders-hs256", security.PolicyClientCredentials, func(c *connections.Connection, cl *security.Client) {
				cl.ClientSecret, cl.ClientAuth, cl.KeyID = connections.NewSecret(secret), security.ClientAuthSecretJWT, "hs-1"
			}),
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials", "client_id": "orders-hs256",
					"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}),
				scopesEtc, formLacks("client_secret"), authIs(""),
				assertionIs(assertionWant{alg: "HS256", key: []byte(secret), clientID: "orders-hs256", aud: ts.URL(), kid: "hs-1"}),
			},
		},
		{
			name: "password",
			conn: base("Conn_Password", "orders-ropc", security.PolicyPassword, func(c *connections.Connection, _ *security.Client) {
				c.Security.(*security.Password).Username = "alice@example.com"
				c.Security.(*security.Password).Password = connections.NewSecret(canary + "-pw &=")
			}),
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "password", "username": "alice@example.com", "password": canary + "-pw &="}),
				scopesEtc, formLacks("client_secret"),
				authIs("Basic " + base64.StdEncoding.EncodeToString([]byte("orders-ropc:"+url.QueryEscape(canary+"-secret-orders-ropc")))),
			},
		},
	}
	for i, k := range newTestKeys(t) {
		e.secret(pemBody(k.pem))
		kid, aud := "", ts.URL()
		var audience string
		if i%2 == 0 {
			kid = "key-" + k.alg
		}
		if i == 1 {
			audience = "https://auth.example.com/"
			aud = audience
		}
		clientID := "orders-jwt-" + strings.ToLower(k.alg)
		tests = append(tests, test{
			name: "client credentials, PRIVATE_KEY_JWT " + k.name,
			conn: base("Conn_CC_JWT_"+strings.NewReplacer(" ", "_", "#", "").Replace(k.name), clientID, security.PolicyClientCredentials,
				func(c *connections.Connection, cl *security.Client) {
					cl.ClientAuth, cl.ClientSecret = security.ClientAuthPrivateKeyJWT, connections.Secret{}
					cl.PrivateKeyPEM, cl.KeyID, cl.AssertionAudience = connections.NewSecret(k.pem), kid, audience
				}),
			checks: []reqCheck{
				formHas(map[string]string{"grant_type": "client_credentials", "client_id": clientID,
					"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}),
				scopesEtc, formLacks("client_secret"), authIs(""),
				assertionIs(assertionWant{alg: k.alg, key: k.public, clientID: clientID, aud: aud, kid: kid}),
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
			a, err := e.m.Apply(ctx, c, req)
			if e.record(err) != nil {
				t.Fatalf("Apply: %v", err)
			}
			if a.Token == nil || !strings.HasPrefix(a.Token.AccessToken.Reveal(), canary+"-AT-") {
				t.Fatalf("Apply() token = %v, want one issued by the endpoint", a.Token)
			}
			if !slices.Contains(a.Secrets, a.Token.AccessToken.Reveal()) {
				t.Errorf("Applied.Secrets lacks the access token sent")
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
			if got, want := res.Header.Get("X-Saw-Authorization"), "Bearer "+a.Token.AccessToken.Reveal(); got != want {
				t.Errorf("upstream saw Authorization %q, want %q", got, want)
			}

			// A second token request signs a new assertion with its own jti.
			if _, err := e.m.Refresh(ctx, c); e.record(err) != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if got := ts.count() - before; got != 2 {
				t.Fatalf("token requests after Refresh = %d, want 2", got)
			}
			if first := ts.log()[before].Form.Get("client_assertion"); first != "" {
				second := ts.log()[before+1].Form.Get("client_assertion")
				if a, b := jti(t, first), jti(t, second); a == b || a == "" {
					t.Errorf("jti of two token requests = %q and %q, want two different ones", a, b)
				}
			}
		})
	}
}

// checkAssertion verifies an RFC 7523 client assertion: signed with want's
// key and algorithm, iss and sub the client id, aud a single JSON string
// (not an array) equal to want.aud, kid when set, an expiry and a random
// jti.
func checkAssertion(t *testing.T, assertion string, want assertionWant, now func() time.Time) {
	t.Helper()
	tok, err := jwt.Parse(assertion, func(*jwt.Token) (any, error) { return want.key, nil },
		jwt.WithValidMethods([]string{want.alg}), jwt.WithIssuer(want.clientID), jwt.WithSubject(want.clientID),
		jwt.WithAudience(want.aud), jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(now))
	if err != nil {
		t.Fatalf("client assertion does not verify: %v", err)
	}
	if got, _ := tok.Header["kid"].(string); got != want.kid {
		t.Errorf("assertion kid = %q, want %q", got, want.kid)
	}
	if id, _ := tok.Claims.(jwt.MapClaims)["jti"].(string); len(id) < 16 {
		t.Errorf("assertion jti = %q, want a random id", id)
	}
	parts := strings.Split(assertion, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var aud string
	if err := json.Unmarshal(claims["aud"], &aud); err != nil || aud != want.aud {
		t.Errorf("assertion aud = %s, want the single string %q", claims["aud"], want.aud)
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
	e := newTokenEnv(t, storetest.SQLite)
	ts := newTokenServer(t, e.clock.Now)
	ts.script(func(s *tokenServer) { s.tokenType = "bearer" })
	c := e.create(clientCredentials("Conn_Lowercase_Bearer", ts.URL(), "lower"))
	req := httptest.NewRequest(http.MethodGet, "https://api.example.com/v1/x", nil)
	a, err := e.m.Apply(context.Background(), c, req)
	if e.record(err) != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := req.Header.Get("Authorization"), "Bearer "+a.Token.AccessToken.Reveal(); got != want {
		t.Errorf("Authorization = %q, want %q", got, want)
	}
}
