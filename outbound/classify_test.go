package outbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/outbound/outboundtest"
)

// hijacker is a server that takes over each connection and hands it to f.
func hijacker(t testing.TB, f func(net.Conn)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		f(conn)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// silentListener accepts connections and never writes to them.
func silentListener(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return l.Addr().String()
}

// TestClassify makes each kind of failure for real and checks what
// Classify says of it.
func TestClassify(t *testing.T) {
	ca := newCA(t, "test CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	expired := ca.issue(t, leaf{ips: loopback.ips, notBefore: -48 * time.Hour, notAfter: -24 * time.Hour})
	future := ca.issue(t, leaf{ips: loopback.ips, notBefore: 24 * time.Hour, notAfter: 48 * time.Hour})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	selfSigned := outboundtest.UntrustedTLS(t)

	for _, tt := range []struct {
		name      string
		url       string
		guard     *outbound.Guard // nil: loopback allowed
		setup     func(*http.Transport)
		ctx       func(context.Context) (context.Context, context.CancelFunc)
		kind      outbound.Kind
		reason    string
		transient bool
	}{
		{name: "connection refused", url: "http://" + outboundtest.ClosedPort(t),
			kind: outbound.KindRefused, reason: "connection refused", transient: true},
		{name: "closed before an answer", url: hijacker(t, func(c net.Conn) { c.Close() }).URL,
			kind: outbound.KindClosed, reason: "the server closed the connection before answering", transient: true},
		{name: "reset", url: hijacker(t, func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }).URL,
			kind: outbound.KindReset, reason: "connection reset by the server", transient: true},
		{name: "response headers time out", url: hang.URL,
			setup: func(tr *http.Transport) { tr.ResponseHeaderTimeout = 100 * time.Millisecond },
			kind:  outbound.KindTimeout, reason: "timed out waiting for the server", transient: true},
		{name: "TLS handshake times out", url: "https://" + silentListener(t),
			setup: func(tr *http.Transport) { tr.TLSHandshakeTimeout = 100 * time.Millisecond },
			kind:  outbound.KindTimeout, reason: "timed out waiting for the server", transient: true},
		{name: "deadline", url: hang.URL,
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 100*time.Millisecond)
			},
			kind: outbound.KindTimeout, reason: "timed out waiting for the server", transient: true},
		{name: "canceled", url: hang.URL,
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				time.AfterFunc(50*time.Millisecond, cancel)
				return ctx, cancel
			},
			kind: outbound.KindCanceled, reason: "canceled", transient: true},
		{name: "egress denied", url: plain.URL, guard: &outbound.Guard{},
			kind: outbound.KindEgressDenied, transient: false,
			reason: "connection to 127.0.0.1 refused: loopback address; add it to CONNMGR_EGRESS_ALLOW to allow it"},
		{name: "DNS name that does not exist", url: "http://nowhere.invalid/",
			kind: outbound.KindDNS, reason: `no such host "nowhere.invalid"`, transient: false},
		{name: "TLS to a plain server", url: strings.Replace(plain.URL, "http:", "https:", 1),
			kind: outbound.KindTLS, reason: "TLS handshake failed: the server did not answer in TLS (is it plain HTTP?)"},
		{name: "untrusted authority", url: tlsServer(t, newCA(t, "other CA").issue(t, loopback), nil).URL,
			kind: outbound.KindTLS, reason: "TLS handshake failed: the server's certificate is not signed by a trusted authority"},
		{name: "self-signed", url: selfSigned.URL,
			kind: outbound.KindTLS, reason: "TLS handshake failed: the server's certificate is self-signed and not trusted"},
		{name: "expired", url: tlsServer(t, expired, nil).URL, kind: outbound.KindTLS,
			reason: "TLS handshake failed: the server's certificate expired at " + expired.tls.Leaf.NotAfter.UTC().Format(time.RFC3339)},
		{name: "not yet valid", url: tlsServer(t, future, nil).URL, kind: outbound.KindTLS,
			reason: "TLS handshake failed: the server's certificate is not valid before " + future.tls.Leaf.NotBefore.UTC().Format(time.RFC3339)},
		{name: "wrong host", url: tlsServer(t, ca.issue(t, leaf{dns: []string{"other.example"}}), nil).URL,
			kind: outbound.KindTLS, reason: `TLS handshake failed: the server's certificate is not valid for "127.0.0.1"`},
		{name: "client certificate required (TLS 1.2)", url: tlsServer(t, ca.issue(t, loopback), requireClientCert(ca, tls.VersionTLS12)).URL,
			kind: outbound.KindTLS, reason: "TLS handshake failed: the server refused the handshake (it may require a client certificate)"},
		{name: "client certificate required (TLS 1.3)", url: tlsServer(t, ca.issue(t, loopback), requireClientCert(ca, 0)).URL,
			setup: func(tr *http.Transport) { tr.ForceAttemptHTTP2 = false }, // see TestClientCertificates
			kind:  outbound.KindTLS, reason: "TLS handshake failed: the server requires a client certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.guard
			if g == nil {
				g = outboundtest.Loopback(t)
			}
			tr := g.Transport(0)
			tr.TLSClientConfig = &tls.Config{RootCAs: roots}
			if tt.setup != nil {
				tt.setup(tr)
			}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithCancel(t.Context())
			if tt.ctx != nil {
				ctx, cancel = tt.ctx(ctx)
			}
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := tr.RoundTrip(req)
			if err == nil {
				res.Body.Close()
				t.Fatalf("RoundTrip(%s) = %s, want an error", tt.url, res.Status)
			}
			f := outbound.Classify(err)
			if f.Kind != tt.kind || f.Reason != tt.reason || f.Transient != tt.transient {
				t.Errorf("Classify(%v) = %v %q transient %v, want %v %q transient %v",
					err, f.Kind, f.Reason, f.Transient, tt.kind, tt.reason, tt.transient)
			}
			if f.Error() != f.Reason || !errors.Is(f, err) {
				t.Errorf("Classify(%v): Error() = %q and Unwrap() = %v, want Reason and the error", err, f.Error(), f.Unwrap())
			}
		})
	}
}

