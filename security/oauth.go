package security

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
)

// ClientAuth says how an OAuth client authenticates at the token endpoint.
type ClientAuth string

// The client authentication methods.
const (
	// ClientAuthBasic sends client_id and client_secret in an HTTP Basic
	// header, each form-encoded first (RFC 6749 §2.3.1).
	ClientAuthBasic ClientAuth = "BASIC_HEADER"
	// ClientAuthBasicRaw sends them in an HTTP Basic header as they are,
	// for servers that do not form-decode (secrets with + / = % break
	// there with BASIC_HEADER).
	ClientAuthBasicRaw ClientAuth = "BASIC_HEADER_RAW"
	// ClientAuthBody sends them as form parameters.
	ClientAuthBody ClientAuth = "BODY"
	// ClientAuthPrivateKeyJWT signs a client assertion with a private key
	// (RFC 7523 §2.2, OpenID Connect private_key_jwt).
	ClientAuthPrivateKeyJWT ClientAuth = "PRIVATE_KEY_JWT"
	// ClientAuthSecretJWT signs a client assertion with the client secret
	// (HS256, OpenID Connect client_secret_jwt).
	ClientAuthSecretJWT ClientAuth = "CLIENT_SECRET_JWT"
	// ClientAuthTLS authenticates the client by the connection's TLS client
	// certificate (RFC 8705 tls_client_auth).
	ClientAuthTLS ClientAuth = "TLS_CLIENT_AUTH"
)

var clientAuths = []ClientAuth{ClientAuthBasic, ClientAuthBasicRaw, ClientAuthBody, ClientAuthPrivateKeyJWT,
	ClientAuthSecretJWT, ClientAuthTLS}

// Client is an OAuth 2.0 client at a token endpoint: who it is, how it
// authenticates, and what it asks for. The OAuth policies embed it.
type Client struct {
	TokenURL     string             `json:"tokenUrl,omitempty" url:"token"`
	ClientID     string             `json:"clientId,omitempty"`
	ClientSecret connections.Secret `json:"clientSecret,omitzero" dest:"tokenUrl,issuer,authorizationUrl"`
	// ClientAuth is BASIC_HEADER (default), BASIC_HEADER_RAW, BODY,
	// PRIVATE_KEY_JWT, CLIENT_SECRET_JWT or TLS_CLIENT_AUTH.
	ClientAuth    ClientAuth         `json:"clientAuth,omitempty"`
	PrivateKeyPEM connections.Secret `json:"privateKeyPem,omitzero" dest:"tokenUrl,issuer"`
	KeyID         string             `json:"keyId,omitempty"`
	// AssertionAudience is the aud of client assertions; default the
	// token URL.
	AssertionAudience string            `json:"assertionAudience,omitempty"`
	Scopes            []string          `json:"scopes,omitempty"`
	Audience          string            `json:"audience,omitempty"`
	ExtraParams       map[string]string `json:"extraParams,omitempty"`
}

