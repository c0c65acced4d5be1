package connections_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
)

// fields returns the sorted fields named by a Validate error.
func fields(err error) []string {
	var errs connections.ValidationErrors
	if !errors.As(err, &errs) {
		return nil
	}
	var fs []string
	for _, e := range errs {
		fs = append(fs, e.Field)
	}
	slices.Sort(fs)
	return fs
}

func TestValidate(t *testing.T) {
	var (
		none   = connections.PolicyNone
		basic  = connections.PolicyBasic
		apiKey = connections.PolicyAPIKey
		cc     = connections.PolicyClientCredentials
		pw     = connections.PolicyPassword
		ac     = connections.PolicyAuthorizationCode
	)
	jwt := func(c *connections.Connection) {
		c.Security.ClientAuth = connections.ClientAuthPrivateKeyJWT
		c.Security.ClientSecret = connections.Secret{}
		c.Security.PrivateKeyPEM = connections.NewSecret(rsaPEM())
	}
	tests := []struct {
		name   string
		policy connections.Policy
		mutate func(c *connections.Connection)
		want   []string // invalid fields, sorted; nil for valid
		bug    string
	}{
		// Valid.
		{name: "NONE", policy: none},
		{name: "BASIC", policy: basic},
		{name: "API_KEY", policy: apiKey},
		{name: "OAUTH2_CLIENT_CREDENTIALS", policy: cc},
		{name: "OAUTH2_PASSWORD", policy: pw},
		{name: "OAUTH2_AUTHORIZATION_CODE", policy: ac},
		{name: "every optional field", policy: cc, mutate: func(c *connections.Connection) {
			c.Description, c.Keywords = "Orders", []string{"orders", "Finance"}
			c.Role = connections.RoleTriggerInvoke
			c.Headers = map[string]string{"X-Api-Version": "2"}
			c.ForwardHeaders = []string{"X-Request-Id"}
			c.Timeout = 10 * time.Minute
			c.TestRequest = &connections.TestRequest{Method: "head", RelativeURI: "/health"}
			c.RateLimit = &connections.RateLimit{RequestsPerSecond: 0.5}
			c.MaxConcurrent = 10
			c.Security.Scopes = []string{"orders.read", "https://api.example.com/.default"}
			c.Security.Audience = "https://api.example.com"
			c.Security.ExtraParams = map[string]string{"resource": "orders"}
			c.Security.ClientAuth = connections.ClientAuthBody
		}},
		{name: "private_key_jwt", policy: cc, mutate: func(c *connections.Connection) { jwt(c); c.Security.KeyID = "kid" }},
		{name: "private_key_jwt with password", policy: pw, mutate: jwt},
		{name: "authorization code with issuer", policy: ac, mutate: func(c *connections.Connection) {
			c.Security.Issuer = "https://auth.example.com"
		}},
		{name: "API key in query", policy: apiKey, mutate: func(c *connections.Connection) {
			c.Security.In, c.Security.Name = connections.InQuery, "api_key"
		}},
		{name: "API key in Authorization", policy: apiKey, mutate: func(c *connections.Connection) {
			c.Security.Name, c.Security.ValuePrefix = "Authorization", ptr("Token ")
		}},
		{name: "name of 100 characters", policy: none, mutate: func(c *connections.Connection) { c.Name = "C" + strings.Repeat("x", 99) }},
		{name: "name with - and _", policy: none, mutate: func(c *connections.Connection) { c.Name = "a-B_9" }},

		// Common fields.
		{name: "no name", policy: none, mutate: func(c *connections.Connection) { c.Name = "" }, want: []string{"name"}},
		{name: "name starts with a digit", policy: none, mutate: func(c *connections.Connection) { c.Name = "1conn" }, want: []string{"name"}},
		{name: "name with a space", policy: none, mutate: func(c *connections.Connection) { c.Name = "a b" }, want: []string{"name"}},
		{name: "name with a dot", policy: none, mutate: func(c *connections.Connection) { c.Name = "a.b" }, want: []string{"name"}},
		{name: "name of 101 characters", policy: none, mutate: func(c *connections.Connection) { c.Name = "C" + strings.Repeat("x", 100) }, want: []string{"name"}},
		{name: "description with a control character", policy: none, mutate: func(c *connections.Connection) { c.Description = "a\x1bb" }, want: []string{"description"}},
		{name: "empty keyword", policy: none, mutate: func(c *connections.Connection) { c.Keywords = []string{"a", ""} }, want: []string{"keywords[1]"}},
		{name: "33 keywords", policy: none, mutate: func(c *connections.Connection) { c.Keywords = slices.Repeat([]string{"k"}, 33) }, want: []string{"keywords"}},
		{name: "no role", policy: none, mutate: func(c *connections.Connection) { c.Role = "" }, want: []string{"role"}},
		{name: "unknown role", policy: none, mutate: func(c *connections.Connection) { c.Role = "ADMIN" }, want: []string{"role"}},
		{name: "no base URL", policy: none, mutate: func(c *connections.Connection) { c.BaseURL = "" }, want: []string{"baseUrl"}},
		{name: "base URL with user info", policy: basic, mutate: func(c *connections.Connection) { c.BaseURL = "https://u:p@api.example.com" }, want: []string{"baseUrl"}},
		{name: "base URL with decimal IP", policy: none, mutate: func(c *connections.Connection) { c.BaseURL = "http://2130706433/" }, want: []string{"baseUrl"}},
		{name: "Authorization header", policy: none, mutate: func(c *connections.Connection) { c.Headers = map[string]string{"authorization": "x"} }, want: []string{"headers.authorization"}},
		{name: "X-Forwarded header", policy: none, mutate: func(c *connections.Connection) { c.Headers = map[string]string{"X-Forwarded-For": "1.2.3.4"} }, want: []string{"headers.X-Forwarded-For"}},
		{name: "bad header name", policy: none, mutate: func(c *connections.Connection) { c.Headers = map[string]string{"Bad Header": "x"} }, want: []string{"headers.Bad Header"}},
		{name: "header value with a newline", policy: none, mutate: func(c *connections.Connection) { c.Headers = map[string]string{"X-A": "a\r\nX-B: b"} }, want: []string{"headers.X-A"}},
		{name: "forwarding cookies", policy: none, mutate: func(c *connections.Connection) { c.ForwardHeaders = []string{"X-Ok", "Cookie"} }, want: []string{"forwardHeaders[1]"}},
		{name: "timeout too short", policy: none, mutate: func(c *connections.Connection) { c.Timeout = 99 * time.Millisecond }, want: []string{"timeoutMs"}},
		{name: "timeout too long", policy: none, mutate: func(c *connections.Connection) { c.Timeout = 10*time.Minute + time.Millisecond }, want: []string{"timeoutMs"}},
		{name: "negative timeout", policy: none, mutate: func(c *connections.Connection) { c.Timeout = -time.Second }, want: []string{"timeoutMs"}},
		{name: "test method TRACE", policy: none, mutate: func(c *connections.Connection) { c.TestRequest = &connections.TestRequest{Method: "TRACE"} }, want: []string{"testRequest.method"}},
		{name: "zero rate", policy: none, mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{} }, want: []string{"rateLimit.requestsPerSecond"}},
		{name: "NaN rate", policy: none, mutate: func(c *connections.Connection) {
			c.RateLimit = &connections.RateLimit{RequestsPerSecond: math.NaN(), Burst: 1}
		}, want: []string{"rateLimit.requestsPerSecond"}},
		{name: "negative burst", policy: none, mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{RequestsPerSecond: 1, Burst: -1} }, want: []string{"rateLimit.burst"}},
		{name: "negative max concurrent", policy: none, mutate: func(c *connections.Connection) { c.MaxConcurrent = -1 }, want: []string{"maxConcurrent"}},

		// Policies.
		{name: "no policy", policy: "", want: []string{"security.policy"}},
		{name: "unknown policy", policy: "KERBEROS", want: []string{"security.policy"}},
		{name: "NONE with a password", policy: none, mutate: func(c *connections.Connection) { c.Security.Password = connections.NewSecret("x") }, want: []string{"security.password"}},
		{name: "NONE with in", policy: none, mutate: func(c *connections.Connection) { c.Security.In = connections.InHeader }, want: []string{"security.in"}},
		{name: "BASIC with a token URL", policy: basic, mutate: func(c *connections.Connection) { c.Security.TokenURL = "https://auth.example.com/token" }, want: []string{"security.tokenUrl"}},
		{name: "BASIC with a key", policy: basic, mutate: func(c *connections.Connection) { c.Security.Key = connections.NewSecret("k") }, want: []string{"security.key"}},
		{name: "BASIC without username", policy: basic, mutate: func(c *connections.Connection) { c.Security.Username = "" }, want: []string{"security.username"}},
		{name: "BASIC without password", policy: basic, mutate: func(c *connections.Connection) { c.Security.Password = connections.Secret{} }, want: []string{"security.password"}},
		{name: "API_KEY with a client id", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.ClientID = "c" }, want: []string{"security.clientId"}},
		{name: "API_KEY without key", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.Key = connections.Secret{} }, want: []string{"security.key"}},
		{name: "API_KEY with a newline", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.Key = connections.NewSecret("k\r\nX-Evil: 1") }, want: []string{"security.key"}},
		{name: "API_KEY in a cookie", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.In = "COOKIE" }, want: []string{"security.in"}},
		{name: "API_KEY in query without name", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.In = connections.InQuery }, want: []string{"security.name"}},
		{name: "API_KEY in Cookie header", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.Name = "Cookie" }, want: []string{"security.name"}},
		{name: "API_KEY in a bad header", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.Name = "X Key" }, want: []string{"security.name"}},
		{name: "API_KEY prefix with a newline", policy: apiKey, mutate: func(c *connections.Connection) { c.Security.ValuePrefix = ptr("a\nb") }, want: []string{"security.valuePrefix"}},
		{name: "client credentials with issuer", policy: cc, mutate: func(c *connections.Connection) { c.Security.Issuer = "https://auth.example.com" }, want: []string{"security.issuer"}},
		{name: "client credentials with username", policy: cc, mutate: func(c *connections.Connection) { c.Security.Username = "u" }, want: []string{"security.username"}},
		{name: "client credentials with a key", policy: cc, mutate: func(c *connections.Connection) { c.Security.Key = connections.NewSecret("k") }, want: []string{"security.key"}},
		{name: "no token URL", policy: cc, mutate: func(c *connections.Connection) { c.Security.TokenURL = "" }, want: []string{"security.tokenUrl"}},
		{name: "token URL with octal host", policy: cc, mutate: func(c *connections.Connection) { c.Security.TokenURL = "http://0177.0.0.1/token" }, want: []string{"security.tokenUrl"}},
		{name: "no client id", policy: cc, mutate: func(c *connections.Connection) { c.Security.ClientID = "" }, want: []string{"security.clientId"}},
		{name: "no client secret", policy: cc, mutate: func(c *connections.Connection) { c.Security.ClientSecret = connections.Secret{} }, want: []string{"security.clientSecret"}},
		{name: "unknown client auth", policy: cc, mutate: func(c *connections.Connection) { c.Security.ClientAuth = "MTLS" }, want: []string{"security.clientAuth"}},
		{name: "private_key_jwt without key", policy: cc, mutate: func(c *connections.Connection) {
			jwt(c)
			c.Security.PrivateKeyPEM = connections.Secret{}
		}, want: []string{"security.privateKeyPem"}},
		{name: "private_key_jwt with a bad key", policy: cc, mutate: func(c *connections.Connection) {
			jwt(c)
			c.Security.PrivateKeyPEM = connections.NewSecret("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, want: []string{"security.privateKeyPem"}},
		{name: "private_key_jwt with a client secret", policy: cc, mutate: func(c *connections.Connection) {
			jwt(c)
			c.Security.ClientSecret = connections.NewSecret("s")
		}, want: []string{"security.clientSecret"}},
		{name: "private key with client secret auth", policy: cc, mutate: func(c *connections.Connection) { c.Security.PrivateKeyPEM = connections.NewSecret(rsaPEM()) }, want: []string{"security.privateKeyPem"}},
		{name: "scope with a space", policy: cc, mutate: func(c *connections.Connection) { c.Security.Scopes = []string{"a", "b c"} }, want: []string{"security.scopes[1]"}},
		{name: "extra param overrides grant_type", policy: cc, mutate: func(c *connections.Connection) { c.Security.ExtraParams = map[string]string{"Grant_Type": "password"} }, want: []string{"security.extraParams.Grant_Type"}},
		{name: "password grant without username", policy: pw, mutate: func(c *connections.Connection) { c.Security.Username = "" }, want: []string{"security.username"}},
		{name: "password grant without password", policy: pw, mutate: func(c *connections.Connection) { c.Security.Password = connections.Secret{} }, want: []string{"security.password"}},
		{name: "authorization code without authorization URL", policy: ac, mutate: func(c *connections.Connection) { c.Security.AuthorizationURL = "" }, want: []string{"security.authorizationUrl"}},
		{name: "authorization code with hex host", policy: ac, mutate: func(c *connections.Connection) { c.Security.AuthorizationURL = "https://0x7f.1/authorize" }, want: []string{"security.authorizationUrl"}},
		{name: "authorization code with a password", policy: ac, mutate: func(c *connections.Connection) { c.Security.Password = connections.NewSecret("p") }, want: []string{"security.password"}},
		{name: "secret too long", policy: basic, mutate: func(c *connections.Connection) {
			c.Security.Password = connections.NewSecret(strings.Repeat("p", 16<<10+1))
		}, want: []string{"security.password"}},

		// Every invalid field is named, not only the first.
		{name: "bad name and bad policy field", policy: basic, mutate: func(c *connections.Connection) {
			c.Name = ""
			c.Security.TokenURL = "https://auth.example.com"
		}, want: []string{"name", "security.tokenUrl"}},
		{name: "bad name and missing password", policy: basic, mutate: func(c *connections.Connection) {
			c.Name = ""
			c.Security.Password = connections.Secret{}
		}, want: []string{"name", "security.password"}, bug: "Validate skips the policy's own checks after any earlier error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConn("Conn_Test", tt.policy)
			if tt.mutate != nil {
				tt.mutate(c)
			}
			err := c.Validate()
			got := fields(err)
			if err != nil && got == nil {
				t.Fatalf("Validate() = %v, want ValidationErrors", err)
			}
			expect(t, tt.bug, slices.Equal(got, tt.want), "Validate() = %v, want errors for %q", err, tt.want)
		})
	}
}

