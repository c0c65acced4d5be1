package security

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/connmgr/connmgr/connections"
)

// Templates are texts with placeholders, ${name}, that connmgr fills in
// when it sends a request of a custom policy. A name is values.NAME or
// secrets.NAME (an entry of the policy's values or secrets), one of the
// flow's own (refreshToken, accessToken, code, redirectUri, state,
// codeChallenge, codeVerifier), or base64(a:b:...), the standard base64
// of the named values joined by ':' (for an HTTP Basic header). Each
// value is encoded for where it lands; see expand.

// The placeholders of the flows.
const (
	phRefreshToken  = "refreshToken"
	phAccessToken   = "accessToken"
	phCode          = "code"
	phRedirectURI   = "redirectUri"
	phState         = "state"
	phCodeChallenge = "codeChallenge"
	phCodeVerifier  = "codeVerifier"
)

// entryName is the form of a values or secrets entry's name.
var entryName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// maxTemplate bounds a template body.
const maxTemplate = 16 << 10

// segment is a run of literal text or one placeholder of a template.
type segment struct {
	lit string
	// refs are the names the placeholder stands for: one, or those of a
	// base64(...); none for literal text.
	refs   []string
	base64 bool
	at     int // byte offset of the placeholder in the template
}

func (s segment) placeholder() bool { return len(s.refs) > 0 }

// template is a parsed template.
type template []segment

