package security

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/connmgr/connmgr/connections"
)

// staticPolicy is a policy whose credential is applied without tokens.
type staticPolicy interface {
	connections.Security
	apply(req *http.Request) error
}

// tokenApplier is a token policy that puts its token somewhere other than
// "Authorization: Bearer".
type tokenApplier interface {
	applyToken(req *http.Request, tok *Token) error
}

// requestSigner is a policy that signs each outbound request as a whole
// (OAuth 1.0a, AWS Signature Version 4). Apply calls sign last, on the
// final request: its method, URL with the merged query, and headers, which
// nothing may change afterwards. A body to sign is read through
// req.GetBody (which the invoke sets for a body held in memory), never
// req.Body, which is sent.
type requestSigner interface {
	connections.Security
	// sign signs req at now. tok is the policy's current token (temporary
	// credentials) for a policy with tokens, else nil. It returns the
	// secret values the signature used besides the connection's secrets,
	// which no response header may carry back. Errors are safe to show.
	sign(req *http.Request, tok *Token, now time.Time) ([]string, error)
	// signsBody reports whether the signature needs a body of the given
	// Content-Type and length (-1: unknown) in memory.
	signsBody(contentType string, length int64) bool
	// signatureName says how requests are signed, for test results.
	signatureName() string
}

// SignsBody reports whether c's policy needs the body of a request with
// the given Content-Type and length (-1: unknown) in memory to sign it, so
// that an invoke must hold it there (within its body limit) and set the
// request's GetBody. Policies that do not sign requests never do; the
// check allocates nothing.
func SignsBody(c *connections.Connection, contentType string, length int64) bool {
	s, ok := c.Security.(requestSigner)
	return ok && s.signsBody(contentType, length)
}

// Signs reports whether c's policy signs each request (rather than adding
// a fixed credential or a token).
func Signs(c *connections.Connection) bool {
	_, ok := c.Security.(requestSigner)
	return ok
}

// SignatureName says how c's policy signs requests ("OAuth 1.0a
// HMAC-SHA1"), "" for a policy that does not sign them.
func SignatureName(c *connections.Connection) string {
	if s, ok := c.Security.(requestSigner); ok {
		return s.signatureName()
	}
	return ""
}

// queryCarrier is a policy that puts its credential in a query parameter.
type queryCarrier interface {
	queryParam() string
}

// Applied says what Apply put on a request, for what comes after: the
// token to report when the target rejects it, and what the target must
// not echo back to the caller.
type Applied struct {
	// Token is the OAuth token sent, nil for policies without tokens.
	Token *Token
	// Secrets are the credential values that went out or could have: the
	// connection's secrets and the token. No response header may carry
	// one back.
	Secrets []string
	// QueryParam is the query parameter that carries the credential, ""
	// when it goes in a header.
	QueryParam string
}

// Apply sets c's credential on req, an outbound request to c's target:
// Basic authentication, an API key in a header or the query, a token, or
// a signature over the whole request (OAuth 1.0a, AWS SigV4), which is why
// Apply must come after every other change to req.
// A credential set by the caller under the same name is replaced. Errors
// wrap ErrTokenUnavailable or ErrNeedsConsent and are safe to show.
func (m *Manager) Apply(ctx context.Context, c *connections.Connection, req *http.Request) (*Applied, error) {
	a := &Applied{Secrets: m.secretValues(c)}
	if q, ok := c.Security.(queryCarrier); ok {
		a.QueryParam = q.queryParam()
	}
	switch p := c.Security.(type) {
	case requestSigner:
		var tok *Token
		if HasTokens(p) {
			var err error
			if tok, err = m.Token(ctx, c); err != nil {
				return nil, err
			}
			a.Token = tok
		}
		used, err := p.sign(req, tok, m.now())
		if err != nil {
			return nil, err
		}
		a.Secrets = append(a.Secrets[:len(a.Secrets):len(a.Secrets)], used...)
	case staticPolicy:
		if err := p.apply(req); err != nil {
			return nil, err
		}
		if _, ok := p.(*Basic); ok {
			// As sent, base64 of user:password: a target that echoes it
			// must not hand it to the caller either.
			_, cred, _ := strings.Cut(req.Header.Get("Authorization"), " ")
			a.Secrets = append(a.Secrets[:len(a.Secrets):len(a.Secrets)], cred)
		}
	case tokenPolicy:
		tok, err := m.Token(ctx, c)
		if err != nil {
			return nil, err
		}
		a.Token = tok
		a.Secrets = append(a.Secrets[:len(a.Secrets):len(a.Secrets)], tok.AccessToken.Reveal())
		if tok.RefreshToken.IsSet() {
			a.Secrets = append(a.Secrets, tok.RefreshToken.Reveal())
		}
		if ta, ok := c.Security.(tokenApplier); ok {
			if err := ta.applyToken(req, tok); err != nil {
				return nil, err
			}
		} else {
			req.Header.Set("Authorization", tok.authorization())
		}
	default:
		return nil, fmt.Errorf("policy %q cannot be applied", c.Policy())
	}
	return a, nil
}

// secretKey identifies a connection's credential configuration.
type secretKey struct {
	id          int64
	fingerprint string
}

// secretValues returns the values of c's secrets. They depend only on the
// credential configuration, so they are kept per fingerprint: an invoke
// does not walk the policy's fields for them every time. The slice is
// shared; callers append to a copy.
func (m *Manager) secretValues(c *connections.Connection) []string {
	if c.Fingerprint != "" {
		if v, ok := m.secretsByConfig.Load(secretKey{c.ID, c.Fingerprint}); ok {
			return v.([]string)
		}
	}
	var out []string
	for _, r := range c.AllSecrets() {
		if v := r.Value(); v.IsSet() {
			out = append(out, v.Reveal())
		}
	}
	if c.Fingerprint != "" {
		if m.secretsCount.Add(1) > maxSecretEntries {
			m.secretsByConfig.Clear()
			m.secretsCount.Store(0)
		}
		m.secretsByConfig.Store(secretKey{c.ID, c.Fingerprint}, out)
	}
	return out
}

// maxSecretEntries bounds secretsByConfig; past it the map starts over.
const maxSecretEntries = 20000
