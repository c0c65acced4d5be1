package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connmgr/connmgr/connections"
)

// PolicyJWTBearer obtains tokens with a signed assertion (RFC 7523 §2.1,
// Oracle Integration's "JWT User Assertion").
const PolicyJWTBearer connections.Policy = "OAUTH2_JWT_BEARER"

// grantJWTBearer is RFC 7523's grant type.
const grantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// JWTBearer exchanges an assertion that connmgr signs with the
// connection's private key for a token: iss, sub, aud (one string), exp,
// iat, a fresh jti per request, and the extra claims. With a clientId the
// client authenticates as clientAuth says (the private key signs a
// PRIVATE_KEY_JWT client assertion too); without, it does not
// authenticate.
type JWTBearer struct {
	TokenURL  string       `json:"tokenUrl,omitempty" url:"token"`
	Assertion JWTAssertion `json:"assertion"`
	// PrivateKeyPEM signs the assertion: RSA for RS256 and PS256, P-256
	// for ES256.
	PrivateKeyPEM connections.Secret `json:"privateKeyPem,omitzero" dest:"tokenUrl"`
	KeyID         string             `json:"keyId,omitempty"`
	Scopes        []string           `json:"scopes,omitempty"`
	ClientID      string             `json:"clientId,omitempty"`
	ClientSecret  connections.Secret `json:"clientSecret,omitzero" dest:"tokenUrl"`
	// ClientAuth is how a client with a clientId authenticates (default
	// BASIC_HEADER).
	ClientAuth ClientAuth `json:"clientAuth,omitempty"`
}

// JWTAssertion is what the assertion of OAUTH2_JWT_BEARER says.
type JWTAssertion struct {
	Issuer string `json:"issuer,omitempty"`
	// Subject is the principal the token is for; default the issuer.
	Subject string `json:"subject,omitempty"`
	// Audience is the aud claim; default the token URL.
	Audience string `json:"audience,omitempty"`
	// LifetimeSeconds is how long the assertion is valid (default 300).
	LifetimeSeconds int            `json:"lifetimeSeconds,omitempty"`
	Claims          map[string]any `json:"claims,omitempty"`
	// SigningAlg is RS256, PS256 or ES256; default RS256 for an RSA key,
	// ES256 for a P-256 key.
	SigningAlg string `json:"signingAlg,omitempty"`
}

// registeredClaims are the claims connmgr sets in an assertion itself.
var registeredClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti"}

// Policy implements connections.Security.
func (*JWTBearer) Policy() connections.Policy { return PolicyJWTBearer }

// Validate implements connections.Security.
func (p *JWTBearer) Validate(v *connections.Checker) {
	v.URL("tokenUrl", p.TokenURL, true)
	a := &p.Assertion
	v.Text("assertion.issuer", a.Issuer, connections.MaxShortField, true)
	if a.Subject == "" {
		a.Subject = a.Issuer
	}
	v.Text("assertion.subject", a.Subject, connections.MaxShortField, false)
	v.Text("assertion.audience", a.Audience, connections.MaxURLLen, false)
	if a.LifetimeSeconds == 0 {
		a.LifetimeSeconds = 300
	}
	if a.LifetimeSeconds < 10 || a.LifetimeSeconds > 3600 {
		v.Add("assertion.lifetimeSeconds", "must be between 10 and 3600")
	}
	if len(a.Claims) > 32 {
		v.Add("assertion.claims", "at most 32 claims")
	}
	for name := range a.Claims {
		switch {
		case slices.Contains(registeredClaims, name):
			v.Add("assertion.claims."+name, "is set by connmgr and may not be overridden")
		case name == "" || len(name) > 128:
			v.Add("assertion.claims", "claim names must be 1 to 128 characters")
		}
	}
	if b, _ := json.Marshal(a.Claims); len(b) > 8<<10 {
		v.Add("assertion.claims", "must be at most 8 KiB as JSON")
	}
	v.Secret("privateKeyPem", p.PrivateKeyPEM, true)
	if p.PrivateKeyPEM.IsSet() {
		if k, err := ParsePrivateKey(p.PrivateKeyPEM.Reveal()); err != nil {
			v.Add("privateKeyPem", "%v", err)
		} else if rsaKey, err := signingKey(k); err != nil {
			v.Add("privateKeyPem", "%v", err) // no algorithm fits it
		} else if alg, err := assertionAlg(rsaKey, a.SigningAlg); err != nil {
			v.Add("assertion.signingAlg", "%v", err)
		} else {
			a.SigningAlg = alg
		}
	}
	v.Text("keyId", p.KeyID, connections.MaxShortField, false)
	v.Scopes("scopes", p.Scopes)
	if p.ClientID == "" {
		if p.ClientSecret.IsSet() {
			v.Add("clientSecret", "is used only with a clientId")
		}
		if p.ClientAuth != "" {
			v.Add("clientAuth", "is used only with a clientId")
		}
		return
	}
	// The client's own checks, without what the assertion uses too: the
	// token URL, the scopes, and the key and its id outside the client
	// assertions.
	cl := &Client{ClientID: p.ClientID, ClientSecret: p.ClientSecret, ClientAuth: p.ClientAuth}
	switch p.ClientAuth {
	case ClientAuthPrivateKeyJWT:
		cl.PrivateKeyPEM, cl.KeyID = p.PrivateKeyPEM, p.KeyID
	case ClientAuthSecretJWT:
		cl.KeyID = p.KeyID
	}
	cl.validate(v, false)
	p.ClientAuth = cl.ClientAuth
}

