package invoke

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidRelativeURI means a relative URI could leave the base URL or
// carries something no upstream should see (a dot segment in any encoding,
// a control character, a backslash, a fragment, an absolute URL). The api
// maps it to 400 with code invalid_relative_uri.
var ErrInvalidRelativeURI = errors.New("invalid relative URI")

// ErrTemplate means a template's placeholders and the path parameters given
// for it differ: a placeholder without a value, or a value without a
// placeholder. The api maps it to 422.
var ErrTemplate = errors.New("relative URI template and parameters do not match")

const (
	// maxRelativeURI bounds the work Resolve does on one call.
	maxRelativeURI = 8 << 10
	// maxQuery bounds the merged query string: the base URL's, the
	// relative URI's and the extra parameters, encoded.
	maxQuery = 16 << 10
	// maxDecodeRounds bounds repeated percent-decoding. No honest path is
	// encoded this many times; a hostile one is refused rather than decoded
	// for ever.
	maxDecodeRounds = 8
)

// Target is the relative part of an outbound call.
type Target struct {
	// RelativeURI is a path in escaped (URL) form, optionally followed by
	// "?query". For the transparent form it is the raw escaped path after
	// /invoke/{name}/ plus the raw query. A leading "/" is optional; "" and
	// "/" mean the base URL itself. Characters that may not appear raw in a
	// path (space, non-ASCII, braces outside a template) are percent-encoded
	// in the result; existing percent-encoding is kept as written.
	RelativeURI string
	// Template enables {name} placeholders in the path part of RelativeURI.
	// A name matches [A-Za-z_][A-Za-z0-9_.-]*; a placeholder may be a whole
	// segment or part of one ("/orders/{id}.json").
	Template bool
	// PathParams are the placeholder values; each is percent-encoded as ONE
	// path segment: '/', '?', '#' and '%' in a value are data, never
	// structure. A value that is empty, or a dot segment in any encoding,
	// is refused.
	PathParams map[string]string
	// Query holds extra query parameters (repeated values allowed), merged
	// after the base URL's query and RelativeURI's own query.
	Query url.Values
}

// Resolve returns base joined with t: the base's scheme, userinfo, host and
// port, the base path followed by t's path (the base path is treated as a
// directory whether or not it ends in "/"), and the query made of the base
// URL's query, then RelativeURI's query, then t.Query (keys sorted), all
// re-encoded. The result's RawPath is set, so encoded slashes in parameter
// values survive String and EscapedPath. The relative URI may be at most
// 8 KiB long, the merged query at most 16 KiB.
//
// Errors wrap ErrInvalidRelativeURI or ErrTemplate and give a short reason
// without echoing the input. A base URL that is nil or not absolute with a
// host is a configuration error and wraps neither.
//
// A first path segment containing ':' reads as a URI scheme ("evil.com:80/x"
// like "mailto:x") and is refused as an absolute URL; write "/a:b" for a
// path segment with a colon. An '@' in the path is data: with no "//" and
// no scheme there is no authority for it to be userinfo of.
func Resolve(base *url.URL, t Target) (*url.URL, error) {
	if base == nil || base.Scheme == "" || base.Host == "" || base.Opaque != "" {
		return nil, errors.New("invoke: base URL must be absolute with a host")
	}
	rel := t.RelativeURI
	switch {
	case len(rel) > maxRelativeURI:
		return nil, invalid("is longer than 8 KiB")
	case strings.ContainsRune(rel, '#'):
		// Only a raw '#' starts a fragment; %23 is data in a segment.
		return nil, invalid("contains a fragment")
	case strings.IndexFunc(rel, unicode.IsControl) >= 0:
		return nil, invalid("contains a control character")
	case strings.ContainsRune(rel, '\\'):
		// Browsers and some servers read '\' as '/', so "\\host" and
		// "/\host" are network-path references to them.
		return nil, invalid("contains a backslash")
	}
	rawPath, rawQuery, _ := strings.Cut(rel, "?")
	if strings.HasPrefix(rawPath, "//") {
		return nil, invalid("starts with // (a reference to another host)")
	}
	if first, _, _ := strings.Cut(rawPath, "/"); strings.ContainsRune(first, ':') {
		return nil, invalid("is an absolute URL")
	}
	path, err := buildPath(strings.TrimPrefix(rawPath, "/"), t)
	if err != nil {
		return nil, err
	}
	query, err := mergeQuery(base.RawQuery, rawQuery, t.Query)
	if err != nil {
		return nil, err
	}

	joined := base.EscapedPath()
	if path != "" {
		joined = strings.TrimSuffix(joined, "/") + "/" + path
	}
	u := *base
	if u.Path, err = url.PathUnescape(joined); err != nil {
		return nil, fmt.Errorf("invoke: base URL path: %w", err)
	}
	u.RawPath = joined
	u.RawQuery = query
	u.ForceQuery, u.Fragment, u.RawFragment = false, "", ""

	// Belt and braces: whatever the checks above missed, the result must
	// read back as a URL for the same host.
	back, err := url.Parse(u.String())
	if err != nil || back.Host != base.Host {
		return nil, invalid("does not keep the base URL's host")
	}
	return &u, nil
}

