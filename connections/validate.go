package connections

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// Limits on field sizes. They keep rows small and reject garbage early.
const (
	MaxNameLen        = 100
	maxDescriptionLen = 1000
	maxKeywords       = 32
	maxKeywordLen     = 64
	maxURLLen         = 2048
	maxHeaders        = 32
	maxHeaderValueLen = 4096
	maxScopes         = 64
	maxScopeLen       = 256
	maxParams         = 32
	maxParamValueLen  = 2048
	maxShortField     = 512
	maxSecretLen      = 16 << 10
	MinTimeout        = 100 * time.Millisecond
	MaxTimeout        = 10 * time.Minute
	maxRate           = 1e6
	maxConcurrent     = 100000
)

// reservedParams are form parameters connmgr sets itself; extraParams may
// not override them.
var reservedParams = []string{"grant_type", "client_id", "client_secret", "client_assertion",
	"client_assertion_type", "scope", "audience", "username", "password", "code", "code_verifier",
	"code_challenge", "code_challenge_method", "redirect_uri", "refresh_token", "state", "response_type"}

// forbiddenHeaders may be neither set statically nor forwarded: they carry
// credentials of the caller, describe the hop, or are computed by the proxy.
var forbiddenHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "Host",
	"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Proxy-Connection",
	"Proxy-Authenticate", "Te", "Trailer", "Upgrade", "Forwarded"}

// ForbiddenHeader reports whether the header name may not be set or
// forwarded by a connection.
func ForbiddenHeader(name string) bool {
	for _, h := range forbiddenHeaders {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return len(name) >= 12 && strings.EqualFold(name[:12], "X-Forwarded-")
}

// ValidationError says why one field is invalid.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// ValidationErrors lists every invalid field of a request.
type ValidationErrors []*ValidationError

func (es ValidationErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// ValidateName reports whether name is a valid connection name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return &ValidationError{"name", "is required"}
	case len(name) > MaxNameLen:
		return &ValidationError{"name", fmt.Sprintf("must be at most %d characters", MaxNameLen)}
	case !nameChars(name):
		return &ValidationError{"name", "must start with a letter and contain only letters, digits, '_' and '-'"}
	}
	return nil
}

// nameChars reports whether name matches ^[A-Za-z][A-Za-z0-9_-]*$. It is
// a loop, not a regexp, because every invoke checks the name it is given.
func nameChars(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return name != ""
}

type checker struct{ errs ValidationErrors }

func (v *checker) add(field, format string, args ...any) {
	v.errs = append(v.errs, &ValidationError{field, fmt.Sprintf(format, args...)})
}

