package security

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"golang.org/x/oauth2"
	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections"
)

// Consent flow errors.
var (
	// ErrInvalidState: the callback's state is unknown, used or expired.
	ErrInvalidState = errors.New("unknown, used or expired state")
	// ErrIssuerMismatch: the callback's iss is not the configured issuer.
	ErrIssuerMismatch = errors.New("issuer mismatch")
	// ErrConsentDenied: the authorization server reported an error
	// (access_denied, ...) instead of a code.
	ErrConsentDenied = errors.New("consent was not given")
	// ErrNotAuthorizationCode: the connection does not use the
	// authorization-code policy.
	ErrNotAuthorizationCode = errors.New("the connection does not use OAUTH2_AUTHORIZATION_CODE")
)

// StateLifetime is how long a consent may take.
const StateLifetime = 10 * time.Minute

type stateRow struct {
	StateHash    string     `gorm:"column:state_hash;primaryKey"`
	ConnectionID int64      `gorm:"column:connection_id"`
	Verifier     []byte     `gorm:"column:verifier"`
	RedirectURI  string     `gorm:"column:redirect_uri"`
	CreatedBy    string     `gorm:"column:created_by"`
	CreatedAt    time.Time  `gorm:"column:created_at"`
	ExpiresAt    time.Time  `gorm:"column:expires_at"`
	UsedAt       *time.Time `gorm:"column:used_at"`
}

func (stateRow) TableName() string { return "oauth_states" }

func stateAD(hash string) []byte { return []byte("connmgr/oauth_state/" + hash) }

// Consent runs the authorization-code consent flow: Start makes a
// single-use state with a PKCE S256 verifier, stored server-side (only the
// state's hash, the verifier encrypted); Complete checks the callback and
// exchanges the code. It is safe for concurrent use.
type Consent struct {
	db          *gorm.DB
	sealer      connections.Sealer
	m           *Manager
	redirectURI string
}

// NewConsent returns the consent flow of m, whose callback is redirectURI
// ({CONNMGR_PUBLIC_URL}/oauth/callback).
func NewConsent(db *gorm.DB, sealer connections.Sealer, m *Manager, redirectURI string) *Consent {
	return &Consent{db: db, sealer: sealer, m: m, redirectURI: redirectURI}
}

// Start begins consent for c and returns the URL to open in a browser.
func (k *Consent) Start(ctx context.Context, c *connections.Connection, actor string) (string, error) {
	if c.Security.Policy != connections.PolicyAuthorizationCode {
		return "", ErrNotAuthorizationCode
	}
	now := k.m.now()
	state := randomString(32) // 256 bits
	verifier := oauth2.GenerateVerifier()
	hash := sha256Hex(state)
	ct, err := k.sealer.Seal([]byte(verifier), stateAD(hash))
	if err != nil {
		return "", err
	}
	row := stateRow{StateHash: hash, ConnectionID: c.ID, Verifier: ct, RedirectURI: k.redirectURI, CreatedBy: actor,
		CreatedAt: now, ExpiresAt: now.Add(StateLifetime)}
	err = k.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Old states are of no use; dropping them here keeps the table small.
		if err := tx.Where("expires_at < ?", now.Add(-time.Hour)).Delete(&stateRow{}).Error; err != nil {
			return err
		}
		return tx.Create(&row).Error
	})
	if err != nil {
		return "", fmt.Errorf("start consent: %w", connections.Translate(err))
	}
	s := &c.Security
	cfg := oauth2.Config{ClientID: s.ClientID, Endpoint: oauth2.Endpoint{AuthURL: s.AuthorizationURL},
		RedirectURL: k.redirectURI, Scopes: s.Scopes}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if s.Audience != "" {
		opts = append(opts, oauth2.SetAuthURLParam("audience", s.Audience))
	}
	for name, v := range s.ExtraParams {
		opts = append(opts, oauth2.SetAuthURLParam(name, v))
	}
	return cfg.AuthCodeURL(state, opts...), nil
}

