package connections_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// Validate fills in the defaults of a connection: a 30 s timeout and, for
// an API key without a name, the Authorization header with "Bearer ".
func ExampleConnection_Validate() {
	key := &security.APIKey{Key: connections.NewSecret("k-123")}
	c := &connections.Connection{
		Name:     "Conn_REST_Orders_Invoke",
		Role:     connections.RoleInvoke,
		BaseURL:  "https://api.example.com/v2",
		Security: key,
	}
	if err := c.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Identifier())
	fmt.Println(c.Timeout)
	fmt.Printf("%s %s %q\n", key.In, key.Name, *key.ValuePrefix)
	// Output:
	// CONN_REST_ORDERS_INVOKE
	// 30s
	// HEADER Authorization "Bearer "
}

// Validate names every invalid field, the policy's included, so that an
// API can report them all.
func ExampleConnection_Validate_errors() {
	c := &connections.Connection{
		Name:     "Conn_Orders",
		Role:     "ADMIN",
		BaseURL:  "http://2130706433/",
		Security: &security.Basic{Username: "orders"},
	}
	var errs connections.ValidationErrors
	if errors.As(c.Validate(), &errs) {
		for _, e := range errs {
			fmt.Printf("%s: %s\n", e.Field, e.Reason)
		}
	}
	// Output:
	// role: must be INVOKE, TRIGGER or TRIGGER_INVOKE
	// baseUrl: has an invalid or ambiguous host "2130706433"
	// security.password: is required
}

// A Secret shows only a mask, however it is printed or encoded; Reveal
// returns the value.
func ExampleSecret() {
	s := connections.NewSecret("hunter2")
	b, _ := json.Marshal(struct{ Password connections.Secret }{s})
	fmt.Println(s)
	fmt.Printf("%+v %#v\n", s, s)
	fmt.Println(string(b))
	fmt.Println(s.Reveal())
	// Output:
	// ********
	// ******** ********
	// {"Password":"********"}
	// hunter2
}

// Origin is what a credential is bound to: scheme, host and port. A
// secret kept on replace may go only to origins it went to before.
func ExampleOrigin() {
	fmt.Println(connections.Origin("https://API.example.com/v2"))
	fmt.Println(connections.Origin("http://api.example.com/v2"))
	// Output:
	// https://api.example.com:443
	// http://api.example.com:80
}