func TestValidateDefaults(t *testing.T) {
	tests := []struct {
		name   string
		policy connections.Policy
		mutate func(c *connections.Connection)
		got    func(c *connections.Connection) any
		want   any
	}{
		{name: "timeout", policy: connections.PolicyNone,
			got: func(c *connections.Connection) any { return c.Timeout }, want: 30 * time.Second},
		{name: "timeout kept", policy: connections.PolicyNone, mutate: func(c *connections.Connection) { c.Timeout = time.Second },
			got: func(c *connections.Connection) any { return c.Timeout }, want: time.Second},
		{name: "API key without name", policy: connections.PolicyAPIKey,
			got:  func(c *connections.Connection) any { return apiKeyPlace(c) },
			want: "HEADER Authorization \"Bearer \""},
		{name: "API key with a name", policy: connections.PolicyAPIKey, mutate: func(c *connections.Connection) { c.Security.Name = "X-Api-Key" },
			got:  func(c *connections.Connection) any { return apiKeyPlace(c) },
			want: "HEADER X-Api-Key \"\""},
		{name: "API key named Authorization", policy: connections.PolicyAPIKey, mutate: func(c *connections.Connection) { c.Security.Name = "Authorization" },
			got:  func(c *connections.Connection) any { return apiKeyPlace(c) },
			want: "HEADER Authorization \"\""},
		{name: "API key with a prefix", policy: connections.PolicyAPIKey, mutate: func(c *connections.Connection) { c.Security.ValuePrefix = ptr("Token ") },
			got:  func(c *connections.Connection) any { return apiKeyPlace(c) },
			want: "HEADER Authorization \"Token \""},
		{name: "API key with an empty prefix", policy: connections.PolicyAPIKey, mutate: func(c *connections.Connection) { c.Security.ValuePrefix = ptr("") },
			got:  func(c *connections.Connection) any { return apiKeyPlace(c) },
			want: "HEADER Authorization \"\""},
		{name: "API key in query", policy: connections.PolicyAPIKey, mutate: func(c *connections.Connection) {
			c.Security.In, c.Security.Name = connections.InQuery, "api_key"
		},
			got:  func(c *connections.Connection) any { return apiKeyPlace(c) },
			want: "QUERY api_key \"\""},
		{name: "client auth", policy: connections.PolicyClientCredentials,
			got: func(c *connections.Connection) any { return c.Security.ClientAuth }, want: connections.ClientAuthBasic},
		{name: "client auth of authorization code", policy: connections.PolicyAuthorizationCode,
			got: func(c *connections.Connection) any { return c.Security.ClientAuth }, want: connections.ClientAuthBasic},
		{name: "test method", policy: connections.PolicyNone, mutate: func(c *connections.Connection) { c.TestRequest = &connections.TestRequest{} },
			got: func(c *connections.Connection) any { return c.TestRequest.Method }, want: "GET"},
		{name: "test method upper-cased", policy: connections.PolicyNone, mutate: func(c *connections.Connection) { c.TestRequest = &connections.TestRequest{Method: "post"} },
			got: func(c *connections.Connection) any { return c.TestRequest.Method }, want: "POST"},
		{name: "burst", policy: connections.PolicyNone, mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{RequestsPerSecond: 2.5} },
			got: func(c *connections.Connection) any { return c.RateLimit.Burst }, want: 3},
		{name: "burst of a slow rate", policy: connections.PolicyNone, mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{RequestsPerSecond: 0.1} },
			got: func(c *connections.Connection) any { return c.RateLimit.Burst }, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConn("Conn_Test", tt.policy)
			if tt.mutate != nil {
				tt.mutate(c)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if got := tt.got(c); got != tt.want {
				t.Errorf("after Validate() %s = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func apiKeyPlace(c *connections.Connection) string {
	s := c.Security
	if s.ValuePrefix == nil {
		return fmt.Sprintf("%s %s <nil>", s.In, s.Name)
	}
	return fmt.Sprintf("%s %s %q", s.In, s.Name, *s.ValuePrefix)
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://example.com", true},
		{"https://api.example.com/v2?tenant=1", true},
		{"http://127.0.0.1:8080/x", true},
		{"http://[::1]/", true},
		{"http://[2001:db8::1]:8443", true},
		{"http://localhost", true},
		{"HTTPS://Example.COM/", true},
		{"https://example.com.", true},
		{"", false},
		{"example.com", false},
		{"ftp://example.com", false},
		{"javascript:alert(1)", false},
		{"https:example.com", false},
		{"http://", false},
		{"http:///path", false},
		{"http://user:pw@example.com", false},
		{"http://user@example.com", false},
		{"https://example.com/#frag", false},
		{"https://example.com/#", false},
		{"http://2130706433/", false},
		{"http://0177.0.0.1/", false},
		{"http://0x7f.1/", false},
		{"http://0x7f000001/", false},
		{"http://127.1/", false},
		{"http://127.0.0.01/", false},
		{"http://[fe80::1%25eth0]/", false},
		{"http://example.com:0/", false},
		{"http://example.com:65536/", false},
		{"http://example.com:080/", false},
		{"http://exa mple.com/", false},
		{"http://example.com\\@evil.com/", false},
		{"http://a..b/", false},
		{"http://ex$ample.com/", false},
		{"https://example.com/\x00", false},
		{"https://" + strings.Repeat("a", 2048) + ".com", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := connections.CheckURL(tt.url)
			if (err == nil) != tt.ok {
				t.Errorf("CheckURL(%q) = %v, want ok=%v", tt.url, err, tt.ok)
			}
		})
	}
}

func TestCarrySecrets(t *testing.T) {
	stored := func(p connections.Policy, mutate func(c *connections.Connection)) *connections.Connection {
		c := sample("Conn_Carry", p)
		if mutate != nil {
			mutate(c)
		}
		c.ID, c.Version, c.CreatedBy = 42, 3, "alice"
		c.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		c.Status = connections.StatusConfigured
		c.LastTest = connections.NewTestResult(c.CreatedAt, true, "ok")
		return c
	}
	sent := func(p connections.Policy, mutate ...func(c *connections.Connection)) *connections.Connection {
		c := newConn("Conn_Carry", p)
		for _, m := range mutate {
			m(c)
		}
		return c
	}
	omit := func(fs ...string) func(c *connections.Connection) {
		return func(c *connections.Connection) {
			for _, f := range fs {
				c.Security.SetSecret(f, connections.Secret{})
			}
		}
	}
	jwt := func(c *connections.Connection) {
		c.Security.ClientAuth = connections.ClientAuthPrivateKeyJWT
		c.Security.ClientSecret = connections.Secret{}
		c.Security.PrivateKeyPEM = connections.NewSecret(rsaPEM())
	}
	basic, pw, cc := connections.PolicyBasic, connections.PolicyPassword, connections.PolicyClientCredentials
	tests := []struct {
		name    string
		old     *connections.Connection
		new     *connections.Connection
		carried []string
		bug     string
	}{
		{name: "secret omitted", old: stored(basic, nil), new: sent(basic, omit("password")), carried: []string{"password"}},
		{name: "secret re-sent", old: stored(basic, nil), new: sent(basic), carried: nil},
		{name: "every secret omitted", old: stored(pw, nil), new: sent(pw, omit(connections.SecretFields...)),
			carried: []string{"password", "clientSecret"}},
		{name: "one of two omitted", old: stored(pw, nil), new: sent(pw, omit("password")), carried: []string{"password"}},
		{name: "policy no longer takes it", old: stored(basic, nil), new: sent(connections.PolicyAPIKey), carried: nil},
		{name: "shared by the new policy", old: stored(basic, nil), new: sent(pw, omit("password")), carried: []string{"password"}},
		{name: "private key omitted", old: stored(cc, jwt), new: sent(cc, jwt, omit("privateKeyPem")), carried: []string{"privateKeyPem"}},
		{name: "client secret to private_key_jwt", old: stored(cc, nil), new: sent(cc, jwt), carried: nil,
			bug: "CarrySecrets carries the client secret into clientAuth PRIVATE_KEY_JWT, which Validate then refuses"},
		{name: "private key to client secret", old: stored(cc, jwt), new: sent(cc), carried: nil,
			bug: "CarrySecrets carries the private key into clientAuth BASIC_HEADER, which Validate then refuses"},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent := map[string]connections.Secret{}
			for _, f := range connections.SecretFields {
				sent[f] = tt.new.Security.Secret(f)
			}
			carried := connections.CarrySecrets(tt.old, tt.new)
			c := tt.new
			if c.ID != tt.old.ID || !c.CreatedAt.Equal(tt.old.CreatedAt) || c.CreatedBy != tt.old.CreatedBy ||
				c.Status != tt.old.Status || c.LastTest != tt.old.LastTest {
				t.Errorf("CarrySecrets did not keep the identity and bookkeeping of the stored connection: %+v", c)
			}
			for _, f := range connections.SecretFields {
				want := sent[f]
				if slices.Contains(carried, f) {
					want = tt.old.Security.Secret(f)
				}
				if got := c.Security.Secret(f); !got.Equal(want) {
					t.Errorf("secret %s = %.20q, want %.20q", f, got.Reveal(), want.Reveal())
				}
			}
			err := c.Validate()
			expect(t, tt.bug, slices.Equal(carried, tt.carried) && err == nil,
				"CarrySecrets() = %q, then Validate() = %v; want %q, nil", carried, err, tt.carried)
		})
	}
}

