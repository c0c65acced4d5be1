package security

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/connmgr/connmgr/connections"
)

// registry lists the security policies, in the order the API documents
// them. Adding a policy means adding its file and its line here.
var registry = []struct {
	name connections.Policy
	new  func() connections.Security
}{
	{PolicyNone, func() connections.Security { return &None{} }},
	{PolicyBasic, func() connections.Security { return &Basic{} }},
	{PolicyAPIKey, func() connections.Security { return &APIKey{} }},
	{PolicyClientCredentials, func() connections.Security { return &ClientCredentials{} }},
	{PolicyPassword, func() connections.Security { return &Password{} }},
	{PolicyAuthorizationCode, func() connections.Security { return &AuthorizationCode{} }},
	{PolicyCustomTwoLegged, func() connections.Security { return &CustomTwoLegged{} }},
	{PolicyCustomThreeLegged, func() connections.Security { return &CustomThreeLegged{} }},
	{PolicyJWTBearer, func() connections.Security { return &JWTBearer{} }},
	{PolicyTokenExchange, func() connections.Security { return &TokenExchange{} }},
	{PolicyOAuth1, func() connections.Security { return &OAuth1{} }},
	{PolicyAWSSigV4, func() connections.Security { return &AWSSigV4{} }},
}

// Policies returns the names of the security policies.
func Policies() []connections.Policy {
	names := make([]connections.Policy, len(registry))
	for i, p := range registry {
		names[i] = p.name
	}
	return names
}

// ConsentPolicies returns the names of the policies with a consent flow
// (POST .../consent), in the order of Policies.
func ConsentPolicies() []string {
	return policiesWhere(func(s connections.Security) bool { _, ok := s.(consentPolicy); return ok })
}

// policiesWhere returns the names of the policies whose zero settings
// satisfy ok, in the order of Policies.
func policiesWhere(ok func(connections.Security) bool) []string {
	var names []string
	for _, r := range registry {
		if ok(r.new()) {
			names = append(names, string(r.name))
		}
	}
	return names
}

// Known reports whether p names a security policy.
func Known(p connections.Policy) bool { return New(p) != nil }

// New returns the zero settings of policy p, or nil when there is no such
// policy.
func New(p connections.Policy) connections.Security {
	for _, r := range registry {
		if r.name == p {
			return r.new()
		}
	}
	return nil
}

