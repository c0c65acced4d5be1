package security

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/connmgr/connmgr/connections"
)

// PolicyTokenExchange obtains tokens by OAuth 2.0 token exchange (RFC
// 8693).
const PolicyTokenExchange connections.Policy = "OAUTH2_TOKEN_EXCHANGE"

// The RFC 8693 grant and its default subject token type.
const (
	grantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	maxSubjectChain        = 8
	subjectConnectionField = "security.subjectConnection"
)

// TokenExchange trades a subject token for a token of its own: the
// subjectToken secret, or the current token of the connection named by
// subjectConnection, which the token manager obtains (and refreshes) as
// usual. Every exchange uses the subject token current at that moment, so
// a refresh after the subject's token changed sends the new one. The
// client authenticates as Client says; audience and scopes are Client's.
type TokenExchange struct {
	Client
	// SubjectToken is a fixed subject token; exactly one of it and
	// SubjectConnection is set.
	SubjectToken connections.Secret `json:"subjectToken,omitzero" dest:"tokenUrl"`
	// SubjectConnection names the connection whose token is the subject
	// token: one of a policy that obtains access tokens. It may not be the
	// connection itself, nor lead back to it.
	SubjectConnection string `json:"subjectConnection,omitempty"`
	// SubjectTokenType is the subject token's type (default
	// urn:ietf:params:oauth:token-type:access_token).
	SubjectTokenType   string `json:"subjectTokenType,omitempty"`
	RequestedTokenType string `json:"requestedTokenType,omitempty"`
	// Resource is RFC 8693's resource: an absolute URI of the target.
	Resource string `json:"resource,omitempty"`
}

// Policy implements connections.Security.
func (*TokenExchange) Policy() connections.Policy { return PolicyTokenExchange }

// Validate implements connections.Security.
func (p *TokenExchange) Validate(v *connections.Checker) {
	p.validate(v, true)
	switch {
	case p.SubjectToken.IsSet() && p.SubjectConnection != "":
		v.Add("subjectToken", "is not used with subjectConnection: set one of them")
	case !p.SubjectToken.IsSet() && p.SubjectConnection == "":
		v.Add("subjectToken", "is required, or subjectConnection")
	case p.SubjectConnection != "":
		if err := connections.ValidateName(p.SubjectConnection); err != nil {
			v.Add("subjectConnection", "is not a connection name")
		}
	default:
		v.Secret("subjectToken", p.SubjectToken, true)
	}
	if p.SubjectTokenType == "" {
		p.SubjectTokenType = tokenTypeAccessToken
	}
	for field, typ := range map[string]string{"subjectTokenType": p.SubjectTokenType, "requestedTokenType": p.RequestedTokenType} {
		v.Text(field, typ, 256, false)
		if strings.ContainsAny(typ, " \"\\") {
			v.Add(field, "is not a token type URI")
		}
	}
	if p.Resource != "" {
		if u, err := url.Parse(p.Resource); err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(p.Resource, "#") {
			v.Add("resource", "must be an absolute URI without a fragment (RFC 8707)")
		}
		v.Text("resource", p.Resource, connections.MaxURLLen, false)
	}
}

// CheckConnection checks the settings that depend on the connection: a
// subject connection other than c itself, and TLS client authentication.
func (p *TokenExchange) CheckConnection(c *connections.Connection, v *connections.Checker) {
	p.checkTLS(c, v)
	if p.SubjectConnection != "" && p.SubjectConnection == c.Name {
		v.Add(subjectConnectionField, "may not name the connection itself")
	}
}

