package security

import (
	"context"
	"errors"
	"time"

	"github.com/connmgr/connmgr/connections"
)

// Errors of a TokenStore.
var (
	// ErrStale: the stored token version is not the one the write was
	// made over; a newer token won.
	ErrStale = errors.New("token changed concurrently")
	// ErrConfigChanged: the connection's credential configuration changed
	// (its fingerprint differs) since the token was asked for; nothing was
	// stored.
	ErrConfigChanged = errors.New("the connection's credentials changed during the token request")
)

// TokenState is a connection's stored token with its refresh bookkeeping.
type TokenState struct {
	// Token is nil when none is stored. Its Version is Version.
	Token *Token
	// Fingerprint is the connection fingerprint the token was obtained
	// under (connections.Connection.Fingerprint).
	Fingerprint string
	Version     int64
	LeaseOwner  string
	// RefreshAt is when the scheduler refreshes the token (jittered).
	RefreshAt     time.Time
	LastRefreshAt time.Time
	LastError     string
	Failures      int
	NextAttempt   time.Time
	// Blocked stops automatic refresh after a permanent failure.
	Blocked bool
	// NeedsConsent says the last failure means a person must consent.
	NeedsConsent bool
}

// Failure is a failed token request as the store records it.
type Failure struct {
	// Fingerprint is the connection fingerprint the request was made
	// under; a stored token of another one is dropped with the failure.
	Fingerprint  string
	Reason       string
	Failures     int
	NextAttempt  *time.Time
	Blocked      bool
	NeedsConsent bool
}

// DueToken is a token the scheduler should refresh.
type DueToken struct {
	ConnectionID int64
	Name         string
	Version      int64
	RefreshAt    time.Time
}

// TokenStore keeps tokens encrypted, one per connection, with a lease per
// connection so that one process at a time talks to the token endpoint
// for it, and a version so that a write never replaces a newer token.
// Implementations are safe for concurrent use and return
// connections.ErrUnavailable when the database cannot be reached.
type TokenStore interface {
	// Load returns connection id's token state (a zero state when none).
	Load(ctx context.Context, id int64) (*TokenState, error)
	// States returns the bookkeeping of the given connections' tokens,
	// without decrypting them (Token holds times and scopes only).
	States(ctx context.Context, ids []int64) (map[int64]*TokenState, error)
	// Lease takes id's refresh lease for owner until until: it succeeds
	// when nobody holds it, it expired, or owner holds it. Returns
	// connections.ErrNotFound when the connection is gone.
	Lease(ctx context.Context, id int64, owner string, now, until time.Time) (bool, error)
	// Release gives up owner's lease of id.
	Release(ctx context.Context, id int64, owner string) error
	// Save stores t (with refreshAt) for connection id over version prev
	// (0: none yet), only while the connection's fingerprint is still fp;
	// it clears failures and releases owner's lease in the same
	// transaction. A t without refresh token keeps the stored one. Returns
	// the new version, ErrStale, ErrConfigChanged, or
	// connections.ErrNotFound.
	Save(ctx context.Context, id int64, fp string, prev int64, t *Token, refreshAt time.Time, owner string, now time.Time) (int64, error)
	// Fail records a failed request for id and releases owner's lease.
	Fail(ctx context.Context, id int64, owner string, f Failure, now time.Time) error
	// DropAccess expires id's access token if it is still version v (a
	// target rejected it), keeping the refresh token.
	DropAccess(ctx context.Context, id, v int64, now time.Time) error
	// Due returns up to limit tokens, earliest first, that are due for
	// refresh by before: not blocked, not leased, not backing off.
	Due(ctx context.Context, now, before time.Time, limit int) ([]DueToken, error)
}

// PendingConsent is a consent in progress: the state a browser brings
// back, bound to the connection's credential configuration.
type PendingConsent struct {
	// State is the random value sent to the authorization server; only
	// its hash (StateHash) is stored.
	State        string
	StateHash    string
	ConnectionID int64
	Fingerprint  string
	// Verifier is the PKCE verifier; Nonce the OpenID Connect nonce.
	Verifier    connections.Secret
	Nonce       string
	RedirectURI string
	CreatedBy   string
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

// ConsentStates keeps pending consents, verifiers encrypted. Safe for
// concurrent use.
type ConsentStates interface {
	// Create stores pc (without State), dropping long-expired ones.
	Create(ctx context.Context, pc *PendingConsent) error
	// Take uses up the consent with stateHash and returns it, if it is
	// unused and unexpired at now. Returns ErrInvalidState otherwise.
	Take(ctx context.Context, stateHash string, now time.Time) (*PendingConsent, error)
}
