package clients

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// contract loads and validates ../openapi.yaml.
func contract(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile("../openapi.yaml")
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	return doc
}

// policyExample is the example of one policy's create schema.
type policyExample struct {
	Policy   string
	Schema   string         // e.g. SecurityBasicCreate
	Security map[string]any // the example
	Secrets  []string       // the policy's secret fields
}

const schemaRef = "#/components/schemas/"

// policyExamples returns, for every value of Policy, the example of its
// schema in SecurityCreate's discriminator mapping (or of the base schema
// that it extends), so that a policy added to the contract is covered by the
// round trip without touching the tests. Every policy must have a schema in
// both unions, and every schema an example.
func policyExamples(t testing.TB, doc *openapi3.T) []policyExample {
	t.Helper()
	schemas := doc.Components.Schemas
	var policies []string
	for _, v := range schemas["Policy"].Value.Enum {
		policies = append(policies, v.(string))
	}
	for _, union := range []string{"Security", "SecurityCreate"} {
		u := schemas[union].Value
		if u.Discriminator == nil || u.Discriminator.PropertyName != "policy" {
			t.Fatalf("%s has no discriminator on policy", union)
		}
		mapped := slices.Sorted(maps.Keys(u.Discriminator.Mapping))
		if !slices.Equal(mapped, slices.Sorted(slices.Values(policies))) {
			t.Fatalf("%s maps policies %v, Policy lists %v", union, mapped, policies)
		}
		var oneOf []string
		for _, r := range u.OneOf {
			oneOf = append(oneOf, r.Ref)
		}
		for p, ref := range u.Discriminator.Mapping {
			if !slices.Contains(oneOf, ref.Ref) {
				t.Errorf("%s maps %s to %s, which is not one of its oneOf", union, p, ref.Ref)
			}
		}
	}
	var out []policyExample
	for _, p := range policies {
		name := strings.TrimPrefix(schemas["SecurityCreate"].Value.Discriminator.Mapping[p].Ref, schemaRef)
		s := schemas[name].Value
		ex := s.Example
		for _, part := range s.AllOf {
			if ex == nil && part.Ref != "" {
				ex = part.Value.Example
			}
		}
		m, ok := ex.(map[string]any)
		if !ok || m["policy"] != p {
			t.Fatalf("%s (policy %s) has no example of that policy: %v", name, p, ex)
		}
		out = append(out, policyExample{Policy: p, Schema: name, Security: m, Secrets: secretFields(s)})
	}
	return out
}

// secretFields lists the properties of s (and of the schemas it extends)
// whose schema is marked x-connmgr-secret, or that are maps whose values
// are (the secrets of the custom OAuth policies).
func secretFields(s *openapi3.Schema) []string {
	var fields []string
	for name, p := range s.Properties {
		if isSecret(p) || p.Value != nil && isSecret(p.Value.AdditionalProperties.Schema) {
			fields = append(fields, name)
		}
	}
	for _, part := range s.AllOf {
		fields = append(fields, secretFields(part.Value)...)
	}
	slices.Sort(fields)
	return slices.Compact(fields)
}

func isSecret(r *openapi3.SchemaRef) bool {
	return r != nil && r.Value != nil && r.Value.Extensions["x-connmgr-secret"] == true
}

func secretField(field string, ex policyExample) bool { return slices.Contains(ex.Secrets, field) }

// masked reports whether shown is what an answer shows for the secret
// sent: "********" for a value, and for a map of secrets the same names,
// each "********".
func masked(shown, sent any) bool {
	m, ok := sent.(map[string]any)
	if !ok {
		return shown == "********"
	}
	got, ok := shown.(map[string]any)
	if !ok || len(got) != len(m) {
		return false
	}
	for k := range m {
		if got[k] != "********" {
			return false
		}
	}
	return true
}

// validate checks value against the named component schema as a request
// body would be checked.
func validate(doc *openapi3.T, schema string, value any) error {
	// Through JSON, so numbers are float64 as the validator expects.
	b, err := json.Marshal(value)
	if err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	return doc.Components.Schemas[schema].Value.VisitJSON(v, openapi3.VisitAsRequest(), openapi3.MultiErrors())
}

// TestPolicyExamples: every policy's example is a valid create body, and
// the examples say which fields are secrets.
func TestPolicyExamples(t *testing.T) {
	doc := contract(t)
	for _, ex := range policyExamples(t, doc) {
		body := map[string]any{"name": "X", "role": "INVOKE", "baseUrl": "https://api.example.com", "security": ex.Security}
		if err := validate(doc, "ConnectionCreate", body); err != nil {
			t.Errorf("the %s example is not a valid create body: %v", ex.Policy, err)
		}
		if err := validate(doc, "ConnectionReplace", body); err != nil {
			t.Errorf("the %s example is not a valid replace body: %v", ex.Policy, err)
		}
		if ex.Policy != "NONE" && len(ex.Secrets) == 0 {
			t.Errorf("policy %s has no secret field", ex.Policy)
		}
	}
}