func (v *checker) text(field, s string, max int, required bool) {
	switch {
	case s == "" && required:
		v.add(field, "is required")
	case len(s) > max:
		v.add(field, "must be at most %d characters", max)
	case !utf8.ValidString(s) || strings.ContainsFunc(s, isControl):
		v.add(field, "must not contain control characters")
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// Validate applies defaults to c and checks every field. It returns
// ValidationErrors naming each invalid field, or nil.
func (c *Connection) Validate() error {
	v := &checker{}
	if err := ValidateName(c.Name); err != nil {
		v.errs = append(v.errs, err.(*ValidationError))
	}
	v.text("description", c.Description, maxDescriptionLen, false)
	if len(c.Keywords) > maxKeywords {
		v.add("keywords", "at most %d keywords", maxKeywords)
	}
	for i, k := range c.Keywords {
		v.text(fmt.Sprintf("keywords[%d]", i), k, maxKeywordLen, true)
	}
	switch c.Role {
	case RoleInvoke, RoleTrigger, RoleTriggerInvoke:
	case "":
		v.add("role", "is required (INVOKE, TRIGGER or TRIGGER_INVOKE)")
	default:
		v.add("role", "must be INVOKE, TRIGGER or TRIGGER_INVOKE")
	}
	v.url("baseUrl", c.BaseURL, true)
	v.headers(c)
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < MinTimeout || c.Timeout > MaxTimeout {
		v.add("timeoutMs", "must be between %d and %d", MinTimeout.Milliseconds(), MaxTimeout.Milliseconds())
	}
	if t := c.TestRequest; t != nil {
		if t.Method == "" {
			t.Method = "GET"
		}
		t.Method = strings.ToUpper(t.Method)
		if !slices.Contains([]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}, t.Method) {
			v.add("testRequest.method", "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		}
		v.text("testRequest.relativeUri", t.RelativeURI, maxURLLen, false)
	}
	if r := c.RateLimit; r != nil {
		if !(r.RequestsPerSecond > 0 && r.RequestsPerSecond <= maxRate) || math.IsNaN(r.RequestsPerSecond) {
			v.add("rateLimit.requestsPerSecond", "must be greater than 0 and at most %g", float64(maxRate))
		}
		if r.Burst == 0 {
			r.Burst = max(1, int(math.Ceil(r.RequestsPerSecond)))
		}
		if r.Burst < 1 || r.Burst > maxConcurrent {
			v.add("rateLimit.burst", "must be between 1 and %d", maxConcurrent)
		}
	}
	if c.MaxConcurrent < 0 || c.MaxConcurrent > maxConcurrent {
		v.add("maxConcurrent", "must be between 0 (unlimited) and %d", maxConcurrent)
	}
	v.security(&c.Security)
	if len(v.errs) > 0 {
		return v.errs
	}
	return nil
}

func (v *checker) headers(c *Connection) {
	if len(c.Headers) > maxHeaders {
		v.add("headers", "at most %d headers", maxHeaders)
	}
	for name, value := range c.Headers {
		field := "headers." + name
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			v.add(field, "is not a valid header name")
		case ForbiddenHeader(name):
			v.add(field, "may not be set on a connection (credentials belong in security)")
		case len(value) > maxHeaderValueLen || !httpguts.ValidHeaderFieldValue(value):
			v.add(field, "is not a valid header value")
		}
	}
	if len(c.ForwardHeaders) > maxHeaders {
		v.add("forwardHeaders", "at most %d headers", maxHeaders)
	}
	for i, name := range c.ForwardHeaders {
		field := fmt.Sprintf("forwardHeaders[%d]", i)
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			v.add(field, "is not a valid header name")
		case ForbiddenHeader(name):
			v.add(field, "may not be forwarded")
		}
	}
}

// url checks an absolute http(s) URL without userinfo or fragment.
func (v *checker) url(field, raw string, required bool) {
	if raw == "" {
		if required {
			v.add(field, "is required")
		}
		return
	}
	if err := CheckURL(raw); err != nil {
		v.add(field, "%v", err)
	}
}

// CheckURL reports why raw is not an acceptable target URL: an absolute
// http or https URL with a host, no userinfo, no fragment, and no numeric
// host form other than dotted-decimal IPv4 or bracketed IPv6.
func CheckURL(raw string) error {
	if len(raw) > maxURLLen {
		return fmt.Errorf("must be at most %d characters", maxURLLen)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return isControl(r) || r == ' ' || r == '\\' }) {
		return fmt.Errorf("must not contain spaces, backslashes or control characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("is not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("must be an absolute http or https URL")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("must be an absolute http or https URL with a host")
	case u.User != nil:
		return fmt.Errorf("must not contain user information; use the security policy")
	case strings.Contains(raw, "#"):
		return fmt.Errorf("must not contain a fragment")
	}
	if !validHost(u.Hostname()) {
		return fmt.Errorf("has an invalid or ambiguous host %q", u.Hostname())
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return fmt.Errorf("has an invalid port")
		}
	}
	return nil
}

// validHost accepts DNS names and canonical IP literals. It refuses the
// numeric forms that resolvers read differently (2130706433, 0177.0.0.1,
// 0x7f.1), which could make a check and a dial disagree.
func validHost(h string) bool {
	if strings.Contains(h, ":") { // IPv6 literal (brackets already removed)
		a, err := netip.ParseAddr(h)
		return err == nil && a.Zone() == ""
	}
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	last := labels[len(labels)-1]
	if last != "" && (strings.Trim(last, "0123456789") == "" || strings.HasPrefix(strings.ToLower(last), "0x")) {
		a, err := netip.ParseAddr(h)
		return err == nil && a.Is4()
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.Trim(strings.ToLower(l), "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return false
		}
	}
	return len(h) <= 253
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}

