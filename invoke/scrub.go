package invoke

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/connmgr/connmgr/security"
)

// urlHeaders are the response headers that hold URLs a target may build
// from the request it got, credential query parameter included.
var urlHeaders = []string{"Location", "Content-Location", "Link"}

// minScrub is the shortest credential value searched for in headers;
// shorter ones would match ordinary text.
const minScrub = 4

// scrub keeps the credential a applied from going back to the caller in
// the target's headers: the credential's query parameter is removed from
// the URLs of Location, Content-Location and Link, and any header that
// still holds a credential value (raw, or percent-encoded in any way) is
// dropped, as is a RateLimit header whose name holds one.
func scrub(h http.Header, a *security.Applied) {
	if a.QueryParam != "" {
		for _, name := range urlHeaders {
			vs := h[name]
			for i, v := range vs {
				vs[i] = stripParam(v, a.QueryParam)
			}
		}
	}
	for k, vs := range h {
		// The names of the RateLimit headers that pass are the target's to
		// choose, and reach the caller canonicalised (case changed).
		if !responseHeaders[k] && nameHoldsSecret(k, a.Secrets) {
			delete(h, k)
			continue
		}
		for _, v := range vs {
			if holdsSecret(v, a.Secrets) {
				delete(h, k)
				break
			}
		}
	}
}

// nameHoldsSecret reports whether the header name holds one of secrets,
// compared in any case. Secrets shorter than minScrub are not searched for.
func nameHoldsSecret(name string, secrets []string) bool {
	lower := ""
	for _, s := range secrets {
		if len(s) < minScrub || len(s) > len(name) {
			continue
		}
		if lower == "" {
			lower = strings.ToLower(name)
		}
		if strings.Contains(lower, strings.ToLower(s)) {
			return true
		}
	}
	return false
}

// holdsSecret reports whether v holds one of secrets (see holds).
func holdsSecret(v string, secrets []string) bool {
	for _, s := range secrets {
		if holds(v, s) {
			return true
		}
	}
	return false
}

// holds reports whether v contains s raw or in a form a URL or header
// could carry it: query- or path-encoded, with upper- or lower-case hex
// digits, encoded more than once. A secret shorter than minScrub is not
// searched for.
func holds(v, s string) bool {
	if len(s) < minScrub {
		return false
	}
	for range maxDecodeRounds {
		if strings.Contains(v, s) {
			return true
		}
		// Query encoding writes a space as '+'.
		if strings.IndexByte(v, '+') >= 0 && strings.Contains(unescape(strings.ReplaceAll(v, "+", " ")), s) {
			return true
		}
		d := unescape(v)
		if d == v {
			return false
		}
		v = d
	}
	return false
}

// stripParam removes every name=... pair from the query strings in v: the
// query of a URL (Location), or of each <URL> of a Link header.
func stripParam(v, name string) string {
	if !strings.Contains(v, "<") {
		return stripQuery(v, name)
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			b.WriteString(v)
			return b.String()
		}
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			b.WriteString(v)
			return b.String()
		}
		b.WriteString(v[:i+1])
		b.WriteString(stripQuery(v[i+1:i+j], name))
		v = v[i+j:]
	}
}

// stripQuery removes name=... pairs (name compared after decoding, in any
// case) from the query of the URL u, keeping the rest as written.
func stripQuery(u, name string) string {
	q := strings.IndexByte(u, '?')
	if q < 0 {
		return u
	}
	frag := ""
	rest := u[q+1:]
	if f := strings.IndexByte(rest, '#'); f >= 0 {
		rest, frag = rest[:f], rest[f:]
	}
	var kept []string
	for _, pair := range strings.Split(rest, "&") {
		k, _, _ := strings.Cut(pair, "=")
		if dk, err := url.QueryUnescape(k); err == nil && strings.EqualFold(dk, name) || strings.EqualFold(k, name) {
			continue
		}
		if pair != "" {
			kept = append(kept, pair)
		}
	}
	out := u[:q]
	if len(kept) > 0 {
		out += "?" + strings.Join(kept, "&")
	}
	return out + frag
}
