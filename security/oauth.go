package security

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/connmgr/connmgr/connections"
)

// Token is an access token with what connmgr knows about it.
type Token struct {
	AccessToken  connections.Secret
	TokenType    string
	RefreshToken connections.Secret
	Scopes       []string
	ObtainedAt   time.Time
	ExpiresAt    time.Time
	// Version increases with every token stored for a connection; a write
	// succeeds only over the version it replaces.
	Version int64
}

// Lifetime is how long the token was valid for when obtained.
func (t *Token) Lifetime() time.Duration { return t.ExpiresAt.Sub(t.ObtainedAt) }

// refreshAhead is how long before expiry a token is refreshed:
// max(20% of the lifetime, min(60s, half the lifetime)).
func refreshAhead(lifetime time.Duration) time.Duration {
	return max(lifetime/5, min(time.Minute, lifetime/2))
}

// RefreshAt is when the scheduler refreshes the token.
func (t *Token) RefreshAt() time.Time { return t.ExpiresAt.Add(-refreshAhead(t.Lifetime())) }

// Valid reports whether the token can still be sent at now: it is not
// within a small safety margin (a tenth of its lifetime, at most 10s) of
// expiry.
func (t *Token) Valid(now time.Time) bool {
	if t == nil || !t.AccessToken.IsSet() {
		return false
	}
	margin := min(10*time.Second, t.Lifetime()/10)
	return now.Before(t.ExpiresAt.Add(-margin))
}

// authorization returns the Authorization header value for the token.
func (t *Token) authorization() string {
	typ := t.TokenType
	if typ == "" || strings.EqualFold(typ, "bearer") {
		typ = "Bearer"
	}
	return typ + " " + t.AccessToken.Reveal()
}

// Token request errors.
var (
	// ErrTokenUnavailable: no valid token can be had now. The wrapped
	// *TokenError says why.
	ErrTokenUnavailable = errors.New("token unavailable")
	// ErrNeedsConsent: an authorization-code connection has no usable
	// refresh token; someone must give consent again.
	ErrNeedsConsent = errors.New("consent needed")
)

// TokenError describes a failed token request without secrets or response
// bodies: the OAuth error code, the HTTP status, or the kind of network
// failure.
type TokenError struct {
	// Reason is a short, safe description ("invalid_client", "timeout",
	// "HTTP 503", "egress denied: ...").
	Reason string
	// Permanent errors are not retried automatically.
	Permanent bool
	// RetryAfter is the server's Retry-After, if it sent one.
	RetryAfter time.Duration
	// OAuthCode is RFC 6749's error code, if the server sent one.
	OAuthCode string
	cause     error
}

func (e *TokenError) Error() string { return "token request failed: " + e.Reason }

// Unwrap returns the cause for errors.Is (egress denial, deadline), never
// a RetrieveError, whose text holds the response body.
func (e *TokenError) Unwrap() error { return e.cause }

// classify turns an error from a token request into a *TokenError.
func classify(err error, now time.Time) *TokenError {
	var te *TokenError
	if errors.As(err, &te) {
		return te
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		e := &TokenError{OAuthCode: re.ErrorCode}
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
			e.RetryAfter = retryAfter(re.Response.Header.Get("Retry-After"), now)
		}
		switch {
		case re.ErrorCode != "" && safeCode(re.ErrorCode):
			e.Reason = re.ErrorCode
		case status != 0:
			e.Reason = "HTTP " + strconv.Itoa(status) + " from the token endpoint"
		default:
			e.Reason = "the token endpoint answered with an error"
		}
		switch {
		case status == http.StatusTooManyRequests || status >= 500 || status == http.StatusRequestTimeout:
			// transient, whatever the body says
		case re.ErrorCode == "temporarily_unavailable" || re.ErrorCode == "server_error" || re.ErrorCode == "slow_down":
		default:
			e.Permanent = true
		}
		return e
	}
	var de interface{ DenialReason() string }
	if errors.As(err, &de) {
		return &TokenError{Reason: "egress denied: " + de.DenialReason(), Permanent: true, cause: err}
	}
	var netErr net.Error
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		return &TokenError{Reason: "timeout calling the token endpoint", cause: context.DeadlineExceeded}
	case errors.As(err, &dnsErr):
		return &TokenError{Reason: "DNS lookup of the token endpoint failed"}
	case strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:"):
		return &TokenError{Reason: "TLS handshake with the token endpoint failed", Permanent: true}
	case strings.Contains(err.Error(), "connection refused"):
		return &TokenError{Reason: "the token endpoint refused the connection"}
	case strings.Contains(err.Error(), "missing access_token"):
		return &TokenError{Reason: "the token endpoint answered without an access_token", Permanent: true}
	case strings.Contains(err.Error(), "cannot parse"):
		return &TokenError{Reason: "the token endpoint's answer is not a token response", Permanent: true}
	}
	return &TokenError{Reason: "the token endpoint could not be reached"}
}

// safeCode accepts RFC 6749 error codes (%x20-21 / %x23-5B / %x5D-7E,
// short); anything else is not echoed.
func safeCode(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// retryAfter parses Retry-After (seconds or an HTTP date), capped at 1h.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), time.Hour)
}

// grant is one token request: its grant type and parameters.
type grant struct {
	typ    string
	params url.Values
	scopes bool // send the connection's scopes
}