// testKeyPEM and testCertPEM have a private key's and a certificate's PEM
// armour, which is what the schemas check (that they parse, and belong
// together, is the server's check).
const (
	testKeyPEM  = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVq9q1lQnLhA4f3cS\n-----END PRIVATE KEY-----\n"
	testCertPEM = "-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIQIRi6zePL6mKjOipn+dNuaTAKBggqhkjOPQQDAjASMRAw\n-----END CERTIFICATE-----\n"
)

// TestSecuritySchemas holds the per-policy schemas to the server's rules:
// what create and replace accept and refuse.
func TestSecuritySchemas(t *testing.T) {
	doc := contract(t)
	cc := func(kv ...any) map[string]any {
		m := map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": "https://auth.example.com/t", "clientId": "c"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		c := maps.Clone(m)
		for i := 0; i+1 < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	without := func(m map[string]any, field string) map[string]any {
		c := maps.Clone(m)
		delete(c, field)
		return c
	}
	custom := func(policy, secret string) map[string]any {
		return map[string]any{"policy": policy, "secrets": map[string]any{"s": secret},
			"tokenRequest": map[string]any{"url": "https://a.example.com/t", "body": "secret=${secrets.s}"}}
	}
	threeLegged := func(secret string) map[string]any {
		return with(custom("OAUTH2_CUSTOM_THREE_LEGGED", secret), "authorizationRequest",
			map[string]any{"url": "https://a.example.com/a?s=${state}&c=${codeChallenge}"},
			"tokenRequest", map[string]any{"url": "https://a.example.com/t", "body": "c=${code}&v=${codeVerifier}&s=${secrets.s}"})
	}
	jwt := func() map[string]any {
		return map[string]any{"policy": "OAUTH2_JWT_BEARER", "tokenUrl": "https://a.example.com/t",
			"assertion": map[string]any{"issuer": "svc"}, "privateKeyPem": testKeyPEM}
	}
	exchange := func(kv ...any) map[string]any {
		return with(map[string]any{"policy": "OAUTH2_TOKEN_EXCHANGE", "tokenUrl": "https://a.example.com/t", "clientId": "c",
			"clientSecret": "s"}, kv...)
	}
	oauth1 := func(kv ...any) map[string]any {
		return with(map[string]any{"policy": "OAUTH1_ONE_LEGGED", "consumerKey": "ck"}, kv...)
	}
	sigv4 := func(kv ...any) map[string]any {
		return with(map[string]any{"policy": "AWS_SIGV4", "accessKeyId": "AKIA", "region": "eu-west-1", "service": "s3"}, kv...)
	}
	tests := []struct {
		name            string
		security        map[string]any
		create, replace bool
	}{
		{"none", map[string]any{"policy": "NONE"}, true, true},
		{"none with a password", map[string]any{"policy": "NONE", "password": "p"}, false, false},
		{"no policy", map[string]any{"username": "u"}, false, false},
		{"unknown policy", map[string]any{"policy": "KERBEROS"}, false, false},
		{"policy in lower case", map[string]any{"policy": "none"}, false, false},
		{"basic", map[string]any{"policy": "BASIC", "username": "u", "password": "p"}, true, true},
		{"basic without password", map[string]any{"policy": "BASIC", "username": "u"}, false, true},
		{"basic with the mask", map[string]any{"policy": "BASIC", "username": "u", "password": "********"}, false, true},
		{"basic without username", map[string]any{"policy": "BASIC", "password": "p"}, false, false},
		{"basic with a token URL", map[string]any{"policy": "BASIC", "username": "u", "password": "p", "tokenUrl": "https://a.example.com"}, false, false},
		{"basic username with a newline", map[string]any{"policy": "BASIC", "username": "u\nv", "password": "p"}, false, false},
		{"basic username with a colon", map[string]any{"policy": "BASIC", "username": "u:v", "password": "p"}, false, false},
		{"password grant username with a colon", map[string]any{"policy": "OAUTH2_PASSWORD", "tokenUrl": "https://a.example.com/t", "clientId": "c",
			"clientSecret": "s", "username": "u:v", "password": "p"}, true, true},
		{"api key in a header", map[string]any{"policy": "API_KEY", "key": "k"}, true, true},
		{"api key in Authorization", map[string]any{"policy": "API_KEY", "key": "k", "name": "authorization", "valuePrefix": "Token "}, true, true},
		{"api key in X-Api-Key", map[string]any{"policy": "API_KEY", "key": "k", "in": "HEADER", "name": "X-Api-Key"}, true, true},
		{"api key without key", map[string]any{"policy": "API_KEY"}, false, true},
		{"api key in a forbidden header", map[string]any{"policy": "API_KEY", "key": "k", "name": "cookie"}, false, false},
		{"api key in an X-Forwarded header", map[string]any{"policy": "API_KEY", "key": "k", "name": "X-Forwarded-Host"}, false, false},
		{"api key in a header that is no token", map[string]any{"policy": "API_KEY", "key": "k", "name": "X Key"}, false, false},
		{"api key in the query", map[string]any{"policy": "API_KEY", "key": "k", "in": "QUERY", "name": "Cookie"}, true, true},
		{"api key in the query without name", map[string]any{"policy": "API_KEY", "key": "k", "in": "QUERY"}, false, false},
		{"api key with CRLF", map[string]any{"policy": "API_KEY", "key": "k\r\nX: y"}, false, false},
		{"api key prefix with LF", map[string]any{"policy": "API_KEY", "key": "k", "valuePrefix": "a\n"}, false, false},
		{"api key somewhere else", map[string]any{"policy": "API_KEY", "key": "k", "in": "COOKIE"}, false, false},
		{"client credentials", cc("clientSecret", "s"), true, true},
		{"client credentials with everything", cc("clientSecret", "s", "clientAuth", "BODY", "scopes", []string{"a", "b:c"},
			"audience", "https://api.example.com", "extraParams", map[string]string{"access_type": "offline"}), true, true},
		{"resource as an extra parameter", cc("clientSecret", "s", "extraParams", map[string]string{"resource": "r"}), false, false},
		{"nonce as an extra parameter", cc("clientSecret", "s", "extraParams", map[string]string{"nonce": "n"}), false, false},
		{"raw basic header", cc("clientSecret", "s+/=%", "clientAuth", "BASIC_HEADER_RAW"), true, true},
		{"raw basic header without secret", cc("clientAuth", "BASIC_HEADER_RAW"), false, true},
		{"client secret JWT", cc("clientSecret", "s", "clientAuth", "CLIENT_SECRET_JWT", "keyId", "k1", "assertionAudience", "https://auth.example.com"), true, true},
		{"client secret JWT without secret", cc("clientAuth", "CLIENT_SECRET_JWT"), false, true},
		// These bodies have no tls: TLS_CLIENT_AUTH is refused for want of a
		// client certificate (TestConnectionSchemas has the bodies with one).
		{"TLS client auth without the connection's certificate", cc("clientAuth", "TLS_CLIENT_AUTH"), false, false},
		{"TLS client auth with a secret", cc("clientAuth", "TLS_CLIENT_AUTH", "clientSecret", "s"), false, false},
		{"TLS client auth with a key id", cc("clientAuth", "TLS_CLIENT_AUTH", "keyId", "k"), false, false},
		{"assertion audience with BASIC_HEADER", cc("clientSecret", "s", "assertionAudience", "https://auth.example.com"), false, false},
		{"assertion audience with PRIVATE_KEY_JWT", cc("clientAuth", "PRIVATE_KEY_JWT", "privateKeyPem", testKeyPEM, "assertionAudience", "https://a.example.com"), true, true},
		{"client credentials without secret", cc(), false, true},
		{"client credentials with the mask", cc("clientSecret", "********"), false, true},
		{"client credentials without client id", map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": "https://a.example.com/t", "clientSecret": "s"}, false, false},
		{"client credentials with a username", cc("clientSecret", "s", "username", "u"), false, false},
		{"private key JWT", cc("clientAuth", "PRIVATE_KEY_JWT", "privateKeyPem", testKeyPEM, "keyId", "k1"), true, true},
		{"private key JWT with a masked secret", cc("clientAuth", "PRIVATE_KEY_JWT", "privateKeyPem", testKeyPEM, "clientSecret", "********"), true, true},
		{"private key JWT without key", cc("clientAuth", "PRIVATE_KEY_JWT"), false, true},
		{"private key JWT with a masked key", cc("clientAuth", "PRIVATE_KEY_JWT", "privateKeyPem", "********"), false, true},
		{"private key JWT with a secret", cc("clientAuth", "PRIVATE_KEY_JWT", "privateKeyPem", testKeyPEM, "clientSecret", "s"), false, false},
		{"private key JWT with a key that is no PEM", cc("clientAuth", "PRIVATE_KEY_JWT", "privateKeyPem", "nope"), false, false},
		{"private key without PRIVATE_KEY_JWT", cc("clientSecret", "s", "privateKeyPem", testKeyPEM), false, false},
		{"masked private key without PRIVATE_KEY_JWT", cc("clientSecret", "s", "privateKeyPem", "********"), true, true},
		{"key id without PRIVATE_KEY_JWT", cc("clientSecret", "s", "clientAuth", "BODY", "keyId", "k1"), false, false},
		{"unknown client auth", cc("clientSecret", "s", "clientAuth", "MTLS"), false, false},
		{"reserved extra parameter", cc("clientSecret", "s", "extraParams", map[string]string{"grant_type": "password"}), false, false},
		{"scope with a space", cc("clientSecret", "s", "scopes", []string{"a b"}), false, false},
		{"empty scope", cc("clientSecret", "s", "scopes", []string{""}), false, false},
		{"65 scopes", cc("clientSecret", "s", "scopes", slices.Repeat([]string{"a"}, 65)), false, false},
		{"ftp token URL", cc("clientSecret", "s", "tokenUrl", "ftp://auth.example.com/t"), false, false},
		{"token URL with userinfo", cc("clientSecret", "s", "tokenUrl", "https://u:p@auth.example.com/t"), false, false},
		{"token URL with a fragment", cc("clientSecret", "s", "tokenUrl", "https://auth.example.com/t#x"), false, false},
		{"token URL with a decimal IP", cc("clientSecret", "s", "tokenUrl", "http://2130706433/t"), false, false},
		{"token URL with a bad port", cc("clientSecret", "s", "tokenUrl", "https://auth.example.com:99999/t"), false, false},
		{"token URL on an IP and port", cc("clientSecret", "s", "tokenUrl", "http://127.0.0.1:8080/t?x=1"), true, true},
		{"password grant", map[string]any{"policy": "OAUTH2_PASSWORD", "tokenUrl": "https://a.example.com/t", "clientId": "c",
			"clientSecret": "s", "username": "u", "password": "p"}, true, true},
		{"password grant without password", map[string]any{"policy": "OAUTH2_PASSWORD", "tokenUrl": "https://a.example.com/t",
			"clientId": "c", "clientSecret": "s", "username": "u"}, false, true},
		{"password grant without username", map[string]any{"policy": "OAUTH2_PASSWORD", "tokenUrl": "https://a.example.com/t",
			"clientId": "c", "clientSecret": "s", "password": "p"}, false, false},
		{"authorization code", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": "https://a.example.com/a",
			"tokenUrl": "https://a.example.com/t", "clientId": "c", "clientSecret": "s", "issuer": "https://a.example.com"}, true, true},
		{"authorization code without authorization URL", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"tokenUrl": "https://a.example.com/t", "clientId": "c", "clientSecret": "s"}, false, false},
		{"authorization code without token URL", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"authorizationUrl": "https://a.example.com/a", "clientId": "c", "clientSecret": "s"}, false, false},
		{"authorization code with only an issuer", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"issuer": "https://a.example.com", "clientId": "c", "clientSecret": "s", "scopes": []string{"openid"}}, true, true},
		{"authorization code with an issuer that is no URL", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"issuer": "a.example.com", "clientId": "c", "clientSecret": "s"}, false, false},
		{"authorization code requiring iss", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"issuer": "https://a.example.com", "requireIss": true, "clientId": "c", "clientSecret": "s"}, true, true},
		{"authorization code requiring iss without issuer", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"authorizationUrl": "https://a.example.com/a", "tokenUrl": "https://a.example.com/t", "requireIss": true,
			"clientId": "c", "clientSecret": "s"}, false, false},
		{"authorization code not requiring iss without issuer", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"authorizationUrl": "https://a.example.com/a", "tokenUrl": "https://a.example.com/t", "requireIss": false,
			"clientId": "c", "clientSecret": "s"}, true, true},
		{"authorization code with TLS client auth and a secret", map[string]any{"policy": "OAUTH2_AUTHORIZATION_CODE",
			"issuer": "https://a.example.com", "clientId": "c", "clientAuth": "TLS_CLIENT_AUTH", "clientSecret": "s"}, false, false},
		{"client credentials requiring iss", cc("clientSecret", "s", "requireIss", true), false, false},
		{"client credentials with an authorization URL", cc("clientSecret", "s", "authorizationUrl", "https://a.example.com/a"), false, false},
		{"custom two-legged", custom("OAUTH2_CUSTOM_TWO_LEGGED", "s"), true, true},
		{"custom two-legged with a masked secret", custom("OAUTH2_CUSTOM_TWO_LEGGED", "********"), false, true},
		{"custom two-legged without its secrets", without(custom("OAUTH2_CUSTOM_TWO_LEGGED", "s"), "secrets"), false, false},
		{"custom two-legged with an authorization request", with(custom("OAUTH2_CUSTOM_TWO_LEGGED", "s"),
			"authorizationRequest", map[string]any{"url": "https://a.example.com/a?s=${state}&c=${codeChallenge}"}), false, false},
		{"custom two-legged with a client id", with(custom("OAUTH2_CUSTOM_TWO_LEGGED", "s"), "clientId", "c"), false, false},
		{"custom three-legged", threeLegged("s"), true, true},
		{"custom three-legged with a masked secret", threeLegged("********"), false, true},
		{"custom three-legged without authorization request", without(threeLegged("s"), "authorizationRequest"), false, false},
		{"JWT bearer", jwt(), true, true},
		{"JWT bearer without key", without(jwt(), "privateKeyPem"), false, true},
		{"JWT bearer with a masked key", with(jwt(), "privateKeyPem", "********"), false, true},
		{"JWT bearer with a client id and a masked secret", with(jwt(), "clientId", "c", "clientSecret", "********"), false, true},
		{"JWT bearer with a client secret without client id", with(jwt(), "clientSecret", "s"), false, false},
		{"token exchange of a connection", exchange("subjectConnection", "Conn_A"), true, true},
		{"token exchange of a fixed token", exchange("subjectToken", "t"), true, true},
		{"token exchange of a masked token", exchange("subjectToken", "********"), false, true},
		{"token exchange of no subject", exchange(), false, true},
		{"token exchange of a token and a connection", exchange("subjectToken", "t", "subjectConnection", "Conn_A"), false, false},
		{"token exchange of a masked token and a connection", exchange("subjectToken", "********", "subjectConnection", "Conn_A"), true, true},
		{"OAuth 1.0a", oauth1("consumerSecret", "cs"), true, true},
		{"OAuth 1.0a without consumer secret", oauth1(), false, true},
		{"OAuth 1.0a RSA-SHA1", oauth1("signatureMethod", "RSA-SHA1", "privateKeyPem", testKeyPEM), true, true},
		{"OAuth 1.0a RSA-SHA1 without key", oauth1("signatureMethod", "RSA-SHA1"), false, true},
		{"OAuth 1.0a RSA-SHA1 with a consumer secret", oauth1("signatureMethod", "RSA-SHA1", "privateKeyPem", testKeyPEM, "consumerSecret", "cs"), false, false},
		{"SigV4", sigv4("secretAccessKey", "k"), true, true},
		{"SigV4 without secret", sigv4(), false, true},
		{"SigV4 with a masked secret", sigv4("secretAccessKey", "********"), false, true},
		{"SigV4 with a role", sigv4("secretAccessKey", "k", "assumeRole", map[string]any{"roleArn": "arn:aws:iam::1:role/r"}), true, true},
		{"SigV4 with a role without ARN", sigv4("secretAccessKey", "k", "assumeRole", map[string]any{}), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{"role": "INVOKE", "baseUrl": "https://api.example.com", "security": tt.security}
			err := validate(doc, "ConnectionReplace", body)
			if (err == nil) != tt.replace {
				t.Errorf("replace body with %v: valid = %v, want %v: %v", tt.security, err == nil, tt.replace, err)
			}
			body["name"] = "X"
			err = validate(doc, "ConnectionCreate", body)
			if (err == nil) != tt.create {
				t.Errorf("create body with %v: valid = %v, want %v: %v", tt.security, err == nil, tt.create, err)
			}
		})
	}
}

