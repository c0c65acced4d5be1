package security

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/connmgr/connmgr/connections"
)

// Consent flow errors.
var (
	// ErrInvalidState: the callback's state is unknown, used or expired.
	ErrInvalidState = errors.New("unknown, used or expired state")
	// ErrIssuerMismatch: the callback's iss is not the configured issuer.
	ErrIssuerMismatch = errors.New("issuer mismatch")
	// ErrIssuerMissing: the callback has no iss, but the server advertises
	// it (RFC 9207) or the connection requires it.
	ErrIssuerMissing = errors.New("issuer missing")
	// ErrConsentDenied: the authorization server reported an error
	// (access_denied, ...) instead of a code.
	ErrConsentDenied = errors.New("consent was not given")
	// ErrConsentStale: the connection's credential configuration changed
	// after the consent started.
	ErrConsentStale = errors.New("the connection changed after consent started")
	// ErrNoConsent: the connection's policy has no consent flow.
	ErrNoConsent = errors.New("the connection's policy has no consent flow")
)

// StateLifetime is how long a consent may take.
const StateLifetime = 10 * time.Minute

// consentPolicy is a token policy whose tokens come from a person's
// consent in a browser.
type consentPolicy interface {
	tokenPolicy
	authCodeURL(ctx context.Context, e *tokenEnv, redirectURI string, pc *PendingConsent) (string, error)
	exchange(ctx context.Context, e *tokenEnv, code string, pc *PendingConsent) (*Token, error)
	endpoints(ctx context.Context, e *tokenEnv) (authURL, tokenURL string, md *Metadata, err error)
	issuerCheck(md *Metadata) (issuer string, required bool)
	wantsNonce() bool
	idTokenIssuer() string
}

// connectionByID loads the connection a consent was started for.
type connectionByID interface {
	// GetByID returns the connection. Returns connections.ErrNotFound.
	GetByID(ctx context.Context, id int64) (*connections.Connection, error)
}

// Consent runs the authorization-code consent flow: Start makes a
// single-use state with a PKCE S256 verifier (and an OpenID Connect nonce),
// stored server-side bound to the connection's credential configuration;
// Complete checks the callback and exchanges the code. It is safe for
// concurrent use.
type Consent struct {
	states      ConsentStates
	conns       connectionByID
	m           *Manager
	redirectURI string
	// Observe, when set, hears of every consent started (err nil) and of
	// every callback for a known connection, with its outcome; errors are
	// safe to record.
	Observe func(ctx context.Context, c *connections.Connection, started bool, err error)
}

// NewConsent returns the consent flow of m, whose callback is redirectURI
// ({CONNMGR_PUBLIC_URL}/oauth/callback).
func NewConsent(states ConsentStates, conns connectionByID, m *Manager, redirectURI string) *Consent {
	return &Consent{states: states, conns: conns, m: m, redirectURI: redirectURI}
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Start begins consent for c and returns the URL to open in a browser and
// when the consent expires. Returns ErrNoConsent for other policies.
func (k *Consent) Start(ctx context.Context, c *connections.Connection, actor string) (string, time.Time, error) {
	p, ok := c.Security.(consentPolicy)
	if !ok {
		return "", time.Time{}, ErrNoConsent
	}
	now := k.m.now()
	pc := &PendingConsent{State: randomString(32), ConnectionID: c.ID, Fingerprint: c.Fingerprint,
		Verifier: connections.NewSecret(oauth2.GenerateVerifier()), RedirectURI: k.redirectURI,
		CreatedBy: actor, CreatedAt: now, ExpiresAt: now.Add(StateLifetime)}
	pc.StateHash = sha256Hex(pc.State)
	if p.wantsNonce() {
		pc.Nonce = randomString(24)
	}
	e, err := k.m.env(c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
	}
	u, err := p.authCodeURL(ctx, e, k.redirectURI, pc)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
	}
	if err := k.states.Create(ctx, pc); err != nil {
		return "", time.Time{}, fmt.Errorf("start consent: %w", err)
	}
	if k.Observe != nil {
		k.Observe(ctx, c, true, nil)
	}
	return u, pc.ExpiresAt, nil
}

