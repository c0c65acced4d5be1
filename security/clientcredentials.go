package security

import (
	"context"

	"github.com/connmgr/connmgr/connections"
)

// PolicyClientCredentials obtains tokens with the OAuth 2.0 client
// credentials grant (RFC 6749 §4.4).
const PolicyClientCredentials connections.Policy = "OAUTH2_CLIENT_CREDENTIALS"

// ClientCredentials is a machine-to-machine OAuth client: the client
// authenticates and receives a token for itself.
type ClientCredentials struct {
	Client
}

// Policy implements connections.Security.
func (*ClientCredentials) Policy() connections.Policy { return PolicyClientCredentials }

// Validate implements connections.Security.
func (p *ClientCredentials) Validate(v *connections.Checker) { p.validate(v, true) }

// CheckConnection checks the settings that depend on the connection.
func (p *ClientCredentials) CheckConnection(c *connections.Connection, v *connections.Checker) {
	p.checkTLS(c, v)
}

func (p *ClientCredentials) obtain(ctx context.Context, e *tokenEnv, _ *connections.Connection, _ *Token) (*Token, error) {
	return p.request(ctx, e, p.TokenURL, grant{typ: "client_credentials", scopes: true})
}