// Complete handles the authorization server's redirect with query q. The
// state must be known, unused and unexpired (else ErrInvalidState, and no
// token request is made); it is used up at once. When the connection has
// an issuer, iss must equal it. Then the code is exchanged and the tokens
// stored. It returns the connection the consent was for, also on most
// errors after the state was accepted.
func (k *Consent) Complete(ctx context.Context, q url.Values) (*connections.Connection, error) {
	state := q.Get("state")
	if state == "" || len(state) > 512 {
		return nil, ErrInvalidState
	}
	hash := sha256Hex(state)
	now := k.m.now()
	var row stateRow
	err := k.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&stateRow{}).Where("state_hash = ? AND used_at IS NULL AND expires_at > ?", hash, now).
			Update("used_at", now)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return ErrInvalidState
		}
		return tx.Where("state_hash = ?", hash).Take(&row).Error
	})
	if err != nil {
		if errors.Is(err, ErrInvalidState) {
			return nil, err
		}
		return nil, fmt.Errorf("check state: %w", connections.Translate(err))
	}
	c, err := k.m.conns.GetByID(ctx, row.ConnectionID)
	if err != nil {
		return nil, err
	}
	if c.Security.Policy != connections.PolicyAuthorizationCode {
		return c, ErrNotAuthorizationCode
	}
	if code := q.Get("error"); code != "" {
		reason := "the authorization server answered an error"
		if safeCode(code) {
			reason = code
		}
		return c, fmt.Errorf("%w: %s", ErrConsentDenied, reason)
	}
	if c.Security.Issuer != "" && q.Get("iss") != c.Security.Issuer {
		return c, ErrIssuerMismatch
	}
	code := q.Get("code")
	if code == "" || len(code) > 4096 {
		return c, fmt.Errorf("%w: the callback has no code", ErrConsentDenied)
	}
	verifier, err := k.sealer.Open(row.Verifier, stateAD(hash))
	if err != nil {
		return c, err
	}
	_, err = k.m.exchange(ctx, c, grant{typ: "authorization_code", params: url.Values{"code": {code},
		"redirect_uri": {row.RedirectURI}, "code_verifier": {string(verifier)}}})
	return c, err
}

// exchange obtains tokens with an authorization code and stores them over
// whatever is stored: they are the newest. It unblocks automatic refresh.
func (m *Manager) exchange(ctx context.Context, c *connections.Connection, g grant) (*Token, error) {
	tok, err := m.tc.request(ctx, c, g)
	if err != nil {
		te := classify(err, m.now())
		m.metrics.requests.WithLabelValues(c.Name, "permanent_error").Inc()
		m.log.Warn("authorization code exchange failed", "connection", c.Name, "reason", te.Reason)
		return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, te)
	}
	for attempt := 0; ; attempt++ {
		st, err := m.store.load(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		v, err := m.store.save(ctx, c.ID, st.Version, tok, m.owner, m.now())
		if errors.Is(err, errStale) && attempt < 3 {
			continue
		}
		if err != nil {
			return nil, err
		}
		tok.Version = v
		break
	}
	m.remember(c, tok)
	m.metrics.requests.WithLabelValues(c.Name, "success").Inc()
	m.setStatus(ctx, c, connections.StatusConfigured, "")
	return tok, nil
}

// Reseal re-encrypts the verifiers of pending consents for key rotation.
func (k *Consent) Reseal(ctx context.Context, stale func([]byte) bool) (int, error) {
	var rows []stateRow
	if err := k.db.WithContext(ctx).Select("state_hash", "verifier").Find(&rows).Error; err != nil {
		return 0, connections.Translate(err)
	}
	n := 0
	for _, r := range rows {
		if !stale(r.Verifier) {
			continue
		}
		done, err := reseal(ctx, k.db, k.sealer, "oauth_states", "verifier", "state_hash = ?", []any{r.StateHash}, r.Verifier, stateAD(r.StateHash))
		if err != nil {
			return n, err
		}
		n += done
	}
	return n, nil
}
