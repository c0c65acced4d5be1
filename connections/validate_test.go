package connections_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// selfSigned returns a PEM certificate valid until notAfter and its PEM
// private key.
func selfSigned(t testing.TB, notAfter time.Time) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "connmgr client"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

// TestValidate covers the rules every connection follows whatever its
// policy; policies_test.go covers the policies' own fields.
func TestValidate(t *testing.T) {
	cert, key := selfSigned(t, time.Now().Add(24*time.Hour))
	expired, expiredKey := selfSigned(t, time.Now().Add(-time.Hour))
	_, otherKey := selfSigned(t, time.Now().Add(24*time.Hour))
	withTLS := func(tls connections.TLS) func(c *connections.Connection) {
		return func(c *connections.Connection) { c.TLS = &tls }
	}
	checkValidate(t, []validateCase{
		// Valid.
		{name: "plain"},
		{name: "every optional field", mutate: func(c *connections.Connection) {
			c.Description, c.Keywords = "Orders", []string{"orders", "Finance"}
			c.Role = connections.RoleTriggerInvoke
			c.Headers = map[string]string{"X-Api-Version": "2"}
			c.ForwardHeaders = []string{"X-Request-Id"}
			c.Timeout = 10 * time.Minute
			c.TestRequest = &connections.TestRequest{Method: "head", RelativeURI: "/health"}
			c.RateLimit = &connections.RateLimit{RequestsPerSecond: 0.5}
			c.MaxConcurrent = 10
			c.RejectedStatuses = []int{401, 403}
			c.TLS = &connections.TLS{ClientCertificatePEM: cert, ClientKeyPEM: connections.NewSecret(key),
				CACertificatesPEM: cert + expired, ServerName: "api.internal"}
		}},
		{name: "name of 100 characters", mutate: func(c *connections.Connection) { c.Name = "C" + strings.Repeat("x", 99) }},
		{name: "name with - and _", mutate: func(c *connections.Connection) { c.Name = "a-B_9" }},
		{name: "only extra CAs", mutate: withTLS(connections.TLS{CACertificatesPEM: cert})},

		{name: "no name", mutate: func(c *connections.Connection) { c.Name = "" }, want: []string{"name"}},
		{name: "name starts with a digit", mutate: func(c *connections.Connection) { c.Name = "1conn" }, want: []string{"name"}},
		{name: "name with a space", mutate: func(c *connections.Connection) { c.Name = "a b" }, want: []string{"name"}},
		{name: "name with a dot", mutate: func(c *connections.Connection) { c.Name = "a.b" }, want: []string{"name"}},
		{name: "name of 101 characters", mutate: func(c *connections.Connection) { c.Name = "C" + strings.Repeat("x", 100) }, want: []string{"name"}},
		{name: "description with a control character", mutate: func(c *connections.Connection) { c.Description = "a\x1bb" }, want: []string{"description"}},
		{name: "empty keyword", mutate: func(c *connections.Connection) { c.Keywords = []string{"a", ""} }, want: []string{"keywords[1]"}},
		{name: "keyword with a newline", mutate: func(c *connections.Connection) { c.Keywords = []string{"a\nb"} }, want: []string{"keywords[0]"}},
		{name: "33 keywords", mutate: func(c *connections.Connection) { c.Keywords = slices.Repeat([]string{"k"}, 33) }, want: []string{"keywords"}},
		{name: "no role", mutate: func(c *connections.Connection) { c.Role = "" }, want: []string{"role"}},
		{name: "unknown role", mutate: func(c *connections.Connection) { c.Role = "ADMIN" }, want: []string{"role"}},
		{name: "no base URL", mutate: func(c *connections.Connection) { c.BaseURL = "" }, want: []string{"baseUrl"}},
		{name: "base URL with user info", mutate: func(c *connections.Connection) { c.BaseURL = "https://u:p@api.example.com" }, want: []string{"baseUrl"}},
		{name: "base URL with decimal IP", mutate: func(c *connections.Connection) { c.BaseURL = "http://2130706433/" }, want: []string{"baseUrl"}},
		{name: "Authorization header", mutate: func(c *connections.Connection) { c.Headers = map[string]string{"authorization": "x"} }, want: []string{"headers.authorization"}},
		{name: "X-Forwarded header", mutate: func(c *connections.Connection) { c.Headers = map[string]string{"X-Forwarded-For": "1.2.3.4"} }, want: []string{"headers.X-Forwarded-For"}},
		{name: "bad header name", mutate: func(c *connections.Connection) { c.Headers = map[string]string{"Bad Header": "x"} }, want: []string{"headers.Bad Header"}},
		{name: "header value with a newline", mutate: func(c *connections.Connection) { c.Headers = map[string]string{"X-A": "a\r\nX-B: b"} }, want: []string{"headers.X-A"}},
		{name: "forwarding cookies", mutate: func(c *connections.Connection) { c.ForwardHeaders = []string{"X-Ok", "Cookie"} }, want: []string{"forwardHeaders[1]"}},
		{name: "timeout too short", mutate: func(c *connections.Connection) { c.Timeout = 99 * time.Millisecond }, want: []string{"timeoutMs"}},
		{name: "timeout too long", mutate: func(c *connections.Connection) { c.Timeout = 10*time.Minute + time.Millisecond }, want: []string{"timeoutMs"}},
		{name: "negative timeout", mutate: func(c *connections.Connection) { c.Timeout = -time.Second }, want: []string{"timeoutMs"}},
		{name: "test method TRACE", mutate: func(c *connections.Connection) { c.TestRequest = &connections.TestRequest{Method: "TRACE"} }, want: []string{"testRequest.method"}},
		{name: "zero rate", mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{} }, want: []string{"rateLimit.requestsPerSecond"}},
		{name: "NaN rate", mutate: func(c *connections.Connection) {
			c.RateLimit = &connections.RateLimit{RequestsPerSecond: math.NaN(), Burst: 1}
		}, want: []string{"rateLimit.requestsPerSecond"}},
		{name: "negative burst", mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{RequestsPerSecond: 1, Burst: -1} }, want: []string{"rateLimit.burst"}},
		{name: "negative max concurrent", mutate: func(c *connections.Connection) { c.MaxConcurrent = -1 }, want: []string{"maxConcurrent"}},
		{name: "rejected status not 4xx", mutate: func(c *connections.Connection) { c.RejectedStatuses = []int{401, 500} }, want: []string{"tokenRejectedStatuses[1]"}},
		{name: "9 rejected statuses", mutate: func(c *connections.Connection) { c.RejectedStatuses = slices.Repeat([]int{401}, 9) }, want: []string{"tokenRejectedStatuses"}},
		{name: "no security", mutate: func(c *connections.Connection) { c.Security = nil }, want: []string{"security"}},
		{name: "TLS key without certificate", mutate: withTLS(connections.TLS{ClientKeyPEM: connections.NewSecret(key)}),
			want: []string{"tls.clientCertificatePem"}},
		{name: "TLS certificate without key", mutate: withTLS(connections.TLS{ClientCertificatePEM: cert}),
			want: []string{"tls.clientKeyPem"}},
		{name: "TLS key of another certificate", mutate: withTLS(connections.TLS{ClientCertificatePEM: cert,
			ClientKeyPEM: connections.NewSecret(otherKey)}), want: []string{"tls.clientKeyPem"}},
		{name: "TLS certificate expired", mutate: withTLS(connections.TLS{ClientCertificatePEM: expired,
			ClientKeyPEM: connections.NewSecret(expiredKey)}), want: []string{"tls.clientCertificatePem"}},
		{name: "TLS certificate is a key", mutate: withTLS(connections.TLS{ClientCertificatePEM: key,
			ClientKeyPEM: connections.NewSecret(key)}), want: []string{"tls.clientCertificatePem"}},
		{name: "TLS CA not PEM", mutate: withTLS(connections.TLS{CACertificatesPEM: "not a certificate"}),
			want: []string{"tls.caCertificatesPem"}},
		{name: "TLS CA with trailing text", mutate: withTLS(connections.TLS{CACertificatesPEM: cert + "junk"}),
			want: []string{"tls.caCertificatesPem"}},
		{name: "TLS server name not a host", mutate: withTLS(connections.TLS{CACertificatesPEM: cert, ServerName: "a b"}),
			want: []string{"tls.serverName"}},
		{name: "TLS key too long", mutate: withTLS(connections.TLS{ClientCertificatePEM: cert,
			ClientKeyPEM: connections.NewSecret(strings.Repeat("k", connections.MaxSecretLen+1))}), want: []string{"tls.clientKeyPem"}},

		{name: "every invalid field is named", mutate: func(c *connections.Connection) {
			c.Name, c.Role, c.Timeout = "", "", -1
			c.Headers = map[string]string{"Host": "x"}
		}, want: []string{"headers.Host", "name", "role", "timeoutMs"}},
	})
}

