package outbound_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/outbound/outboundtest"
)

// get calls url through ts's transport for s and returns the body, or
// Classify's reason for the failure.
func get(t *testing.T, ts *outbound.Transports, s *outbound.TLS, url string) (string, error) {
	t.Helper()
	c, err := ts.Client(s, 5*time.Second)
	if err != nil {
		t.Fatalf("Client(%v) = %v", s, err)
	}
	res, err := c.Get(url)
	if err != nil {
		return "", outbound.Classify(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.Proto + " " + string(b), err
}

func newTransports(t *testing.T, max int) *outbound.Transports {
	ts := outbound.NewTransports(outboundtest.Loopback(t), 0, max)
	t.Cleanup(ts.CloseIdleConnections)
	return ts
}

// http1 makes a server configuration offer HTTP/1.1 only.
func http1(cfg *tls.Config) *tls.Config {
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

func TestClientCertificates(t *testing.T) {
	ca := newCA(t, "test CA")
	right := ca.issue(t, leaf{client: true})
	expired := ca.issue(t, leaf{client: true, notBefore: -48 * time.Hour, notAfter: -24 * time.Hour})
	foreign := newCA(t, "foreign CA").issue(t, leaf{client: true})
	serverCert := ca.issue(t, loopback)
	with := func(c issued) *outbound.TLS {
		return &outbound.TLS{ClientCertificatePEM: c.certPEM, ClientKeyPEM: c.keyPEM, CACertificatesPEM: ca.pem}
	}
	for _, v := range []struct {
		name    string
		version uint16
	}{{"TLS 1.2", tls.VersionTLS12}, {"TLS 1.3", tls.VersionTLS13}} {
		// Rejections over HTTP/2: TestClientCertificateVerdictHTTP2.
		h1 := tlsServer(t, serverCert, http1(requireClientCert(ca, v.version)))
		h2 := tlsServer(t, serverCert, requireClientCert(ca, v.version))
		noCert := "TLS handshake failed: the server requires a client certificate"
		if v.version == tls.VersionTLS12 {
			noCert = "TLS handshake failed: the server refused the handshake (it may require a client certificate)"
		}
		for _, tt := range []struct {
			name string
			url  string
			tls  *outbound.TLS
			want string // the body, or the reason of the failure
		}{
			{name: "right certificate", url: h1.URL, tls: with(right), want: "HTTP/1.1 ok"},
			{name: "right certificate, HTTP/2", url: h2.URL, tls: with(right), want: "HTTP/2.0 ok"},
			{name: "no certificate", url: h1.URL, tls: &outbound.TLS{CACertificatesPEM: ca.pem}, want: noCert},
			{name: "certificate of another CA", url: h1.URL, tls: with(foreign),
				want: "TLS handshake failed: the server does not trust the client certificate's issuer"},
			{name: "expired certificate", url: h1.URL, tls: with(expired),
				want: "TLS handshake failed: the server rejected the client certificate as expired"},
		} {
			t.Run(v.name+", "+tt.name, func(t *testing.T) {
				got, err := get(t, newTransports(t, 0), tt.tls, tt.url)
				if err != nil {
					got = err.Error()
				}
				if got != tt.want {
					t.Errorf("GET with %s = %q, want %q", tt.name, got, tt.want)
				}
				if f := (*outbound.Failure)(nil); errors.As(err, &f) && (f.Kind != outbound.KindTLS || f.Transient) {
					t.Errorf("GET with %s failed with kind %v transient %v, want permanent tls", tt.name, f.Kind, f.Transient)
				}
			})
		}
	}
}

// TestClientCertificateVerdictHTTP2 checks that a TLS 1.3 server's
// rejection of the client certificate is named over HTTP/2 too, where the
// server's close often wins the race with its alert, every time.
func TestClientCertificateVerdictHTTP2(t *testing.T) {
	ca := newCA(t, "test CA")
	srv := tlsServer(t, ca.issue(t, loopback), requireClientCert(ca, tls.VersionTLS13))
	foreign := newCA(t, "foreign CA").issue(t, leaf{client: true})
	expired := ca.issue(t, leaf{client: true, notBefore: -48 * time.Hour, notAfter: -24 * time.Hour})
	for _, tt := range []struct {
		name string
		tls  *outbound.TLS
		want string
	}{
		{name: "no certificate", tls: &outbound.TLS{CACertificatesPEM: ca.pem},
			want: "TLS handshake failed: the server requires a client certificate"},
		{name: "certificate of another CA", tls: &outbound.TLS{ClientCertificatePEM: foreign.certPEM,
			ClientKeyPEM: foreign.keyPEM, CACertificatesPEM: ca.pem},
			want: "TLS handshake failed: the server does not trust the client certificate's issuer"},
		{name: "expired certificate", tls: &outbound.TLS{ClientCertificatePEM: expired.certPEM,
			ClientKeyPEM: expired.keyPEM, CACertificatesPEM: ca.pem},
			want: "TLS handshake failed: the server rejected the client certificate as expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 20 {
				_, err := get(t, newTransports(t, 0), tt.tls, srv.URL)
				if err == nil || err.Error() != tt.want {
					t.Fatalf("GET #%d with %s = %v, want %q", i+1, tt.name, err, tt.want)
				}
			}
		})
	}
}

// TestVerdictWithoutAlert checks that a call that breaks off for another
// reason keeps its own error, after a bounded wait for a verdict.
func TestVerdictWithoutAlert(t *testing.T) {
	ca := newCA(t, "test CA")
	srv := tlsServer(t, ca.issue(t, loopback), http1(&tls.Config{}))
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close() // the TLS connection, without a response
		}
	})
	start := time.Now()
	_, err := get(t, newTransports(t, 0), &outbound.TLS{CACertificatesPEM: ca.pem}, srv.URL)
	if f := (*outbound.Failure)(nil); !errors.As(err, &f) || f.Kind != outbound.KindClosed {
		t.Errorf("GET = %v, want the server's close", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("GET took %v, want the wait for a verdict bounded (1s)", d)
	}
}