func (v *checker) security(s *Security) {
	before := len(v.errs)
	allowed, ok := PolicyFields[s.Policy]
	if !ok {
		if s.Policy == "" {
			v.add("security.policy", "is required")
		} else {
			v.add("security.policy", "unknown policy %q (NONE, BASIC, API_KEY, OAUTH2_CLIENT_CREDENTIALS, OAUTH2_PASSWORD, OAUTH2_AUTHORIZATION_CODE)", s.Policy)
		}
		return
	}
	for _, f := range s.present() {
		if !slices.Contains(allowed, f) {
			v.add("security."+f, "is not a field of policy %s", s.Policy)
		}
	}
	if len(v.errs) > before {
		return
	}
	for _, f := range SecretFields {
		if len(s.Secret(f).Reveal()) > maxSecretLen {
			v.add("security."+f, "must be at most %d bytes", maxSecretLen)
		}
	}
	switch s.Policy {
	case PolicyBasic:
		v.text("security.username", s.Username, maxShortField, true)
		v.requireSecret("security.password", s.Password)
	case PolicyAPIKey:
		v.apiKey(s)
	case PolicyClientCredentials, PolicyPassword, PolicyAuthorizationCode:
		v.oauth(s)
	}
}

func (v *checker) requireSecret(field string, s Secret) {
	if !s.IsSet() {
		v.add(field, "is required")
	}
}

func (v *checker) apiKey(s *Security) {
	v.requireSecret("security.key", s.Key)
	if strings.ContainsAny(s.Key.Reveal(), "\r\n\x00") {
		v.add("security.key", "must not contain CR, LF or NUL")
	}
	switch s.In {
	case "":
		s.In = InHeader
	case InHeader, InQuery:
	default:
		v.add("security.in", "must be HEADER or QUERY")
		return
	}
	if s.Name == "" {
		if s.In == InQuery {
			v.add("security.name", "is required when in is QUERY")
			return
		}
		s.Name = "Authorization"
		if s.ValuePrefix == nil {
			prefix := "Bearer "
			s.ValuePrefix = &prefix
		}
	}
	if s.ValuePrefix == nil {
		empty := ""
		s.ValuePrefix = &empty
	}
	if s.In == InHeader {
		if !httpguts.ValidHeaderFieldName(s.Name) {
			v.add("security.name", "is not a valid header name")
		} else if !strings.EqualFold(s.Name, "Authorization") && ForbiddenHeader(s.Name) {
			v.add("security.name", "may not be used for an API key")
		}
	} else {
		v.text("security.name", s.Name, maxShortField, true)
	}
	if len(*s.ValuePrefix) > maxShortField || !httpguts.ValidHeaderFieldValue(*s.ValuePrefix) {
		v.add("security.valuePrefix", "is not a valid header value prefix")
	}
}

