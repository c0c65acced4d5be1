package connections_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// The security policies' own fields, as connections see them: validation
// of each policy's settings, which fields belong to which policy,
// defaults, carrying secrets into a replacement, where a kept secret may
// go, and what the fingerprint covers.

var (
	none   = security.PolicyNone
	basic  = security.PolicyBasic
	apiKey = security.PolicyAPIKey
	cc     = security.PolicyClientCredentials
	pw     = security.PolicyPassword
	ac     = security.PolicyAuthorizationCode
)

// jwt switches c's OAuth client to private_key_jwt.
func jwt(t testing.TB) func(c *connections.Connection) {
	return func(c *connections.Connection) {
		cl := client(t, c)
		cl.ClientAuth, cl.ClientSecret = security.ClientAuthPrivateKeyJWT, connections.Secret{}
		cl.PrivateKeyPEM = connections.NewSecret(storetest.RSAKeyPEM())
	}
}

func TestValidatePolicies(t *testing.T) {
	cert, key := selfSigned(t, time.Now().Add(24*time.Hour))
	checkValidate(t, []validateCase{
		// Valid.
		{name: "NONE", policy: none},
		{name: "BASIC", policy: basic},
		{name: "API_KEY", policy: apiKey},
		{name: "OAUTH2_CLIENT_CREDENTIALS", policy: cc},
		{name: "OAUTH2_PASSWORD", policy: pw},
		{name: "OAUTH2_AUTHORIZATION_CODE", policy: ac},
		{name: "every optional client field", policy: cc, mutate: func(c *connections.Connection) {
			cl := client(t, c)
			cl.Scopes = []string{"orders.read", "https://api.example.com/.default"}
			cl.Audience = "https://api.example.com"
			cl.ExtraParams = map[string]string{"tenant": "orders"}
			cl.ClientAuth = security.ClientAuthBody
		}},
		{name: "private_key_jwt", policy: cc, mutate: func(c *connections.Connection) {
			jwt(t)(c)
			client(t, c).KeyID, client(t, c).AssertionAudience = "kid", "https://auth.example.com"
		}},
		{name: "private_key_jwt with password", policy: pw, mutate: jwt(t)},
		{name: "client_secret_jwt with key id", policy: cc, mutate: func(c *connections.Connection) {
			client(t, c).ClientAuth, client(t, c).KeyID = security.ClientAuthSecretJWT, "kid"
		}},
		{name: "tls_client_auth", policy: cc, mutate: func(c *connections.Connection) {
			client(t, c).ClientAuth, client(t, c).ClientSecret = security.ClientAuthTLS, connections.Secret{}
			c.TLS = &connections.TLS{ClientCertificatePEM: cert, ClientKeyPEM: connections.NewSecret(key)}
		}},
		{name: "authorization code with issuer", policy: ac, mutate: func(c *connections.Connection) {
			sec[*security.AuthorizationCode](t, c).Issuer = "https://auth.example.com"
		}},
		{name: "authorization code discovered from the issuer", policy: ac, mutate: func(c *connections.Connection) {
			p := sec[*security.AuthorizationCode](t, c)
			p.Issuer, p.AuthorizationURL, p.TokenURL, p.RequireIss = "https://auth.example.com", "", "", true
			p.Scopes = []string{"openid"}
		}},
		{name: "API key in query", policy: apiKey, mutate: func(c *connections.Connection) {
			k := sec[*security.APIKey](t, c)
			k.In, k.Name = security.InQuery, "api_key"
		}},
		{name: "API key in Authorization", policy: apiKey, mutate: func(c *connections.Connection) {
			k := sec[*security.APIKey](t, c)
			k.Name, k.ValuePrefix = "Authorization", ptr("Token ")
		}},

		{name: "BASIC without username", policy: basic, mutate: func(c *connections.Connection) { sec[*security.Basic](t, c).Username = "" },
			want: []string{"security.username"}},
		{name: "BASIC username with a colon", policy: basic, mutate: func(c *connections.Connection) { sec[*security.Basic](t, c).Username = "a:b" },
			want: []string{"security.username"}},
		{name: "BASIC without password", policy: basic, mutate: func(c *connections.Connection) { sec[*security.Basic](t, c).Password = connections.Secret{} },
			want: []string{"security.password"}},
		{name: "API_KEY without key", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).Key = connections.Secret{} },
			want: []string{"security.key"}},
		{name: "API_KEY with a newline", policy: apiKey, mutate: func(c *connections.Connection) {
			sec[*security.APIKey](t, c).Key = connections.NewSecret("k\r\nX-Evil: 1")
		}, want: []string{"security.key"}},
		{name: "API_KEY in a cookie", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).In = "COOKIE" },
			want: []string{"security.in"}},
		{name: "API_KEY in query without name", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).In = security.InQuery },
			want: []string{"security.name"}},
		{name: "API_KEY in Cookie header", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).Name = "Cookie" },
			want: []string{"security.name"}},
		{name: "API_KEY in a bad header", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).Name = "X Key" },
			want: []string{"security.name"}},
		{name: "API_KEY prefix with a newline", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).ValuePrefix = ptr("a\nb") },
			want: []string{"security.valuePrefix"}},
		{name: "no token URL", policy: cc, mutate: func(c *connections.Connection) { client(t, c).TokenURL = "" },
			want: []string{"security.tokenUrl"}},
		{name: "token URL with octal host", policy: cc, mutate: func(c *connections.Connection) { client(t, c).TokenURL = "http://0177.0.0.1/token" },
			want: []string{"security.tokenUrl"}},
		{name: "no client id", policy: cc, mutate: func(c *connections.Connection) { client(t, c).ClientID = "" },
			want: []string{"security.clientId"}},
		{name: "no client secret", policy: cc, mutate: func(c *connections.Connection) { client(t, c).ClientSecret = connections.Secret{} },
			want: []string{"security.clientSecret"}},
		{name: "unknown client auth", policy: cc, mutate: func(c *connections.Connection) { client(t, c).ClientAuth = "MTLS" },
			want: []string{"security.clientAuth"}},
		{name: "private_key_jwt without key", policy: cc, mutate: func(c *connections.Connection) {
			jwt(t)(c)
			client(t, c).PrivateKeyPEM = connections.Secret{}
		}, want: []string{"security.privateKeyPem"}},
		{name: "private_key_jwt with a bad key", policy: cc, mutate: func(c *connections.Connection) {
			jwt(t)(c)
			client(t, c).PrivateKeyPEM = connections.NewSecret("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, want: []string{"security.privateKeyPem"}},
		{name: "private_key_jwt with a client secret", policy: cc, mutate: func(c *connections.Connection) {
			jwt(t)(c)
			client(t, c).ClientSecret = connections.NewSecret("s")
		}, want: []string{"security.clientSecret"}},
		{name: "private key with client secret auth", policy: cc, mutate: func(c *connections.Connection) {
			client(t, c).PrivateKeyPEM = connections.NewSecret(storetest.RSAKeyPEM())
		}, want: []string{"security.privateKeyPem"}},
		{name: "key id without a client assertion", policy: cc, mutate: func(c *connections.Connection) { client(t, c).KeyID = "kid" },
			want: []string{"security.keyId"}},
		{name: "tls_client_auth without a certificate", policy: cc, mutate: func(c *connections.Connection) {
			client(t, c).ClientAuth, client(t, c).ClientSecret = security.ClientAuthTLS, connections.Secret{}
		}, want: []string{"security.clientAuth"}},
		{name: "scope with a space", policy: cc, mutate: func(c *connections.Connection) { client(t, c).Scopes = []string{"a", "b c"} },
			want: []string{"security.scopes[1]"}},
		{name: "extra param overrides grant_type", policy: cc, mutate: func(c *connections.Connection) {
			client(t, c).ExtraParams = map[string]string{"Grant_Type": "password"}
		}, want: []string{"security.extraParams.Grant_Type"}},
		{name: "password grant without username", policy: pw, mutate: func(c *connections.Connection) { sec[*security.Password](t, c).Username = "" },
			want: []string{"security.username"}},
		{name: "password grant without password", policy: pw, mutate: func(c *connections.Connection) {
			sec[*security.Password](t, c).Password = connections.Secret{}
		}, want: []string{"security.password"}},
		{name: "authorization code without authorization URL", policy: ac, mutate: func(c *connections.Connection) {
			sec[*security.AuthorizationCode](t, c).AuthorizationURL = ""
		}, want: []string{"security.authorizationUrl"}},
		{name: "authorization code with hex host", policy: ac, mutate: func(c *connections.Connection) {
			sec[*security.AuthorizationCode](t, c).AuthorizationURL = "https://0x7f.1/authorize"
		}, want: []string{"security.authorizationUrl"}},
		{name: "requireIss without issuer", policy: ac, mutate: func(c *connections.Connection) {
			sec[*security.AuthorizationCode](t, c).RequireIss = true
		}, want: []string{"security.requireIss"}},
		{name: "openid without issuer", policy: ac, mutate: func(c *connections.Connection) {
			sec[*security.AuthorizationCode](t, c).Scopes = []string{"openid"}
		}, want: []string{"security.issuer"}},
		{name: "secret too long", policy: basic, mutate: func(c *connections.Connection) {
			sec[*security.Basic](t, c).Password = connections.NewSecret(strings.Repeat("p", connections.MaxSecretLen+1))
		}, want: []string{"security.password"}},

		// Every invalid field is named, not only the first.
		{name: "bad name and missing password", policy: basic, mutate: func(c *connections.Connection) {
			c.Name = ""
			sec[*security.Basic](t, c).Password = connections.Secret{}
		}, want: []string{"name", "security.password"}, bug: "Validate skips the policy's own checks after any earlier error"},
	})
}