func TestCheckHostChange(t *testing.T) {
	cc := func(base, token string) *connections.Connection {
		c := sample("Conn_Host", connections.PolicyClientCredentials)
		c.BaseURL, c.Security.TokenURL = base, token
		return c
	}
	old := cc("https://api.example.com/v1", "https://auth.example.com/token")
	basic := sample("Conn_Host", connections.PolicyBasic)
	basic.BaseURL = "https://api.example.com/v1"
	password := sample("Conn_Host", connections.PolicyPassword)
	password.BaseURL, password.Security.TokenURL = "https://api.example.com/v1", "https://auth.evil.example/token"
	none := sample("Conn_Host", connections.PolicyNone)
	none.BaseURL = "https://elsewhere.example/"

	secret := []string{"clientSecret"}
	tests := []struct {
		name    string
		old     *connections.Connection
		new     *connections.Connection
		carried []string
		want    []string // fields named in the error
	}{
		{name: "secrets re-sent", old: old, new: cc("https://evil.example/v1", "https://evil.example/token"), carried: nil},
		{name: "same hosts, other paths", old: old, new: cc("https://api.example.com/v2?x=1", "https://auth.example.com/oauth2/token"), carried: secret},
		{name: "host case", old: old, new: cc("https://API.example.com/v1", "https://Auth.Example.com/token"), carried: secret},
		{name: "base URL host", old: old, new: cc("https://evil.example/v1", "https://auth.example.com/token"), carried: secret,
			want: []string{"baseUrl"}},
		{name: "base URL port", old: old, new: cc("https://api.example.com:8443/v1", "https://auth.example.com/token"), carried: secret,
			want: []string{"baseUrl"}},
		{name: "scheme only", old: old, new: cc("http://api.example.com/v1", "https://auth.example.com/token"), carried: secret},
		{name: "token URL host", old: old, new: cc("https://api.example.com/v1", "https://auth.evil.example/token"), carried: secret,
			want: []string{"security.tokenUrl"}},
		{name: "both", old: old, new: cc("https://evil.example/v1", "https://evil.example/token"), carried: secret,
			want: []string{"baseUrl", "security.tokenUrl"}},
		{name: "no credentials any more", old: old, new: none, carried: nil},
		{name: "new token URL receives a carried password", old: basic, new: password, carried: []string{"password"},
			want: []string{"security.tokenUrl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := connections.CheckHostChange(tt.old, tt.new, tt.carried)
			if got := fields(err); !slices.Equal(got, tt.want) || (err != nil) != (tt.want != nil) {
				t.Errorf("CheckHostChange(%q) = %v, want errors for %q", tt.carried, err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), "security."+tt.carried[0]) {
				t.Errorf("CheckHostChange error %q does not say which secrets to re-send", err)
			}
		})
	}
}