// validateCase is a connection with policy as a client sends it, changed
// by mutate: Validate must name exactly the fields want. A non-empty bug
// names the fixed bug the case guards against.
type validateCase struct {
	name   string
	policy connections.Policy // "": NONE
	mutate func(c *connections.Connection)
	want   []string // invalid fields, sorted; nil for valid
	bug    string
}

func checkValidate(t *testing.T, tests []validateCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			if p == "" {
				p = security.PolicyNone
			}
			c := newConn("Conn_Test", p)
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

// defaultCase is a connection with policy as a client sends it, changed
// by mutate: after Validate, got(c) must be want.
type defaultCase struct {
	name   string
	policy connections.Policy // "": NONE
	mutate func(c *connections.Connection)
	got    func(c *connections.Connection) any
	want   any
}

func checkDefaults(t *testing.T, tests []defaultCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			if p == "" {
				p = security.PolicyNone
			}
			c := newConn("Conn_Test", p)
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

func TestValidateDefaults(t *testing.T) {
	checkDefaults(t, []defaultCase{
		{name: "timeout", got: func(c *connections.Connection) any { return c.Timeout }, want: 30 * time.Second},
		{name: "timeout kept", mutate: func(c *connections.Connection) { c.Timeout = time.Second },
			got: func(c *connections.Connection) any { return c.Timeout }, want: time.Second},
		{name: "test method", mutate: func(c *connections.Connection) { c.TestRequest = &connections.TestRequest{} },
			got: func(c *connections.Connection) any { return c.TestRequest.Method }, want: "GET"},
		{name: "test method upper-cased", mutate: func(c *connections.Connection) { c.TestRequest = &connections.TestRequest{Method: "post"} },
			got: func(c *connections.Connection) any { return c.TestRequest.Method }, want: "POST"},
		{name: "burst", mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{RequestsPerSecond: 2.5} },
			got: func(c *connections.Connection) any { return c.RateLimit.Burst }, want: 3},
		{name: "burst of a slow rate", mutate: func(c *connections.Connection) { c.RateLimit = &connections.RateLimit{RequestsPerSecond: 0.1} },
			got: func(c *connections.Connection) any { return c.RateLimit.Burst }, want: 1},
	})
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name   string
		list   []int
		status int
		want   bool
	}{
		{"default 401", nil, 401, true},
		{"default not 403", nil, 403, false},
		{"listed 403", []int{401, 403}, 403, true},
		{"list replaces the default", []int{403}, 401, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &connections.Connection{RejectedStatuses: tt.list}
			if got := c.Rejects(tt.status); got != tt.want {
				t.Errorf("Rejects(%d) with %v = %v, want %v", tt.status, tt.list, got, tt.want)
			}
		})
	}
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