// TestPolicyFields: a field of one policy is not a field of another
// (422 naming the field), so a client cannot set, say, a password on a
// NONE connection and have it kept.
func TestPolicyFields(t *testing.T) {
	tests := []struct {
		name string
		json string
		want []string
	}{
		{"NONE", `{"policy": "NONE"}`, nil},
		{"BASIC", `{"policy": "BASIC", "username": "u", "password": "p"}`, nil},
		{"client credentials", `{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": "https://a.example/t", "clientId": "c", "clientSecret": "s"}`, nil},
		{"no policy", `{"username": "u"}`, []string{"security.policy"}},
		{"unknown policy", `{"policy": "KERBEROS"}`, []string{"security.policy"}},
		{"NONE with a password", `{"policy": "NONE", "password": "x"}`, []string{"security.password"}},
		{"NONE with in", `{"policy": "NONE", "in": "HEADER"}`, []string{"security.in"}},
		{"BASIC with a token URL", `{"policy": "BASIC", "username": "u", "tokenUrl": "https://a.example/t"}`, []string{"security.tokenUrl"}},
		{"BASIC with a key", `{"policy": "BASIC", "key": "k"}`, []string{"security.key"}},
		{"API_KEY with a client id", `{"policy": "API_KEY", "clientId": "c"}`, []string{"security.clientId"}},
		{"client credentials with issuer", `{"policy": "OAUTH2_CLIENT_CREDENTIALS", "issuer": "https://a.example"}`, []string{"security.issuer"}},
		{"client credentials with username", `{"policy": "OAUTH2_CLIENT_CREDENTIALS", "username": "u"}`, []string{"security.username"}},
		{"client credentials with a key", `{"policy": "OAUTH2_CLIENT_CREDENTIALS", "key": "k"}`, []string{"security.key"}},
		{"authorization code with a password", `{"policy": "OAUTH2_AUTHORIZATION_CODE", "password": "p"}`, []string{"security.password"}},
		{"secret of the wrong type", `{"policy": "BASIC", "password": 17}`, []string{"security.password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := security.Decode([]byte(tt.json))
			if got := fields(err); !slices.Equal(got, tt.want) || (err != nil) != (tt.want != nil) {
				t.Errorf("Decode(%s) = %v, want errors for %q", tt.json, err, tt.want)
			}
		})
	}
}

