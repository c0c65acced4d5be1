package storetest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// Canary returns a unique secret value, "canary-<what>-<random hex>", for
// tests that search logs, rows and answers for secrets.
func Canary(what string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "canary-" + what + "-" + hex.EncodeToString(b)
}

// RSAKeyPEM returns a real PKCS#8 RSA private key, generated once per test
// binary.
var RSAKeyPEM = sync.OnceValue(func() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
})

// Connection returns a valid connection with policy p as a client sends
// it (no defaults applied), every secret a Canary. It panics for a policy
// it does not know, so that a new policy gets a fixture.
func Connection(name string, p connections.Policy) *connections.Connection {
	c := &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Keywords: []string{}, Headers: map[string]string{}, Status: connections.StatusDraft}
	client := security.Client{TokenURL: "https://auth.example.com/token", ClientID: "client",
		ClientSecret: connections.NewSecret(Canary("clientSecret"))}
	switch p {
	case security.PolicyNone:
		c.Security = &security.None{}
	case security.PolicyBasic:
		c.Security = &security.Basic{Username: "user", Password: connections.NewSecret(Canary("password"))}
	case security.PolicyAPIKey:
		c.Security = &security.APIKey{Key: connections.NewSecret(Canary("key"))}
	case security.PolicyClientCredentials:
		c.Security = &security.ClientCredentials{Client: client}
	case security.PolicyPassword:
		c.Security = &security.Password{Client: client, Username: "user", Password: connections.NewSecret(Canary("password"))}
	case security.PolicyAuthorizationCode:
		c.Security = &security.AuthorizationCode{AuthorizationURL: "https://auth.example.com/authorize", Client: client}
	case security.PolicyCustomTwoLegged:
		c.Security = &security.CustomTwoLegged{CustomFlow: security.CustomFlow{Values: map[string]string{"clientId": "client"},
			TokenRequest: security.RequestTemplate{URL: "https://auth.example.com/token",
				Body: "grant_type=client_credentials&client_id=${values.clientId}&client_secret=${secrets.clientSecret}"}},
			Secrets: map[string]connections.Secret{"clientSecret": connections.NewSecret(Canary("clientSecret"))}}
	case security.PolicyCustomThreeLegged:
		c.Security = &security.CustomThreeLegged{AuthorizationRequest: security.AuthorizationRequest{
			URL: "https://auth.example.com/authorize?response_type=code&client_id=${values.clientId}&state=${state}" +
				"&code_challenge=${codeChallenge}&code_challenge_method=S256&redirect_uri=${redirectUri}"},
			CustomFlow: security.CustomFlow{Values: map[string]string{"clientId": "client"},
				TokenRequest: security.RequestTemplate{URL: "https://auth.example.com/token",
					Body: "grant_type=authorization_code&code=${code}&code_verifier=${codeVerifier}&redirect_uri=${redirectUri}" +
						"&client_id=${values.clientId}&client_secret=${secrets.clientSecret}"},
				RefreshRequest: &security.RequestTemplate{URL: "https://auth.example.com/token",
					Body: "grant_type=refresh_token&refresh_token=${refreshToken}&client_id=${values.clientId}&client_secret=${secrets.clientSecret}"}},
			Secrets: map[string]connections.Secret{"clientSecret": connections.NewSecret(Canary("clientSecret"))}}
	case security.PolicyJWTBearer:
		c.Security = &security.JWTBearer{TokenURL: "https://auth.example.com/token",
			Assertion: security.JWTAssertion{Issuer: "service-account"}, PrivateKeyPEM: connections.NewSecret(RSAKeyPEM()),
			ClientID: "client", ClientSecret: connections.NewSecret(Canary("clientSecret"))}
	case security.PolicyTokenExchange:
		c.Security = &security.TokenExchange{Client: client, SubjectToken: connections.NewSecret(Canary("subjectToken"))}
	case security.PolicyOAuth1:
		c.Security = &security.OAuth1{ConsumerKey: "consumer", ConsumerSecret: connections.NewSecret(Canary("consumerSecret")),
			Token: "token", TokenSecret: connections.NewSecret(Canary("tokenSecret")), Realm: "Example"}
	case security.PolicyAWSSigV4:
		c.Security = &security.AWSSigV4{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: connections.NewSecret(Canary("secretAccessKey")),
			Region: "us-east-1", Service: "execute-api", AssumeRole: &security.AssumeRole{RoleARN: "arn:aws:iam::123456789012:role/orders",
				ExternalID: "connmgr-test", STSURL: "https://sts.example.com"}}
	default:
		panic(fmt.Sprintf("storetest.Connection: no fixture for policy %q", p))
	}
	return c
}

