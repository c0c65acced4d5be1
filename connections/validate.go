package connections

import (
	"fmt"
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
	// MaxNameLen bounds connection names.
	MaxNameLen = 100
	// MaxURLLen bounds every URL.
	MaxURLLen = 2048
	// MaxShortField bounds identifiers such as usernames and client ids.
	MaxShortField = 512
	// MaxSecretLen bounds each secret value.
	MaxSecretLen = 64 << 10
	// MinTimeout and MaxTimeout bound a connection's timeout.
	MinTimeout = 100 * time.Millisecond
	MaxTimeout = 10 * time.Minute

	maxDescriptionLen = 1000
	maxKeywords       = 32
	maxKeywordLen     = 64
	maxHeaders        = 32
	maxHeaderValueLen = 4096
	maxScopes         = 64
	maxScopeLen       = 256
	maxParams         = 32
	maxParamValueLen  = 2048
	maxRate           = 1e6
	maxConcurrent     = 100000
)

// ReservedParams are OAuth form parameters connmgr sets itself; a policy's
// extraParams may not override them.
var ReservedParams = []string{"grant_type", "client_id", "client_secret", "client_assertion",
	"client_assertion_type", "scope", "audience", "username", "password", "code", "code_verifier",
	"code_challenge", "code_challenge_method", "redirect_uri", "refresh_token", "state", "response_type",
	"nonce", "assertion", "subject_token", "subject_token_type", "actor_token", "actor_token_type",
	"requested_token_type", "resource"}

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

// Checker collects the invalid fields of a request. Field paths are
// relative to the Checker's prefix (see Sub).
type Checker struct {
	prefix string
	errs   *ValidationErrors
}

// NewChecker returns an empty Checker.
func NewChecker() *Checker { return &Checker{errs: &ValidationErrors{}} }

// Sub returns a Checker that reports into v with paths under field.
func (v *Checker) Sub(field string) *Checker {
	return &Checker{prefix: v.prefix + field + ".", errs: v.errs}
}

// Err returns the errors collected so far as ValidationErrors, or nil.
func (v *Checker) Err() error {
	if len(*v.errs) == 0 {
		return nil
	}
	return *v.errs
}

// Count is the number of errors collected so far.
func (v *Checker) Count() int { return len(*v.errs) }

// Add reports that field is invalid, saying why.
func (v *Checker) Add(field, format string, args ...any) {
	*v.errs = append(*v.errs, &ValidationError{v.prefix + field, fmt.Sprintf(format, args...)})
}

// Text checks a short printable text of at most max bytes.
func (v *Checker) Text(field, s string, max int, required bool) {
	switch {
	case s == "" && required:
		v.Add(field, "is required")
	case len(s) > max:
		v.Add(field, "must be at most %d characters", max)
	case !utf8.ValidString(s) || strings.ContainsFunc(s, isControl):
		v.Add(field, "must not contain control characters")
	}
}

// URL checks an absolute http(s) URL without userinfo or fragment (see
// CheckURL).
func (v *Checker) URL(field, raw string, required bool) {
	if raw == "" {
		if required {
			v.Add(field, "is required")
		}
		return
	}
	if err := CheckURL(raw); err != nil {
		v.Add(field, "%v", err)
	}
}

// Secret checks a secret's size and, when required, that it is set.
func (v *Checker) Secret(field string, s Secret, required bool) {
	switch {
	case !s.IsSet() && required:
		v.Add(field, "is required")
	case len(s.Reveal()) > MaxSecretLen:
		v.Add(field, "must be at most %d bytes", MaxSecretLen)
	}
}

// HeaderValue checks a text that goes into an HTTP header.
func (v *Checker) HeaderValue(field, s string, required bool) {
	switch {
	case s == "" && required:
		v.Add(field, "is required")
	case len(s) > maxHeaderValueLen || !httpguts.ValidHeaderFieldValue(s):
		v.Add(field, "is not a valid header value")
	}
}

// Scopes checks OAuth scope tokens (RFC 6749 §3.3).
func (v *Checker) Scopes(field string, scopes []string) {
	if len(scopes) > maxScopes {
		v.Add(field, "at most %d scopes", maxScopes)
	}
	for i, sc := range scopes {
		if sc == "" || len(sc) > maxScopeLen || strings.ContainsFunc(sc, func(r rune) bool {
			return r <= 0x20 || r == '"' || r == '\\' || r >= 0x7f
		}) {
			v.Add(fmt.Sprintf("%s[%d]", field, i), "is not a valid scope token")
		}
	}
}