func TestValidatePolicyDefaults(t *testing.T) {
	apiKeyPlace := func(c *connections.Connection) any {
		k := sec[*security.APIKey](t, c)
		if k.ValuePrefix == nil {
			return fmt.Sprintf("%s %s <nil>", k.In, k.Name)
		}
		return fmt.Sprintf("%s %s %q", k.In, k.Name, *k.ValuePrefix)
	}
	keyField := func(f func(k *security.APIKey)) func(c *connections.Connection) {
		return func(c *connections.Connection) { f(sec[*security.APIKey](t, c)) }
	}
	clientAuth := func(c *connections.Connection) any { return client(t, c).ClientAuth }
	checkDefaults(t, []defaultCase{
		{name: "API key without name", policy: apiKey, got: apiKeyPlace, want: "HEADER Authorization \"Bearer \""},
		{name: "API key with a name", policy: apiKey, mutate: keyField(func(k *security.APIKey) { k.Name = "X-Api-Key" }),
			got: apiKeyPlace, want: "HEADER X-Api-Key \"\""},
		{name: "API key named Authorization", policy: apiKey, mutate: keyField(func(k *security.APIKey) { k.Name = "Authorization" }),
			got: apiKeyPlace, want: "HEADER Authorization \"\""},
		{name: "API key with a prefix", policy: apiKey, mutate: keyField(func(k *security.APIKey) { k.ValuePrefix = ptr("Token ") }),
			got: apiKeyPlace, want: "HEADER Authorization \"Token \""},
		{name: "API key with an empty prefix", policy: apiKey, mutate: keyField(func(k *security.APIKey) { k.ValuePrefix = ptr("") }),
			got: apiKeyPlace, want: "HEADER Authorization \"\""},
		{name: "API key in query", policy: apiKey, mutate: keyField(func(k *security.APIKey) { k.In, k.Name = security.InQuery, "api_key" }),
			got: apiKeyPlace, want: "QUERY api_key \"\""},
		{name: "client auth", policy: cc, got: clientAuth, want: security.ClientAuthBasic},
		{name: "client auth of the password grant", policy: pw, got: clientAuth, want: security.ClientAuthBasic},
		{name: "client auth of authorization code", policy: ac, got: clientAuth, want: security.ClientAuthBasic},
	})
}

