package connections

import (
	"context"
	"errors"
)

// Errors returned by stores and the service.
var (
	// ErrNotFound: no connection has that name (or the caller may not see it).
	ErrNotFound = errors.New("connection not found")
	// ErrExists: a connection with that name or identifier exists.
	ErrExists = errors.New("connection already exists")
	// ErrVersionMismatch: the connection changed since the version the
	// caller read (If-Match failed or an update lost a race).
	ErrVersionMismatch = errors.New("connection was changed since it was read")
	// ErrUnavailable: the database cannot be reached; retry later.
	ErrUnavailable = errors.New("database unavailable")
	// ErrNotInvocable: the connection's role does not allow invokes.
	ErrNotInvocable = errors.New("connection cannot be invoked")
)

// MaxListLimit is the largest page a List returns.
const MaxListLimit = 500

// Filter selects connections for List. Zero fields do not filter.
type Filter struct {
	Role   Role
	Policy Policy
	Status Status
	// Q matches a case-insensitive substring of the name or of a keyword.
	Q string
	// After starts the page after this name (names sort in byte order).
	After string
	// Limit is the page size, 1..MaxListLimit.
	Limit int
}

// Store keeps connections. Secrets are encrypted before they reach the
// database and decrypted on the way out. Implementations are safe for
// concurrent use; every method that writes more than one row does so in one
// transaction. Any method returns ErrUnavailable when the database cannot be
// reached.
type Store interface {
	// Create inserts c and sets its ID, Version (1) and timestamps.
	// Returns ErrExists if the name or identifier is taken.
	Create(ctx context.Context, c *Connection) error
	// Get returns the named connection. Returns ErrNotFound.
	Get(ctx context.Context, name string) (*Connection, error)
	// GetFolded returns the connection whose name is name in any case
	// (names are unique so: their identifiers are). Returns ErrNotFound.
	GetFolded(ctx context.Context, name string) (*Connection, error)
	// GetByID returns the connection with row id. Returns ErrNotFound.
	GetByID(ctx context.Context, id int64) (*Connection, error)
	// List returns up to f.Limit connections that match f, ordered by name
	// (byte order), and the name after which the next page starts ("" on
	// the last page). A page may hold fewer than f.Limit connections and
	// still have a next one: a search (Q) reads a bounded stretch of names
	// per page, so that a page costs the same however rare the matches.
	List(ctx context.Context, f Filter) (cs []*Connection, next string, err error)
	// Update replaces the stored connection c.ID if its version is still
	// c.Version, then increments c.Version and sets UpdatedAt. With
	// resetCredentials, tokens and pending consents of the connection are
	// dropped in the same transaction. Returns ErrNotFound or
	// ErrVersionMismatch.
	Update(ctx context.Context, c *Connection, resetCredentials bool) error
	// Delete removes the named connection with its secrets, tokens and
	// pending consents, and returns what was deleted. Returns ErrNotFound,
	// or ErrVersionMismatch when version is not 0 and differs.
	Delete(ctx context.Context, name string, version int64) (*Connection, error)
	// SetStatus records a status with its reason and, when test is not nil,
	// the last test result, without changing the version. statusSince
	// moves only when the status changes. It returns the previous status.
	// Returns ErrNotFound.
	SetStatus(ctx context.Context, id int64, s Status, reason string, test *TestResult) (prev Status, err error)
}
