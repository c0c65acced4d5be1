package security_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// The #11 rules for the signing policies and for client certificates:
// the API form masks secrets, the stored form holds none, a secret is
// never carried to a new origin (the STS URL included), keys rotate
// re-seals every secret and the temporary credentials.

// signingAPIForms are the signing policies as a client sends them.
var signingAPIForms = map[connections.Policy]string{
	security.PolicyOAuth1: `{"policy": "OAUTH1_ONE_LEGGED", "consumerKey": "orders", "consumerSecret": "CANARY-cs",
		"token": "jane", "tokenSecret": "CANARY-ts", "signatureMethod": "HMAC-SHA256", "realm": "Orders"}`,
	security.PolicyAWSSigV4: `{"policy": "AWS_SIGV4", "accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "CANARY-sak",
		"sessionToken": "CANARY-st", "region": "eu-west-1", "service": "execute-api",
		"assumeRole": {"roleArn": "arn:aws:iam::123456789012:role/orders", "externalId": "ext-1", "stsUrl": "https://sts.example.com"}}`,
}

func TestSigningPoliciesAPIForm(t *testing.T) {
	for p, form := range signingAPIForms {
		t.Run(string(p), func(t *testing.T) {
			s, err := security.Decode([]byte(form))
			if err != nil {
				t.Fatalf("Decode() = %v", err)
			}
			c := &connections.Connection{Name: "Conn_Form", Role: connections.RoleInvoke, BaseURL: "https://api.example.com", Security: s}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			n := 0
			for _, r := range c.AllSecrets() {
				if r.Value().IsSet() {
					n++
				}
			}
			if n != 2 {
				t.Errorf("%d secrets read, want 2", n)
			}
			api, stored := string(security.Encode(s)), string(security.Stored(s))
			for where, text := range map[string]string{"API form": api, "stored form": stored} {
				if strings.Contains(text, canary) {
					t.Errorf("%s holds a secret: %s", where, text)
				}
			}
			if strings.Count(api, `"********"`) != 2 {
				t.Errorf("API form %s, want both secrets masked", api)
			}
			back, err := security.Load(p, []byte(stored))
			if err != nil || string(security.Stored(back)) != stored {
				t.Errorf("Stored(Load(Stored())) = %s, %v; want %s", security.Stored(back), err, stored)
			}
			bad := strings.Replace(form, `"policy"`, `"secretKey": "x", "policy"`, 1)
			if _, err := security.Decode([]byte(bad)); err == nil || !strings.Contains(err.Error(), "security.secretKey") {
				t.Errorf("Decode(unknown field) = %v, want it named", err)
			}
		})
	}
}

// TestSigningPoliciesDestinations replaces connections without sending
// their secrets again: moving the base URL, or the STS URL the static
// keys go to, is refused naming the secret; the client key of the
// connection's tls goes with every destination.
func TestSigningPoliciesDestinations(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		ctx := context.Background()
		cert, keyPEM := clientPair(t)
		e.secret(pemBody(keyPEM))
		withTLS := func(c *connections.Connection) *connections.Connection {
			c.TLS = &connections.TLS{ClientCertificatePEM: cert, ClientKeyPEM: connections.NewSecret(keyPEM)}
			return c
		}
		oauth1 := func(base string, secret string) *connections.Connection {
			return withTLS(&connections.Connection{Name: "Conn_Dest_OAuth1", Role: connections.RoleInvoke, BaseURL: base,
				Security: &security.OAuth1{ConsumerKey: "ck", ConsumerSecret: connections.NewSecret(secret)}})
		}
		aws := func(base, sts, secret string) *connections.Connection {
			return withTLS(&connections.Connection{Name: "Conn_Dest_AWS", Role: connections.RoleInvoke, BaseURL: base,
				Security: &security.AWSSigV4{AccessKeyID: "AKID", SecretAccessKey: connections.NewSecret(secret), Region: "eu-west-1",
					Service: "s3", AssumeRole: &security.AssumeRole{RoleARN: "arn:aws:iam::1:role/r", STSURL: sts}}})
		}
		e.create(oauth1("https://api.example.com/v1", canary+"-cs"))
		e.create(aws("https://s3.example.com", "https://sts.example.com", canary+"-sak"))
		unset := func(c *connections.Connection) *connections.Connection {
			c.TLS.ClientKeyPEM = connections.Secret{}
			return c
		}
		tests := []struct {
			name   string
			conn   *connections.Connection
			fields []string // named in the 422, none when accepted
		}{
			{name: "OAuth 1: same origin, another path", conn: unset(oauth1("https://api.example.com/v2", ""))},
			{name: "OAuth 1: base URL on another host", conn: unset(oauth1("https://evil.example.com/v1", "")),
				fields: []string{"security.consumerSecret", "tls.clientKeyPem"}},
			{name: "OAuth 1: the secret sent again", conn: oauth1("https://evil.example.com/v1", canary+"-cs2")},
			{name: "SigV4: STS on another host", conn: unset(aws("https://s3.example.com", "https://sts.evil.example.com", "")),
				fields: []string{"security.secretAccessKey", "tls.clientKeyPem"}},
			{name: "SigV4: base URL on another port", conn: unset(aws("https://s3.example.com:8443", "https://sts.example.com", "")),
				fields: []string{"security.secretAccessKey", "tls.clientKeyPem"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := e.svc.Replace(ctx, "test", nil, tt.conn)
				var ves connections.ValidationErrors
				if len(tt.fields) == 0 {
					if err != nil {
						t.Fatalf("Replace() = %v, want accepted", err)
					}
					return
				}
				if !errors.As(err, &ves) {
					t.Fatalf("Replace() = %v, want 422", err)
				}
				for _, f := range tt.fields {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("Replace() = %v, want %s named", err, f)
					}
				}
			})
		}
	})
}