// validate checks the client's settings. tokenURLRequired is false for a
// policy that can discover its token endpoint.
func (cl *Client) validate(v *connections.Checker, tokenURLRequired bool) {
	v.URL("tokenUrl", cl.TokenURL, tokenURLRequired)
	v.Text("clientId", cl.ClientID, connections.MaxShortField, true)
	if cl.ClientAuth == "" {
		cl.ClientAuth = ClientAuthBasic
	}
	if !containsAuth(cl.ClientAuth) {
		v.Add("clientAuth", "must be one of BASIC_HEADER, BASIC_HEADER_RAW, BODY, PRIVATE_KEY_JWT, CLIENT_SECRET_JWT, TLS_CLIENT_AUTH")
		return
	}
	v.Secret("clientSecret", cl.ClientSecret, cl.usesSecret())
	v.Secret("privateKeyPem", cl.PrivateKeyPEM, cl.ClientAuth == ClientAuthPrivateKeyJWT)
	switch {
	case cl.ClientSecret.IsSet() && !cl.usesSecret():
		v.Add("clientSecret", "is not used with clientAuth %s", cl.ClientAuth)
	case cl.PrivateKeyPEM.IsSet() && cl.ClientAuth != ClientAuthPrivateKeyJWT:
		v.Add("privateKeyPem", "is used only with clientAuth PRIVATE_KEY_JWT")
	case cl.PrivateKeyPEM.IsSet():
		if _, err := ParsePrivateKey(cl.PrivateKeyPEM.Reveal()); err != nil {
			v.Add("privateKeyPem", "%v", err)
		}
	}
	jwtAuth := cl.ClientAuth == ClientAuthPrivateKeyJWT || cl.ClientAuth == ClientAuthSecretJWT
	if cl.KeyID != "" && !jwtAuth {
		v.Add("keyId", "is used only with clientAuth PRIVATE_KEY_JWT or CLIENT_SECRET_JWT")
	}
	v.Text("keyId", cl.KeyID, connections.MaxShortField, false)
	if cl.AssertionAudience != "" && !jwtAuth {
		v.Add("assertionAudience", "is used only with clientAuth PRIVATE_KEY_JWT or CLIENT_SECRET_JWT")
	}
	v.Text("assertionAudience", cl.AssertionAudience, connections.MaxURLLen, false)
	v.Scopes("scopes", cl.Scopes)
	v.Text("audience", cl.Audience, connections.MaxURLLen, false)
	v.Params("extraParams", cl.ExtraParams, connections.ReservedParams)
}

func containsAuth(a ClientAuth) bool {
	for _, x := range clientAuths {
		if x == a {
			return true
		}
	}
	return false
}

// sentForms are the forms, other than itself, in which the client secret
// goes to the token endpoint: the Basic credentials of BASIC_HEADER
// (form-encoded) and of BASIC_HEADER_RAW. An endpoint may echo them in an
// error, so they are redacted as the secret is.
func (cl *Client) sentForms() []string {
	if !cl.ClientSecret.IsSet() {
		return nil
	}
	id, secret := cl.ClientID, cl.ClientSecret.Reveal()
	return []string{base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret))),
		base64.StdEncoding.EncodeToString([]byte(id + ":" + secret))}
}

// usesSecret reports whether the client's authentication needs the client
// secret.
func (cl *Client) usesSecret() bool {
	switch cl.ClientAuth {
	case ClientAuthPrivateKeyJWT, ClientAuthTLS:
		return false
	}
	return true
}

// UnusedSecrets implements connections.UnusedSecrets: a switch between
// client secret and private key leaves the other behind.
func (cl *Client) UnusedSecrets() []string {
	switch cl.ClientAuth {
	case ClientAuthPrivateKeyJWT:
		return []string{"clientSecret"}
	case ClientAuthTLS:
		return []string{"clientSecret", "privateKeyPem"}
	}
	return []string{"privateKeyPem"}
}

// checkTLS reports a TLS_CLIENT_AUTH client without a client certificate.
func (cl *Client) checkTLS(c *connections.Connection, v *connections.Checker) {
	if cl.ClientAuth == ClientAuthTLS && (c.TLS == nil || c.TLS.ClientCertificatePEM == "") {
		v.Add("security.clientAuth", "TLS_CLIENT_AUTH needs tls.clientCertificatePem and tls.clientKeyPem on the connection")
	}
}

// MintsTokens implements connections.Minter: tokens obtained with the
// client's secrets go to the connection's base URL.
func (cl *Client) MintsTokens() {}

// tokenEnv is what a token request needs besides the policy.
type tokenEnv struct {
	// client is the connection's egress-guarded client, with its TLS
	// settings and a timeout.
	client     *http.Client
	now        time.Time
	defaultTTL time.Duration
	// secrets are the connection's secret values, redacted from what the
	// provider says.
	secrets []string
	// discover returns an issuer's metadata (cached).
	discover func(ctx context.Context, issuer string) (*Metadata, error)
	// manager gives the tokens of other connections (token exchange).
	manager *Manager
}

// grant is one token request: its grant type and parameters.
type grant struct {
	typ    string
	params url.Values
	scopes bool // send the client's scopes
}