func (v *checker) oauth(s *Security) {
	v.url("security.tokenUrl", s.TokenURL, true)
	if s.Policy == PolicyAuthorizationCode {
		v.url("security.authorizationUrl", s.AuthorizationURL, true)
		if s.Issuer != "" {
			v.text("security.issuer", s.Issuer, maxURLLen, true)
		}
	}
	v.text("security.clientId", s.ClientID, maxShortField, true)
	switch s.ClientAuth {
	case "":
		s.ClientAuth = ClientAuthBasic
	case ClientAuthBasic, ClientAuthBody, ClientAuthPrivateKeyJWT:
	default:
		v.add("security.clientAuth", "must be BASIC_HEADER, BODY or PRIVATE_KEY_JWT")
	}
	if s.ClientAuth == ClientAuthPrivateKeyJWT {
		v.requireSecret("security.privateKeyPem", s.PrivateKeyPEM)
		if s.PrivateKeyPEM.IsSet() {
			if _, err := ParsePrivateKey(s.PrivateKeyPEM.Reveal()); err != nil {
				v.add("security.privateKeyPem", "%v", err)
			}
		}
		if s.ClientSecret.IsSet() {
			v.add("security.clientSecret", "is not used with clientAuth PRIVATE_KEY_JWT")
		}
		v.text("security.keyId", s.KeyID, maxShortField, false)
	} else {
		v.requireSecret("security.clientSecret", s.ClientSecret)
		if s.PrivateKeyPEM.IsSet() {
			v.add("security.privateKeyPem", "is used only with clientAuth PRIVATE_KEY_JWT")
		}
		if s.KeyID != "" {
			v.add("security.keyId", "is used only with clientAuth PRIVATE_KEY_JWT")
		}
	}
	if s.Policy == PolicyPassword {
		v.text("security.username", s.Username, maxShortField, true)
		v.requireSecret("security.password", s.Password)
	}
	if len(s.Scopes) > maxScopes {
		v.add("security.scopes", "at most %d scopes", maxScopes)
	}
	for i, sc := range s.Scopes {
		if sc == "" || len(sc) > maxScopeLen || strings.ContainsFunc(sc, func(r rune) bool {
			return r <= 0x20 || r == '"' || r == '\\' || r >= 0x7f
		}) {
			v.add(fmt.Sprintf("security.scopes[%d]", i), "is not a valid scope token")
		}
	}
	v.text("security.audience", s.Audience, maxURLLen, false)
	if len(s.ExtraParams) > maxParams {
		v.add("security.extraParams", "at most %d parameters", maxParams)
	}
	for k, val := range s.ExtraParams {
		field := "security.extraParams." + k
		switch {
		case slices.Contains(reservedParams, strings.ToLower(k)):
			v.add(field, "is set by connmgr and may not be overridden")
		case k == "" || len(k) > 128:
			v.add("security.extraParams", "parameter names must be 1 to 128 characters")
		default:
			v.text(field, val, maxParamValueLen, false)
		}
	}
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

// CarrySecrets prepares c, the replacement of old, for validation and
// storage: c keeps the identity and bookkeeping of old, and each secret
// field that c leaves unset is copied from old when c's policy still takes
// it. It returns the names of the copied fields.
func CarrySecrets(old, c *Connection) (carried []string) {
	c.ID, c.CreatedAt, c.CreatedBy = old.ID, old.CreatedAt, old.CreatedBy
	c.Status, c.LastTest = old.Status, old.LastTest
	allowed := PolicyFields[c.Security.Policy]
	jwt := c.Security.ClientAuth == ClientAuthPrivateKeyJWT
	for _, f := range SecretFields {
		// A switch between client secret and private key leaves the other behind.
		if c.Security.Policy.OAuth() && (f == FieldClientSecret && jwt || f == FieldPrivateKeyPEM && !jwt) {
			continue
		}
		if slices.Contains(allowed, f) && !c.Security.Secret(f).IsSet() && old.Security.Secret(f).IsSet() {
			c.Security.SetSecret(f, old.Security.Secret(f))
			carried = append(carried, f)
		}
	}
	return carried
}

// CheckHostChange enforces that a credential never follows a host change:
// when a host that receives credentials differs between old and c, the
// update must have sent every secret itself (carried is empty).
func CheckHostChange(old, c *Connection, carried []string) error {
	if len(carried) == 0 {
		return nil
	}
	oldHosts := old.CredentialHosts()
	var errs ValidationErrors
	for field, h := range c.CredentialHosts() {
		if oh, ok := oldHosts[field]; !ok || oh != h { // a host that got no credentials before is a change too
			errs = append(errs, &ValidationError{field, fmt.Sprintf(
				"host changed from %q to %q: re-send the secrets (security.%s) to confirm they may go to the new host",
				oh, h, strings.Join(carried, ", security."))})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	slices.SortFunc(errs, func(a, b *ValidationError) int { return strings.Compare(a.Field, b.Field) })
	return errs
}

// ConfigChanged reports whether c's credentials or target differ from
// old's, in which case cached tokens are dropped and the status resets.
func ConfigChanged(old, c *Connection) bool {
	if old.BaseURL != c.BaseURL || old.Security.Policy != c.Security.Policy {
		return true
	}
	a, b := old.Security, c.Security
	if a.TokenURL != b.TokenURL || a.AuthorizationURL != b.AuthorizationURL || a.ClientID != b.ClientID ||
		a.Username != b.Username || a.Audience != b.Audience || a.ClientAuth != b.ClientAuth ||
		a.KeyID != b.KeyID || a.Issuer != b.Issuer || !slices.Equal(a.Scopes, b.Scopes) ||
		a.In != b.In || a.Name != b.Name || !equalPtr(a.ValuePrefix, b.ValuePrefix) ||
		!maps.Equal(a.ExtraParams, b.ExtraParams) {
		return true
	}
	for _, f := range SecretFields {
		if !a.Secret(f).Equal(b.Secret(f)) {
			return true
		}
	}
	return false
}

func equalPtr(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// InitialStatus is the status of a newly created or reconfigured connection.
func InitialStatus(p Policy) Status {
	if p == PolicyAuthorizationCode {
		return StatusNeedsConsent
	}
	return StatusDraft
}