// piece is a run of literal escaped text or a placeholder name.
type piece struct {
	text  string
	param bool
}

// buildPath returns the escaped path for p (RelativeURI's path without its
// leading "/"), with placeholders replaced when t.Template is set.
func buildPath(p string, t Target) (string, error) {
	if p == "" {
		return "", unused(t.PathParams, nil)
	}
	var used map[string]bool // of placeholders; made at the first one
	segs := strings.Split(p, "/")
	var b strings.Builder
	b.Grow(len(p) + 16)
	var buf [4]piece
	for i, seg := range segs {
		if seg == "" && i < len(segs)-1 {
			// "a//b" means nothing useful and some servers fold it to
			// "a/b"; a trailing "/" is kept because APIs tell them apart.
			return "", invalid("contains an empty path segment")
		}
		pieces, err := splitTemplate(seg, t.Template, buf[:])
		if err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteByte('/')
		}
		start := b.Len() // of the segment in b
		for j, pc := range pieces {
			if pc.param {
				v := t.PathParams[pc.text]
				if v == "" {
					return "", mismatch("placeholder {%s} has no value", short(pc.text))
				}
				if used == nil {
					used = map[string]bool{}
				}
				used[pc.text] = true
				if d, reason := decode(v); reason != "" {
					return "", invalid("value of {%s} %s", short(pc.text), reason)
				} else if hasDotSegment(d) {
					// Encoded as one segment it cannot climb out here, but a
					// server that decodes %2F before normalising would read
					// "../admin" as a path.
					return "", invalid("value of {%s} holds a dot segment", short(pc.text))
				}
				b.WriteString(url.PathEscape(v))
				continue
			}
			if !validPercent(pc.text) {
				return "", invalid("contains invalid percent-encoding")
			}
			if reason := checkLiteral(pc.text, j == 0, j == len(pieces)-1); reason != "" {
				return "", invalid("%s", reason)
			}
			b.WriteString(escapeLiteral(pc.text))
		}
		// A segment of several pieces is checked once assembled too,
		// split at '/' like a value: "{a}{b}" with "." and "." is "..",
		// "..{a}" with "/x" is "..%2Fx", and a value ending in "%" before
		// literal "2e" decodes, twice, to ".". A single piece was checked
		// whole above, and escaping does not change what it decodes to.
		if len(pieces) > 1 {
			if d, reason := decode(b.String()[start:]); reason != "" {
				return "", invalid("%s", reason)
			} else if hasDotSegment(d) {
				return "", invalid("contains a dot segment")
			}
		}
	}
	return b.String(), unused(t.PathParams, used)
}