// Complete handles the authorization server's redirect with query q. The
// state must be known, unused and unexpired (else ErrInvalidState, and no
// token request is made); it is used up at once. The connection must still
// have the configuration consent started under (else ErrConsentStale).
// iss is checked as RFC 9207 says (ErrIssuerMismatch, ErrIssuerMissing).
// Then the code is exchanged, an ID token verified, and the tokens stored.
// It returns the connection the consent was for, also on most errors after
// the state was accepted.
func (k *Consent) Complete(ctx context.Context, q url.Values) (*connections.Connection, error) {
	c, err := k.complete(ctx, q)
	if c != nil && k.Observe != nil {
		k.Observe(ctx, c, false, err)
	}
	return c, err
}

func (k *Consent) complete(ctx context.Context, q url.Values) (*connections.Connection, error) {
	state := q.Get("state")
	if state == "" || len(state) > 512 {
		return nil, ErrInvalidState
	}
	pc, err := k.states.Take(ctx, sha256Hex(state), k.m.now())
	if err != nil {
		return nil, err
	}
	c, err := k.conns.GetByID(ctx, pc.ConnectionID)
	if err != nil {
		return nil, err
	}
	p, ok := c.Security.(consentPolicy)
	if !ok {
		return c, ErrNoConsent
	}
	if c.Fingerprint != pc.Fingerprint {
		return c, ErrConsentStale
	}
	e, err := k.m.env(c)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
	}
	if code := q.Get("error"); code != "" {
		reason := "the authorization server answered an error"
		if safeCode(code, e.secrets) {
			reason = code
			if d := sanitize(code, q.Get("error_description"), e.secrets); d != "" {
				reason += ": " + d
			}
		}
		return c, fmt.Errorf("%w: %s", ErrConsentDenied, reason)
	}
	_, _, md, err := p.endpoints(ctx, e)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
	}
	issuer, required := p.issuerCheck(md)
	switch iss, given := q["iss"]; {
	case given && issuer != "" && (len(iss) != 1 || iss[0] != issuer):
		return c, ErrIssuerMismatch
	case !given && required:
		return c, ErrIssuerMissing
	}
	code := q.Get("code")
	if code == "" || len(code) > 4096 {
		return c, fmt.Errorf("%w: the callback has no code", ErrConsentDenied)
	}
	tok, err := p.exchange(ctx, e, code, pc)
	if err != nil {
		te := classify(err, e)
		k.m.metrics.requests.WithLabelValues(c.Name, "permanent_error").Inc()
		k.m.log.Warn("authorization code exchange failed", "connection", c.Name, "reason", te.Reason)
		return c, fmt.Errorf("%w: %w", ErrTokenUnavailable, te)
	}
	if iss := p.idTokenIssuer(); iss != "" {
		if err := k.m.meta.verifyIDToken(ctx, e.client, iss, clientID(c), tok.idToken, pc.Nonce); err != nil {
			k.m.log.Warn("ID token refused", "connection", c.Name, "reason", err.Error())
			return c, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{Reason: err.Error(), Permanent: true, cause: err})
		}
	}
	if _, err := k.m.exchanged(ctx, c, tok); err != nil {
		return c, err
	}
	return c, nil
}

// clientID returns the client id of c's OAuth policy.
func clientID(c *connections.Connection) string {
	if p, ok := c.Security.(interface{ client() *Client }); ok {
		return p.client().ClientID
	}
	return ""
}

// exchanged stores tokens from a code exchange over whatever is stored
// (they are the newest), unless c's configuration changed meanwhile. It
// unblocks automatic refresh.
func (m *Manager) exchanged(ctx context.Context, c *connections.Connection, tok *Token) (*Token, error) {
	for attempt := 0; ; attempt++ {
		st, err := m.store.Load(ctx, c.ID)
		if err != nil {
			return nil, unavailable(err)
		}
		v, err := m.store.Save(ctx, c.ID, c.Fingerprint, st.Version, tok, m.refreshAt(tok), m.owner, m.now())
		if errors.Is(err, ErrStale) && attempt < 3 {
			continue
		}
		if errors.Is(err, ErrConfigChanged) || errors.Is(err, connections.ErrNotFound) {
			return nil, ErrConsentStale
		}
		if err != nil {
			return nil, unavailable(err)
		}
		tok.Version = v
		break
	}
	m.remember(c, tok)
	m.metrics.requests.WithLabelValues(c.Name, "success").Inc()
	m.setStatus(ctx, c, connections.StatusConfigured, "")
	return tok, nil
}