// Decode reads a security object as the API sends it: {"policy": ...,
// fields}. Unknown policies and fields, and fields of the wrong type, are
// connections.ValidationErrors naming the field ("security.tokenUrl").
// Secrets given as "" or "********" are left unset (kept on replace).
func Decode(data []byte) (connections.Security, error) {
	var head struct {
		Policy *string `json:"policy"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, invalid("security", "must be an object with a policy")
	}
	if head.Policy == nil || *head.Policy == "" {
		return nil, invalid("security.policy", "is required (%s)", policyList())
	}
	s := New(connections.Policy(*head.Policy))
	if s == nil {
		return nil, invalid("security.policy", "unknown policy %q (%s)", *head.Policy, policyList())
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, invalid("security", "must be an object with a policy")
	}
	delete(fields, "policy")
	rest, _ := json.Marshal(fields)
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(s); err != nil {
		return nil, decodeError(err, rest, s)
	}
	return s, nil
}

// decodeError names the field of a json decoding error of data, the
// fields of policy s.
func decodeError(err error, data []byte, s connections.Security) error {
	p := s.Policy()
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typ) && typ.Field != "":
		return invalid("security."+typ.Field, "must be %s", jsonKind(typ.Type))
	case errors.As(err, &typ):
		return invalid("security", "has a field of the wrong type")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if path := unknownField(data, reflect.TypeOf(s)); path != "" {
			f = path // the error names the field, not the object it is in
		}
		return invalid("security."+f, "is not a field of policy %s", p)
	case errors.Is(err, io.EOF):
		return nil
	}
	return invalid("security", "is not valid for policy %s", p)
}

// unknownField returns the path ("tokenRequest.extra") of the first
// member of the JSON value data, in document order as the decoder reads
// it, that has no field in type t; "" when there is none. Objects are
// followed into structs, maps and arrays; types that decode themselves
// are not looked into.
func unknownField(data []byte, t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	open, err := dec.Token()
	if err != nil {
		return ""
	}
	for i := 0; dec.More(); i++ {
		path, elem := fmt.Sprintf("[%d]", i), t
		if open == json.Delim('{') {
			key, err := dec.Token()
			if err != nil {
				return ""
			}
			path = key.(string)
			if t.Kind() == reflect.Struct {
				f, ok := jsonField(t, path)
				if !ok {
					return path
				}
				elem = f.Type
			}
		}
		var member json.RawMessage
		if dec.Decode(&member) != nil {
			return ""
		}
		if t.Kind() == reflect.Map || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			elem = t.Elem()
		}
		if sub := unknownField(member, elem); sub != "" {
			if strings.HasPrefix(sub, "[") {
				return path + sub
			}
			return path + "." + sub
		}
	}
	return ""
}

// jsonField returns the field of struct t that encoding/json decodes the
// member key into: the one of that name, else one whose name differs only
// in case; embedded structs without a name of their own are looked into.
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	var folded *reflect.StructField
	for _, f := range reflect.VisibleFields(t) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		inlined := f.Anonymous && name == "" && (f.Type.Kind() == reflect.Struct || f.Type.Kind() == reflect.Pointer)
		switch {
		case !f.IsExported() || name == "-" || inlined:
			continue
		case name == "":
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if folded == nil && strings.EqualFold(name, key) {
			folded = &f
		}
	}
	if folded != nil {
		return *folded, true
	}
	return reflect.StructField{}, false
}

// jsonKind names the JSON type of a Go type, for messages.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		if t == reflect.TypeFor[connections.Secret]() {
			return "a string"
		}
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "an integer"
}

func policyList() string {
	names := make([]string, len(registry))
	for i, p := range registry {
		names[i] = string(p.name)
	}
	return strings.Join(names, ", ")
}

func invalid(field, format string, args ...any) error {
	return connections.ValidationErrors{{Field: field, Reason: fmt.Sprintf(format, args...)}}
}

// Encode returns the API form of s: {"policy": ..., fields}, secrets shown
// as "********" when set.
func Encode(s connections.Security) json.RawMessage {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // policies are plain data
	}
	head := `{"policy":` + quote(string(s.Policy()))
	if string(b) == "{}" {
		return json.RawMessage(head + "}")
	}
	return json.RawMessage(head + "," + string(b[1:]))
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Stored returns the settings of s without its secrets, as the store keeps
// them next to the separately encrypted secrets.
func Stored(s connections.Security) []byte {
	var m map[string]any
	if err := json.Unmarshal(Encode(s), &m); err != nil {
		panic(err)
	}
	delete(m, "policy")
	for _, r := range connections.Secrets(s) {
		deletePath(m, strings.Split(r.Path, "."))
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func deletePath(m map[string]any, path []string) {
	if len(path) == 1 {
		delete(m, path[0])
		return
	}
	if sub, ok := m[path[0]].(map[string]any); ok {
		deletePath(sub, path[1:])
		if len(sub) == 0 {
			delete(m, path[0])
		}
	}
}

// Load reads settings written by Stored for policy p. Unknown fields are
// ignored, so that a newer version's rows can be read.
func Load(p connections.Policy, stored []byte) (connections.Security, error) {
	s := New(p)
	if s == nil {
		return nil, fmt.Errorf("unknown policy %q", p)
	}
	if len(stored) > 0 {
		if err := json.Unmarshal(stored, s); err != nil {
			return nil, fmt.Errorf("policy %s: %w", p, err)
		}
	}
	return s, nil
}

// Describe returns, for each policy, its fields' json paths and whether
// each is a secret, for forms that show exactly a policy's fields.
func Describe() map[connections.Policy][]Field {
	out := map[connections.Policy][]Field{}
	for _, r := range registry {
		out[r.name] = fieldsOf(reflect.TypeOf(r.new()).Elem(), "")
	}
	return out
}

// Field is one field of a policy, as Describe lists it.
type Field struct {
	Path   string
	Secret bool
	// Kind is the JSON type: string, boolean, integer, number, array,
	// object (map of strings), or secrets (map of secrets).
	Kind string
}

func fieldsOf(t reflect.Type, prefix string) []Field {
	var out []Field
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" {
			out = append(out, fieldsOf(ft, prefix)...)
			continue
		}
		secretT := reflect.TypeFor[connections.Secret]()
		switch {
		case ft == secretT:
			out = append(out, Field{Path: prefix + name, Secret: true, Kind: "string"})
		case ft.Kind() == reflect.Map && ft.Elem() == secretT:
			out = append(out, Field{Path: prefix + name, Secret: true, Kind: "secrets"})
		case ft.Kind() == reflect.Struct:
			out = append(out, fieldsOf(ft, prefix+name+".")...)
		default:
			kind := strings.TrimPrefix(strings.TrimPrefix(jsonKind(ft), "an "), "a ")
			out = append(out, Field{Path: prefix + name, Kind: kind})
		}
	}
	return out
}