// request performs g at tokenURL, authenticating as cl, and returns the
// token with DESIGN.md §5's lifetime rules applied. Errors are
// *TokenError.
func (cl *Client) request(ctx context.Context, e *tokenEnv, tokenURL string, g grant) (*Token, error) {
	params := url.Values{"grant_type": {g.typ}}
	if cl.Audience != "" {
		params.Set("audience", cl.Audience)
	}
	for k, v := range cl.ExtraParams {
		params.Set(k, v)
	}
	for k, v := range g.params {
		params[k] = v
	}
	// clientcredentials.Config lets EndpointParams replace grant_type, so
	// it serves every grant; its AuthStyle covers two client
	// authentications and the rest are set here.
	cfg := clientcredentials.Config{TokenURL: tokenURL, EndpointParams: params, AuthStyle: oauth2.AuthStyleInParams}
	if g.scopes {
		cfg.Scopes = cl.Scopes
	}
	transport := e.client.Transport
	switch cl.ClientAuth {
	case ClientAuthBasic, "":
		cfg.ClientID, cfg.ClientSecret, cfg.AuthStyle = cl.ClientID, cl.ClientSecret.Reveal(), oauth2.AuthStyleInHeader
	case ClientAuthBasicRaw:
		transport = rawBasic{next: transport, id: cl.ClientID, secret: cl.ClientSecret.Reveal()}
	case ClientAuthBody:
		cfg.ClientID, cfg.ClientSecret = cl.ClientID, cl.ClientSecret.Reveal()
	case ClientAuthTLS:
		cfg.ClientID = cl.ClientID
	case ClientAuthPrivateKeyJWT, ClientAuthSecretJWT:
		assertion, err := cl.assertion(tokenURL, e.now)
		if err != nil {
			return nil, &TokenError{Reason: "cannot sign the client assertion: " + err.Error(), Permanent: true}
		}
		cfg.ClientID = cl.ClientID
		params.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		params.Set("client_assertion", assertion)
	}
	// The oauth2 package reads its HTTP client from the context; ours
	// passes through the egress guard and checks the answer's shape.
	client := &http.Client{Transport: responseCheck{next: transport}, Timeout: e.client.Timeout,
		CheckRedirect: e.client.CheckRedirect}
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, client))
	if err != nil {
		return nil, classify(err, e)
	}
	// A token that cannot go in a header would fail every call until it
	// expires: it is not kept.
	if !httpguts.ValidHeaderFieldValue(tok.AccessToken) {
		return nil, &TokenError{Reason: "the token endpoint's access_token cannot be sent in a header (it holds CR, LF or other control characters)", Permanent: true}
	}
	if tok.TokenType != "" && !httpguts.ValidHeaderFieldName(tok.TokenType) {
		return nil, &TokenError{Reason: "the token endpoint's token_type is not a single word (RFC 6749 §7.1)", Permanent: true}
	}
	// clientcredentials.Config does not copy expires_in into
	// Token.ExpiresIn, so it is read from the raw response (JSON, or a
	// form-encoded body).
	secs, _ := expiresSeconds(tok.Extra("expires_in"))
	ttl := lifetime(secs, tok.AccessToken, e.now, e.defaultTTL)
	t := &Token{AccessToken: connections.NewSecret(tok.AccessToken), TokenType: tok.TokenType,
		RefreshToken: connections.NewSecret(tok.RefreshToken), ObtainedAt: e.now.UTC(),
		ExpiresAt: e.now.Add(ttl).UTC(), Scopes: cl.Scopes}
	if granted, ok := tok.Extra("scope").(string); ok && granted != "" {
		t.Scopes = strings.Fields(granted)
	}
	if id, ok := tok.Extra("id_token").(string); ok {
		t.idToken = id
	}
	return t, nil
}

// rawBasic sets HTTP Basic authentication with the id and secret as they
// are (BASIC_HEADER_RAW).
type rawBasic struct {
	next       http.RoundTripper
	id, secret string
}

func (b rawBasic) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(b.id+":"+b.secret)))
	return b.next.RoundTrip(req)
}