func TestPrivateCA(t *testing.T) {
	private := newCA(t, "private CA")
	srv := tlsServer(t, private.issue(t, loopback), nil)
	named := tlsServer(t, private.issue(t, leaf{dns: []string{"api.internal"}}), nil)
	var sni string
	named.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni = r.TLS.ServerName
		io.WriteString(w, "ok")
	})
	untrusted := "TLS handshake failed: the server's certificate is not signed by a trusted authority"
	for _, tt := range []struct {
		name string
		url  string
		tls  *outbound.TLS
		want string
	}{
		{name: "without the CA", url: srv.URL, want: untrusted},
		{name: "with the CA", url: srv.URL, tls: &outbound.TLS{CACertificatesPEM: private.pem}, want: "HTTP/2.0 ok"},
		{name: "with the CA among others", url: srv.URL, tls: &outbound.TLS{CACertificatesPEM: newCA(t, "x").pem + private.pem},
			want: "HTTP/2.0 ok"},
		{name: "with another CA", url: srv.URL, tls: &outbound.TLS{CACertificatesPEM: newCA(t, "other").pem}, want: untrusted},
		{name: "certificate for another name", url: named.URL, tls: &outbound.TLS{CACertificatesPEM: private.pem},
			want: `TLS handshake failed: the server's certificate is not valid for "127.0.0.1"`},
		{name: "server name", url: named.URL, tls: &outbound.TLS{CACertificatesPEM: private.pem, ServerName: "api.internal"},
			want: "HTTP/2.0 ok"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := get(t, newTransports(t, 0), tt.tls, tt.url)
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("GET %s = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
	if sni != "api.internal" {
		t.Errorf("server saw SNI %q, want api.internal", sni)
	}
}

// TestSystemRootsKept checks that a connection's CAs are trusted besides
// the system's roots, not instead of them. The system's roots are read
// once per process, so the test runs itself in a child process whose roots
// (SSL_CERT_FILE) are a CA it made.
func TestSystemRootsKept(t *testing.T) {
	if os.Getenv("OUTBOUND_TEST_ROOTS_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSystemRootsKept$", "-test.v")
		cmd.Env = append(os.Environ(), "OUTBOUND_TEST_ROOTS_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestSystemRootsKept/private_CA")) {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	system, private := newCA(t, "system CA"), newCA(t, "private CA")
	dir := t.TempDir()
	file := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(file, []byte(system.pem), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Setenv("SSL_CERT_FILE", file)
	os.Setenv("SSL_CERT_DIR", dir)
	public := tlsServer(t, system.issue(t, loopback), nil)
	internal := tlsServer(t, private.issue(t, loopback), nil)
	ts := newTransports(t, 0)
	withCA := &outbound.TLS{CACertificatesPEM: private.pem}
	for _, tt := range []struct {
		name string
		tls  *outbound.TLS
		url  string
		want string
	}{
		{name: "system root, default", url: public.URL, want: "HTTP/2.0 ok"},
		{name: "system root, with the private CA", tls: withCA, url: public.URL, want: "HTTP/2.0 ok"},
		{name: "private CA", tls: withCA, url: internal.URL, want: "HTTP/2.0 ok"},
		{name: "private CA, default", url: internal.URL,
			want: "TLS handshake failed: the server's certificate is not signed by a trusted authority"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := get(t, ts, tt.tls, tt.url)
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("GET %s = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestTransportsCache(t *testing.T) {
	ca := newCA(t, "test CA")
	settings := func(name string) *outbound.TLS { return &outbound.TLS{CACertificatesPEM: ca.pem, ServerName: name} }
	ts := newTransports(t, 2)
	must := func(s *outbound.TLS) http.RoundTripper {
		t.Helper()
		rt, err := ts.For(s)
		if err != nil {
			t.Fatalf("For(%v) = %v", s, err)
		}
		return rt
	}

	if rt := must(nil); rt != ts.Default() {
		t.Errorf("For(nil) = %p, want Default() %p", rt, ts.Default())
	}
	if rt := must(&outbound.TLS{}); rt != ts.Default() {
		t.Errorf("For(zero) = %p, want Default() %p", rt, ts.Default())
	}
	a := must(settings("a.example"))
	if again := must(settings("a.example")); again != a {
		t.Errorf("For(equal settings) = %p, want the same transport %p", again, a)
	}
	if a == ts.Default() {
		t.Error("For(settings) = Default(), want a transport of its own")
	}
	b := must(settings("b.example"))
	if b == a {
		t.Error("For(other settings) = the same transport, want another")
	}

	// Used a, then b: a is the least recently used when c comes in, and
	// is dropped (max 2).
	must(settings("a.example"))
	must(settings("b.example"))
	must(settings("c.example"))
	if again := must(settings("b.example")); again != b {
		t.Error("For(b) after c = a new transport, want b kept (recently used)")
	}
	if again := must(settings("a.example")); again == a {
		t.Error("For(a) after c = the old transport, want it dropped (least recently used, max 2)")
	}

	if _, err := ts.For(&outbound.TLS{CACertificatesPEM: "c4n4ry"}); !errors.As(err, new(outbound.FieldErrors)) {
		t.Errorf("For(bad CAs) = %v, want FieldErrors", err)
	}

	var wg sync.WaitGroup
	got := make([]http.RoundTripper, 16)
	for i := range got {
		wg.Go(func() { got[i], _ = ts.For(settings("concurrent.example")) })
	}
	wg.Wait()
	for i, rt := range got {
		if rt == nil || rt != got[0] {
			t.Fatalf("concurrent For #%d = %p, want %p like the others", i, rt, got[0])
		}
	}
}

// TestTransportsEvictionClosesIdle checks that a dropped transport's idle
// connections are closed rather than left open.
func TestTransportsEvictionClosesIdle(t *testing.T) {
	closed := make(chan struct{}, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	ts := newTransports(t, 1)
	first := &outbound.TLS{ServerName: "first.example"}
	if _, err := get(t, ts, first, srv.URL); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.For(&outbound.TLS{ServerName: "second.example"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the dropped transport's idle connection is still open after 5s")
	}
}

func ExampleTransports_For() {
	ts := outbound.NewTransports(&outbound.Guard{}, 30*time.Second, 0)
	rt, err := ts.For(nil)
	fmt.Println(rt == ts.Default(), err)
	_, err = ts.For(&outbound.TLS{ClientCertificatePEM: "not PEM", ClientKeyPEM: "not PEM"})
	fmt.Println(err)
	// Output:
	// true <nil>
	// tls.clientCertificatePem: is not a PEM certificate; tls.clientKeyPem: is not a PEM private key
}
