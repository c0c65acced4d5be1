package store_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// testEnv is a migrated database on one engine with the stores on it,
// all sealing with ring.
type testEnv struct {
	engine storetest.Engine
	db     *store.DB
	ring   *keyring.KeyRing
	spec   string // the key ring's spec
	conns  *store.Connections
	tokens *store.Tokens
	states *store.ConsentStates
	// where is the SQLite data directory, or the PostgreSQL URL.
	where string
}

func newEnv(t *testing.T, engine storetest.Engine) *testEnv {
	t.Helper()
	db, where := storetest.OpenURL(t, engine)
	ring, spec := newRing(t, "k1")
	return &testEnv{engine: engine, db: db, ring: ring, spec: spec, conns: store.NewConnections(db, ring),
		tokens: store.NewTokens(db, ring), states: store.NewConsentStates(db, ring), where: where}
}

// forEngine runs f on a fresh database for every engine under test.
func forEngine(t *testing.T, f func(t *testing.T, env *testEnv)) {
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) { f(t, newEnv(t, engine)) })
	}
}

// newRing returns a ring with one fresh key called id, and its spec.
func newRing(t testing.TB, id string) (*keyring.KeyRing, string) {
	t.Helper()
	spec, err := keyring.GenerateKeySpec(id)
	if err != nil {
		t.Fatal(err)
	}
	return parseRing(t, spec), spec
}

func parseRing(t testing.TB, spec string) *keyring.KeyRing {
	t.Helper()
	ring, err := keyring.ParseKeyRing(spec)
	if err != nil {
		t.Fatalf("ParseKeyRing: %v", err)
	}
	return ring
}

func ptr[T any](v T) *T { return &v }

// sample returns a valid connection with policy p, defaults applied.
func sample(name string, p connections.Policy) *connections.Connection {
	return storetest.ValidConnection(name, p)
}

// fullConnection sets every field of a connection and of its policy (the
// richest one, with both client secret and private key, which validation
// would refuse): the store keeps what it is given.
func fullConnection(name string) *connections.Connection {
	return &connections.Connection{
		Name:        name,
		Description: "Orders API, production",
		Keywords:    []string{"orders", "Finance"},
		Labels:      map[string]string{"team": "orders", "env": "prod"},
		Role:        connections.RoleTriggerInvoke,
		BaseURL:     "https://api.example.com/v2?tenant=acme",
		Security: &security.AuthorizationCode{
			AuthorizationURL: "https://auth.example.com/oauth2/authorize",
			Client: security.Client{
				TokenURL:          "https://auth.example.com/oauth2/token",
				ClientID:          "orders-client",
				ClientSecret:      connections.NewSecret(storetest.Canary("clientSecret")),
				ClientAuth:        security.ClientAuthPrivateKeyJWT,
				PrivateKeyPEM:     connections.NewSecret(storetest.RSAKeyPEM()),
				KeyID:             "kid-1",
				AssertionAudience: "https://auth.example.com",
				Scopes:            []string{"orders.read", "orders.write"},
				Audience:          "https://api.example.com",
				ExtraParams:       map[string]string{"tenant": "acme", "prompt": "consent"},
			},
			Issuer:     "https://auth.example.com",
			RequireIss: true,
		},
		TLS: &connections.TLS{ClientCertificatePEM: "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n",
			ClientKeyPEM:      connections.NewSecret(storetest.Canary("clientKeyPem")),
			CACertificatesPEM: "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n", ServerName: "api.internal"},
		Headers:          map[string]string{"X-Api-Version": "2", "X-Tenant": "acme"},
		ForwardHeaders:   []string{"X-Request-Id", "Traceparent"},
		Timeout:          12500 * time.Millisecond,
		TestRequest:      &connections.TestRequest{Method: "POST", RelativeURI: "/health?deep=1"},
		RateLimit:        &connections.RateLimit{RequestsPerSecond: 2.5, Burst: 5},
		MaxConcurrent:    7,
		RejectedStatuses: []int{401, 403},
		Fingerprint:      "fp-" + name,
		Status:           connections.StatusError,
		StatusReason:     "token endpoint: invalid_client (client authentication failed)",
		StatusSince:      time.Date(2026, 11, 26, 9, 0, 0, 123456000, time.UTC),
		LastTest: &connections.TestResult{At: time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC),
			Result: connections.TestFailure, Detail: "token: invalid_client", Latency: 1234 * time.Millisecond,
			Steps: []connections.TestStep{{Step: "token", Result: connections.TestFailure, Detail: "invalid_client"},
				{Step: "request", Result: connections.TestSkipped}}},
		CreatedBy: "alice",
		UpdatedBy: "bob",
	}
}

// zeroFields returns the paths below path of the fields of v that are
// zero, walking through pointers, interfaces and structs.
func zeroFields(v reflect.Value, path string) []string {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return []string{path}
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[connections.Secret]() && v.Type() != reflect.TypeFor[time.Time]() {
		var out []string
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				out = append(out, zeroFields(v.Field(i), path+"."+f.Name)...)
			}
		}
		return out
	}
	if v.IsZero() {
		return []string{path}
	}
	return nil
}
