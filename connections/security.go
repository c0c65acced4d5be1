package connections

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strings"
)

// Policy names a security policy, such as "OAUTH2_CLIENT_CREDENTIALS".
type Policy string

// Security is a connection's security policy with its settings. Each
// policy is one struct type in package security. The struct's exported
// fields with a json tag are the policy's fields, as the API and the store
// show them; fields of type Secret (or map[string]Secret) are its secrets,
// and each secret's `dest` tag lists where the secret may be sent:
// "baseUrl" (the connection's base URL), the json path of a URL field of
// the policy ("tokenUrl", "assumeRole.stsUrl"), or "*" (every one of
// those). Nested structs and embedded structs are walked the same way.
type Security interface {
	// Policy returns the policy's name.
	Policy() Policy
	// Validate applies the policy's defaults and reports each invalid field
	// to v, whose field paths are relative to "security".
	Validate(v *Checker)
}

// ConsentPolicy is a Security whose credential a person grants by consent
// (authorization code): a new or reconfigured connection starts in
// NEEDS_CONSENT.
type ConsentPolicy interface {
	Security
	ConsentRequired() bool
}

// UnusedSecrets is implemented by a Security whose settings leave some of
// its secrets unused (a client secret with private_key_jwt): those are not
// carried over from the stored connection when a replace omits them.
type UnusedSecrets interface {
	UnusedSecrets() []string
}

// SecretEntries is implemented by a Security with a map of secrets: a
// replace carries a stored entry over only when the replacement still
// names it (sent as "********"), so that leaving an entry out removes it.
type SecretEntries interface {
	// HasSecretEntry reports whether the secret at path (such as
	// "secrets.appKey") is named by the settings; true for paths that are
	// not map entries.
	HasSecretEntry(path string) bool
}

// ConnectionChecker is a Security with rules that involve the rest of the
// connection (a client authenticated by the connection's TLS certificate).
// Field paths are relative to the connection.
type ConnectionChecker interface {
	CheckConnection(c *Connection, v *Checker)
}

// ReferenceChecker is a Security whose settings name other connections (a
// token exchange's subject connection). CheckReferences checks the rules
// on those of them that exist, read with get, reporting to v (paths
// relative to the connection), and returns get's errors other than
// ErrNotFound. They are the rules as of the write: the other connections
// may change later, so the policy checks them again where it follows the
// reference.
type ReferenceChecker interface {
	CheckReferences(ctx context.Context, c *Connection, get func(context.Context, string) (*Connection, error), v *Checker) error
}

// Minter is a Security whose secrets obtain tokens that are sent to the
// connection's base URL: a change of the base URL's origin needs those
// secrets sent again, as if they went there themselves. Those tokens are
// access tokens, presented as they are: only a Minter's may be a token
// exchange's subject token.
type Minter interface {
	MintsTokens()
}

// SecretRef is one secret of a policy or of a connection's TLS settings.
type SecretRef struct {
	// Path is the field's json path within its struct: "clientSecret",
	// "secrets.appKey" (an entry of a map of secrets), "tls.clientKeyPem".
	Path string
	// Dests are the paths of the URLs the secret may be sent to (see
	// Security), "*" for all of them.
	Dests []string
	get   func() Secret
	set   func(Secret)
}

// Value returns the secret.
func (r SecretRef) Value() Secret { return r.get() }

// Set replaces the secret.
func (r SecretRef) Set(s Secret) { r.set(s) }

// secretType is the type of Secret, found by the walkers.
var secretType = reflect.TypeFor[Secret]()

// walk calls fn for each json field of the struct v points to, with its
// path, recursing into nested and embedded structs. Map-of-Secret fields
// are reported as one field; the caller expands them.
func walk(v reflect.Value, prefix string, fn func(path string, f reflect.StructField, fv reflect.Value)) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			walk(fv.Addr(), prefix, fn)
			continue
		}
		if name == "" {
			name = f.Name
		}
		path := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != secretType && ft.PkgPath() != "time" {
			fn(path, f, fv)
			walk(fv.Addr(), path+".", fn)
			continue
		}
		fn(path, f, fv)
	}
}