// TestOrigin: credentials are bound to origins, so two URLs share an
// origin exactly when scheme, host and port agree.
func TestOrigin(t *testing.T) {
	tests := []struct{ url, want string }{
		{"https://api.example.com/v1", "https://api.example.com:443"},
		{"https://API.Example.com:443/other?q=1", "https://api.example.com:443"},
		{"HTTPS://api.example.com", "https://api.example.com:443"},
		{"http://api.example.com/v1", "http://api.example.com:80"},
		{"http://api.example.com:80", "http://api.example.com:80"},
		{"https://api.example.com:8443/v1", "https://api.example.com:8443"},
		{"http://[2001:DB8::1]:8080/", "http://[2001:db8::1]:8080"},
		{"http://[::1]/", "http://[::1]:80"},
		{"http://[0:0::1]/", "http://[::1]:80"},
		{"http://[::ffff:127.0.0.1]:8080/", "http://127.0.0.1:8080"},
		{"http://[0:0:0:0:0:ffff:7f00:1]:8080/", "http://127.0.0.1:8080"},
		{"ftp://api.example.com/", ""},
		{"/relative", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if got := connections.Origin(tt.url); got != tt.want {
				t.Errorf("Origin(%q) = %q, want %q", tt.url, got, tt.want)
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
	c := sample("Conn_Secret", security.PolicyPassword)
	p := sec[*security.Password](t, c)
	p.Password, p.ClientSecret = s, s
	c.TLS = &connections.TLS{ClientKeyPEM: s}

	logged := func(handler slog.Handler, buf *bytes.Buffer) string {
		slog.New(handler).Info("connection", "secret", s, "holder", h, "conn", c)
		return buf.String()
	}
	tests := []struct {
		name string
		out  func() string
		// unmasked: the output shows the policy and TLS settings only as
		// pointers, so neither the value nor the mask appears.
		unmasked bool
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
		{name: "connection %+v", out: func() string { return fmt.Sprintf("%+v", c) }, unmasked: true},
		{name: "connection %#v", out: func() string { return fmt.Sprintf("%#v", *c) }, unmasked: true},
		{name: "policy %+v", out: func() string { return fmt.Sprintf("%+v", c.Security) }},
		{name: "policy %#v", out: func() string { return fmt.Sprintf("%#v", c.Security) }},
		{name: "TLS %+v", out: func() string { return fmt.Sprintf("%+v", *c.TLS) }},
		{name: "JSON", out: func() string { b, _ := json.Marshal(s); return string(b) }},
		{name: "JSON of a struct", out: func() string { b, _ := json.Marshal(h); return string(b) }},
		{name: "JSON of a connection", out: func() string { b, _ := json.Marshal(c); return string(b) }},
		{name: "field values", out: func() string { return fmt.Sprint(connections.FieldValues(c.Security), connections.FieldValues(c.TLS)) }},
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
			if !tt.unmasked && !strings.Contains(out, connections.Mask) {
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