// CheckReferences implements connections.ReferenceChecker: a subject
// connection that exists must be one whose token may be exchanged here
// (subjectRule). The exchange checks it again, as the subject connection
// may change.
func (p *TokenExchange) CheckReferences(ctx context.Context, c *connections.Connection,
	get func(context.Context, string) (*connections.Connection, error), v *connections.Checker) error {
	if p.SubjectConnection == "" || p.SubjectConnection == c.Name {
		return nil
	}
	sc, err := get(ctx, p.SubjectConnection)
	switch {
	case errors.Is(err, connections.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("subject connection %q: %w", p.SubjectConnection, err)
	}
	if field, reason := p.subjectRule(sc); reason != "" {
		v.Add(field, "%s", reason)
	}
	return nil
}

// subjectRule says why sc may not be p's subject connection, with the
// field at fault; "" when it may. A subject's token must be an access
// token, one that its policy mints to be presented to its API
// (connections.Minter): AWS SigV4's "token" is its temporary
// credentials, secret access key included, and would be given away. And
// the token may go only where it goes already: its own API and the
// endpoints its credentials were entered for. Otherwise anyone who may
// create a connection could have any other connection's token sent to a
// token URL of their choosing. The reasons hold names, policies and
// origins, never a secret.
func (p *TokenExchange) subjectRule(sc *connections.Connection) (field, reason string) {
	if _, ok := sc.Security.(connections.Minter); !ok || !HasTokens(sc.Security) {
		return subjectConnectionField, fmt.Sprintf("the subject connection %q (policy %s) has no access token to exchange: "+
			"a subject connection must be of a policy that obtains access tokens (%s)", sc.Name, sc.Policy(),
			strings.Join(policiesWhere(func(s connections.Security) bool { _, ok := s.(connections.Minter); return ok }), ", "))
	}
	if o := connections.Origin(p.TokenURL); !slices.Contains(tokenOrigins(sc), o) {
		return "security.tokenUrl", fmt.Sprintf("the subject connection %q's token may not be sent to %s: "+
			"tokenUrl must be on an origin that connection's token already goes to (%s)",
			sc.Name, o, strings.Join(tokenOrigins(sc), ", "))
	}
	return "", ""
}

// UnusedSecrets implements connections.UnusedSecrets.
func (p *TokenExchange) UnusedSecrets() []string {
	unused := p.Client.UnusedSecrets()
	if p.SubjectConnection != "" {
		unused = append(unused, "subjectToken")
	}
	return unused
}

func (p *TokenExchange) obtain(ctx context.Context, e *tokenEnv, c *connections.Connection, _ *Token) (*Token, error) {
	subject, err := p.subject(ctx, e, c)
	if err != nil {
		return nil, err
	}
	params := url.Values{"subject_token": {subject}, "subject_token_type": {p.SubjectTokenType}}
	if p.RequestedTokenType != "" {
		params.Set("requested_token_type", p.RequestedTokenType)
	}
	if p.Resource != "" {
		params.Set("resource", p.Resource)
	}
	redact := *e
	redact.secrets = append(slices.Clone(e.secrets), subject)
	tok, err := p.request(ctx, &redact, p.TokenURL, grant{typ: grantTokenExchange, scopes: true, params: params})
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(tok.TokenType, "N_A") {
		// RFC 8693 §2.2.1: the issued token is not an OAuth access token;
		// it is still sent as a bearer credential.
		tok.TokenType = "Bearer"
	}
	return tok, nil
}

// subject returns the subject token: the fixed one, or the current token
// of the subject connection. A chain of subject connections that leads
// back to c is refused before any token is asked for, so that no exchange
// waits on itself.
func (p *TokenExchange) subject(ctx context.Context, e *tokenEnv, c *connections.Connection) (string, error) {
	if p.SubjectConnection == "" {
		return p.SubjectToken.Reveal(), nil
	}
	if e.manager == nil {
		return "", &TokenError{Reason: "subjectConnection cannot be resolved here", Permanent: true}
	}
	chain := []string{c.Name}
	var first *connections.Connection
	for name := p.SubjectConnection; name != ""; {
		if slices.Contains(chain, name) {
			return "", &TokenError{Reason: fmt.Sprintf("subjectConnection makes a cycle: %s → %s",
				strings.Join(chain, " → "), name), Permanent: true}
		}
		if len(chain) > maxSubjectChain {
			return "", &TokenError{Reason: "subjectConnection: the chain of subject connections is too long", Permanent: true}
		}
		sc, err := e.manager.conns.Get(ctx, name)
		switch {
		case errors.Is(err, connections.ErrNotFound):
			return "", &TokenError{Reason: fmt.Sprintf("the subject connection %q does not exist", name), Permanent: true}
		case err != nil:
			return "", &TokenError{Reason: fmt.Sprintf("the subject connection %q cannot be loaded", name)}
		}
		if first == nil {
			first = sc
		}
		chain, name = append(chain, name), ""
		if next, ok := sc.Security.(*TokenExchange); ok {
			name = next.SubjectConnection
		}
	}
	if _, reason := p.subjectRule(first); reason != "" {
		return "", &TokenError{Reason: reason, Permanent: true}
	}
	tok, err := e.manager.Token(ctx, first)
	if err != nil {
		// Transient: the subject connection may get its token back (a
		// refresh, consent) without this one changing.
		return "", &TokenError{Reason: fmt.Sprintf("the subject connection %q has no token: %s", first.Name, Reason(err))}
	}
	return tok.AccessToken.Reveal(), nil
}

// tokenOrigins returns the origins c's token may be sent to: its base URL's
// and those its secrets are entered for (its token endpoint's).
func tokenOrigins(c *connections.Connection) []string {
	out := c.Destinations([]string{"baseUrl"})
	for _, r := range c.AllSecrets() {
		for _, o := range c.Destinations(r.Dests) {
			if !slices.Contains(out, o) {
				out = append(out, o)
			}
		}
	}
	slices.Sort(out)
	return out
}
