package invoke

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/connmgr/connmgr/connections"
)

// TestOutcome is the result of a connection test.
type TestOutcome struct {
	// OK says the target answered 2xx.
	OK bool
	// Detail is short and safe to show: the status ("HTTP 200", "HTTP 401
	// from the target") or the kind of failure ("timeout after 30s",
	// "connection refused"). It never holds a response body or a
	// credential.
	Detail string
	// Latency is the time from sending the request to the response
	// headers or the failure; zero when nothing was sent (an invalid test
	// request, no credential).
	Latency time.Duration
}

// Test sends c's TestRequest (default GET on the base URL) with the
// credential through the same transport as Serve, bounded by c's timeout,
// and reports the outcome. It reads at most a little of the response body
// and discards it. It is meant for policies without tokens; for OAuth the
// test is obtaining a token.
func (p *Proxy) Test(ctx context.Context, c *connections.Connection) TestOutcome {
	method, rel := http.MethodGet, ""
	if t := c.TestRequest; t != nil {
		if t.Method != "" {
			method = t.Method
		}
		rel = t.RelativeURI
	}
	target, err := resolveBase(c.BaseURL, Target{RelativeURI: rel})
	if err != nil {
		return TestOutcome{Detail: "invalid test request: " + resolveReason(err)}
	}
	timeout := timeoutOf(c)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errDeadline)
	defer cancel()

	req := (&http.Request{Method: method, URL: target, Host: target.Host, Header: http.Header{},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	setStatic(req.Header, c)
	if p.Credentials != nil {
		if _, err := p.Credentials.Apply(ctx, c, req); err != nil {
			// Credentials' errors are safe to show.
			return TestOutcome{Detail: "no credential: " + err.Error()}
		}
	}

	start := time.Now()
	res, err := p.Transport.RoundTrip(req)
	latency := time.Since(start)
	if err != nil {
		return TestOutcome{Detail: testFailure(ctx, timeout, err), Latency: latency}
	}
	discard(res.Body)
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return TestOutcome{OK: true, Detail: "HTTP " + strconv.Itoa(res.StatusCode), Latency: latency}
	}
	return TestOutcome{Detail: "HTTP " + strconv.Itoa(res.StatusCode) + " from the target", Latency: latency}
}

// resolveReason phrases an error of resolveBase for a test's detail.
func resolveReason(err error) string {
	msg := err.Error()
	if errors.Is(err, ErrInvalidRelativeURI) {
		return "relative URI " + strings.TrimPrefix(msg, ErrInvalidRelativeURI.Error()+": ")
	}
	return strings.TrimPrefix(msg, "invoke: ")
}

// testFailure describes why a test request got no answer.
func testFailure(ctx context.Context, timeout time.Duration, err error) string {
	var denied *DeniedError
	switch {
	case errors.As(err, &denied):
		return "refused by the egress guard: " + denied.Error()
	case context.Cause(ctx) == errDeadline || isTimeout(err):
		return "timeout after " + timeout.String()
	}
	return describe(err)
}

// isTimeout reports whether err is a network timeout (dial, TLS handshake,
// response headers) or an expired deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded)
}

// describe names the kind of network failure behind err in a few safe
// words: no addresses, no response text.
func describe(err error) string {
	var (
		dns      *net.DNSError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &dns):
		return "DNS lookup failed"
	case errors.As(err, &verify), errors.As(err, &record), errors.As(err, &alert),
		errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid),
		strings.Contains(err.Error(), "tls: "):
		return "TLS handshake failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by the target"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a response"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "request failed"
}
