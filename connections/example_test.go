package connections_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/connmgr/connmgr/connections"
)

// Validate fills in the defaults of a connection: a 30 s timeout and, for
// an API key without a name, the Authorization header with "Bearer ".
func ExampleConnection_Validate() {
	c := &connections.Connection{
		Name:    "Conn_REST_Orders_Invoke",
		Role:    connections.RoleInvoke,
		BaseURL: "https://api.example.com/v2",
		Security: connections.Security{
			Policy: connections.PolicyAPIKey,
			Key:    connections.NewSecret("k-123"),
		},
	}
	if err := c.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	s := c.Security
	fmt.Println(c.Identifier())
	fmt.Println(c.Timeout)
	fmt.Printf("%s %s %q\n", s.In, s.Name, *s.ValuePrefix)
	// Output:
	// CONN_REST_ORDERS_INVOKE
	// 30s
	// HEADER Authorization "Bearer "
}

// Validate names every invalid field, so that an API can report them all.
func ExampleConnection_Validate_errors() {
	c := &connections.Connection{
		Name:    "Conn_Orders",
		Role:    "ADMIN",
		BaseURL: "http://2130706433/",
		Security: connections.Security{
			Policy:   connections.PolicyNone,
			TokenURL: "https://auth.example.com/token",
		},
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
	// security.tokenUrl: is not a field of policy NONE
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