// Secrets returns the secrets of v (a *struct: a Security, a *TLS), set or
// not, in field order; entries of a map of secrets are in key order.
// Setting a ref changes v.
func Secrets(v any) []SecretRef {
	var refs []SecretRef
	rv := reflect.ValueOf(v)
	if v == nil || rv.Kind() != reflect.Pointer && rv.Kind() != reflect.Interface {
		return nil
	}
	walk(rv, "", func(path string, f reflect.StructField, fv reflect.Value) {
		dests := splitTag(f.Tag.Get("dest"))
		switch {
		case f.Type == secretType:
			refs = append(refs, SecretRef{Path: path, Dests: dests,
				get: func() Secret { return fv.Interface().(Secret) },
				set: func(s Secret) { fv.Set(reflect.ValueOf(s)) }})
		case f.Type.Kind() == reflect.Map && f.Type.Elem() == secretType:
			keys := fv.MapKeys()
			slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
			for _, k := range keys {
				refs = append(refs, mapRef(fv, k.String(), path, dests))
			}
		}
	})
	return refs
}

func mapRef(m reflect.Value, key, path string, dests []string) SecretRef {
	k := reflect.ValueOf(key)
	return SecretRef{Path: path + "." + key, Dests: dests,
		get: func() Secret {
			if e := m.MapIndex(k); e.IsValid() {
				return e.Interface().(Secret)
			}
			return Secret{}
		},
		set: func(s Secret) {
			if m.IsNil() {
				m.Set(reflect.MakeMap(m.Type()))
			}
			m.SetMapIndex(k, reflect.ValueOf(s))
		}}
}

// SecretAt returns the ref of the secret at path in v, also for an entry
// of a map of secrets that v does not hold yet (setting it adds it), and
// false if v has no secret field there.
func SecretAt(v any, path string) (SecretRef, bool) {
	var ref SecretRef
	found := false
	rv := reflect.ValueOf(v)
	if v == nil || rv.Kind() != reflect.Pointer {
		return ref, false
	}
	walk(rv, "", func(p string, f reflect.StructField, fv reflect.Value) {
		if found {
			return
		}
		dests := splitTag(f.Tag.Get("dest"))
		switch {
		case f.Type == secretType && p == path:
			ref, found = SecretRef{Path: p, Dests: dests,
				get: func() Secret { return fv.Interface().(Secret) },
				set: func(s Secret) { fv.Set(reflect.ValueOf(s)) }}, true
		case f.Type.Kind() == reflect.Map && f.Type.Elem() == secretType && strings.HasPrefix(path, p+"."):
			if key := path[len(p)+1:]; key != "" {
				ref, found = mapRef(fv, key, p, dests), true
			}
		}
	})
	return ref, found
}

// urlFields returns the non-empty string fields of v tagged `url:"..."`,
// by path; they are the endpoints a policy sends to.
func urlFields(v any) map[string]string {
	out := map[string]string{}
	if v == nil {
		return out
	}
	walk(reflect.ValueOf(v), "", func(path string, f reflect.StructField, fv reflect.Value) {
		if _, ok := f.Tag.Lookup("url"); ok && fv.Kind() == reflect.String && fv.String() != "" {
			out[path] = fv.String()
		}
	})
	return out
}