// parseTemplate splits s into literal text and placeholders. allowed
// says which names may appear; values and secrets are checked by the
// caller against the policy's entries.
func parseTemplate(s string, allowed func(ref string) bool) (template, error) {
	var t template
	for off := 0; off < len(s); {
		rest := s[off:]
		i := strings.Index(rest, "${")
		if i < 0 {
			t = append(t, segment{lit: rest})
			break
		}
		if i > 0 {
			t = append(t, segment{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("has a ${ without its closing }")
		}
		name := rest[i+2 : i+j]
		seg := segment{refs: []string{name}, at: off + i}
		if inner, ok := strings.CutPrefix(name, "base64("); ok && strings.HasSuffix(inner, ")") {
			seg.base64, seg.refs = true, strings.Split(strings.TrimSuffix(inner, ")"), ":")
		}
		for _, ref := range seg.refs {
			if !allowed(ref) {
				return nil, fmt.Errorf("has the placeholder ${%s}, which is not allowed here", clipText(name))
			}
		}
		t = append(t, seg)
		off += i + j + 1
	}
	return t, nil
}

// refs returns every name the template uses.
func (t template) refs() []string {
	var out []string
	for _, s := range t {
		out = append(out, s.refs...)
	}
	return out
}

// uses reports whether the template has the placeholder ref.
func (t template) uses(ref string) bool { return slices.Contains(t.refs(), ref) }

// with returns the text of t with each placeholder replaced by fill.
func (t template) with(fill string) string {
	var b strings.Builder
	for _, s := range t {
		if s.placeholder() {
			b.WriteString(fill)
		} else {
			b.WriteString(s.lit)
		}
	}
	return b.String()
}

// vars are the values of a request's placeholders by name.
type vars map[string]string

// value returns what placeholder s stands for.
func (v vars) value(s segment) (string, error) {
	parts := make([]string, len(s.refs))
	for i, ref := range s.refs {
		x, ok := v[ref]
		if !ok {
			return "", fmt.Errorf("${%s} has no value", ref)
		}
		parts[i] = x
	}
	if s.base64 {
		return base64.StdEncoding.EncodeToString([]byte(strings.Join(parts, ":"))), nil
	}
	return parts[0], nil
}

// expand fills in t, encoding each value with enc.
func (t template) expand(v vars, enc func(s segment, value string) (string, error)) (string, error) {
	var b strings.Builder
	for _, s := range t {
		if !s.placeholder() {
			b.WriteString(s.lit)
			continue
		}
		x, err := v.value(s)
		if err != nil {
			return "", err
		}
		if x, err = enc(s, x); err != nil {
			return "", err
		}
		b.WriteString(x)
	}
	return b.String(), nil
}

// urlTemplate is a parsed URL template: placeholders only after the
// authority, percent-encoded as a path segment's text before the query
// and as a query component within it.
type urlTemplate struct {
	t      template
	origin string
	query  int // byte offset of the '?', -1 without one
}

// parseURLTemplate parses and checks a URL template.
func parseURLTemplate(raw string, allowed func(string) bool) (*urlTemplate, error) {
	t, err := parseTemplate(raw, allowed)
	if err != nil {
		return nil, err
	}
	sample := t.with("x")
	if err := connections.CheckURL(sample); err != nil {
		return nil, err
	}
	// The authority ends at the first '/', '?' after "scheme://".
	scheme := strings.Index(raw, "://")
	end := len(raw)
	if k := strings.IndexAny(raw[scheme+3:], "/?"); k >= 0 {
		end = scheme + 3 + k
	}
	for _, s := range t {
		if s.placeholder() && s.at < end {
			return nil, fmt.Errorf("may have placeholders only after the host and port: a template reaches only its own origin")
		}
	}
	return &urlTemplate{t: t, origin: connections.Origin(sample), query: strings.IndexByte(raw, '?')}, nil
}

// expand returns the URL with its placeholders filled in.
func (u *urlTemplate) expand(v vars) (string, error) {
	out, err := u.t.expand(v, func(s segment, x string) (string, error) {
		if u.query >= 0 && s.at > u.query {
			return url.QueryEscape(x), nil
		}
		return url.PathEscape(x), nil
	})
	if err != nil {
		return "", err
	}
	if connections.Origin(out) != u.origin {
		return "", fmt.Errorf("the filled-in URL does not keep the template's origin")
	}
	return out, nil
}

// bodyKind says how a body template's placeholders are encoded.
type bodyKind int

const (
	bodyForm bodyKind = iota // application/x-www-form-urlencoded
	bodyJSON                 // application/json, +json
	bodyText                 // anything else: no placeholders
)

// kindOf returns the body kind of a Content-Type.
func kindOf(contentType string) bodyKind {
	mt, _, err := mime.ParseMediaType(contentType)
	switch {
	case contentType == "" || err == nil && mt == "application/x-www-form-urlencoded":
		return bodyForm
	case err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json")):
		return bodyJSON
	}
	return bodyText
}

// RequestTemplate is an HTTP request of a custom policy, each part a
// template.
type RequestTemplate struct {
	// Method is POST (default), GET or PUT.
	Method string `json:"method,omitempty"`
	// URL is the endpoint. Placeholders may appear only in its path and
	// query, so that it cannot reach another origin.
	URL     string            `json:"url,omitempty" url:"token"`
	Headers map[string]string `json:"headers,omitempty"`
	// Body is form-encoded (default) or JSON, as the Content-Type header
	// says; other types may not hold placeholders.
	Body string `json:"body,omitempty"`
}

// compiledRequest is a checked RequestTemplate.
type compiledRequest struct {
	method  string
	url     *urlTemplate
	headers map[string]template
	body    template
	kind    bodyKind
}

// headers a template may not set: the transport computes them or they
// describe the hop.
var templateForbiddenHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
	"Proxy-Connection", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}

// compile checks r, reporting to v (whose paths are relative to r), and
// returns it parsed; nil when it is invalid.
func (r *RequestTemplate) compile(v *connections.Checker, allowed func(string) bool) *compiledRequest {
	errs := v.Count()
	if r.Method == "" {
		r.Method = http.MethodPost
	}
	// Exact, as every enum of the policies is (apply.in, signatureMethod):
	// HTTP methods are case-sensitive.
	if !slices.Contains([]string{http.MethodPost, http.MethodGet, http.MethodPut}, r.Method) {
		v.Add("method", "must be POST, GET or PUT, in upper case")
	}
	cr := &compiledRequest{method: r.Method, headers: map[string]template{}}
	if r.URL == "" {
		v.Add("url", "is required")
	} else if u, err := parseURLTemplate(r.URL, allowed); err != nil {
		v.Add("url", "%v", err)
	} else {
		cr.url = u
	}
	if len(r.Headers) > 32 {
		v.Add("headers", "at most 32 headers")
	}
	contentType := ""
	for name, value := range r.Headers {
		field := "headers." + name
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			v.Add(field, "is not a valid header name")
			continue
		case slices.ContainsFunc(templateForbiddenHeaders, func(h string) bool { return strings.EqualFold(h, name) }):
			v.Add(field, "is set by connmgr and may not be in a template")
			continue
		}
		t, err := parseTemplate(value, allowed)
		if err != nil {
			v.Add(field, "%v", err)
			continue
		}
		// The literal text may not hold CR, LF or NUL; placeholder values
		// are checked when the request is made.
		if lit := t.with(""); len(value) > 4096 || !httpguts.ValidHeaderFieldValue(lit) {
			v.Add(field, "is not a valid header value (no CR, LF or NUL)")
			continue
		}
		cr.headers[http.CanonicalHeaderKey(name)] = t
		if strings.EqualFold(name, "Content-Type") {
			contentType = value
		}
	}
	cr.kind = kindOf(contentType)
	if r.Body != "" {
		switch {
		case r.Method == http.MethodGet:
			v.Add("body", "must be empty with method GET")
		case len(r.Body) > maxTemplate:
			v.Add("body", "must be at most %d bytes", maxTemplate)
		default:
			if t, err := parseTemplate(r.Body, allowed); err != nil {
				v.Add("body", "%v", err)
			} else if err := checkBody(t, cr.kind); err != nil {
				v.Add("body", "%v", err)
			} else {
				cr.body = t
			}
		}
	}
	if v.Count() > errs {
		return nil
	}
	return cr
}