func TestInitialStatus(t *testing.T) {
	for _, p := range security.Policies() {
		t.Run(string(p), func(t *testing.T) {
			want := connections.StatusDraft
			if p == ac || p == security.PolicyCustomThreeLegged {
				want = connections.StatusNeedsConsent
			}
			if got := connections.InitialStatus(security.New(p)); got != want {
				t.Errorf("InitialStatus(%s) = %s, want %s", p, got, want)
			}
		})
	}
}

// omit unsets the secrets at paths.
func omit(paths ...string) func(c *connections.Connection) {
	return func(c *connections.Connection) {
		for _, p := range paths {
			if r, ok := c.SecretAt(p); ok {
				r.Set(connections.Secret{})
			}
		}
	}
}

func TestCarrySecrets(t *testing.T) {
	cert, key := selfSigned(t, time.Now().Add(24*time.Hour))
	withTLS := func(c *connections.Connection) {
		c.TLS = &connections.TLS{ClientCertificatePEM: cert, ClientKeyPEM: connections.NewSecret(key)}
	}
	stored := func(p connections.Policy, mutate ...func(c *connections.Connection)) *connections.Connection {
		c := sample("Conn_Carry", p)
		for _, m := range mutate {
			m(c)
		}
		c.ID, c.Version, c.CreatedBy, c.Fingerprint = 42, 3, "alice", "fp-stored"
		c.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		c.Status, c.StatusReason, c.StatusSince = connections.StatusError, "refused", c.CreatedAt.Add(time.Hour)
		c.LastTest = connections.NewTestResult(c.CreatedAt, false, "refused")
		return c
	}
	sent := func(p connections.Policy, mutate ...func(c *connections.Connection)) *connections.Connection {
		c := newConn("Conn_Carry", p)
		for _, m := range mutate {
			m(c)
		}
		return c
	}
	tests := []struct {
		name    string
		old     *connections.Connection
		new     *connections.Connection
		carried []string
		bug     string
	}{
		{name: "secret omitted", old: stored(basic), new: sent(basic, omit("password")), carried: []string{"password"}},
		{name: "secret re-sent", old: stored(basic), new: sent(basic), carried: nil},
		{name: "every secret omitted", old: stored(pw), new: sent(pw, omit("clientSecret", "password")),
			carried: []string{"clientSecret", "password"}},
		{name: "one of two omitted", old: stored(pw), new: sent(pw, omit("password")), carried: []string{"password"}},
		{name: "policy no longer takes it", old: stored(basic), new: sent(apiKey), carried: nil},
		{name: "shared by the new policy", old: stored(basic), new: sent(pw, omit("password")), carried: []string{"password"}},
		{name: "private key omitted", old: stored(cc, jwt(t)), new: sent(cc, jwt(t), omit("privateKeyPem")), carried: []string{"privateKeyPem"}},
		{name: "client secret to private_key_jwt", old: stored(cc), new: sent(cc, jwt(t)), carried: nil,
			bug: "CarrySecrets carries the client secret into clientAuth PRIVATE_KEY_JWT, which Validate then refuses"},
		{name: "private key to client secret", old: stored(cc, jwt(t)), new: sent(cc), carried: nil,
			bug: "CarrySecrets carries the private key into clientAuth BASIC_HEADER, which Validate then refuses"},
		{name: "TLS key omitted", old: stored(none, withTLS), new: sent(none, withTLS, omit("tls.clientKeyPem")),
			carried: []string{"tls.clientKeyPem"}},
		{name: "TLS removed", old: stored(none, withTLS), new: sent(none), carried: nil},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.new.Clone()
			carried := connections.CarrySecrets(tt.old, tt.new)
			c := tt.new
			if c.ID != tt.old.ID || !c.CreatedAt.Equal(tt.old.CreatedAt) || c.CreatedBy != tt.old.CreatedBy ||
				c.Status != tt.old.Status || c.StatusReason != tt.old.StatusReason || !c.StatusSince.Equal(tt.old.StatusSince) ||
				c.LastTest != tt.old.LastTest || c.Fingerprint != tt.old.Fingerprint {
				t.Errorf("CarrySecrets did not keep the identity and bookkeeping of the stored connection: %+v", c)
			}
			for _, r := range c.AllSecrets() {
				want := connections.Secret{}
				if br, ok := before.SecretAt(r.Path); ok {
					want = br.Value()
				}
				if slices.Contains(carried, r.Path) {
					or, _ := tt.old.SecretAt(r.Path)
					want = or.Value()
				}
				if got := r.Value(); !got.Equal(want) {
					t.Errorf("secret %s = %.20q, want %.20q", r.Path, got.Reveal(), want.Reveal())
				}
			}
			err := c.Validate()
			expect(t, tt.bug, slices.Equal(carried, tt.carried) && err == nil,
				"CarrySecrets() = %q, then Validate() = %v; want %q, nil", carried, err, tt.carried)
		})
	}
}