// TestConnectionSchemas: the connection fields around the security policy.
func TestConnectionSchemas(t *testing.T) {
	doc := contract(t)
	valid := func() map[string]any {
		return map[string]any{"name": "Conn_A-1", "role": "INVOKE", "baseUrl": "https://api.example.com/v2?tenant=a",
			"security": map[string]any{"policy": "NONE"}}
	}
	tests := []struct {
		name  string
		field string
		value any // nil deletes the field
		want  bool
	}{
		{"valid", "", nil, true},
		{"no name", "name", nil, false},
		{"name with a dot", "name", "a.b", false},
		{"name starting with a digit", "name", "1a", false},
		{"name of 101 characters", "name", strings.Repeat("a", 101), false},
		{"no role", "role", nil, false},
		{"unknown role", "role", "ADMIN", false},
		{"no base URL", "baseUrl", nil, false},
		{"relative base URL", "baseUrl", "/api", false},
		{"base URL with a space", "baseUrl", "https://api.example.com/a b", false},
		{"base URL with a backslash", "baseUrl", `https://api.example.com\@evil.example.com`, false},
		{"base URL on IPv6", "baseUrl", "http://[::1]:8080/x", true},
		{"base URL with an octal-looking IP", "baseUrl", "http://0177.0.0.1/", false},
		{"base URL with a hex host", "baseUrl", "http://0x7f.1/", false},
		{"no security", "security", nil, false},
		{"timeout too small", "timeoutMs", 99, false},
		{"timeout too large", "timeoutMs", 600001, false},
		{"timeout at the bounds", "timeoutMs", 600000, true},
		{"description with a newline", "description", "a\nb", false},
		{"33 keywords", "keywords", slices.Repeat([]string{"k"}, 33), false},
		{"empty keyword", "keywords", []string{""}, false},
		{"static header", "headers", map[string]string{"X-Api-Version": "2"}, true},
		{"static Authorization", "headers", map[string]string{"Authorization": "Bearer x"}, false},
		{"static header with CRLF", "headers", map[string]string{"X-A": "a\r\nb"}, false},
		{"forward X-Tenant", "forwardHeaders", []string{"X-Tenant"}, true},
		{"forward cookie", "forwardHeaders", []string{"cookie"}, false},
		{"forward a header that is no token", "forwardHeaders", []string{"X A"}, false},
		{"test request", "testRequest", map[string]any{"method": "HEAD", "relativeUri": "/health"}, true},
		{"test request with TRACE", "testRequest", map[string]any{"method": "TRACE", "relativeUri": "/"}, false},
		{"rate limit", "rateLimit", map[string]any{"requestsPerSecond": 0.5, "burst": 2}, true},
		{"zero rate", "rateLimit", map[string]any{"requestsPerSecond": 0}, false},
		{"negative concurrency", "maxConcurrent", -1, false},
		{"unknown field", "colour", "red", false},
		{"read-only field", "version", 3, false},
		{"TLS with a client certificate", "tls", map[string]any{"clientCertificatePem": testCertPEM, "clientKeyPem": testKeyPEM}, true},
		{"TLS with CA certificates and a server name", "tls", map[string]any{"caCertificatesPem": testCertPEM, "serverName": "api.internal"}, true},
		{"TLS with a certificate without its key", "tls", map[string]any{"clientCertificatePem": testCertPEM}, false},
		{"TLS with a certificate and a masked key", "tls", map[string]any{"clientCertificatePem": testCertPEM, "clientKeyPem": "********"}, false},
		{"TLS with a key without its certificate", "tls", map[string]any{"clientKeyPem": testKeyPEM}, false},
		{"TLS with a certificate that is no PEM", "tls", map[string]any{"clientCertificatePem": "x", "clientKeyPem": testKeyPEM}, false},
		{"TLS with a server name that is a URL", "tls", map[string]any{"serverName": "https://api.internal"}, false},
		{"TLS with an unknown field", "tls", map[string]any{"pin": "x"}, false},
		{"token rejected statuses", "tokenRejectedStatuses", []int{401, 403}, true},
		{"a token rejected status that is no 4xx", "tokenRejectedStatuses", []int{500}, false},
		{"9 token rejected statuses", "tokenRejectedStatuses", slices.Repeat([]int{401}, 9), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := valid()
			if tt.field != "" {
				if tt.value == nil {
					delete(body, tt.field)
				} else {
					body[tt.field] = tt.value
				}
			}
			if err := validate(doc, "ConnectionCreate", body); (err == nil) != tt.want {
				t.Errorf("create body %v: valid = %v, want %v: %v", body, err == nil, tt.want, err)
			}
		})
	}
	// clientAuth TLS_CLIENT_AUTH needs the connection's client certificate.
	tlsAuth := map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": "https://a.example.com/t", "clientId": "c",
		"clientAuth": "TLS_CLIENT_AUTH"}
	for _, schema := range []string{"ConnectionCreate", "ConnectionReplace"} {
		body := valid()
		body["security"] = tlsAuth
		if err := validate(doc, schema, body); err == nil {
			t.Errorf("%s with TLS_CLIENT_AUTH and no client certificate is valid", schema)
		}
		body["tls"] = map[string]any{"clientCertificatePem": testCertPEM, "clientKeyPem": testKeyPEM}
		if err := validate(doc, schema, body); err != nil {
			t.Errorf("%s with TLS_CLIENT_AUTH and a client certificate: %v", schema, err)
		}
		tlsAuth["clientSecret"] = "********"
		if err := validate(doc, schema, body); err != nil {
			t.Errorf("%s with TLS_CLIENT_AUTH and a masked client secret: %v", schema, err)
		}
		tlsAuth["clientSecret"] = "s"
		if err := validate(doc, schema, body); err == nil {
			t.Errorf("%s with TLS_CLIENT_AUTH and a client secret is valid", schema)
		}
		delete(tlsAuth, "clientSecret")
	}
	// A document read with GET goes back with PUT: the read-only fields are
	// accepted there (and ignored by the server).
	doc2 := valid()
	doc2["identifier"], doc2["version"], doc2["status"] = "CONN_A-1", 3, "DRAFT"
	doc2["statusReason"], doc2["statusSince"] = "test failed", "2026-11-27T10:00:00Z"
	doc2["token"] = map[string]any{"expiresAt": "2026-11-27T11:00:00Z", "lastError": "invalid_grant"}
	doc2["lastTest"] = map[string]any{"at": "2026-11-27T10:00:00Z", "result": "FAILURE", "detail": "token: invalid_grant",
		"latencyMs": 3, "steps": []any{map[string]any{"step": "token", "result": "FAILURE", "detail": "invalid_grant"},
			map[string]any{"step": "request", "result": "SKIPPED"}}}
	doc2["tls"] = map[string]any{"clientCertificatePem": testCertPEM, "clientKeyPem": "********"}
	if err := validate(doc, "ConnectionReplace", doc2); err != nil {
		t.Errorf("replace with read-only fields: %v", err)
	}
}

