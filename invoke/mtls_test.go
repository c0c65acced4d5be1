package invoke_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connmgr/connmgr/cmd/connmgr/wire"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/outbound/outboundtest"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// Client certificates and private CAs for any policy, end to end: the
// graph serve runs (wire.Build) gives each connection's tls settings to
// its target calls and its token requests, against crypto/tls servers
// that require client certificates.

// pki is a certificate authority made for one test.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

var certSerial atomic.Int64

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(certSerial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyPair is an issued certificate as PEM and as crypto/tls wants it.
type keyPair struct {
	certPEM, keyPEM string
	tls             tls.Certificate
}

// issue signs a certificate valid until notAfter: for a client, or for a
// server on 127.0.0.1 and the given DNS names.
func (ca *pki) issue(t *testing.T, client bool, notAfter time.Time, dns ...string) keyPair {
	t.Helper()
	key := ecKey(t)
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(certSerial.Add(1)), Subject: pkix.Name{CommonName: "connmgr test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dns}
	if !client && len(dns) == 0 {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	kp := keyPair{certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))}
	if kp.tls, err = tls.X509KeyPair([]byte(kp.certPEM), []byte(kp.keyPEM)); err != nil {
		t.Fatal(err)
	}
	return kp
}

// mtlsServer starts an HTTPS server with cert that requires client
// certificates issued by clients, serving h.
func mtlsServer(t *testing.T, cert keyPair, clients *pki, h http.Handler) *httptest.Server {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(clients.cert)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.tls}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// thumbprint is RFC 8705's x5t#S256 of a certificate.
func thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// newGraph builds connmgr's graph on SQLite with loopback allowed.
func newGraph(t *testing.T) *wire.Graph {
	t.Helper()
	g, err := wire.Build(context.Background(), storetest.Open(t, storetest.SQLite), storetest.KeyRing(t),
		wire.Options{PublicURL: "http://connmgr.test", EgressAllow: outboundtest.Loopback(t).Allow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.CloseIdleConnections)
	return g
}

// invokeOnce sends GET relativeURI through g's proxy.
func invokeOnce(t *testing.T, g *wire.Graph, c *connections.Connection, rel string) (int, error) {
	t.Helper()
	rec := httptest.NewRecorder()
	err := g.Proxy.Serve(rec, httptest.NewRequest("GET", "/invoke", nil), invoke.Call{Conn: c, Method: "GET",
		Target: invoke.Target{RelativeURI: rel}, Header: http.Header{}})
	return rec.Code, err
}

// TestClientCertificates: a target that requires a client certificate
// from a private CA, and serves its own certificate from another private
// CA. The right certificate with the server's CA gets 200; every other
// setting is refused before an answer with a reason that says what is
// wrong, as a test of the connection says too.
func TestClientCertificates(t *testing.T) {
	g := newGraph(t)
	ctx := context.Background()
	serverCA, clientCA, otherCA := newPKI(t, "server CA"), newPKI(t, "client CA"), newPKI(t, "other CA")
	day := time.Now().Add(24 * time.Hour)
	target := mtlsServer(t, serverCA.issue(t, false, day), clientCA, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	named := mtlsServer(t, serverCA.issue(t, false, day, "api.internal"), clientCA, http.NotFoundHandler())
	right, wrong := clientCA.issue(t, true, day), otherCA.issue(t, true, day)
	var soon keyPair // made just before its connection: under load the cases before it take time
	tests := []struct {
		name, baseURL string
		tls           *connections.TLS
		status        int    // the target's answer, 0 for none
		reason        string // in the error and the test's detail
	}{
		{name: "right certificate, private CA", baseURL: target.URL, status: 200,
			tls: &connections.TLS{ClientCertificatePEM: right.certPEM, ClientKeyPEM: connections.NewSecret(right.keyPEM), CACertificatesPEM: serverCA.pem}},
		{name: "server name of the certificate", baseURL: named.URL, status: 404,
			tls: &connections.TLS{ClientCertificatePEM: right.certPEM, ClientKeyPEM: connections.NewSecret(right.keyPEM),
				CACertificatesPEM: serverCA.pem, ServerName: "api.internal"}},
		{name: "without the server's CA", baseURL: target.URL, reason: "the server's certificate is not signed by a trusted authority",
			tls: &connections.TLS{ClientCertificatePEM: right.certPEM, ClientKeyPEM: connections.NewSecret(right.keyPEM)}},
		{name: "another CA's client certificate", baseURL: target.URL, reason: "the server does not trust the client certificate's issuer",
			tls: &connections.TLS{ClientCertificatePEM: wrong.certPEM, ClientKeyPEM: connections.NewSecret(wrong.keyPEM), CACertificatesPEM: serverCA.pem}},
		{name: "no client certificate", baseURL: target.URL, reason: "the server requires a client certificate",
			tls: &connections.TLS{CACertificatesPEM: serverCA.pem}},
		{name: "a server name the certificate is not for", baseURL: named.URL, reason: "not valid for",
			tls: &connections.TLS{ClientCertificatePEM: right.certPEM, ClientKeyPEM: connections.NewSecret(right.keyPEM),
				CACertificatesPEM: serverCA.pem, ServerName: "other.internal"}},
		{name: "a client certificate that expired after it was set", baseURL: target.URL, reason: "the server rejected the client certificate as expired"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.tls == nil {
				soon = clientCA.issue(t, true, time.Now().Add(1500*time.Millisecond))
				tt.tls = &connections.TLS{ClientCertificatePEM: soon.certPEM, ClientKeyPEM: connections.NewSecret(soon.keyPEM), CACertificatesPEM: serverCA.pem}
			}
			c := &connections.Connection{Name: "Conn_MTLS_" + string(rune('A'+i)), Role: connections.RoleInvoke, BaseURL: tt.baseURL,
				Security: &security.None{}, TLS: tt.tls}
			if err := g.Service.Create(ctx, "test", c); err != nil {
				t.Fatalf("Create() = %v", err)
			}
			c, _ = g.Service.Get(ctx, c.Name)
			if strings.Contains(tt.name, "expired") {
				time.Sleep(time.Until(soon.tls.Leaf.NotAfter) + 100*time.Millisecond)
			}
			status, err := invokeOnce(t, g, c, "/")
			switch {
			case tt.status != 0 && (err != nil || status != tt.status):
				t.Fatalf("invoke = %d, %v; want %d", status, err, tt.status)
			case tt.status == 0 && (!errors.Is(err, invoke.ErrUpstreamUnreachable) || !strings.Contains(err.Error(), tt.reason)):
				t.Fatalf("invoke = %d, %v; want ErrUpstreamUnreachable saying %q", status, err, tt.reason)
			}
			r, err := g.Tester.Test(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("test: %s %q", r.Result, r.Detail)
			if tt.status == 0 && (r.Result != connections.TestFailure || !strings.Contains(r.Detail, tt.reason)) {
				t.Errorf("Test() = %s %q, want FAILURE saying %q", r.Result, r.Detail, tt.reason)
			}
			if tt.status != 0 && r.Result != connections.TestSuccess {
				t.Errorf("Test() = %s %q, want SUCCESS", r.Result, r.Detail)
			}
		})
	}
	t.Run("validation", func(t *testing.T) {
		expired := clientCA.issue(t, true, time.Now().Add(-time.Minute))
		server := serverCA.issue(t, false, day)
		for _, tt := range []struct {
			name, field string
			tls         *connections.TLS
			description string
		}{
			{name: "a wrong key with another invalid field", field: "tls.clientKeyPem", description: "bad\x00",
				tls: &connections.TLS{ClientCertificatePEM: right.certPEM, ClientKeyPEM: connections.NewSecret(wrong.keyPEM)}},
			{name: "a key that is not the certificate's", field: "tls.clientKeyPem", tls: &connections.TLS{ClientCertificatePEM: right.certPEM, ClientKeyPEM: connections.NewSecret(wrong.keyPEM)}},
			{name: "an expired certificate", field: "tls.clientCertificatePem", tls: &connections.TLS{ClientCertificatePEM: expired.certPEM, ClientKeyPEM: connections.NewSecret(expired.keyPEM)}},
			{name: "a server certificate as client certificate", field: "tls.clientCertificatePem", tls: &connections.TLS{ClientCertificatePEM: server.certPEM, ClientKeyPEM: connections.NewSecret(server.keyPEM)}},
			{name: "a key in the CA field", field: "tls.caCertificatesPem", tls: &connections.TLS{CACertificatesPEM: right.keyPEM}},
			{name: "text after the CAs", field: "tls.caCertificatesPem", tls: &connections.TLS{CACertificatesPEM: serverCA.pem + "junk"}},
			{name: "a certificate without its key", field: "tls.clientKeyPem", tls: &connections.TLS{ClientCertificatePEM: right.certPEM}},
			{name: "a CA bundle over the API's 256 KiB", field: "tls.caCertificatesPem",
				tls: &connections.TLS{CACertificatesPEM: strings.Repeat(serverCA.pem, (256<<10)/len(serverCA.pem)+1)}},
		} {
			c := &connections.Connection{Name: "Conn_MTLS_Invalid", Role: connections.RoleInvoke, BaseURL: target.URL,
				Security: &security.None{}, TLS: tt.tls, Description: tt.description}
			err := g.Service.Create(ctx, "test", c)
			var ves connections.ValidationErrors
			if !errors.As(err, &ves) || !strings.Contains(err.Error(), tt.field+":") {
				t.Errorf("%s: Create() = %v, want 422 naming %s", tt.name, err, tt.field)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("%s: the error quotes the key: %v", tt.name, err)
			}
		}
	})
}

// TestCertificateBoundTokens (RFC 8705): a token endpoint that
// authenticates the client by its certificate (TLS_CLIENT_AUTH, no
// secret) and binds the token to it (cnf x5t#S256), and a resource server
// that accepts the token only with the same certificate. The connection's
// certificate goes to both, so the call succeeds; a connection whose
// certificate the token endpoint does not know gets no token.
func TestCertificateBoundTokens(t *testing.T) {
	g := newGraph(t)
	ctx := context.Background()
	serverCA, clientCA := newPKI(t, "server CA"), newPKI(t, "client CA")
	day := time.Now().Add(24 * time.Hour)
	right, unknown := clientCA.issue(t, true, day), clientCA.issue(t, true, day)
	known := map[string]string{thumbprint(right.tls.Leaf): "orders-client"}
	tokens := mtlsServer(t, serverCA.issue(t, false, day), clientCA, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		x5t := thumbprint(r.TLS.PeerCertificates[0])
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("grant_type") != "client_credentials" || known[x5t] == "" || known[x5t] != r.PostForm.Get("client_id") ||
			r.PostForm.Has("client_secret") || r.Header.Get("Authorization") != "" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "bound-" + x5t, "token_type": "Bearer", "expires_in": 3600,
			"cnf": map[string]string{"x5t#S256": x5t}})
	}))
	api := mtlsServer(t, serverCA.issue(t, false, day), clientCA, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer bound-"+thumbprint(r.TLS.PeerCertificates[0]) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "orders")
	}))
	conn := func(name string, kp keyPair) *connections.Connection {
		c := &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: api.URL,
			Security: &security.ClientCredentials{Client: security.Client{TokenURL: tokens.URL + "/token", ClientID: "orders-client",
				ClientAuth: security.ClientAuthTLS}},
			TLS: &connections.TLS{ClientCertificatePEM: kp.certPEM, ClientKeyPEM: connections.NewSecret(kp.keyPEM), CACertificatesPEM: serverCA.pem}}
		if err := g.Service.Create(ctx, "test", c); err != nil {
			t.Fatalf("Create() = %v", err)
		}
		c, _ = g.Service.Get(ctx, name)
		return c
	}
	c := conn("Conn_MTLS_Bound", right)
	if status, err := invokeOnce(t, g, c, "/orders"); err != nil || status != 200 {
		t.Errorf("invoke with a certificate-bound token = %d, %v; want 200", status, err)
	}
	r, err := g.Tester.Test(ctx, c)
	if err != nil || r.Result != connections.TestSuccess || len(r.Steps) != 2 {
		t.Errorf("Test() = %+v, %v; want the token and request steps succeeding", r, err)
	}
	other := conn("Conn_MTLS_Unknown", unknown)
	if _, err := invokeOnce(t, g, other, "/orders"); !errors.Is(err, security.ErrTokenUnavailable) || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("invoke with a certificate the token endpoint does not know = %v, want no token (invalid_client)", err)
	}
}