// Params checks a map of extra form parameters: at most 32, names of 1 to
// 128 characters not in reserved, printable values.
func (v *Checker) Params(field string, params map[string]string, reserved []string) {
	if len(params) > maxParams {
		v.Add(field, "at most %d parameters", maxParams)
	}
	for k, val := range params {
		f := field + "." + k
		switch {
		case slices.Contains(reserved, strings.ToLower(k)):
			v.Add(f, "is set by connmgr and may not be overridden")
		case k == "" || len(k) > 128:
			v.Add(field, "parameter names must be 1 to 128 characters")
		default:
			v.Text(f, val, maxParamValueLen, false)
		}
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// Validate applies defaults to c and checks every field, its security
// policy's included. It returns ValidationErrors naming each invalid
// field, or nil.
func (c *Connection) Validate() error {
	v := NewChecker()
	if err := ValidateName(c.Name); err != nil {
		*v.errs = append(*v.errs, err.(*ValidationError))
	}
	v.Text("description", c.Description, maxDescriptionLen, false)
	if len(c.Keywords) > maxKeywords {
		v.Add("keywords", "at most %d keywords", maxKeywords)
	}
	for i, k := range c.Keywords {
		v.Text(fmt.Sprintf("keywords[%d]", i), k, maxKeywordLen, true)
	}
	switch c.Role {
	case RoleInvoke, RoleTrigger, RoleTriggerInvoke:
	case "":
		v.Add("role", "is required (INVOKE, TRIGGER or TRIGGER_INVOKE)")
	default:
		v.Add("role", "must be INVOKE, TRIGGER or TRIGGER_INVOKE")
	}
	v.URL("baseUrl", c.BaseURL, true)
	v.headers(c)
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < MinTimeout || c.Timeout > MaxTimeout {
		v.Add("timeoutMs", "must be between %d and %d", MinTimeout.Milliseconds(), MaxTimeout.Milliseconds())
	}
	if t := c.TestRequest; t != nil {
		if t.Method == "" {
			t.Method = "GET"
		}
		t.Method = strings.ToUpper(t.Method)
		if !slices.Contains([]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}, t.Method) {
			v.Add("testRequest.method", "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		}
		v.Text("testRequest.relativeUri", t.RelativeURI, MaxURLLen, false)
	}
	if r := c.RateLimit; r != nil {
		if !(r.RequestsPerSecond > 0 && r.RequestsPerSecond <= maxRate) || math.IsNaN(r.RequestsPerSecond) {
			v.Add("rateLimit.requestsPerSecond", "must be greater than 0 and at most %g", float64(maxRate))
		}
		if r.Burst == 0 {
			r.Burst = max(1, int(math.Ceil(r.RequestsPerSecond)))
		}
		if r.Burst < 1 || r.Burst > maxConcurrent {
			v.Add("rateLimit.burst", "must be between 1 and %d", maxConcurrent)
		}
	}
	if c.MaxConcurrent < 0 || c.MaxConcurrent > maxConcurrent {
		v.Add("maxConcurrent", "must be between 0 (unlimited) and %d", maxConcurrent)
	}
	if len(c.RejectedStatuses) > 8 {
		v.Add("tokenRejectedStatuses", "at most 8 statuses")
	}
	for i, st := range c.RejectedStatuses {
		if st < 400 || st > 499 {
			v.Add(fmt.Sprintf("tokenRejectedStatuses[%d]", i), "must be a 4xx status")
		}
	}
	if c.TLS != nil {
		c.TLS.validate(v.Sub("tls"))
	}
	if c.Security == nil {
		v.Add("security", "is required; use {\"policy\": \"NONE\"} for a target without credentials")
	} else {
		c.Security.Validate(v.Sub("security"))
		if cc, ok := c.Security.(ConnectionChecker); ok {
			cc.CheckConnection(c, v)
		}
	}
	return v.Err()
}

func (v *Checker) headers(c *Connection) {
	if len(c.Headers) > maxHeaders {
		v.Add("headers", "at most %d headers", maxHeaders)
	}
	for name, value := range c.Headers {
		field := "headers." + name
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			v.Add(field, "is not a valid header name")
		case ForbiddenHeader(name):
			v.Add(field, "may not be set on a connection (credentials belong in security)")
		case len(value) > maxHeaderValueLen || !httpguts.ValidHeaderFieldValue(value):
			v.Add(field, "is not a valid header value")
		}
	}
	if len(c.ForwardHeaders) > maxHeaders {
		v.Add("forwardHeaders", "at most %d headers", maxHeaders)
	}
	for i, name := range c.ForwardHeaders {
		field := fmt.Sprintf("forwardHeaders[%d]", i)
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			v.Add(field, "is not a valid header name")
		case ForbiddenHeader(name):
			v.Add(field, "may not be forwarded")
		}
	}
}

// CheckURL reports why raw is not an acceptable target URL: an absolute
// http or https URL with a host, no userinfo, no fragment, and no numeric
// host form other than dotted-decimal IPv4 or bracketed IPv6.
func CheckURL(raw string) error {
	if len(raw) > MaxURLLen {
		return fmt.Errorf("must be at most %d characters", MaxURLLen)
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
