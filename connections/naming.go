package connections

import (
	"fmt"
	"strings"
)

// Warning is something about a connection worth telling whoever wrote it
// that is not an error: the change is made all the same.
type Warning struct {
	// Code is stable: WarnNameRole, WarnNamePolicy.
	Code    string
	Message string
}

// The codes of the naming-convention warnings.
const (
	// WarnNameRole: the name's role part disagrees with the role.
	WarnNameRole = "name_role_mismatch"
	// WarnNamePolicy: the name's policy part disagrees with the policy.
	WarnNamePolicy = "name_policy_mismatch"
)

// nameWord is a word of the naming convention with what it stands for.
type nameWord struct {
	// says describes what the word stands for, for messages.
	says  string
	match func(string) bool
}

func is(names ...string) func(string) bool {
	return func(s string) bool {
		for _, n := range names {
			if s == n {
				return true
			}
		}
		return false
	}
}

func prefixed(p string) func(string) bool {
	return func(s string) bool { return strings.HasPrefix(s, p) }
}

// roleWords are the role parts of Oracle Integration's convention, by
// lower-cased word.
var roleWords = map[string]nameWord{
	"invoke":           {"role INVOKE", is(string(RoleInvoke))},
	"trigger":          {"role TRIGGER", is(string(RoleTrigger))},
	"triggerinvoke":    {"role TRIGGER_INVOKE", is(string(RoleTriggerInvoke))},
	"triggerandinvoke": {"role TRIGGER_INVOKE", is(string(RoleTriggerInvoke))},
}

// policyWords are the policy parts teams use, by lower-cased word. Policy
// names are matched as text, so that the convention needs no knowledge of
// the policies' types.
var policyWords = map[string]nameWord{
	"oauth":             {"an OAUTH2_* policy", prefixed("OAUTH2_")},
	"oauth2":            {"an OAUTH2_* policy", prefixed("OAUTH2_")},
	"oauth1":            {"an OAUTH1_* policy", prefixed("OAUTH1_")},
	"clientcredentials": {"policy OAUTH2_CLIENT_CREDENTIALS", is("OAUTH2_CLIENT_CREDENTIALS")},
	"authcode":          {"policy OAUTH2_AUTHORIZATION_CODE or OAUTH2_CUSTOM_THREE_LEGGED", is("OAUTH2_AUTHORIZATION_CODE", "OAUTH2_CUSTOM_THREE_LEGGED")},
	"authorizationcode": {"policy OAUTH2_AUTHORIZATION_CODE or OAUTH2_CUSTOM_THREE_LEGGED", is("OAUTH2_AUTHORIZATION_CODE", "OAUTH2_CUSTOM_THREE_LEGGED")},
	"ropc":              {"policy OAUTH2_PASSWORD", is("OAUTH2_PASSWORD")},
	"jwt":               {"policy OAUTH2_JWT_BEARER", is("OAUTH2_JWT_BEARER")},
	"jwtbearer":         {"policy OAUTH2_JWT_BEARER", is("OAUTH2_JWT_BEARER")},
	"tokenexchange":     {"policy OAUTH2_TOKEN_EXCHANGE", is("OAUTH2_TOKEN_EXCHANGE")},
	"basic":             {"policy BASIC", is("BASIC")},
	"apikey":            {"policy API_KEY", is("API_KEY")},
	"none":              {"policy NONE", is("NONE")},
	"noauth":            {"policy NONE", is("NONE")},
	"nosecurity":        {"policy NONE", is("NONE")},
	"aws":               {"policy AWS_SIGV4", is("AWS_SIGV4")},
	"sigv4":             {"policy AWS_SIGV4", is("AWS_SIGV4")},
	"awssigv4":          {"policy AWS_SIGV4", is("AWS_SIGV4")},
}

// NameWarnings checks c's name against Oracle Integration's convention
// Conn_<ADAPTER>_<target>_<Role>_<Policy> (Conn_REST_Orders_TriggerInvoke_OAuth;
// the target may hold underscores). A name of that shape whose role part
// (Invoke, Trigger, TriggerInvoke) or policy part (OAuth, OAuth1, Basic,
// ApiKey, None, AWS, ...; any case) says something else than c's role or
// policy gets a warning. Names of another shape, and parts that are not
// words of the convention, get none: they may mean anything.
func NameWarnings(c *Connection) []Warning {
	parts := strings.Split(c.Name, "_")
	if len(parts) < 5 || !strings.EqualFold(parts[0], "Conn") {
		return nil
	}
	var out []Warning
	role, policy := parts[len(parts)-2], parts[len(parts)-1]
	if w, ok := roleWords[strings.ToLower(role)]; ok && c.Role != "" && !w.match(string(c.Role)) {
		out = append(out, Warning{WarnNameRole, fmt.Sprintf(
			"the name says %q (%s) but the connection's role is %s; rename it or change the role", role, w.says, c.Role)})
	}
	if w, ok := policyWords[strings.ToLower(policy)]; ok && c.Policy() != "" && !w.match(string(c.Policy())) {
		out = append(out, Warning{WarnNamePolicy, fmt.Sprintf(
			"the name says %q (%s) but the connection's policy is %s; rename it or change the policy", policy, w.says, c.Policy())})
	}
	return out
}
