// Package outboundtest helps tests make outbound calls to their own local
// servers: a guard that allows loopback, an address nothing listens on, a
// TLS server nobody trusts.
package outboundtest

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/connmgr/connmgr/outbound"
)

// Loopback returns a guard that allows 127.0.0.0/8 besides public
// addresses, so that tests reach their httptest servers (as
// CONNMGR_EGRESS_ALLOW=127.0.0.0/8 does).
func Loopback(tb testing.TB) *outbound.Guard {
	tb.Helper()
	return &outbound.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
}

// ClosedPort returns a loopback address ("127.0.0.1:port") nothing listens
// on, so that a dial to it is refused.
func ClosedPort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// UntrustedTLS starts an HTTPS server, closed when the test ends, whose
// certificate (httptest's self-signed one) outbound clients do not trust,
// so that calls to it fail their TLS handshake. The server does not log
// those handshake errors, which the tests cause on purpose.
func UntrustedTLS(tb testing.TB) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	return srv
}