// TestPatchSchema: a merge patch names members to set or, with null, to
// remove; it takes no member a connection lacks.
func TestPatchSchema(t *testing.T) {
	doc := contract(t)
	tests := []struct {
		patch map[string]any
		want  bool
	}{
		{map[string]any{}, true},
		{map[string]any{"description": "x"}, true},
		{map[string]any{"description": nil, "timeoutMs": nil, "keywords": nil, "tls": nil, "rateLimit": nil}, true},
		{map[string]any{"headers": map[string]any{"X-A": nil, "X-B": "2"}}, true},
		{map[string]any{"security": map[string]any{"clientSecret": "new"}}, true},
		{map[string]any{"security": map[string]any{"policy": "API_KEY", "key": "k"}}, true},
		{map[string]any{"security": map[string]any{"policy": "KERBEROS"}}, false},
		{map[string]any{"rateLimit": map[string]any{"burst": 5}}, true},
		{map[string]any{"tls": map[string]any{"serverName": "api.internal", "clientKeyPem": nil}}, true},
		{map[string]any{"testRequest": map[string]any{"relativeUri": "/health"}}, true},
		{map[string]any{"timeoutMs": 5}, false},
		{map[string]any{"baseUrl": "ftp://a.example.com"}, false},
		{map[string]any{"baseUrl": nil}, false},
		{map[string]any{"role": nil}, false},
		{map[string]any{"name": nil}, false},
		{map[string]any{"security": nil}, false},
		{map[string]any{"colour": "red"}, false},
		{map[string]any{"status": "CONFIGURED", "version": 3}, true},
	}
	for _, tt := range tests {
		if err := validate(doc, "ConnectionPatch", tt.patch); (err == nil) != tt.want {
			t.Errorf("patch %v: valid = %v, want %v: %v", tt.patch, err == nil, tt.want, err)
		}
	}
}