func TestCheckDestinations(t *testing.T) {
	conn := func(p connections.Policy, base, token string) *connections.Connection {
		c := sample("Conn_Host", p)
		c.BaseURL = base
		if token != "" {
			client(t, c).TokenURL = token
		}
		return c
	}
	cert, key := selfSigned(t, time.Now().Add(24*time.Hour))
	withTLS := func(c *connections.Connection) *connections.Connection {
		c.TLS = &connections.TLS{ClientCertificatePEM: cert, ClientKeyPEM: connections.NewSecret(key)}
		return c
	}
	const api, auth = "https://api.example.com/v1", "https://auth.example.com/token"
	old := conn(cc, api, auth)
	secret := []string{"clientSecret"}
	tests := []struct {
		name    string
		old     *connections.Connection
		new     *connections.Connection
		carried []string
		want    []string // fields named in the error
		bug     string
	}{
		{name: "secrets re-sent", old: old, new: conn(cc, "https://evil.example/v1", "https://evil.example/token"), carried: nil},
		{name: "same origins, other paths", old: old, new: conn(cc, "https://api.example.com/v2?x=1", "https://auth.example.com/oauth2/token"), carried: secret},
		{name: "host case and default port", old: old, new: conn(cc, "https://API.example.com:443/v1", "https://Auth.Example.com/token"), carried: secret},
		{name: "base URL host", old: old, new: conn(cc, "https://evil.example/v1", auth), carried: secret, want: []string{"baseUrl"}},
		{name: "base URL port", old: old, new: conn(cc, "https://api.example.com:8443/v1", auth), carried: secret, want: []string{"baseUrl"}},
		{name: "base URL scheme", old: old, new: conn(cc, "http://api.example.com/v1", auth), carried: secret, want: []string{"baseUrl"},
			bug: "#8.6: hosts compared, not origins"},
		{name: "token URL host", old: old, new: conn(cc, api, "https://auth.evil.example/token"), carried: secret,
			want: []string{"security.clientSecret"}},
		{name: "token URL scheme", old: old, new: conn(cc, api, "http://auth.example.com/token"), carried: secret,
			want: []string{"security.clientSecret"}, bug: "#8.6: hosts compared, not origins"},
		{name: "both", old: old, new: conn(cc, "https://evil.example/v1", "https://evil.example/token"), carried: secret,
			want: []string{"baseUrl", "security.clientSecret"}},
		{name: "no credentials any more", old: old, new: conn(none, "https://elsewhere.example/", ""), carried: nil},
		{name: "BASIC password to the token endpoint", old: conn(basic, api, ""), new: conn(pw, api, "https://auth.evil.example/token"),
			carried: []string{"password"}, want: []string{"security.password"}},
		{name: "token endpoint password to the API", old: conn(pw, api, auth), new: conn(basic, api, ""),
			carried: []string{"password"}, want: []string{"security.password"}, bug: "#8.6: a policy switch gives a kept secret a new destination"},
		{name: "BASIC password, other path", old: conn(basic, api, ""), new: conn(basic, "https://api.example.com/v2", ""),
			carried: []string{"password"}},
		{name: "BASIC http to https", old: conn(basic, "http://api.example.com/v1", ""), new: conn(basic, api, ""),
			carried: []string{"password"}, want: []string{"security.password"}},
		{name: "TLS key to another host", old: withTLS(conn(none, api, "")), new: withTLS(conn(none, "https://other.example/", "")),
			carried: []string{"tls.clientKeyPem"}, want: []string{"tls.clientKeyPem"}},
		{name: "TLS key, same origin", old: withTLS(conn(none, api, "")), new: withTLS(conn(none, "https://api.example.com/v9", "")),
			carried: []string{"tls.clientKeyPem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := connections.CheckDestinations(tt.old, tt.new, tt.carried)
			got := fields(err)
			expect(t, tt.bug, slices.Equal(got, tt.want) && (err != nil) == (tt.want != nil),
				"CheckDestinations(%q) = %v, want errors for %q", tt.carried, err, tt.want)
			if err != nil && !strings.Contains(err.Error(), tt.carried[0]) {
				t.Errorf("CheckDestinations error %q does not say which secrets to re-send", err)
			}
		})
	}
}