// fullBacklog returns the address of a listener that never accepts and
// whose queue of connections is full, so that the kernel drops further
// SYNs and a dial to it times out.
func fullBacklog(t *testing.T) string {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // a queue of one
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	for range 2 {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return addr
}

// TestClassifyDialTimeout times a dial out for real. (Through a
// Transport, a deadline that passes while dialing is reported as the
// context's error, "timed out waiting for the server".)
func TestClassifyDialTimeout(t *testing.T) {
	addr := fullBacklog(t)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	conn, err := outboundtest.Loopback(t).DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		t.Fatalf("DialContext(%s) succeeded, want a timeout", addr)
	}
	f := outbound.Classify(err)
	if f.Kind != outbound.KindTimeout || f.Reason != "timed out connecting to the server" || !f.Transient {
		t.Errorf("Classify(%v) = %v %q transient %v, want timeout %q transient", err, f.Kind, f.Reason, f.Transient,
			"timed out connecting to the server")
	}
}

// TestClassifyWrapped checks what real failures cannot easily produce here
// (no route, a temporary DNS failure) and how Classify treats wrapping.
func TestClassifyWrapped(t *testing.T) {
	dialErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	denied := (&outbound.Guard{}).Check(netip.MustParseAddr("169.254.169.254"))
	classified := outbound.Classify(dialErr(syscall.ECONNREFUSED))
	for _, tt := range []struct {
		name      string
		err       error
		kind      outbound.Kind
		reason    string
		transient bool
	}{
		{name: "no route to host", err: dialErr(syscall.EHOSTUNREACH), kind: outbound.KindUnreachable, reason: "no route to the host", transient: true},
		{name: "network unreachable", err: dialErr(syscall.ENETUNREACH), kind: outbound.KindUnreachable, reason: "network unreachable", transient: true},
		{name: "broken pipe", err: &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)},
			kind: outbound.KindReset, reason: "connection reset by the server", transient: true},
		{name: "dial timeout", err: &net.OpError{Op: "dial", Net: "tcp", Err: &timeoutErr{}},
			kind: outbound.KindTimeout, reason: "timed out connecting to the server", transient: true},
		{name: "DNS timeout", err: &net.DNSError{Err: "i/o timeout", Name: "api.example.com", IsTimeout: true},
			kind: outbound.KindDNS, reason: `DNS lookup of "api.example.com" timed out`, transient: true},
		{name: "DNS temporary", err: &net.DNSError{Err: "server misbehaving", Name: "api.example.com", IsTemporary: true},
			kind: outbound.KindDNS, reason: `DNS lookup of "api.example.com" failed`, transient: true},
		{name: "alert from QUIC", err: fmt.Errorf("handshake: %w", tls.AlertError(48)),
			kind: outbound.KindTLS, reason: "TLS handshake failed: the server does not trust the client certificate's issuer"},
		{name: "unnamed alert", err: tls.AlertError(80),
			kind: outbound.KindTLS, reason: `TLS handshake failed: the server sent the alert "tls: internal error"`},
		{name: "wrapped denial", err: fmt.Errorf("post: %w", denied), kind: outbound.KindEgressDenied, reason: denied.Error()},
		{name: "already classified", err: fmt.Errorf("token request: %w", classified), kind: outbound.KindRefused,
			reason: "connection refused", transient: true},
		{name: "unknown", err: errors.New("something odd at https://api.example.com/?key=c4n4ry"), kind: outbound.KindOther,
			reason: "request failed", transient: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := outbound.Classify(tt.err)
			if f.Kind != tt.kind || f.Reason != tt.reason || f.Transient != tt.transient {
				t.Errorf("Classify(%v) = %v %q transient %v, want %v %q transient %v",
					tt.err, f.Kind, f.Reason, f.Transient, tt.kind, tt.reason, tt.transient)
			}
		})
	}
	if f := outbound.Classify(nil); f != nil {
		t.Errorf("Classify(nil) = %v, want nil", f)
	}
	if f := outbound.Classify(fmt.Errorf("x: %w", denied)); !errors.Is(f, outbound.ErrEgressDenied) {
		t.Errorf("Classify(denial) = %v, want errors.Is ErrEgressDenied", f)
	}
	if f := outbound.Classify(classified); f != classified {
		t.Errorf("Classify(*Failure) = %p, want the same %p", f, classified)
	}
}

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }

func TestKindString(t *testing.T) {
	for _, tt := range []struct {
		kind outbound.Kind
		want string
	}{
		{outbound.KindOther, "other"},
		{outbound.KindTLS, "tls"},
		{outbound.KindEgressDenied, "egress_denied"},
		{outbound.KindCanceled, "canceled"},
		{outbound.Kind(200), "other"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.kind.String(); got != tt.want {
				t.Errorf("Kind(%d).String() = %q, want %q", tt.kind, got, tt.want)
			}
		})
	}
}

func ExampleClassify() {
	g := &outbound.Guard{} // public addresses only
	_, err := g.Client(time.Second).Get("http://127.0.0.1:8080/health")
	f := outbound.Classify(err)
	fmt.Println(f.Kind, f.Transient)
	fmt.Println(f.Reason)
	// Output:
	// egress_denied false
	// connection to 127.0.0.1 refused: loopback address; add it to CONNMGR_EGRESS_ALLOW to allow it
}