// TestInvokeRequestSchema: the dynamic form's relative URI and body rules.
func TestInvokeRequestSchema(t *testing.T) {
	doc := contract(t)
	tests := []struct {
		body map[string]any
		want bool
	}{
		{map[string]any{}, true},
		{map[string]any{"method": "POST", "relativeUri": "/orders/{id}/lines", "pathParams": map[string]string{"id": "a/b"},
			"queryParams": map[string]any{"a": "1", "b": []string{"x", "y"}}, "body": map[string]any{"x": 1}}, true},
		{map[string]any{"relativeUri": "orders?x=1"}, true},
		{map[string]any{"relativeUri": "?x=1"}, true},
		{map[string]any{"relativeUri": "/"}, true},
		{map[string]any{"relativeUri": "/a:b"}, true},
		{map[string]any{"relativeUri": "a:b"}, false},
		{map[string]any{"relativeUri": "http://evil.example.com/"}, false},
		{map[string]any{"relativeUri": "//evil.example.com/"}, false},
		{map[string]any{"relativeUri": `/a\b`}, false},
		{map[string]any{"relativeUri": "/a#b"}, false},
		{map[string]any{"relativeUri": "/a\nb"}, false},
		{map[string]any{"method": "TRACE"}, false},
		{map[string]any{"method": "get"}, false},
		{map[string]any{"body": "x", "rawBody": "y"}, false},
		{map[string]any{"rawBody": "y", "headers": map[string]string{"Content-Type": "text/plain"}}, true},
		{map[string]any{"headers": map[string]string{"X-A": "a\r\nb"}}, false},
		{map[string]any{"queryParams": map[string]any{"a": 1}}, false},
		{map[string]any{"pathParams": map[string]any{"id": ""}}, false},
		{map[string]any{"target": "x"}, false},
	}
	for _, tt := range tests {
		if err := validate(doc, "InvokeRequest", tt.body); (err == nil) != tt.want {
			t.Errorf("invoke request %v: valid = %v, want %v: %v", tt.body, err == nil, tt.want, err)
		}
	}
}

