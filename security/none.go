package security

import (
	"net/http"

	"github.com/connmgr/connmgr/connections"
)

// PolicyNone calls the target without credentials.
const PolicyNone connections.Policy = "NONE"

// None is the policy of a target that needs no credential.
type None struct{}

// Policy implements connections.Security.
func (*None) Policy() connections.Policy { return PolicyNone }

// Validate implements connections.Security: None has no fields.
func (*None) Validate(*connections.Checker) {}

func (*None) apply(*http.Request) error { return nil }