// unused reports the first (in sorted order) parameter no placeholder used.
func unused(params map[string]string, used map[string]bool) error {
	var extra []string
	for name := range params {
		if !used[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	return mismatch("parameter %s is not used in the template", clip(slices.Min(extra)))
}

// splitTemplate splits one escaped segment into literal text and
// placeholders. Without a template the whole segment is literal and braces
// are ordinary characters.
func splitTemplate(seg string, template bool, buf []piece) ([]piece, error) {
	ps := buf[:0]
	if !template {
		return append(ps, piece{text: seg}), nil
	}
	for seg != "" {
		i := strings.IndexAny(seg, "{}")
		if i < 0 {
			ps = append(ps, piece{text: seg})
			break
		}
		if seg[i] == '}' {
			return nil, invalid("has a '}' without a '{'")
		}
		if i > 0 {
			ps = append(ps, piece{text: seg[:i]})
		}
		n := strings.IndexByte(seg[i:], '}')
		if n < 0 {
			return nil, invalid("has a '{' without a '}'")
		}
		name := seg[i+1 : i+n]
		if !validName(name) {
			return nil, invalid("has a malformed placeholder")
		}
		ps = append(ps, piece{text: name, param: true})
		seg = seg[i+n+1:]
	}
	return ps, nil
}

// validName reports whether s matches [A-Za-z_][A-Za-z0-9_.-]*.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return s != ""
}

// checkLiteral checks literal escaped text. Its decoded form is split at
// '/' as well, because a server that decodes %2F before normalising would
// read "..%2F" as "../". A part that touches a placeholder is not a whole
// segment and is left to the check of the assembled segment.
func checkLiteral(text string, atStart, atEnd bool) string {
	d, reason := decode(text)
	if reason != "" {
		return reason
	}
	// Each '/'-separated part of the decoded text, except a first or last
	// part that continues a segment begun or ended outside the text.
	for first := true; ; first = false {
		part, rest, more := strings.Cut(d, "/")
		if (!first || atStart) && (more || atEnd) && isDot(part) {
			return "contains a dot segment"
		}
		if !more {
			return ""
		}
		d = rest
	}
}

// lookalikes maps characters that Unicode normalisation (NFKC) or a lenient
// server turns into '.', '/' or '\'.
var lookalikes = strings.NewReplacer(
	"\uFF0E", ".", "\u2024", ".", "\uFE52", ".", "\u3002", ".", "\uFF61", ".",
	"\u2025", "..", "\uFE30", "..",
	"\uFF0F", "/",
	"\uFF3C", `\`, "\uFE68", `\`,
)

// decode percent-decodes s until it no longer changes and folds lookalike
// characters, returning the result or, when the result is unsafe in a path,
// why.
func decode(s string) (string, string) {
	for range maxDecodeRounds {
		d := unescape(s)
		if d != s {
			s = d
			continue
		}
		switch {
		case strings.IndexFunc(s, unicode.IsControl) >= 0:
			return "", "contains a control character"
		case !utf8.ValidString(s):
			// Also refuses overlong encodings such as %C0%AE for '.'.
			return "", "is not valid UTF-8 once decoded"
		}
		if !isASCII(s) {
			s = lookalikes.Replace(s) // every lookalike is outside ASCII
		}
		if strings.ContainsRune(s, '\\') {
			return "", "contains a backslash"
		}
		return s, ""
	}
	return "", "is percent-encoded too many times"
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// hasDotSegment reports whether decoded text, split at '/', holds a "."
// or ".." segment.
func hasDotSegment(d string) bool {
	for part := range strings.SplitSeq(d, "/") {
		if isDot(part) {
			return true
		}
	}
	return false
}

// isDot reports whether a decoded segment is "." or "..", ignoring a
// ";parameter" suffix that servers such as Tomcat strip ("..;/"), and
// what follows a '?' or '#', which a server that decodes before it parses
// reads as the query or fragment ("..%3F").
func isDot(seg string) bool {
	if i := strings.IndexAny(seg, ";?#"); i >= 0 {
		seg = seg[:i]
	}
	return seg == "." || seg == ".."
}

// unescape decodes every well-formed %XX in s and keeps the rest, so that
// a layer of invalid encoding cannot hide a valid one beneath it from the
// checks.
func unescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

// validPercent reports whether every '%' in s starts a %XX escape.
func validPercent(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

// escapeLiteral percent-encodes the bytes of escaped path text that may not
// appear raw in a path segment (RFC 3986 pchar), keeping %XX escapes.
// Most text needs no escaping and is returned as it is, without copying.
func escapeLiteral(s string) string {
	const upper = "0123456789ABCDEF"
	i := 0
	for i < len(s) && pathChar(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if pathChar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upper[c>>4])
		b.WriteByte(upper[c&15])
	}
	return b.String()
}

// pathChar reports whether c may appear raw in escaped path text: an RFC
// 3986 pchar, or the '%' of an escape.
func pathChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-._~!$&'()*+,;=:@%", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// mergeQuery returns the base query, the relative query and the extra
// parameters (keys sorted, values in order), re-encoded as url.Values
// would encode them but without reordering.
func mergeQuery(baseQuery, relQuery string, extra url.Values) (string, error) {
	var pairs []string
	// size is the length of every pair given so far joined by '&' (-1 for
	// none); pairs are kept while it is within maxQuery.
	size := -1
	add := func(k, v string) {
		if size > maxQuery {
			return // too long already: no need to encode the rest
		}
		pair := url.QueryEscape(k) + "=" + url.QueryEscape(v)
		size += len(pair) + 1
		if size <= maxQuery {
			pairs = append(pairs, pair)
		}
	}
	if reason := eachPair(baseQuery, add); reason != "" {
		return "", fmt.Errorf("invoke: base URL query %s", reason)
	}
	if reason := eachPair(relQuery, add); reason != "" {
		return "", invalid("query %s", reason)
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		for _, v := range extra[k] {
			if hasControl(k) || hasControl(v) {
				return "", invalid("query parameter contains a control character")
			}
			add(k, v)
		}
	}
	if size > maxQuery {
		// Checked here, not on the joined result: the pairs past the
		// limit were not kept.
		return "", invalid("has a query longer than %d KiB", maxQuery>>10)
	}
	return strings.Join(pairs, "&"), nil
}

// eachPair decodes the key=value pairs of an escaped query and passes them
// to add. Unlike url.ParseQuery it keeps their order and treats ';' as data.
func eachPair(q string, add func(k, v string)) string {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		switch {
		case err1 != nil || err2 != nil:
			return "contains invalid percent-encoding"
		case hasControl(k) || hasControl(v):
			return "contains a control character"
		}
		add(k, v)
	}
	return ""
}

// hasControl reports whether s, percent-decoded up to maxDecodeRounds
// times, contains a control character. Query values are data, so a
// backslash or a dot is fine there; CR, LF and NUL are not.
func hasControl(s string) bool {
	for range maxDecodeRounds {
		if strings.IndexFunc(s, unicode.IsControl) >= 0 {
			return true
		}
		d := unescape(s)
		if d == s {
			return false
		}
		s = d
	}
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

// short cuts s for an error message, so that a huge input is not echoed
// back.
func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// clip quotes s, cut short, for an error message.
func clip(s string) string { return fmt.Sprintf("%q", short(s)) }

// invalid returns an error wrapping ErrInvalidRelativeURI with a reason.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRelativeURI, fmt.Sprintf(format, args...))
}

// mismatch returns an error wrapping ErrTemplate with a reason.
func mismatch(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrTemplate, fmt.Sprintf(format, args...))
}
