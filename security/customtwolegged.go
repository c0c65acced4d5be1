package security

import (
	"context"

	"github.com/connmgr/connmgr/connections"
)

// PolicyCustomTwoLegged obtains tokens with a token request written in
// the provider's own dialect (Oracle Integration's "OAuth Custom Two
// Legged Flow").
const PolicyCustomTwoLegged connections.Policy = "OAUTH2_CUSTOM_TWO_LEGGED"

// CustomTwoLegged is a machine-to-machine OAuth flow of templates: the
// token request (and an optional refresh request) with the connection's
// values and secrets filled in, the answer read by JSON pointers, the
// token applied as the placement says. Secrets go only to the token
// request's origin.
type CustomTwoLegged struct {
	CustomFlow
	// Secrets are named secrets the token and refresh requests use as
	// ${secrets.NAME}.
	Secrets map[string]connections.Secret `json:"secrets,omitempty" dest:"tokenRequest.url,refreshRequest.url"`
}

// Policy implements connections.Security.
func (*CustomTwoLegged) Policy() connections.Policy { return PolicyCustomTwoLegged }

// Validate implements connections.Security.
func (p *CustomTwoLegged) Validate(v *connections.Checker) {
	p.validate(v, p.Secrets, tokenPlaceholders, nil)
}

// HasSecretEntry implements connections.SecretEntries: a replace keeps
// only the stored secrets it names.
func (p *CustomTwoLegged) HasSecretEntry(path string) bool { return hasSecretEntry(p.Secrets, path) }

// obtain refreshes with the refresh request when it can, and otherwise,
// or when the refresh token is dead, makes the token request.
func (p *CustomTwoLegged) obtain(ctx context.Context, e *tokenEnv, _ *connections.Connection, prev *Token) (*Token, error) {
	tok, tried, err := p.refresh(ctx, e, p.Secrets, prev)
	if tried && (err == nil || !deadRefresh(err)) {
		return tok, err
	}
	return p.send(ctx, e, &p.TokenRequest, p.vars(p.Secrets))
}