// signingKey checks that key is one an assertion can be signed with: an
// RSA key, or an ECDSA key on P-256. rsaKey says which.
func signingKey(key any) (rsaKey bool, err error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return true, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return false, fmt.Errorf("must be an RSA or P-256 key (for RS256, PS256 or ES256); this ECDSA key is on %s", k.Curve.Params().Name)
		}
		return false, nil
	}
	return false, fmt.Errorf("must be an RSA or P-256 key (for RS256, PS256 or ES256), not a %T", key)
}

// assertionAlg returns the signing algorithm for a key that signingKey
// accepted: alg, which must fit the key, or the key's natural one.
func assertionAlg(rsaKey bool, alg string) (string, error) {
	switch {
	case alg == "" && rsaKey:
		return "RS256", nil
	case alg == "":
		return "ES256", nil
	case (alg == "RS256" || alg == "PS256") && rsaKey, alg == "ES256" && !rsaKey:
		return alg, nil
	case alg == "RS256" || alg == "PS256" || alg == "ES256":
		return "", fmt.Errorf("%s does not fit the key of privateKeyPem", alg)
	}
	return "", fmt.Errorf("must be RS256, PS256 or ES256")
}

// client returns the OAuth client the policy authenticates as at the
// token endpoint: none without a clientId (BODY with neither id nor secret
// sends nothing).
func (p *JWTBearer) client() *Client {
	if p.ClientID == "" {
		return &Client{TokenURL: p.TokenURL, ClientAuth: ClientAuthBody, Scopes: p.Scopes}
	}
	cl := &Client{TokenURL: p.TokenURL, ClientID: p.ClientID, ClientSecret: p.ClientSecret, ClientAuth: p.ClientAuth,
		KeyID: p.KeyID, Scopes: p.Scopes}
	if cl.ClientAuth == ClientAuthPrivateKeyJWT {
		cl.PrivateKeyPEM = p.PrivateKeyPEM
	}
	return cl
}

// UnusedSecrets implements connections.UnusedSecrets: the client secret
// of a client that no longer uses it is not carried over.
func (p *JWTBearer) UnusedSecrets() []string {
	if p.ClientID == "" || !p.client().usesSecret() {
		return []string{"clientSecret"}
	}
	return nil
}

// CheckConnection checks the settings that depend on the connection.
func (p *JWTBearer) CheckConnection(c *connections.Connection, v *connections.Checker) {
	p.client().checkTLS(c, v)
}

// MintsTokens implements connections.Minter.
func (*JWTBearer) MintsTokens() {}

func (p *JWTBearer) obtain(ctx context.Context, e *tokenEnv, _ *connections.Connection, _ *Token) (*Token, error) {
	assertion, err := p.sign(e.now)
	if err != nil {
		return nil, &TokenError{Reason: "cannot sign the assertion: " + err.Error(), Permanent: true}
	}
	return p.client().request(ctx, e, p.TokenURL, grant{typ: grantJWTBearer, scopes: true,
		params: url.Values{"assertion": {assertion}}})
}

// sign makes the assertion, valid for its lifetime from shortly before now.
func (p *JWTBearer) sign(now time.Time) (string, error) {
	a := p.Assertion
	key, err := ParsePrivateKey(p.PrivateKeyPEM.Reveal())
	if err != nil {
		return "", fmt.Errorf("the private key cannot be parsed")
	}
	rsaKey, err := signingKey(key)
	if err != nil {
		return "", fmt.Errorf("privateKeyPem %w", err)
	}
	alg, err := assertionAlg(rsaKey, a.SigningAlg)
	if err != nil {
		return "", err
	}
	claims := jwt.MapClaims{}
	for k, x := range a.Claims {
		claims[k] = x
	}
	lifetime := time.Duration(cmp0(a.LifetimeSeconds, 300)) * time.Second
	claims["iss"], claims["sub"], claims["aud"] = a.Issuer, cmpOr(a.Subject, a.Issuer), cmpOr(a.Audience, p.TokenURL)
	// Issued a little in the past (see assertionSkew), and valid for
	// lifetime from then: some servers bound exp - iat.
	issued := now.Add(-min(assertionSkew, lifetime/2))
	claims["iat"], claims["exp"], claims["jti"] = issued.Unix(), issued.Add(lifetime).Unix(), randomString(24)
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	if p.KeyID != "" {
		tok.Header["kid"] = p.KeyID
	}
	return tok.SignedString(key)
}

func cmp0(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}