// tokenClient performs token requests for a connection.
type tokenClient struct {
	client     *http.Client
	now        func() time.Time
	defaultTTL time.Duration
}

// maxTokenTTL caps token lifetimes, so a bogus expires_in cannot keep a
// token cached for years.
const maxTokenTTL = 24 * time.Hour

// request performs g for c and returns the token, with the lifetime rules
// of DESIGN.md §5 applied. Errors are *TokenError.
func (tc *tokenClient) request(ctx context.Context, c *connections.Connection, g grant) (*Token, error) {
	s := &c.Security
	params := url.Values{"grant_type": {g.typ}}
	if s.Audience != "" {
		params.Set("audience", s.Audience)
	}
	for k, v := range s.ExtraParams {
		params.Set(k, v)
	}
	for k, v := range g.params {
		params[k] = v
	}
	cfg := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret.Reveal(), TokenURL: s.TokenURL,
		EndpointParams: params, AuthStyle: oauth2.AuthStyleInHeader}
	if g.scopes {
		cfg.Scopes = s.Scopes
	}
	switch s.ClientAuth {
	case connections.ClientAuthBody:
		cfg.AuthStyle = oauth2.AuthStyleInParams
	case connections.ClientAuthPrivateKeyJWT:
		assertion, err := clientAssertion(c, tc.now())
		if err != nil {
			return nil, &TokenError{Reason: "cannot sign the client assertion: " + err.Error(), Permanent: true}
		}
		cfg.AuthStyle, cfg.ClientSecret = oauth2.AuthStyleInParams, ""
		params.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		params.Set("client_assertion", assertion)
	}
	// The oauth2 package reads its HTTP client from the context; ours
	// passes through the egress guard and normalises odd expires_in values.
	client := &http.Client{Transport: expiresFixer{tc.client.Transport}, Timeout: tc.client.Timeout,
		CheckRedirect: tc.client.CheckRedirect}
	obtained := tc.now()
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, client))
	if err != nil {
		return nil, classify(err, obtained)
	}
	// clientcredentials.Config does not copy expires_in into
	// Token.ExpiresIn, so it is read from the raw response (JSON, or a
	// form-encoded body).
	secs, _ := expiresSeconds(tok.Extra("expires_in"))
	ttl := time.Duration(secs) * time.Second
	if ttl <= 0 {
		ttl = tc.defaultTTL
	}
	ttl = min(ttl, maxTokenTTL)
	t := &Token{AccessToken: connections.NewSecret(tok.AccessToken), TokenType: tok.TokenType,
		RefreshToken: connections.NewSecret(tok.RefreshToken), ObtainedAt: obtained.UTC(),
		ExpiresAt: obtained.Add(ttl).UTC(), Scopes: s.Scopes}
	if granted, ok := tok.Extra("scope").(string); ok && granted != "" {
		t.Scopes = strings.Fields(granted)
	}
	return t, nil
}

// expiresFixer decorates the token endpoint's transport: it rewrites an
// expires_in that the oauth2 package would choke on (a string, a fraction,
// a number out of range, another type) into an integer, or drops it, so
// that the lifetime rules apply instead of the request failing.
type expiresFixer struct{ next http.RoundTripper }

func (f expiresFixer) RoundTrip(req *http.Request) (*http.Response, error) {
	next := f.next
	if next == nil {
		next = http.DefaultTransport
	}
	res, err := next.RoundTrip(req)
	if err != nil || res.StatusCode/100 != 2 {
		return res, err
	}
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return res, nil
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil {
		if raw, ok := m["expires_in"]; ok {
			if secs, ok := parseExpiresIn(raw); ok {
				m["expires_in"] = json.RawMessage(strconv.FormatInt(secs, 10))
			} else {
				delete(m, "expires_in")
			}
			if b, err := json.Marshal(m); err == nil {
				body = b
			}
		}
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	res.ContentLength = int64(len(body))
	res.Header.Del("Content-Length")
	return res, nil
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

// clientAssertion signs an RFC 7523 client assertion for c with a fresh
// jti, so no two token requests share one.
func clientAssertion(c *connections.Connection, now time.Time) (string, error) {
	key, err := connections.ParsePrivateKey(c.Security.PrivateKeyPEM.Reveal())
	if err != nil {
		return "", errors.New("the private key cannot be parsed")
	}
	var method jwt.SigningMethod
	switch k := key.(type) {
	case *rsa.PrivateKey:
		method = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P384():
			method = jwt.SigningMethodES384
		case elliptic.P521():
			method = jwt.SigningMethodES512
		default:
			method = jwt.SigningMethodES256
		}
	case ed25519.PrivateKey:
		method = jwt.SigningMethodEdDSA
	default:
		return "", fmt.Errorf("unsupported key type %T", key)
	}
	claims := jwt.RegisteredClaims{Issuer: c.Security.ClientID, Subject: c.Security.ClientID,
		Audience: jwt.ClaimStrings{c.Security.TokenURL}, ID: randomString(24),
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-30 * time.Second)),
		ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute))}
	tok := jwt.NewWithClaims(method, claims)
	if c.Security.KeyID != "" {
		tok.Header["kid"] = c.Security.KeyID
	}
	return tok.SignedString(key)
}
