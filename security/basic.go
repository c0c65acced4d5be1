package security

import (
	"net/http"
	"strings"

	"github.com/connmgr/connmgr/connections"
)

// PolicyBasic sends HTTP Basic authentication (RFC 7617).
const PolicyBasic connections.Policy = "BASIC"

// Basic authenticates every call with a username and password.
type Basic struct {
	Username string             `json:"username,omitempty"`
	Password connections.Secret `json:"password,omitzero" dest:"baseUrl"`
}

// Policy implements connections.Security.
func (*Basic) Policy() connections.Policy { return PolicyBasic }

// Validate implements connections.Security.
func (b *Basic) Validate(v *connections.Checker) {
	v.Text("username", b.Username, connections.MaxShortField, true)
	if strings.Contains(b.Username, ":") {
		v.Add("username", "must not contain ':' (RFC 7617)")
	}
	v.Secret("password", b.Password, true)
}

func (b *Basic) apply(req *http.Request) error {
	req.SetBasicAuth(b.Username, b.Password.Reveal())
	return nil
}
