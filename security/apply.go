package security

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/connmgr/connmgr/connections"
)

// Apply sets c's credential on req, an outbound request to c's target:
// Basic authentication, an API key in a header or the query, or an OAuth
// access token (from Token). It returns the token it used, nil for
// policies without tokens, so that a 401 can be reported to Rejected.
// A credential set by the caller under the same name is replaced.
func (m *Manager) Apply(ctx context.Context, c *connections.Connection, req *http.Request) (*Token, error) {
	s := &c.Security
	switch s.Policy {
	case connections.PolicyNone:
	case connections.PolicyBasic:
		req.SetBasicAuth(s.Username, s.Password.Reveal())
	case connections.PolicyAPIKey:
		prefix := ""
		if s.ValuePrefix != nil {
			prefix = *s.ValuePrefix
		}
		if s.In == connections.InQuery {
			req.URL.RawQuery = setQueryParam(req.URL.RawQuery, s.Name, prefix+s.Key.Reveal())
		} else {
			req.Header.Set(s.Name, prefix+s.Key.Reveal())
		}
	case connections.PolicyClientCredentials, connections.PolicyPassword, connections.PolicyAuthorizationCode:
		tok, err := m.Token(ctx, c)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", tok.authorization())
		return tok, nil
	default:
		return nil, fmt.Errorf("unknown policy %q", s.Policy)
	}
	return nil, nil
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
