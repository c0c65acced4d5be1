// Package connections is connmgr's domain: a named outbound connection, its
// role, status and health, the rules every connection follows whatever its
// security policy (names, URLs, headers, limits, which secret may go where),
// the service that carries out changes, and the storage interfaces it needs.
// It knows security policies only through the Security interface; the
// policies themselves live in package security, storage in package store.
package connections

import (
	"strings"
	"time"
)

// Role says how integrations may use a connection.
type Role string

// The roles of Oracle Integration's REST adapter. Only INVOKE and
// TRIGGER_INVOKE connections can be invoked.
const (
	RoleInvoke        Role = "INVOKE"
	RoleTrigger       Role = "TRIGGER"
	RoleTriggerInvoke Role = "TRIGGER_INVOKE"
)

// Roles lists the roles.
var Roles = []Role{RoleInvoke, RoleTrigger, RoleTriggerInvoke}

// Invocable reports whether connections of role r may be invoked.
func (r Role) Invocable() bool { return r == RoleInvoke || r == RoleTriggerInvoke }

// Status is what connmgr last learned about a connection's credentials.
type Status string

// The statuses of a connection.
const (
	// StatusDraft: created or reconfigured, not yet tested.
	StatusDraft Status = "DRAFT"
	// StatusConfigured: the last test or token fetch succeeded.
	StatusConfigured Status = "CONFIGURED"
	// StatusError: the last test or refresh failed for a reason that may pass.
	StatusError Status = "ERROR"
	// StatusNeedsConsent: an authorization-code connection without a usable
	// refresh token; someone must give consent again.
	StatusNeedsConsent Status = "NEEDS_CONSENT"
)

// Statuses lists the statuses.
var Statuses = []Status{StatusDraft, StatusConfigured, StatusError, StatusNeedsConsent}

// DefaultTimeout is the per-call timeout of a connection that sets none.
const DefaultTimeout = 30 * time.Second

// DefaultRejectedStatuses are the target statuses that mean "token
// rejected" when a connection lists none.
var DefaultRejectedStatuses = []int{401}

// Connection is a named outbound connection.
type Connection struct {
	// ID is the row id. It binds secrets and tokens to this connection and is
	// never shown; a connection deleted and created again gets a new one.
	ID          int64
	Name        string
	Description string
	Keywords    []string
	// Labels are key-value pairs that connections as code select by
	// (apply --prune --selector team=orders). A replacement whose Labels
	// is nil keeps the stored ones (see Service.Update).
	Labels  map[string]string
	Role    Role
	BaseURL string
	// Security is the connection's security policy with its settings.
	Security Security
	// TLS, when set, holds a client certificate and extra trusted CAs for
	// the connection's target calls and token requests.
	TLS *TLS
	// Headers are sent with every call to the target.
	Headers map[string]string
	// ForwardHeaders names caller headers that invokes pass on, beyond the
	// built-in allowlist.
	ForwardHeaders []string
	Timeout        time.Duration
	TestRequest    *TestRequest
	// RateLimit, when set, limits calls to the target per connmgr process.
	RateLimit *RateLimit
	// MaxConcurrent, when positive, limits calls in flight per process.
	MaxConcurrent int
	// RejectedStatuses are the target statuses that mean the token was
	// rejected (default [401]): the token is dropped, a new one obtained
	// and the call retried once.
	RejectedStatuses []int

	// Fingerprint is a keyed hash of the credential configuration (base
	// URL, security policy with its secrets, TLS). Tokens and consents
	// belong to the fingerprint they were obtained under; one obtained under
	// another is never stored or served. Set by the Service.
	Fingerprint string

	Status Status
	// StatusReason says why the status is ERROR or NEEDS_CONSENT and what to
	// do; StatusSince is when the status last changed.
	StatusReason string
	StatusSince  time.Time
	LastTest     *TestResult
	Version      int64
	CreatedAt    time.Time
	UpdatedAt    time.Time
	CreatedBy    string
	UpdatedBy    string
}

// Identifier returns the name upper-cased, as Oracle Integration shows it.
func (c *Connection) Identifier() string { return strings.ToUpper(c.Name) }

// Policy returns the name of c's security policy, "" if it has none.
func (c *Connection) Policy() Policy {
	if c.Security == nil {
		return ""
	}
	return c.Security.Policy()
}

// Rejects reports whether a target status means c's token was rejected.
func (c *Connection) Rejects(status int) bool {
	list := c.RejectedStatuses
	if len(list) == 0 {
		list = DefaultRejectedStatuses
	}
	for _, s := range list {
		if s == status {
			return true
		}
	}
	return false
}

// TestRequest is the call a connection test makes to the target.
type TestRequest struct {
	Method      string
	RelativeURI string
}

// RateLimit is a token bucket: RequestsPerSecond on average, Burst at once.
type RateLimit struct {
	RequestsPerSecond float64
	Burst             int
}

// TLS is a connection's client certificate and extra trusted CAs.
type TLS struct {
	ClientCertificatePEM string `json:"clientCertificatePem,omitempty"`
	// ClientKeyPEM goes wherever the connection sends its calls: the base
	// URL and every endpoint of the security policy.
	ClientKeyPEM      Secret `json:"clientKeyPem,omitzero" dest:"*"`
	CACertificatesPEM string `json:"caCertificatesPem,omitempty"`
	ServerName        string `json:"serverName,omitempty"`
}

// TestResult is the outcome of a connection test.
type TestResult struct {
	At     time.Time
	Result string // "SUCCESS" or "FAILURE"
	Detail string
	// Latency is how long the whole test took.
	Latency time.Duration
	// Steps are the test's parts in order: "token" (obtaining the
	// credential) and "request" (calling the target).
	Steps []TestStep
}

// TestStep is one part of a connection test.
type TestStep struct {
	Step   string
	Result string
	Detail string
}

// The results of a connection test and its steps.
const (
	TestSuccess = "SUCCESS"
	TestFailure = "FAILURE"
	TestSkipped = "SKIPPED"
)

// OK reports whether the test succeeded.
func (r *TestResult) OK() bool { return r != nil && r.Result == TestSuccess }