// checkBody checks where a body's placeholders stand: in a JSON body
// each within a string (the template holds the quotes), and the body
// valid JSON; in a body that is neither JSON nor a form, nowhere.
func checkBody(t template, kind bodyKind) error {
	switch kind {
	case bodyText:
		if len(t.refs()) > 0 {
			return fmt.Errorf("may hold placeholders only with Content-Type application/x-www-form-urlencoded or application/json")
		}
	case bodyJSON:
		inString, escaped := false, false
		for _, s := range t {
			if s.placeholder() {
				if !inString {
					return fmt.Errorf("has ${%s} outside a JSON string: put it between quotes", strings.Join(s.refs, ":"))
				}
				continue
			}
			for i := 0; i < len(s.lit); i++ {
				switch c := s.lit[i]; {
				case escaped:
					escaped = false
				case inString && c == '\\':
					escaped = true
				case c == '"':
					inString = !inString
				}
			}
		}
		if !json.Valid([]byte(t.with("x"))) {
			return fmt.Errorf("is not valid JSON")
		}
	}
	return nil
}

// jsonString escapes s as the content of a JSON string.
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// build makes the request of cr with v filled in. A value that would put
// CR, LF or NUL into a header is an error that names the placeholder,
// never the value.
func (cr *compiledRequest) build(v vars) (*http.Request, error) {
	u, err := cr.url.expand(v)
	if err != nil {
		return nil, err
	}
	var body string
	switch cr.kind {
	case bodyJSON:
		body, err = cr.body.expand(v, func(_ segment, x string) (string, error) { return jsonString(x), nil })
	default:
		body, err = cr.body.expand(v, func(_ segment, x string) (string, error) { return url.QueryEscape(x), nil })
	}
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(cr.method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("the filled-in URL is not valid")
	}
	if cr.body != nil {
		req.Body = http.NoBody
		if body != "" {
			req, _ = http.NewRequest(cr.method, u, strings.NewReader(body))
		}
		if cr.kind == bodyForm && cr.headers["Content-Type"] == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	req.Header.Set("Accept", "application/json")
	for name, t := range cr.headers {
		value, err := t.expand(v, func(s segment, x string) (string, error) {
			if strings.ContainsAny(x, "\r\n\x00") {
				return "", fmt.Errorf("the value of ${%s} would put CR, LF or NUL into header %s", strings.Join(s.refs, ":"), name)
			}
			return x, nil
		})
		if err != nil {
			return nil, err
		}
		req.Header.Set(name, value)
	}
	return req, nil
}

// checkEntries checks the names and sizes of a policy's values and
// secrets, and that each is used by a template and each used one exists.
func checkEntries(v *connections.Checker, values map[string]string, secrets map[string]connections.Secret, used map[string]bool) {
	checkNamed(v, "values", values, used, func(field, val string) { v.Text(field, val, maxParamValue, false) })
	checkNamed(v, "secrets", secrets, used, func(field string, s connections.Secret) { v.Secret(field, s, true) })
}

// checkNamed checks the entries of the map field kind: names, use, and
// each value with check; and that every kind.NAME in used is an entry.
func checkNamed[V any](v *connections.Checker, kind string, entries map[string]V, used map[string]bool, check func(field string, val V)) {
	for name, val := range entries {
		field := kind + "." + name
		switch {
		case !entryName.MatchString(name):
			v.Add(field, "must be a name of letters, digits and '_' (at most 64), starting with a letter")
		case !used[field]:
			v.Add(field, "is not used by any template")
		default:
			check(field, val)
		}
	}
	for ref := range used {
		if k, name, ok := strings.Cut(ref, "."); ok && k == kind && !hasKey(entries, name) {
			v.Add(kind, "has no entry %q, which a template uses", name)
		}
	}
}

// maxParamValue bounds a values entry.
const maxParamValue = 2048

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}
