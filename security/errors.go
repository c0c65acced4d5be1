package security

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Token request errors.
var (
	// ErrTokenUnavailable: no valid token can be had now. The wrapped
	// *TokenError says why.
	ErrTokenUnavailable = errors.New("token unavailable")
	// ErrNeedsConsent: a consent connection has no usable refresh token;
	// someone must give consent again.
	ErrNeedsConsent = errors.New("consent needed")
	// ErrNoTokens: the connection's policy does not use tokens.
	ErrNoTokens = errors.New("the policy has no tokens")
)

// TokenError describes a failed token request without secrets or response
// bodies: the OAuth error code with the server's sanitised description,
// the HTTP status, or the kind of network failure.
type TokenError struct {
	// Reason is a short, safe description ("invalid_client: client
	// supports client_secret_basic, but client_secret_post was requested",
	// "HTTP 503 from the token endpoint, no OAuth error given", "timeout").
	Reason string
	// Permanent errors are not retried automatically.
	Permanent bool
	// RetryAfter is the server's Retry-After, if it sent one.
	RetryAfter time.Duration
	// OAuthCode is RFC 6749's error code, if the server sent one.
	OAuthCode string
	// Status is the token endpoint's HTTP status, 0 if it gave none.
	Status int
	// consent says a person must consent again: the refresh token of a
	// consent policy is dead.
	consent bool
	cause   error
}

func (e *TokenError) Error() string { return "token request failed: " + e.Reason }

// Unwrap returns the cause for errors.Is (egress denial, deadline), never
// an oauth2.RetrieveError, whose text holds the response body.
func (e *TokenError) Unwrap() error { return e.cause }

// maxDescription bounds an error_description shown to users, in
// characters.
const maxDescription = 200

// sanitize makes a token endpoint's error_description of error code fit
// to show: control and other unprintable characters dropped (whitespace
// runs become one space), then the connection's secrets (raw,
// URL-encoded or path-encoded) replaced, so that dropped characters
// cannot put a secret back together; a leading generic definition of code
// dropped (see genericDescriptions); at most maxDescription characters
// kept.
func sanitize(code, desc string, secrets []string) string {
	desc = printable(desc)
	for _, s := range secrets {
		if len(s) < 4 {
			continue // too short to redact without mangling the text
		}
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s), printable(s)} {
			if form != "" {
				desc = strings.ReplaceAll(desc, form, "[redacted]")
			}
		}
	}
	if generic, ok := genericDescriptions[code]; ok && len(desc) > len(generic) &&
		strings.EqualFold(desc[:len(generic)], generic) {
		if rest := strings.TrimLeft(desc[len(generic):], ". "); rest != "" {
			desc = rest
		}
	}
	if utf8.RuneCountInString(desc) > maxDescription {
		desc = string([]rune(desc)[:maxDescription-1]) + "…"
	}
	return desc
}

// printable drops control and other unprintable characters from s and
// turns each run of whitespace into one space.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case unicode.IsSpace(r):
			return ' '
		case !unicode.IsPrint(r):
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// genericDescriptions are the RFC 6749 definitions of error codes that
// fosite-based servers (Ory Hydra) put before the specific hint in
// error_description ("Client authentication failed (...). The OAuth 2.0
// Client supports client authentication method 'client_secret_basic', but
// method 'client_secret_post' was requested. ..."). The code says as
// much, and without them the hint fits maxDescription.
var genericDescriptions = map[string]string{
	"invalid_request": "The request is missing a required parameter, includes an invalid parameter value, " +
		"includes a parameter more than once, or is otherwise malformed",
	"invalid_client": "Client authentication failed (e.g., unknown client, no client authentication included, " +
		"or unsupported authentication method)",
	"invalid_grant": "The provided authorization grant (e.g., authorization code, resource owner credentials) " +
		"or refresh token is invalid, expired, revoked, does not match the redirection URI used in the " +
		"authorization request, or was issued to another client",
	"unauthorized_client":    "The client is not authorized to request a token using this method",
	"unsupported_grant_type": "The authorization grant type is not supported by the authorization server",
	"invalid_scope":          "The requested scope is invalid, unknown, or malformed",
	"access_denied":          "The resource owner or authorization server denied the request",
}

// safeCode accepts RFC 6749 error codes (%x20-21 / %x23-5B / %x5D-7E,
// short, here limited to letters, digits and '_') that hold none of the
// connection's secrets; anything else is not echoed.
func safeCode(s string, secrets []string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, secret := range secrets {
		if len(secret) >= 4 && strings.Contains(s, secret) {
			return false
		}
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// httpReason phrases a token endpoint's HTTP error that carried no OAuth
// error code.
func httpReason(status int) string {
	return "HTTP " + strconv.Itoa(status) + " from the token endpoint, no OAuth error given"
}

// errNoRefreshToken: a consent connection without a refresh token.
var errNoRefreshToken = &TokenError{Reason: "no refresh token: consent is needed", Permanent: true, consent: true}

// refreshFailure marks a failed refresh_token grant of a consent policy:
// a permanent 400 or 401 answer, with or without an OAuth error code,
// means the refresh token is dead and a person must consent again.
func refreshFailure(err error) error {
	var te *TokenError
	if errors.As(err, &te) && te.Permanent && (te.Status == 400 || te.Status == 401 || te.OAuthCode == "invalid_grant") {
		marked := *te
		marked.consent = true
		return &marked
	}
	return err
}

// Reason says why a token or credential could not be had, in words safe
// to show: the *TokenError's reason when there is one.
func Reason(err error) string {
	var te *TokenError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &te):
		return te.Reason
	case errors.Is(err, ErrNeedsConsent):
		return "consent is needed"
	case errors.Is(err, ErrNoTokens):
		return ErrNoTokens.Error()
	}
	return "the token request failed"
}