func splitTag(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// Origin returns the origin of an absolute URL, scheme://host:port in
// lower case with the scheme's default port made explicit and an IP
// address in its one canonical form, or "" when raw
// is not an absolute http(s) URL. Credentials are bound to origins: an
// https origin and an http one on the same host differ.
func Origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	switch {
	case port != "":
	case scheme == "https":
		port = "443"
	case scheme == "http":
		port = "80"
	default:
		return ""
	}
	host := strings.ToLower(u.Hostname())
	if ip, err := netip.ParseAddr(host); err == nil {
		// One spelling per address: ::ffff:127.0.0.1 is 127.0.0.1.
		host = ip.Unmap().String()
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + port
}

// Destinations returns the origins a secret with the given dest tags goes
// to on connection c, sorted and without duplicates.
func (c *Connection) Destinations(dests []string) []string {
	urls := urlFields(c.Security)
	var out []string
	add := func(raw string) {
		if o := Origin(raw); o != "" && !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	for _, d := range dests {
		switch d {
		case "baseUrl":
			add(c.BaseURL)
		case "*":
			add(c.BaseURL)
			for _, u := range urls {
				add(u)
			}
		default:
			add(urls[d])
		}
	}
	slices.Sort(out)
	return out
}

// AllSecrets returns the secrets of c's policy and TLS settings, the TLS
// ones with paths under "tls.".
func (c *Connection) AllSecrets() []SecretRef {
	refs := Secrets(c.Security)
	if c.TLS != nil {
		for _, r := range Secrets(c.TLS) {
			r.Path = "tls." + r.Path
			refs = append(refs, r)
		}
	}
	return refs
}

// SecretAt returns the secret of c at path ("clientSecret",
// "tls.clientKeyPem"), see the package function SecretAt.
func (c *Connection) SecretAt(path string) (SecretRef, bool) {
	if rest, ok := strings.CutPrefix(path, "tls."); ok {
		if c.TLS == nil {
			c.TLS = &TLS{}
		}
		r, ok := SecretAt(c.TLS, rest)
		r.Path = path
		return r, ok
	}
	return SecretAt(c.Security, path)
}

// FieldValues flattens v (a Security or *TLS) into its json paths and
// values: every scalar, slice and map field that is set, secrets as Mask.
// It is what audit records compare, and never holds a secret value.
func FieldValues(v any) map[string]string {
	out := map[string]string{}
	if v == nil {
		return out
	}
	walk(reflect.ValueOf(v), "", func(path string, f reflect.StructField, fv reflect.Value) {
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			if fv.IsNil() {
				return
			}
			if ft.Elem().Kind() == reflect.Struct && ft.Elem() != secretType {
				return // walked into
			}
			fv = fv.Elem()
			ft = ft.Elem()
		}
		switch {
		case ft == secretType:
			if fv.Interface().(Secret).IsSet() {
				out[path] = Mask
			}
		case ft.Kind() == reflect.Map && ft.Elem() == secretType:
			for _, k := range fv.MapKeys() {
				if fv.MapIndex(k).Interface().(Secret).IsSet() {
					out[path+"."+k.String()] = Mask
				}
			}
		case ft.Kind() == reflect.Struct:
			// walked into
		case fv.IsZero():
		default:
			out[path] = fmt.Sprint(fv.Interface())
		}
	})
	return out
}

// Clone returns a deep copy of c: its policy settings, TLS settings, maps
// and slices are its own, so that changing the copy (carrying secrets
// into it) leaves c as it was. Secret values are immutable and shared.
func (c *Connection) Clone() *Connection {
	d := *c
	if c.Security != nil {
		d.Security = deepCopy(reflect.ValueOf(c.Security)).Interface().(Security)
	}
	if c.TLS != nil {
		t := *c.TLS
		d.TLS = &t
	}
	d.Keywords = slices.Clone(c.Keywords)
	d.ForwardHeaders = slices.Clone(c.ForwardHeaders)
	d.RejectedStatuses = slices.Clone(c.RejectedStatuses)
	d.Headers = cloneMap(c.Headers)
	if c.TestRequest != nil {
		t := *c.TestRequest
		d.TestRequest = &t
	}
	if c.RateLimit != nil {
		r := *c.RateLimit
		d.RateLimit = &r
	}
	if c.LastTest != nil {
		t := *c.LastTest
		t.Steps = slices.Clone(t.Steps)
		d.LastTest = &t
	}
	return &d
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return nil
	}
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// deepCopy copies v: pointers, structs, maps, slices and interfaces are
// copied all the way down. Secret values (immutable) are shared.
func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(deepCopy(v.Elem()))
		return p
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(deepCopy(v.Elem()))
		return out
	case reflect.Struct:
		if v.Type() == secretType {
			return v
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(v)
		for i := range v.NumField() {
			if out.Field(i).CanSet() {
				out.Field(i).Set(deepCopy(v.Field(i)))
			}
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			out.SetMapIndex(it.Key(), deepCopy(it.Value()))
		}
		return out
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(deepCopy(v.Index(i)))
		}
		return out
	}
	return v
}
