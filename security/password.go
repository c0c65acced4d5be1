package security

import (
	"context"
	"net/url"

	"github.com/connmgr/connmgr/connections"
)

// PolicyPassword obtains tokens with the resource owner password
// credentials grant (RFC 6749 §4.3), Oracle Integration's Resource Owner
// Password policy.
const PolicyPassword connections.Policy = "OAUTH2_PASSWORD"

// Password is an OAuth client that obtains tokens for a user with the
// user's own username and password. The password goes only to the token
// endpoint.
type Password struct {
	Client
	Username string             `json:"username,omitempty"`
	Password connections.Secret `json:"password,omitzero" dest:"tokenUrl"`
}

// Policy implements connections.Security.
func (*Password) Policy() connections.Policy { return PolicyPassword }

// Validate implements connections.Security.
func (p *Password) Validate(v *connections.Checker) {
	p.validate(v, true)
	v.Text("username", p.Username, connections.MaxShortField, true)
	v.Secret("password", p.Password, true)
}

// CheckConnection checks the settings that depend on the connection.
func (p *Password) CheckConnection(c *connections.Connection, v *connections.Checker) {
	p.checkTLS(c, v)
}

func (p *Password) obtain(ctx context.Context, e *tokenEnv, _ *connections.Connection, _ *Token) (*Token, error) {
	return p.request(ctx, e, p.TokenURL, grant{typ: "password", scopes: true,
		params: url.Values{"username": {p.Username}, "password": {p.Password.Reveal()}}})
}