// TestOperationsServeClients: every operation has an operationId and a 2xx
// answer; the transparent form has one operation per method, and every
// answer of an invoke operation that connmgr may make documents
// Connmgr-Error.
func TestOperationsServeClients(t *testing.T) {
	doc := contract(t)
	invokes := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", where)
			}
			// A redirect for browsers (GET / to the docs) answers only 3xx.
			var ok2xx, redirect bool
			for code := range op.Responses.Map() {
				ok2xx = ok2xx || strings.HasPrefix(code, "2")
				redirect = redirect || strings.HasPrefix(code, "3")
			}
			if !ok2xx && !(redirect && op.Responses.Len() == 1) {
				t.Errorf("%s (%s) has no 2xx response", where, op.OperationID)
			}
			if !slices.Contains(op.Tags, "invoke") {
				continue
			}
			invokes[op.OperationID] = true
			for code, res := range op.Responses.Map() {
				_, marked := res.Value.Headers["Connmgr-Error"]
				if hasProblem := res.Value.Content["application/problem+json"] != nil; hasProblem != marked {
					t.Errorf("%s (%s) answer %s: problem+json %v but Connmgr-Error documented %v", where, op.OperationID, code, hasProblem, marked)
				}
			}
		}
	}
	want := []string{"invokeConnection", "invokeDelete", "invokeGet", "invokeHead", "invokeOptions", "invokePatch", "invokePost", "invokePut"}
	if got := slices.Sorted(maps.Keys(invokes)); !slices.Equal(got, want) {
		t.Errorf("invoke operations = %v, want %v", got, want)
	}
	desc := doc.Components.Parameters["RelativePath"].Value.Description
	if !strings.Contains(desc, "%2F") || !strings.Contains(desc, "invokeConnection") {
		t.Errorf("relativePath's description does not lead generated clients to invokeConnection: %q", desc)
	}
}

