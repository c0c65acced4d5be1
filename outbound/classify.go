package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"reflect"
	"syscall"
	"time"
)

// Kind is the class of a failed outbound call: why the server gave no
// answer. The zero value is KindOther.
type Kind uint8

// The kinds of Failure.
const (
	// KindOther is a failure none of the other kinds describes.
	KindOther Kind = iota
	// KindTimeout: a dial, TLS handshake or wait for the response headers
	// timed out, or the call's deadline passed.
	KindTimeout
	// KindDNS: the server's name did not resolve.
	KindDNS
	// KindRefused: nothing listens on the server's address and port.
	KindRefused
	// KindUnreachable: there is no route to the server's network or host.
	KindUnreachable
	// KindReset: the server (or something on the way) reset or broke the
	// connection.
	KindReset
	// KindClosed: the server closed the connection before answering.
	KindClosed
	// KindTLS: the TLS handshake failed, on either side: the server's
	// certificate is not trusted or not valid for the name, the server
	// rejected the client certificate, the server does not speak TLS...
	KindTLS
	// KindEgressDenied: the egress guard refused the server's address.
	KindEgressDenied
	// KindCanceled: the caller's context was canceled.
	KindCanceled
)

var kindNames = [...]string{"other", "timeout", "dns", "refused", "unreachable", "reset", "closed", "tls",
	"egress_denied", "canceled"}

// String returns the kind's name, lower case ("timeout", "tls",
// "egress_denied"), for logs and metric labels.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "other"
}

// Failure is a classified error of an outbound call (a token request, an
// invoke, a webhook): its kind, a reason that is safe to show, and whether
// it may pass on a later attempt. Classify makes them.
type Failure struct {
	// Kind is the class of the failure.
	Kind Kind
	// Reason is a short phrase, safe to show to callers and store: it
	// holds no response body, no credential and no URL, only at most a
	// host name or an address (as the egress guard's refusals do). For
	// KindEgressDenied it is the *DeniedError's message, which names
	// CONNMGR_EGRESS_ALLOW.
	Reason string
	// Transient says the failure may pass if the call is made again later
	// (with Backoff): timeouts, refused and reset connections, temporary
	// DNS failures, cancellations and failures of unknown kind. Permanent
	// failures (TLS, egress denied, a name that does not exist) need
	// someone to change the configuration or the server. Whether it is
	// safe to send a call again (a reset POST may have reached the
	// server) is the caller's decision.
	Transient bool

	err error
}

// Error returns Reason.
func (f *Failure) Error() string { return f.Reason }

// Unwrap returns the classified error, for errors.Is and errors.As (such
// as ErrEgressDenied, context.DeadlineExceeded). Its text is not Reason's
// and may not be safe to show: an *url.Error, for one, holds the URL with
// its query.
func (f *Failure) Unwrap() error { return f.err }

// Classify describes why an outbound call failed. err is what
// http.Client.Do, an http.RoundTripper or Guard.DialContext returned, or
// an error wrapping it; nil gives nil, and a *Failure (anywhere in err's
// chain) is returned as it is. It looks at the types in err's chain
// (*DeniedError, *net.DNSError, net.Error, syscall errnos, crypto/tls and
// crypto/x509 errors), never at error text. The result wraps err.
//
// Classify is meant for errors of the network and TLS layers; it does not
// judge HTTP statuses (the call got an answer), and reports an error of
// another kind as KindOther, "request failed", transient.
func Classify(err error) *Failure {
	if err == nil {
		return nil
	}
	if f, ok := errors.AsType[*Failure](err); ok {
		return f
	}
	kind, reason, transient := classify(err)
	return &Failure{Kind: kind, Reason: reason, Transient: transient, err: err}
}

func classify(err error) (Kind, string, bool) {
	if de, ok := errors.AsType[*DeniedError](err); ok {
		return KindEgressDenied, de.Error(), false
	}
	if errors.Is(err, context.Canceled) {
		// Transient, so that a caller that records failures does not give
		// up on a server over its own cancellation.
		return KindCanceled, "canceled", true
	}
	if dns, ok := errors.AsType[*net.DNSError](err); ok {
		return classifyDNS(dns)
	}
	if reason, ok := tlsReason(err); ok {
		return KindTLS, "TLS handshake failed: " + reason, false
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
			return KindTimeout, "timed out connecting to the server", true
		}
		return KindTimeout, "timed out waiting for the server", true
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused, "connection refused", true
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return KindUnreachable, "no route to the host", true
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
		return KindUnreachable, "network unreachable", true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return KindReset, "connection reset by the server", true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return KindClosed, "the server closed the connection before answering", true
	}
	return KindOther, "request failed", true
}

