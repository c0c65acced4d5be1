package security_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// jwtKeys are an RSA and a P-256 key for assertions, and a P-384 and an
// Ed25519 key no assertion signs with, with their PEM.
type jwtKeys struct {
	rsaPEM, ecPEM, p384PEM, edPEM string
	rsaPub, ecPub                 crypto.PublicKey
}

func newJWTKeys(t *testing.T) jwtKeys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return jwtKeys{rsaPEM: pkcs8PEM(t, rk), ecPEM: pkcs8PEM(t, ek), p384PEM: pkcs8PEM(t, p384), edPEM: pkcs8PEM(t, ed),
		rsaPub: &rk.PublicKey, ecPub: &ek.PublicKey}
}

// jwtBearer returns a JWT bearer connection.
func jwtBearer(name, tokenURL, issuer, audience, keyPEM, alg string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: &security.JWTBearer{TokenURL: tokenURL, KeyID: "key-1", PrivateKeyPEM: connections.NewSecret(keyPEM),
			Scopes: []string{"openid", "orders.read"},
			Assertion: security.JWTAssertion{Issuer: issuer, Audience: audience, SigningAlg: alg,
				Claims: map[string]any{"tenant": "t-1", "roles": []any{"reader"}}}}}
}

func TestJWTBearerValidate(t *testing.T) {
	keys := newJWTKeys(t)
	tests := []struct {
		name   string
		change func(p *security.JWTBearer)
		field  string
		absent string // a field that must not be blamed
	}{
		{name: "valid"},
		{name: "valid with a client", change: func(p *security.JWTBearer) {
			p.ClientID, p.ClientSecret, p.ClientAuth = "c", connections.NewSecret(canary+"-c"), security.ClientAuthSecretJWT
		}},
		{name: "ES256 with a P-256 key", change: func(p *security.JWTBearer) {
			p.PrivateKeyPEM, p.Assertion.SigningAlg = connections.NewSecret(keys.ecPEM), "ES256"
		}},
		{name: "token URL", change: func(p *security.JWTBearer) { p.TokenURL = "ftp://x" }, field: "security.tokenUrl"},
		{name: "issuer required", change: func(p *security.JWTBearer) { p.Assertion.Issuer = "" }, field: "security.assertion.issuer"},
		{name: "key required", change: func(p *security.JWTBearer) { p.PrivateKeyPEM = connections.Secret{} },
			field: "security.privateKeyPem"},
		{name: "key not PEM", change: func(p *security.JWTBearer) { p.PrivateKeyPEM = connections.NewSecret(canary) },
			field: "security.privateKeyPem"},
		{name: "ES256 with an RSA key", change: func(p *security.JWTBearer) { p.Assertion.SigningAlg = "ES256" },
			field: "security.assertion.signingAlg"},
		{name: "PS256 with an EC key", change: func(p *security.JWTBearer) {
			p.PrivateKeyPEM, p.Assertion.SigningAlg = connections.NewSecret(keys.ecPEM), "PS256"
		}, field: "security.assertion.signingAlg"},
		// A key no algorithm signs with is the key's fault, whether an
		// algorithm is given or not.
		{name: "P-384 key", change: func(p *security.JWTBearer) {
			p.PrivateKeyPEM, p.Assertion.SigningAlg = connections.NewSecret(keys.p384PEM), ""
		}, field: "security.privateKeyPem", absent: "security.assertion.signingAlg"},
		{name: "P-384 key with ES256", change: func(p *security.JWTBearer) {
			p.PrivateKeyPEM, p.Assertion.SigningAlg = connections.NewSecret(keys.p384PEM), "ES256"
		}, field: "security.privateKeyPem", absent: "security.assertion.signingAlg"},
		{name: "Ed25519 key", change: func(p *security.JWTBearer) {
			p.PrivateKeyPEM, p.Assertion.SigningAlg = connections.NewSecret(keys.edPEM), ""
		}, field: "security.privateKeyPem", absent: "security.assertion.signingAlg"},
		{name: "HS256", change: func(p *security.JWTBearer) { p.Assertion.SigningAlg = "HS256" }, field: "security.assertion.signingAlg"},
		{name: "lifetime", change: func(p *security.JWTBearer) { p.Assertion.LifetimeSeconds = 7200 },
			field: "security.assertion.lifetimeSeconds"},
		{name: "claim connmgr sets", change: func(p *security.JWTBearer) { p.Assertion.Claims["jti"] = "fixed" },
			field: "security.assertion.claims.jti"},
		{name: "client secret without client", change: func(p *security.JWTBearer) { p.ClientSecret = connections.NewSecret(canary) },
			field: "security.clientSecret"},
		{name: "client auth without client", change: func(p *security.JWTBearer) { p.ClientAuth = security.ClientAuthBody },
			field: "security.clientAuth"},
		{name: "client without its secret", change: func(p *security.JWTBearer) { p.ClientID = "c" }, field: "security.clientSecret"},
		{name: "unknown client auth", change: func(p *security.JWTBearer) { p.ClientID, p.ClientAuth = "c", "MAGIC" },
			field: "security.clientAuth"},
		{name: "scope", change: func(p *security.JWTBearer) { p.Scopes = []string{"a b"} }, field: "security.scopes[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := jwtBearer("Conn_JWT", "https://auth.example.com/token", "svc", "", keys.rsaPEM, "")
			if tt.change != nil {
				tt.change(c.Security.(*security.JWTBearer))
			}
			got := validationErrors(c)
			if _, ok := got[tt.field]; tt.field != "" && !ok || tt.field == "" && len(got) > 0 {
				t.Errorf("Validate() = %v, want an error on %q", got, tt.field)
			}
			if _, ok := got[tt.absent]; ok {
				t.Errorf("Validate() = %v, want no error on %q", got, tt.absent)
			}
		})
	}
	c := jwtBearer("Conn_JWT", "https://auth.example.com/token", "svc", "", keys.rsaPEM, "")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if a := c.Security.(*security.JWTBearer).Assertion; a.Subject != "svc" || a.LifetimeSeconds != 300 || a.SigningAlg != "RS256" {
		t.Errorf("defaults: subject %q, lifetime %d, alg %q; want the issuer, 300, RS256", a.Subject, a.LifetimeSeconds, a.SigningAlg)
	}
}