// TestRequiredPropertiesDefined does what Redocly's
// no-required-schema-properties-undefined would, outside `not`: every
// required property of a schema is defined by it or by the schemas it
// composes. (Inside `not`, `required` states prohibitions and defines
// nothing; see clients/redocly.yaml.)
func TestRequiredPropertiesDefined(t *testing.T) {
	doc := contract(t)
	var defined func(s *openapi3.Schema, name string, seen map[*openapi3.Schema]bool) bool
	defined = func(s *openapi3.Schema, name string, seen map[*openapi3.Schema]bool) bool {
		if s == nil || seen[s] {
			return false
		}
		seen[s] = true
		if _, ok := s.Properties[name]; ok {
			return true
		}
		for _, group := range []openapi3.SchemaRefs{s.AllOf, s.AnyOf, s.OneOf} {
			for _, r := range group {
				if defined(r.Value, name, seen) {
					return true
				}
			}
		}
		return false
	}
	var check func(where string, s *openapi3.Schema, parents []*openapi3.Schema, visited map[*openapi3.Schema]bool)
	check = func(where string, s *openapi3.Schema, parents []*openapi3.Schema, visited map[*openapi3.Schema]bool) {
		if s == nil || visited[s] {
			return
		}
		visited[s] = true
		for _, name := range s.Required {
			ok := defined(s, name, map[*openapi3.Schema]bool{})
			// An allOf member may require what a sibling defines.
			for _, p := range parents {
				ok = ok || defined(p, name, map[*openapi3.Schema]bool{})
			}
			if !ok {
				t.Errorf("%s requires %q, which it does not define", where, name)
			}
		}
		for name, p := range s.Properties {
			check(where+"."+name, p.Value, nil, visited)
		}
		for i, r := range s.AllOf {
			check(where+".allOf["+string(rune('0'+i))+"]", r.Value, append(parents, s), visited)
		}
		for _, group := range []openapi3.SchemaRefs{s.AnyOf, s.OneOf} {
			for _, r := range group {
				check(where+".xOf", r.Value, nil, visited)
			}
		}
		if s.Items != nil {
			check(where+"[]", s.Items.Value, nil, visited)
		}
		if s.AdditionalProperties.Schema != nil {
			check(where+".*", s.AdditionalProperties.Schema.Value, nil, visited)
		}
		// s.Not is skipped on purpose.
	}
	visited := map[*openapi3.Schema]bool{}
	for _, name := range slices.Sorted(maps.Keys(doc.Components.Schemas)) {
		check(name, doc.Components.Schemas[name].Value, nil, visited)
	}
}