// assertionSkew is how far in the past connmgr dates the assertions it
// signs (iat, and nbf of client assertions), so that a server whose clock
// is behind connmgr's does not see them issued in the future: many allow
// little or no leeway there (zitadel's op one second, go-jose none).
const assertionSkew = 30 * time.Second

// assertion signs an RFC 7523 client assertion with a fresh jti, so no two
// token requests share one. aud is a single string: the token URL or the
// configured audience.
func (cl *Client) assertion(tokenURL string, now time.Time) (string, error) {
	aud := cl.AssertionAudience
	if aud == "" {
		aud = tokenURL
	}
	issued := now.Add(-assertionSkew)
	claims := jwt.MapClaims{"iss": cl.ClientID, "sub": cl.ClientID, "aud": aud, "jti": randomString(24),
		"iat": issued.Unix(), "nbf": issued.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	var method jwt.SigningMethod
	var key any
	if cl.ClientAuth == ClientAuthSecretJWT {
		method, key = jwt.SigningMethodHS256, []byte(cl.ClientSecret.Reveal())
	} else {
		k, err := ParsePrivateKey(cl.PrivateKeyPEM.Reveal())
		if err != nil {
			return "", errors.New("the private key cannot be parsed")
		}
		if method, err = signingMethod(k, ""); err != nil {
			return "", err
		}
		key = k
	}
	tok := jwt.NewWithClaims(method, claims)
	if cl.KeyID != "" {
		tok.Header["kid"] = cl.KeyID
	}
	return tok.SignedString(key)
}

// signingMethod picks the JWT algorithm for key: alg when given (RS256,
// PS256, ES256 ...), else the key's natural one.
func signingMethod(key any, alg string) (jwt.SigningMethod, error) {
	if alg != "" {
		m := jwt.GetSigningMethod(alg)
		if m == nil {
			return nil, fmt.Errorf("unknown signing algorithm %q", alg)
		}
		return m, nil
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return jwt.SigningMethodRS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P384():
			return jwt.SigningMethodES384, nil
		case elliptic.P521():
			return jwt.SigningMethodES512, nil
		}
		return jwt.SigningMethodES256, nil
	case ed25519.PrivateKey:
		return jwt.SigningMethodEdDSA, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", key)
}

// ParsePrivateKey parses a PEM-encoded RSA, ECDSA or Ed25519 private key
// (PKCS#8, PKCS#1 or SEC 1).
func ParsePrivateKey(pemText string) (any, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, fmt.Errorf("is not a PEM-encoded private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("is not an RSA, ECDSA or Ed25519 private key")
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// classify turns an error from a token request into a *TokenError that
// keeps the provider's error code and its sanitised description.
func classify(err error, e *tokenEnv) *TokenError {
	var te *TokenError
	if errors.As(err, &te) {
		return te
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		out := &TokenError{}
		if re.Response != nil {
			out.Status = re.Response.StatusCode
			out.RetryAfter = outbound.RetryAfter(re.Response.Header.Get("Retry-After"), e.now)
		}
		switch {
		case safeCode(re.ErrorCode, e.secrets):
			out.OAuthCode = re.ErrorCode
			out.Reason = re.ErrorCode
			if d := sanitize(re.ErrorCode, re.ErrorDescription, e.secrets); d != "" {
				out.Reason += ": " + d
			}
		case out.Status != 0:
			out.Reason = httpReason(out.Status)
		default:
			out.Reason = "the token endpoint answered with an error"
		}
		switch {
		case out.Status == http.StatusTooManyRequests || out.Status >= 500 || out.Status == http.StatusRequestTimeout:
			// transient, whatever the body says
		case re.ErrorCode == "temporarily_unavailable" || re.ErrorCode == "server_error" || re.ErrorCode == "slow_down":
		default:
			out.Permanent = true
		}
		return out
	}
	return networkFailure(err)
}

// responseCheck decorates the token endpoint's transport: it rewrites an
// expires_in that the oauth2 package would choke on (a string, a fraction,
// a number out of range, another type) into an integer, or drops it, so
// that the lifetime rules apply instead of the request failing; and it
// turns a 2xx answer without an access token into a *TokenError, or into
// the OAuth error it holds (GitHub answers 200 with error=...).
type responseCheck struct{ next http.RoundTripper }

// maxTokenResponse bounds a token endpoint's answer.
const maxTokenResponse = 1 << 20

func (f responseCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := f.next.RoundTrip(req)
	if err != nil || res.StatusCode/100 != 2 {
		return res, err
	}
	body, err := readTokenAnswer(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	switch {
	// text/plain is a form to the oauth2 package; a JSON object sent as
	// text/plain is read as JSON (below), as the custom flows read it.
	case mt == "application/x-www-form-urlencoded" || mt == "text/plain" && !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")):
		if q, err := url.ParseQuery(string(body)); err != nil || q.Get("access_token") == "" {
			if err == nil && q.Get("error") != "" {
				return nil, &oauth2.RetrieveError{Response: res, ErrorCode: q.Get("error"), ErrorDescription: q.Get("error_description")}
			}
			return nil, errNoAccessToken
		}
	default:
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			return nil, &TokenError{Reason: "the token endpoint's answer is not a token response (" + strconv.Quote(mt) + ")", Permanent: true}
		}
		if raw, ok := m["access_token"]; !ok || string(raw) == `""` || string(raw) == "null" {
			var oe struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(body, &oe) == nil && oe.Error != "" {
				return nil, &oauth2.RetrieveError{Response: res, ErrorCode: oe.Error, ErrorDescription: oe.Description}
			}
			return nil, errNoAccessToken
		}
		// The oauth2 package fails on a field of another type as if the
		// network had: the access token must be a string, the other
		// string fields are dropped when they are not.
		var access string
		if json.Unmarshal(m["access_token"], &access) != nil {
			return nil, &TokenError{Reason: "the token endpoint's access_token is not a string", Permanent: true}
		}
		changed := false
		for _, k := range []string{"token_type", "refresh_token", "error", "error_description", "error_uri"} {
			var s *string
			if raw, ok := m[k]; ok && json.Unmarshal(raw, &s) != nil {
				delete(m, k)
				changed = true
			}
		}
		if raw, ok := m["expires_in"]; ok {
			if secs, ok := parseExpiresIn(raw); ok {
				m["expires_in"] = json.RawMessage(strconv.FormatInt(secs, 10))
			} else {
				delete(m, "expires_in")
			}
			changed = true
		}
		if changed {
			if b, err := json.Marshal(m); err == nil {
				body = b
			}
		}
		if mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			res.Header.Set("Content-Type", "application/json")
		}
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	res.ContentLength = int64(len(body))
	res.Header.Del("Content-Length")
	return res, nil
}

var errNoAccessToken = &TokenError{Reason: "the token endpoint answered without an access_token", Permanent: true}

// readTokenAnswer reads a token endpoint's answer, at most
// maxTokenResponse bytes: a longer one is an error that says so.
func readTokenAnswer(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxTokenResponse+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxTokenResponse {
		return nil, &TokenError{Reason: "the token endpoint's answer is larger than 1 MiB", Permanent: true}
	}
	return body, nil
}

// parseExpiresIn reads a JSON number or numeric string as whole seconds,
// within int32 (what the oauth2 package accepts).
func parseExpiresIn(raw json.RawMessage) (int64, bool) {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return 0, false
	}
	return expiresSeconds(v)
}

// expiresSeconds reads an expires_in value as decoded from JSON (a number
// or a numeric string) or by oauth2.Token.Extra from a form-encoded body
// (an int64, a float64 or a string) as whole seconds, within int32.
func expiresSeconds(v any) (int64, bool) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case int64:
		f = float64(x)
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(x), 64); err != nil {
			return 0, false
		}
	default:
		return 0, false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return int64(max(min(f, math.MaxInt32), math.MinInt32)), true
}

// client returns the OAuth client settings, for code that serves every
// OAuth policy.
func (cl *Client) client() *Client { return cl }