// TestJWTBearerZitadel exchanges assertions signed with each algorithm
// for tokens at zitadel's op, without client authentication and with
// BASIC_HEADER or CLIENT_SECRET_JWT, and checks the assertions op
// accepted.
func TestJWTBearerZitadel(t *testing.T) {
	keys := newJWTKeys(t)
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		e.secret(pemBody(keys.rsaPEM))
		e.secret(pemBody(keys.ecPEM))
		p := newOPServer(t, e.clock.Now)
		tests := []struct {
			name       string
			key        string
			public     crypto.PublicKey
			alg        string
			clientAuth security.ClientAuth
			seen       string // client authentication the provider saw
		}{
			{name: "RS256", key: keys.rsaPEM, public: keys.rsaPub, alg: "RS256", seen: "none"},
			{name: "PS256", key: keys.rsaPEM, public: keys.rsaPub, alg: "PS256", seen: "none"},
			{name: "ES256", key: keys.ecPEM, public: keys.ecPub, alg: "ES256", seen: "none"},
			{name: "RS256 with BASIC_HEADER", key: keys.rsaPEM, public: keys.rsaPub, alg: "RS256",
				clientAuth: security.ClientAuthBasic, seen: "basic"},
			{name: "ES256 with CLIENT_SECRET_JWT", key: keys.ecPEM, public: keys.ecPub, alg: "ES256",
				clientAuth: security.ClientAuthSecretJWT, seen: "client_secret_jwt"},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				issuer := fmt.Sprintf("svc-%d", i)
				p.addKey(issuer, "key-1", tt.public)
				c := jwtBearer(fmt.Sprintf("Conn_JWT_%d", i), p.TokenURL(), issuer, p.issuer, tt.key, tt.alg)
				if tt.clientAuth != "" {
					jb := c.Security.(*security.JWTBearer)
					jb.ClientID, jb.ClientSecret, jb.ClientAuth = opClient, connections.NewSecret(opSecret), tt.clientAuth
				}
				c = e.create(c)
				ctx := context.Background()
				tok, err := e.m.Token(ctx, c)
				if e.record(err) != nil {
					t.Fatalf("Token() = %v", err)
				}
				r := p.last(t)
				if r.Status != 200 || r.ClientAuth != tt.seen || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" ||
					r.Form.Get("scope") != "openid orders.read" {
					t.Errorf("provider saw %s, scope %q; want a %s jwt-bearer request with the scopes, answered 200", r, r.Form.Get("scope"), tt.seen)
				}
				if l := tok.Lifetime(); l < 5*time.Minute-3*time.Second || l > 5*time.Minute {
					t.Errorf("token lifetime %v, want op's 5m", l)
				}
				claims := checkBearerAssertion(t, r.Form.Get("assertion"), tt.alg, tt.public)
				if claims["iss"] != issuer || claims["sub"] != issuer || claims["aud"] != p.issuer || claims["tenant"] != "t-1" {
					t.Errorf("assertion claims %v, want iss and sub %s, aud %s (one string), tenant", claims, issuer, p.issuer)
				}
				if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 300 || int64(iat) != e.clock.Now().Add(-30*time.Second).Unix() {
					t.Errorf("assertion iat %v exp %v, want now-30s (clock skew) and 300s later", iat, exp)
				}
				if _, err := e.m.Refresh(ctx, c); e.record(err) != nil {
					t.Fatal(err)
				}
				if again := checkBearerAssertion(t, p.last(t).Form.Get("assertion"), tt.alg, tt.public); again["jti"] == claims["jti"] {
					t.Errorf("two assertions share jti %v", claims["jti"])
				}
			})
		}
		t.Run("unknown key", func(t *testing.T) {
			e := e.at(t)
			c := e.create(jwtBearer("Conn_JWT_Unknown", p.TokenURL(), "nobody", p.issuer, keys.rsaPEM, ""))
			_, err := e.m.Token(context.Background(), c)
			if te := tokenErr(t, e.record(err)); !te.Permanent || te.Status/100 != 4 {
				t.Errorf("TokenError = %+v, want op's permanent 4xx refusal", te)
			}
		})
	})
}

// checkBearerAssertion verifies an assertion with go-jose and returns its
// claims; aud must be one string.
func checkBearerAssertion(t *testing.T, assertion, alg string, public crypto.PublicKey) map[string]any {
	t.Helper()
	tok, err := josejwt.ParseSigned(assertion, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		t.Fatalf("assertion does not parse as %s: %v", alg, err)
	}
	if kid := tok.Headers[0].KeyID; kid != "key-1" {
		t.Errorf("assertion kid = %q, want key-1", kid)
	}
	claims := map[string]any{}
	if err := tok.Claims(public, &claims); err != nil {
		t.Fatalf("assertion does not verify: %v", err)
	}
	if _, ok := claims["aud"].(string); !ok {
		t.Errorf("assertion aud = %v, want one string", claims["aud"])
	}
	if jti, _ := claims["jti"].(string); len(jti) < 22 || strings.ContainsAny(jti, " ") {
		t.Errorf("assertion jti = %q, want at least 128 random bits", jti)
	}
	return claims
}