// TestFingerprint: the fingerprint changes with the credential
// configuration (base URL, policy, its settings and secrets, TLS) and
// with nothing else, so that a token is dropped exactly when it may no
// longer be used.
func TestFingerprint(t *testing.T) {
	cert, key := selfSigned(t, time.Now().Add(24*time.Hour))
	tlsOf := func(c *connections.Connection) *connections.TLS {
		if c.TLS == nil {
			c.TLS = &connections.TLS{}
		}
		return c.TLS
	}
	tests := []struct {
		name   string
		policy connections.Policy
		mutate func(c *connections.Connection)
		want   bool // changed
	}{
		{name: "nothing", policy: pw, mutate: func(c *connections.Connection) {}, want: false},
		{name: "description and keywords", policy: pw, mutate: func(c *connections.Connection) {
			c.Description, c.Keywords = "new", []string{"new"}
		}, want: false},
		{name: "headers, timeout and limits", policy: pw, mutate: func(c *connections.Connection) {
			c.Headers = map[string]string{"X-A": "1"}
			c.Timeout, c.MaxConcurrent = time.Second, 3
			c.RateLimit = &connections.RateLimit{RequestsPerSecond: 1, Burst: 1}
			c.RejectedStatuses = []int{403}
		}, want: false},
		{name: "what connmgr keeps", policy: pw, mutate: func(c *connections.Connection) {
			c.ID, c.Version, c.Status, c.StatusReason, c.UpdatedBy = 7, 9, connections.StatusError, "x", "y"
			c.LastTest = connections.NewTestResult(time.Now(), true, "ok")
		}, want: false},
		{name: "role", policy: pw, mutate: func(c *connections.Connection) { c.Role = connections.RoleTrigger }, want: false},
		{name: "base URL", policy: pw, mutate: func(c *connections.Connection) { c.BaseURL += "/v2" }, want: true},
		{name: "policy", policy: basic, mutate: func(c *connections.Connection) {
			b := sec[*security.Basic](t, c)
			c.Security = &security.Password{Client: security.Client{TokenURL: "https://auth.example.com/token", ClientID: "c"},
				Username: b.Username, Password: b.Password}
		}, want: true},
		{name: "token URL", policy: pw, mutate: func(c *connections.Connection) { client(t, c).TokenURL += "2" }, want: true},
		{name: "client id", policy: pw, mutate: func(c *connections.Connection) { client(t, c).ClientID = "other" }, want: true},
		{name: "username", policy: pw, mutate: func(c *connections.Connection) { sec[*security.Password](t, c).Username = "other" }, want: true},
		{name: "scopes", policy: pw, mutate: func(c *connections.Connection) { client(t, c).Scopes = []string{"x"} }, want: true},
		{name: "audience", policy: pw, mutate: func(c *connections.Connection) { client(t, c).Audience = "aud" }, want: true},
		{name: "extra params", policy: pw, mutate: func(c *connections.Connection) { client(t, c).ExtraParams = map[string]string{"a": "b"} }, want: true},
		{name: "client auth", policy: pw, mutate: func(c *connections.Connection) { client(t, c).ClientAuth = security.ClientAuthBody }, want: true},
		{name: "password", policy: pw, mutate: func(c *connections.Connection) { sec[*security.Password](t, c).Password = connections.NewSecret("new") }, want: true},
		{name: "client secret", policy: pw, mutate: func(c *connections.Connection) { client(t, c).ClientSecret = connections.NewSecret("new") }, want: true},
		{name: "API key", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).Key = connections.NewSecret("new") }, want: true},
		{name: "API key place", policy: apiKey, mutate: func(c *connections.Connection) { sec[*security.APIKey](t, c).Name = "X-Key" }, want: true},
		{name: "issuer", policy: ac, mutate: func(c *connections.Connection) {
			sec[*security.AuthorizationCode](t, c).Issuer = "https://auth.example.com"
		}, want: true},
		{name: "authorization URL", policy: ac, mutate: func(c *connections.Connection) { sec[*security.AuthorizationCode](t, c).AuthorizationURL += "2" }, want: true},
		{name: "TLS CA", policy: none, mutate: func(c *connections.Connection) { tlsOf(c).CACertificatesPEM = cert }, want: true},
		{name: "TLS server name", policy: none, mutate: func(c *connections.Connection) { tlsOf(c).ServerName = "api.internal" }, want: true},
		{name: "TLS client key", policy: none, mutate: func(c *connections.Connection) {
			tlsOf(c).ClientCertificatePEM, tlsOf(c).ClientKeyPEM = cert, connections.NewSecret(key)
		}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := sample("Conn_Changed", tt.policy)
			c := old.Clone()
			tt.mutate(c)
			if got := fingerprints.Of(c) != fingerprints.Of(old); got != tt.want {
				t.Errorf("fingerprint changed after %s = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
	c := sample("Conn_Key", basic)
	other := connections.NewFingerprinter([]byte("another-fingerprint-key"))
	if fp := fingerprints.Of(c); fp == other.Of(c) || strings.Contains(fp, sec[*security.Basic](t, c).Password.Reveal()) {
		t.Errorf("Of(%q) = %q under two keys, %q: want different values without the secret", c.Name, fp, other.Of(c))
	}
}