// TestSigningPoliciesKeysRotate re-seals the secrets of the signing
// policies, the client key of a connection's tls and AssumeRole's
// temporary credentials under a new key (store.Reseal, as keys rotate
// does) and reads them back with the new key alone.
func TestSigningPoliciesKeysRotate(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		ctx := context.Background()
		db := storetest.Open(t, engine)
		ring := func(spec string) *keyring.KeyRing {
			r, err := keyring.ParseKeyRing(spec)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		oldSpec, _ := keyring.GenerateKeySpec("old")
		newSpec, _ := keyring.GenerateKeySpec("new")
		conns := store.NewConnections(db, ring(oldSpec))
		svc := &connections.Service{Store: conns, Fingerprints: connections.NewFingerprinter([]byte("k"))}
		m := security.NewManager(security.ManagerConfig{Store: store.NewTokens(db, ring(oldSpec)), Connections: conns,
			Clients: func(*connections.Connection) (*http.Client, error) { return loopbackClient(t, 0), nil }})
		sts := newFakeSTS(t, time.Now)
		cert, key := clientPair(t)
		want := map[string]map[string]string{}
		for p, form := range signingAPIForms {
			s, err := security.Decode([]byte(strings.Replace(form, "https://sts.example.com", sts.srv.URL, 1)))
			if err != nil {
				t.Fatal(err)
			}
			c := &connections.Connection{Name: "Conn_Rotate_" + string(p), Role: connections.RoleInvoke, BaseURL: "https://api.example.com",
				Security: s, TLS: &connections.TLS{ClientCertificatePEM: cert, ClientKeyPEM: connections.NewSecret(key)}}
			if err := svc.Create(ctx, "test", c); err != nil {
				t.Fatalf("Create(%s) = %v", p, err)
			}
			want[c.Name] = map[string]string{}
			for _, r := range c.AllSecrets() {
				want[c.Name][r.Path] = r.Value().Reveal()
			}
			if _, ok := want[c.Name]["tls.clientKeyPem"]; !ok {
				t.Fatalf("%s has no secret tls.clientKeyPem", c.Name)
			}
		}
		aws, err := conns.Get(ctx, "Conn_Rotate_AWS_SIGV4")
		if err != nil {
			t.Fatal(err)
		}
		tok, err := m.Refresh(ctx, aws)
		if err != nil {
			t.Fatalf("Refresh() = %v", err)
		}
		if _, err := store.Reseal(ctx, db, ring(newSpec+","+oldSpec)); err != nil {
			t.Fatalf("Reseal() = %v", err)
		}
		fresh := store.NewConnections(db, ring(newSpec))
		for name, secrets := range want {
			c, err := fresh.Get(ctx, name)
			if err != nil {
				t.Fatalf("Get(%s) with the new key alone = %v", name, err)
			}
			for path, v := range secrets {
				if r, ok := c.SecretAt(path); !ok || r.Value().Reveal() != v {
					t.Errorf("%s: secret %s not read back after the rotation", name, path)
				}
			}
		}
		st, err := store.NewTokens(db, ring(newSpec)).Load(ctx, aws.ID)
		if err != nil || st.Token == nil || st.Token.AccessToken.Reveal() != tok.AccessToken.Reveal() {
			t.Errorf("the temporary credentials after the rotation: %v, %v; want them read with the new key alone", st, err)
		}
	})
}

// clientPair returns a self-signed client certificate and its key, PEM.
func clientPair(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "connmgr client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
}

// TestSigningPolicyTestSteps: a connection test of a signing policy
// reports the sign step; a probe the target answers 403 fails.
func TestSigningPolicyTestSteps(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	target := newAWSTarget(t)
	client := loopbackClient(t, 0)
	proxy := invoke.NewProxy(e.m, func(*connections.Connection) (http.RoundTripper, error) { return client.Transport, nil }, nil)
	tester := &invoke.Tester{Proxy: proxy, Tokens: e.m, Status: e.svc, Now: e.clock.Now}
	c := e.create(&connections.Connection{Name: "Conn_Steps", Role: connections.RoleInvoke, BaseURL: target.srv.URL,
		Security: &security.AWSSigV4{AccessKeyID: "AKIAGOOD", SecretAccessKey: connections.NewSecret(canary + "-s"), Region: "eu-west-1", Service: "s3"}})
	r, err := tester.Test(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Steps) != 2 || r.Steps[0].Step != invoke.StepSign || r.Steps[0].Result != connections.TestSuccess ||
		!strings.Contains(r.Steps[0].Detail, "AWS Signature Version 4 (service s3, region eu-west-1, access key AKIAGOOD)") ||
		r.Steps[1].Result != connections.TestSuccess || r.Result != connections.TestSuccess {
		t.Errorf("Test() = %+v, want the sign and request steps succeeding", r)
	}
	target.mu.Lock()
	target.refuse["AKIAGOOD"] = true
	target.mu.Unlock()
	r, err = tester.Test(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if r.Result != connections.TestFailure || len(r.Steps) != 2 || r.Steps[1].Result != connections.TestFailure ||
		!strings.Contains(r.Steps[1].Detail, "HTTP 403 from the target: it refused the signature") {
		t.Errorf("Test() = %+v, want the request step failing on the 403", r)
	}
	if got := e.get(c.Name).Status; got != connections.StatusError {
		t.Errorf("status after the failed test = %s, want ERROR", got)
	}
}