// ValidConnection is Connection with its defaults applied (Validate).
func ValidConnection(name string, p connections.Policy) *connections.Connection {
	c := Connection(name, p)
	if err := c.Validate(); err != nil {
		panic(fmt.Sprintf("storetest.ValidConnection(%s): %v", p, err))
	}
	return c
}

// CheckSame reports how got differs from want. Secrets are compared by
// value and named by path (a %+v would show only masks); times with
// Equal, so that a time read back in another zone is the same.
func CheckSame(tb testing.TB, what string, got, want *connections.Connection) {
	tb.Helper()
	if got == nil {
		tb.Fatalf("%s = nil, want %q", what, want.Name)
	}
	g, w := got.Clone(), want.Clone()
	for _, ts := range []struct {
		name string
		g, w *time.Time
	}{{"CreatedAt", &g.CreatedAt, &w.CreatedAt}, {"UpdatedAt", &g.UpdatedAt, &w.UpdatedAt}, {"StatusSince", &g.StatusSince, &w.StatusSince}} {
		if !ts.g.Equal(*ts.w) {
			tb.Errorf("%s: %s = %v, want %v", what, ts.name, *ts.g, *ts.w)
		}
		*ts.g = *ts.w
	}
	gs, ws := map[string]string{}, map[string]string{}
	for _, r := range g.AllSecrets() {
		gs[r.Path] = r.Value().Reveal()
	}
	for _, r := range w.AllSecrets() {
		ws[r.Path] = r.Value().Reveal()
	}
	for path := range merge(gs, ws) {
		if gs[path] != ws[path] {
			tb.Errorf("%s: secret %s = %.24q, want %.24q", what, path, gs[path], ws[path])
		}
	}
	// The store returns empty keywords and headers as empty, not nil.
	if len(g.Keywords) == 0 && len(w.Keywords) == 0 {
		g.Keywords, w.Keywords = nil, nil
	}
	if len(g.Headers) == 0 && len(w.Headers) == 0 {
		g.Headers, w.Headers = nil, nil
	}
	if !reflect.DeepEqual(g, w) {
		tb.Errorf("%s =\n%+v\n%s\nwant\n%+v\n%s", what, g, security.Encode(g.Security), w, security.Encode(w.Security))
	}
}

func merge(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// Count returns the number a COUNT query answers.
func Count(tb testing.TB, db *gorm.DB, query string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := db.Raw(query, args...).Scan(&n).Error; err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// AddCredentialState inserts a token and a pending consent for connection
// id, as a connection that was used has.
func AddCredentialState(tb testing.TB, db *gorm.DB, id int64) {
	tb.Helper()
	now := time.Now().UTC()
	if err := db.Exec("INSERT INTO tokens (connection_id, access_token, updated_at) VALUES (?, ?, ?)",
		id, []byte("sealed"), now).Error; err != nil {
		tb.Fatalf("insert token: %v", err)
	}
	if err := db.Exec(`INSERT INTO oauth_states (state_hash, connection_id, verifier, redirect_uri, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?)`, fmt.Sprintf("state-%d", id), id, []byte("sealed"), "https://connmgr/oauth/callback",
		now, now.Add(10*time.Minute)).Error; err != nil {
		tb.Fatalf("insert oauth state: %v", err)
	}
}

// CredentialState counts the token rows and pending consents of
// connection id.
func CredentialState(tb testing.TB, db *gorm.DB, id int64) (tokens, states int64) {
	tb.Helper()
	return Count(tb, db, "SELECT COUNT(*) FROM tokens WHERE connection_id = ?", id),
		Count(tb, db, "SELECT COUNT(*) FROM oauth_states WHERE connection_id = ?", id)
}