// classifyDNS describes a failed lookup. A name that does not exist
// (NXDOMAIN) is permanent: it is a wrong URL or a missing record, which
// waiting does not fix.
func classifyDNS(e *net.DNSError) (Kind, string, bool) {
	name := quoteShort(e.Name)
	switch {
	case e.IsNotFound:
		return KindDNS, "no such host " + name, false
	case e.IsTimeout:
		return KindDNS, "DNS lookup of " + name + " timed out", true
	}
	return KindDNS, "DNS lookup of " + name + " failed", true
}

// tlsReason describes a TLS failure in err, if there is one.
func tlsReason(err error) (string, bool) {
	if a, ok := alertOf(err); ok {
		return alertReason(a), true
	}
	if e, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		if e.Cert != nil && e.Cert.CheckSignatureFrom(e.Cert) == nil {
			return "the server's certificate is self-signed and not trusted", true
		}
		return "the server's certificate is not signed by a trusted authority", true
	}
	if e, ok := errors.AsType[x509.HostnameError](err); ok {
		return "the server's certificate is not valid for " + quoteShort(e.Host), true
	}
	if e, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return invalidReason(e), true
	}
	if _, ok := errors.AsType[x509.SystemRootsError](err); ok {
		return "no trusted root certificates on this machine", true
	}
	if _, ok := errors.AsType[x509.InsecureAlgorithmError](err); ok {
		return "the server's certificate is signed with an insecure algorithm", true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return "the server's certificate could not be verified", true
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return "the server did not answer in TLS (is it plain HTTP?)", true
	}
	if _, ok := errors.AsType[*tls.ECHRejectionError](err); ok {
		return "the server rejected encrypted client hello", true
	}
	return "", false
}

// invalidReason describes a certificate that crypto/x509 found invalid.
func invalidReason(e x509.CertificateInvalidError) string {
	switch e.Reason {
	case x509.Expired:
		if c := e.Cert; c != nil && time.Now().Before(c.NotBefore) {
			return "the server's certificate is not valid before " + c.NotBefore.UTC().Format(time.RFC3339)
		} else if c != nil {
			return "the server's certificate expired at " + c.NotAfter.UTC().Format(time.RFC3339)
		}
		return "the server's certificate has expired or is not yet valid"
	case x509.IncompatibleUsage:
		return "the server's certificate is not for server authentication"
	case x509.NotAuthorizedToSign, x509.CANotAuthorizedForExtKeyUsage:
		return "the server's certificate is issued by a certificate that may not issue it"
	case x509.CANotAuthorizedForThisName, x509.NameConstraintsWithoutSANs, x509.UnconstrainedName,
		x509.TooManyConstraints, x509.NameMismatch:
		return "the server's certificate breaks its issuer's name constraints"
	case x509.TooManyIntermediates:
		return "the server's certificate chain is too long"
	}
	return "the server's certificate is not valid"
}

// TLS alert codes (RFC 8446 §6, RFC 5246 §7.2); crypto/tls does not export
// its names.
const (
	alertHandshakeFailure       = 40
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertAccessDenied           = 49
	alertProtocolVersion        = 70
	alertInsufficientSecurity   = 71
	alertUnrecognizedName       = 112
	alertCertificateRequired    = 116
)

// alertOf returns the TLS alert the server sent, if err holds one.
// crypto/tls reports a peer's alert as a *net.OpError whose Op is "remote
// error" and whose Err is the package's unexported alert type, a uint8;
// only QUIC connections wrap tls.AlertError (Go 1.26). The type's package
// and kind are checked rather than its text.
func alertOf(err error) (uint8, bool) {
	if a, ok := errors.AsType[tls.AlertError](err); ok {
		return uint8(a), true
	}
	op, ok := errors.AsType[*net.OpError](err)
	if !ok || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 && v.Type().PkgPath() == "crypto/tls" {
		return uint8(v.Uint()), true
	}
	return 0, false
}

// alertReason describes an alert the server sent: mostly its verdict on
// the client certificate.
func alertReason(a uint8) string {
	switch a {
	case alertCertificateRequired:
		return "the server requires a client certificate"
	case alertHandshakeFailure:
		// TLS 1.2 servers send it for a missing client certificate too.
		return "the server refused the handshake (it may require a client certificate)"
	case alertUnknownCA:
		return "the server does not trust the client certificate's issuer"
	case alertCertificateExpired:
		return "the server rejected the client certificate as expired"
	case alertCertificateRevoked:
		return "the server rejected the client certificate as revoked"
	case alertBadCertificate, alertUnsupportedCertificate, alertCertificateUnknown:
		return "the server rejected the client certificate"
	case alertAccessDenied:
		return "the server denied access"
	case alertProtocolVersion, alertInsufficientSecurity:
		return "the server accepts none of the offered TLS versions or ciphers"
	case alertUnrecognizedName:
		return "the server does not know the requested server name"
	}
	// The text comes from crypto/tls's own table of alert names.
	return "the server sent the alert " + quoteShort(tls.AlertError(a).Error())
}
