package security

import (
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/connmgr/connmgr/connections"
)

// PolicyAPIKey sends a static key in a header or the query.
const PolicyAPIKey connections.Policy = "API_KEY"

// KeyLocation says where an API key goes.
type KeyLocation string

// The places an API key can go.
const (
	InHeader KeyLocation = "HEADER"
	InQuery  KeyLocation = "QUERY"
)

// APIKey authenticates every call with a static key.
type APIKey struct {
	Key connections.Secret `json:"key,omitzero" dest:"baseUrl"`
	// In is HEADER (default) or QUERY.
	In KeyLocation `json:"in,omitempty"`
	// Name is the header or query parameter; default Authorization.
	Name string `json:"name,omitempty"`
	// ValuePrefix goes before the key: default "Bearer " when Name is
	// omitted, else "".
	ValuePrefix *string `json:"valuePrefix,omitempty"`
}

// Policy implements connections.Security.
func (*APIKey) Policy() connections.Policy { return PolicyAPIKey }

// Validate implements connections.Security.
func (k *APIKey) Validate(v *connections.Checker) {
	v.Secret("key", k.Key, true)
	if strings.ContainsAny(k.Key.Reveal(), "\r\n\x00") {
		v.Add("key", "must not contain CR, LF or NUL")
	}
	defaulted, ok := checkPlacement(v, &k.In, &k.Name, "may not be used for an API key")
	if !ok {
		return
	}
	if k.ValuePrefix == nil {
		prefix := ""
		if defaulted {
			prefix = "Bearer "
		}
		k.ValuePrefix = &prefix
	}
	if len(*k.ValuePrefix) > connections.MaxShortField || !httpguts.ValidHeaderFieldValue(*k.ValuePrefix) {
		v.Add("valuePrefix", "is not a valid header value prefix")
	}
}

// checkPlacement checks where a credential goes (API key, custom flow
// token): in, default HEADER, and name, default Authorization (reported
// as defaulted) and required with QUERY; a header name must be valid and
// not one connmgr sets itself (refused says why). ok is false when in or
// name is missing or wrong, and the rest cannot be checked.
func checkPlacement(v *connections.Checker, in *KeyLocation, name *string, refused string) (defaulted, ok bool) {
	switch *in {
	case "":
		*in = InHeader
	case InHeader, InQuery:
	default:
		v.Add("in", "must be HEADER or QUERY")
		return false, false
	}
	if *name == "" {
		if *in == InQuery {
			v.Add("name", "is required when in is QUERY")
			return false, false
		}
		*name, defaulted = "Authorization", true
	}
	if *in == InHeader {
		if !httpguts.ValidHeaderFieldName(*name) {
			v.Add("name", "is not a valid header name")
		} else if !strings.EqualFold(*name, "Authorization") && connections.ForbiddenHeader(*name) {
			v.Add("name", "%s", refused)
		}
	} else {
		v.Text("name", *name, connections.MaxShortField, true)
	}
	return defaulted, true
}

func (k *APIKey) apply(req *http.Request) error {
	prefix := ""
	if k.ValuePrefix != nil {
		prefix = *k.ValuePrefix
	}
	if k.In == InQuery {
		req.URL.RawQuery = setQueryParam(req.URL.RawQuery, k.Name, prefix+k.Key.Reveal())
		return nil
	}
	req.Header.Set(k.Name, prefix+k.Key.Reveal())
	return nil
}

// queryParam returns the query parameter that carries the key, "" when the
// key goes in a header.
func (k *APIKey) queryParam() string {
	if k.In == InQuery {
		return k.Name
	}
	return ""
}

// setQueryParam removes every name=... pair from the raw query and appends
// name=value, keeping the other pairs exactly as they were.
func setQueryParam(rawQuery, name, value string) string {
	var kept []string
	for _, pair := range strings.Split(rawQuery, "&") {
		if pair == "" {
			continue
		}
		k, _, _ := strings.Cut(pair, "=")
		if dk, err := url.QueryUnescape(k); err == nil && dk == name || k == name {
			continue
		}
		kept = append(kept, pair)
	}
	return strings.Join(append(kept, url.QueryEscape(name)+"="+url.QueryEscape(value)), "&")
}