func TestConfigChanged(t *testing.T) {
	tests := []struct {
		name   string
		policy connections.Policy
		mutate func(c *connections.Connection)
		want   bool
	}{
		{name: "nothing", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) {}, want: false},
		{name: "description and keywords", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) {
			c.Description, c.Keywords = "new", []string{"new"}
		}, want: false},
		{name: "headers, timeout and limits", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) {
			c.Headers = map[string]string{"X-A": "1"}
			c.Timeout, c.MaxConcurrent = time.Second, 3
			c.RateLimit = &connections.RateLimit{RequestsPerSecond: 1, Burst: 1}
		}, want: false},
		{name: "role", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Role = connections.RoleTrigger }, want: false},
		{name: "base URL", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.BaseURL += "/v2" }, want: true},
		{name: "policy", policy: connections.PolicyBasic, mutate: func(c *connections.Connection) { c.Security.Policy = connections.PolicyPassword }, want: true},
		{name: "token URL", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.TokenURL += "2" }, want: true},
		{name: "client id", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.ClientID = "other" }, want: true},
		{name: "username", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.Username = "other" }, want: true},
		{name: "scopes", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.Scopes = []string{"x"} }, want: true},
		{name: "audience", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.Audience = "aud" }, want: true},
		{name: "extra params", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.ExtraParams = map[string]string{"a": "b"} }, want: true},
		{name: "client auth", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.ClientAuth = connections.ClientAuthBody }, want: true},
		{name: "password", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.Password = connections.NewSecret("new") }, want: true},
		{name: "client secret", policy: connections.PolicyPassword, mutate: func(c *connections.Connection) { c.Security.ClientSecret = connections.NewSecret("new") }, want: true},
		{name: "API key", policy: connections.PolicyAPIKey, mutate: func(c *connections.Connection) { c.Security.Key = connections.NewSecret("new") }, want: true},
		{name: "issuer", policy: connections.PolicyAuthorizationCode, mutate: func(c *connections.Connection) { c.Security.Issuer = "https://auth.example.com" }, want: true},
		{name: "authorization URL", policy: connections.PolicyAuthorizationCode, mutate: func(c *connections.Connection) { c.Security.AuthorizationURL += "2" }, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := sample("Conn_Changed", tt.policy)
			c := *old
			c.Security = old.Security
			tt.mutate(&c)
			if got := connections.ConfigChanged(old, &c); got != tt.want {
				t.Errorf("ConfigChanged() after %s = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestSecretRedacts(t *testing.T) {
	const value = "hunter2-s3cret"
	s := connections.NewSecret(value)
	type holder struct {
		Name     string
		Password connections.Secret
		Ptr      *connections.Secret
	}
	h := holder{Name: "n", Password: s, Ptr: &s}
	c := sample("Conn_Secret", connections.PolicyPassword)
	c.Security.Password, c.Security.ClientSecret = s, s

	logged := func(handler slog.Handler, buf *bytes.Buffer) string {
		slog.New(handler).Info("connection", "secret", s, "holder", h, "conn", c)
		return buf.String()
	}
	tests := []struct {
		name string
		out  func() string
	}{
		{name: "%v", out: func() string { return fmt.Sprintf("%v", s) }},
		{name: "%+v", out: func() string { return fmt.Sprintf("%+v", s) }},
		{name: "%#v", out: func() string { return fmt.Sprintf("%#v", s) }},
		{name: "%s", out: func() string { return fmt.Sprintf("%s", s) }},
		{name: "%q", out: func() string { return fmt.Sprintf("%q", s) }},
		{name: "%x", out: func() string { return fmt.Sprintf("%x", s) }},
		{name: "%X", out: func() string { return fmt.Sprintf("%X", s) }},
		{name: "%d", out: func() string { return fmt.Sprintf("%d", s) }},
		{name: "String", out: s.String},
		{name: "GoString", out: s.GoString},
		{name: "Sprint", out: func() string { return fmt.Sprint(s, &s) }},
		{name: "struct %v", out: func() string { return fmt.Sprintf("%v", h) }},
		{name: "struct %+v", out: func() string { return fmt.Sprintf("%+v", h) }},
		{name: "struct %#v", out: func() string { return fmt.Sprintf("%#v", h) }},
		{name: "struct %x", out: func() string { return fmt.Sprintf("%x", h) }},
		{name: "connection %+v", out: func() string { return fmt.Sprintf("%+v", c) }},
		{name: "connection %#v", out: func() string { return fmt.Sprintf("%#v", *c) }},
		{name: "JSON", out: func() string { b, _ := json.Marshal(s); return string(b) }},
		{name: "JSON of a struct", out: func() string { b, _ := json.Marshal(h); return string(b) }},
		{name: "JSON of a connection", out: func() string { b, _ := json.Marshal(c); return string(b) }},
		{name: "text", out: func() string { b, _ := s.MarshalText(); return string(b) }},
		{name: "slog JSON", out: func() string {
			var buf bytes.Buffer
			return logged(slog.NewJSONHandler(&buf, nil), &buf)
		}},
		{name: "slog text", out: func() string {
			var buf bytes.Buffer
			return logged(slog.NewTextHandler(&buf, nil), &buf)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tt.out()
			if strings.Contains(out, value) || strings.Contains(out, fmt.Sprintf("%x", value)) ||
				strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", value)) {
				t.Errorf("%s of a secret = %s, want it redacted", tt.name, out)
			}
			if !strings.Contains(out, connections.Mask) {
				t.Errorf("%s of a secret = %s, want it to show %s", tt.name, out, connections.Mask)
			}
		})
	}

	if got := s.Reveal(); got != value {
		t.Errorf("Reveal() = %q, want %q", got, value)
	}
	var zero connections.Secret
	if zero.IsSet() || !s.IsSet() || zero.String() != "" {
		t.Errorf("IsSet() = %v, %v; zero String() = %q; want false, true, empty", zero.IsSet(), s.IsSet(), zero.String())
	}
	if !s.Equal(connections.NewSecret(value)) || s.Equal(zero) {
		t.Errorf("Equal compares wrongly")
	}
}
