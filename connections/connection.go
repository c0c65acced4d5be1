// Package connections is connmgr's domain: a named outbound connection, its
// role, status and security policy, their validation rules, and the store
// that keeps them (gorm, on SQLite or PostgreSQL, secrets encrypted).
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

// Policy names a security policy.
type Policy string

// The security policies.
const (
	PolicyNone              Policy = "NONE"
	PolicyBasic             Policy = "BASIC"
	PolicyAPIKey            Policy = "API_KEY"
	PolicyClientCredentials Policy = "OAUTH2_CLIENT_CREDENTIALS"
	PolicyPassword          Policy = "OAUTH2_PASSWORD"
	PolicyAuthorizationCode Policy = "OAUTH2_AUTHORIZATION_CODE"
)

// OAuth reports whether p obtains tokens from a token endpoint.
func (p Policy) OAuth() bool {
	return p == PolicyClientCredentials || p == PolicyPassword || p == PolicyAuthorizationCode
}

// KeyLocation says where an API key goes.
type KeyLocation string

// The places an API key can go.
const (
	InHeader KeyLocation = "HEADER"
	InQuery  KeyLocation = "QUERY"
)

// ClientAuth says how an OAuth client authenticates at the token endpoint.
type ClientAuth string

// The client authentication methods.
const (
	// ClientAuthBasic sends client_id and client_secret in an HTTP Basic header.
	ClientAuthBasic ClientAuth = "BASIC_HEADER"
	// ClientAuthBody sends them as form parameters.
	ClientAuthBody ClientAuth = "BODY"
	// ClientAuthPrivateKeyJWT signs a client assertion (RFC 7523).
	ClientAuthPrivateKeyJWT ClientAuth = "PRIVATE_KEY_JWT"
)

// DefaultTimeout is the per-call timeout of a connection that sets none.
const DefaultTimeout = 30 * time.Second

// Connection is a named outbound connection.
type Connection struct {
	// ID is the row id. It binds secrets and tokens to this connection and is
	// never shown; a connection deleted and created again gets a new one.
	ID          int64
	Name        string
	Description string
	Keywords    []string
	Role        Role
	BaseURL     string
	Security    Security
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

	Status    Status
	LastTest  *TestResult
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
	CreatedBy string
	UpdatedBy string
}

// Identifier returns the name upper-cased, as Oracle Integration shows it.
func (c *Connection) Identifier() string { return strings.ToUpper(c.Name) }

// Security is a connection's security policy with its fields. Which fields
// a policy takes is in PolicyFields; the others stay zero.
type Security struct {
	Policy           Policy
	Username         string
	Password         Secret
	Key              Secret
	In               KeyLocation
	Name             string
	ValuePrefix      *string
	TokenURL         string
	AuthorizationURL string
	ClientID         string
	ClientSecret     Secret
	Scopes           []string
	Audience         string
	ExtraParams      map[string]string
	ClientAuth       ClientAuth
	PrivateKeyPEM    Secret
	KeyID            string
	Issuer           string
}

// TestRequest is the call a connection test makes for non-OAuth policies.
type TestRequest struct {
	Method      string
	RelativeURI string
}

// RateLimit is a token bucket: RequestsPerSecond on average, Burst at once.
type RateLimit struct {
	RequestsPerSecond float64
	Burst             int
}

// TestResult is the outcome of the last connection test.
type TestResult struct {
	At     time.Time
	Result string // "SUCCESS" or "FAILURE"
	Detail string
}

// The results of a connection test.
const (
	TestSuccess = "SUCCESS"
	TestFailure = "FAILURE"
)

// Secret field names, as they appear in the API and in the secret store.
const (
	FieldPassword      = "password"
	FieldKey           = "key"
	FieldClientSecret  = "clientSecret"
	FieldPrivateKeyPEM = "privateKeyPem"
)

// SecretFields lists the secret fields of a security policy, in a fixed order.
var SecretFields = []string{FieldPassword, FieldKey, FieldClientSecret, FieldPrivateKeyPEM}

// Secret returns the secret field named f.
func (s *Security) Secret(f string) Secret {
	switch f {
	case FieldPassword:
		return s.Password
	case FieldKey:
		return s.Key
	case FieldClientSecret:
		return s.ClientSecret
	case FieldPrivateKeyPEM:
		return s.PrivateKeyPEM
	}
	return Secret{}
}

// SetSecret sets the secret field named f.
func (s *Security) SetSecret(f string, v Secret) {
	switch f {
	case FieldPassword:
		s.Password = v
	case FieldKey:
		s.Key = v
	case FieldClientSecret:
		s.ClientSecret = v
	case FieldPrivateKeyPEM:
		s.PrivateKeyPEM = v
	}
}

// PolicyFields lists, per policy, the security fields it takes besides
// "policy" itself.
var PolicyFields = map[Policy][]string{
	PolicyNone:   {},
	PolicyBasic:  {"username", FieldPassword},
	PolicyAPIKey: {FieldKey, "in", "name", "valuePrefix"},
	PolicyClientCredentials: {"tokenUrl", "clientId", FieldClientSecret, "scopes", "audience",
		"extraParams", "clientAuth", FieldPrivateKeyPEM, "keyId"},
	PolicyPassword: {"tokenUrl", "clientId", FieldClientSecret, "scopes", "audience",
		"extraParams", "clientAuth", FieldPrivateKeyPEM, "keyId", "username", FieldPassword},
	PolicyAuthorizationCode: {"authorizationUrl", "tokenUrl", "clientId", FieldClientSecret, "scopes",
		"audience", "extraParams", "clientAuth", FieldPrivateKeyPEM, "keyId", "issuer"},
}

// present returns the names of the fields of s that hold a value.
func (s *Security) present() []string {
	var p []string
	add := func(name string, set bool) {
		if set {
			p = append(p, name)
		}
	}
	add("username", s.Username != "")
	add(FieldPassword, s.Password.IsSet())
	add(FieldKey, s.Key.IsSet())
	add("in", s.In != "")
	add("name", s.Name != "")
	add("valuePrefix", s.ValuePrefix != nil)
	add("tokenUrl", s.TokenURL != "")
	add("authorizationUrl", s.AuthorizationURL != "")
	add("clientId", s.ClientID != "")
	add(FieldClientSecret, s.ClientSecret.IsSet())
	add("scopes", len(s.Scopes) > 0)
	add("audience", s.Audience != "")
	add("extraParams", len(s.ExtraParams) > 0)
	add("clientAuth", s.ClientAuth != "")
	add(FieldPrivateKeyPEM, s.PrivateKeyPEM.IsSet())
	add("keyId", s.KeyID != "")
	add("issuer", s.Issuer != "")
	return p
}

// CredentialHosts returns the hosts (host[:port], lower-case) that receive
// the connection's credentials: the base URL's host for every policy but
// NONE, and the token and authorization endpoints' hosts for OAuth.
func (c *Connection) CredentialHosts() map[string]string {
	hosts := map[string]string{}
	if c.Security.Policy == PolicyNone || c.Security.Policy == "" {
		return hosts
	}
	hosts["baseUrl"] = hostOf(c.BaseURL)
	if c.Security.TokenURL != "" {
		hosts["security.tokenUrl"] = hostOf(c.Security.TokenURL)
	}
	if c.Security.AuthorizationURL != "" {
		hosts["security.authorizationUrl"] = hostOf(c.Security.AuthorizationURL)
	}
	return hosts
}
