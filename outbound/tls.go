package outbound

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TLS is a connection's own TLS settings (its `tls` object), for its
// target calls and its token requests: a client certificate, private CAs
// and the name to verify. The zero value, like a nil *TLS, means the
// defaults: no client certificate, the system's roots, the URL's host.
//
// ClientKeyPEM is a secret: String, GoString, Format, LogValue and
// MarshalJSON show it as "********" when set, so that no log line or %+v
// prints it.
type TLS struct {
	// ClientCertificatePEM is the client certificate, PEM, optionally
	// followed by its intermediates; it goes with ClientKeyPEM.
	ClientCertificatePEM string
	// ClientKeyPEM is the client certificate's private key, PEM (PKCS #8,
	// PKCS #1 or SEC 1), unencrypted. Secret.
	ClientKeyPEM string
	// CACertificatesPEM holds the certificates of private certificate
	// authorities to trust besides the system's roots (not instead of
	// them), PEM.
	CACertificatesPEM string
	// ServerName is the name to send (SNI) and to verify the server's
	// certificate against, when it differs from the URL's host.
	ServerName string
}

// Field names of TLS, as Validate reports them.
const (
	FieldClientCertificate = "tls.clientCertificatePem"
	FieldClientKey         = "tls.clientKeyPem"
	FieldCACertificates    = "tls.caCertificatesPem"
	FieldServerName        = "tls.serverName"
)

// Limits on the sizes of TLS's fields, in bytes.
const (
	maxCertificatePEM = 64 << 10
	maxCAPEM          = 512 << 10
	maxServerName     = 253
)

// ErrCertificateExpired is wrapped by the FieldError Validate returns for
// a client certificate that has expired or is not valid yet. The settings
// still work (the server judges the certificate), so a caller may accept
// them with a warning rather than refuse them.
var ErrCertificateExpired = errors.New("client certificate expired or not yet valid")

// FieldError says why one field of TLS is invalid, in words fit for a 422
// answer: Field is its path ("tls.clientKeyPem"), Reason never quotes the
// field's value.
type FieldError struct {
	// Field is the field's path in a connection, one of the Field*
	// constants.
	Field string
	// Reason says what is wrong, as a predicate ("is not a PEM
	// certificate").
	Reason string
	err    error
}

// Error returns the field and the reason.
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns ErrCertificateExpired for an expired client certificate,
// nil otherwise.
func (e *FieldError) Unwrap() error { return e.err }

// FieldErrors lists the invalid fields of a TLS.
type FieldErrors []*FieldError

// Error joins the errors with "; ".
func (es FieldErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns the errors, for errors.Is and errors.As.
func (es FieldErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// IsZero reports whether t is nil or sets nothing.
func (t *TLS) IsZero() bool { return t == nil || *t == TLS{} }

// Validate checks t and returns nil or FieldErrors naming each invalid
// field: a certificate field that holds no PEM certificate ("is not a PEM
// certificate") or text after its last one, a key that does not parse
// ("is not a PEM private key") or is not the certificate's ("does not
// match tls.clientCertificatePem"), one of the pair without the other, a client certificate that is not for
// client authentication, a server name that is not a host name, an
// oversized field. A client certificate that is not valid at now is
// reported too, wrapping ErrCertificateExpired: callers may treat that one
// as a warning. A nil t is valid.
func (t *TLS) Validate(now time.Time) error {
	if t.IsZero() {
		return nil
	}
	s, errs := t.parse()
	if s.cert != nil {
		leaf := s.cert.Leaf
		switch {
		case now.After(leaf.NotAfter):
			errs = append(errs, &FieldError{FieldClientCertificate,
				"expired at " + leaf.NotAfter.UTC().Format(time.RFC3339), ErrCertificateExpired})
		case now.Before(leaf.NotBefore):
			errs = append(errs, &FieldError{FieldClientCertificate,
				"is not valid before " + leaf.NotBefore.UTC().Format(time.RFC3339), ErrCertificateExpired})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// settings are TLS's fields parsed.
type settings struct {
	cert *tls.Certificate // nil: none
	cas  []*x509.Certificate
}

// parse parses t's fields, reporting what does not parse.
func (t *TLS) parse() (settings, FieldErrors) {
	var s settings
	var errs FieldErrors
	fail := func(field, reason string) { errs = append(errs, &FieldError{Field: field, Reason: reason}) }

	// set reports whether a field is set, within its size limit.
	set := func(field, value string, limit int) bool {
		if len(value) > limit {
			fail(field, "must be at most "+strconv.Itoa(limit)+" bytes")
			return false
		}
		return value != ""
	}

	var chain []*x509.Certificate
	var key crypto.Signer
	var reason string
	if set(FieldClientCertificate, t.ClientCertificatePEM, maxCertificatePEM) {
		if chain, reason = parseCertificates(t.ClientCertificatePEM); reason != "" {
			fail(FieldClientCertificate, reason)
		} else if !forClients(chain[0]) {
			fail(FieldClientCertificate, "is not for client authentication (its extended key usage)")
		}
	}
	if set(FieldClientKey, t.ClientKeyPEM, maxCertificatePEM) {
		if key, reason = parseKey(t.ClientKeyPEM); reason != "" {
			fail(FieldClientKey, reason)
		} else if chain != nil && !samePublic(key.Public(), chain[0].PublicKey) {
			fail(FieldClientKey, "does not match "+FieldClientCertificate)
		}
	}
	switch {
	case t.ClientCertificatePEM == "" && t.ClientKeyPEM != "":
		fail(FieldClientCertificate, "is required with "+FieldClientKey)
	case t.ClientKeyPEM == "" && t.ClientCertificatePEM != "":
		fail(FieldClientKey, "is required with "+FieldClientCertificate)
	}
	if set(FieldCACertificates, t.CACertificatesPEM, maxCAPEM) {
		if s.cas, reason = parseCertificates(t.CACertificatesPEM); reason != "" {
			fail(FieldCACertificates, reason)
		}
	}
	if t.ServerName != "" && !hostName(t.ServerName) {
		fail(FieldServerName, "must be a host name (no scheme, port or path)")
	}
	if len(errs) > 0 {
		return settings{}, errs
	}
	if key != nil {
		c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
		for _, x := range chain {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		s.cert = c
	}
	return s, nil
}

// parseCertificates parses every PEM block of text as a certificate. The
// reason says what is wrong, without quoting text.
func parseCertificates(text string) ([]*x509.Certificate, string) {
	var certs []*x509.Certificate
	rest := []byte(text)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			if strings.HasSuffix(block.Type, "PRIVATE KEY") {
				return nil, "holds a private key, which belongs in " + FieldClientKey
			}
			return nil, "is not a PEM certificate (a block is not a CERTIFICATE)"
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, "is not a PEM certificate (certificate " + strconv.Itoa(len(certs)+1) + " does not parse)"
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, "is not a PEM certificate"
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, "has text after the last PEM certificate"
	}
	return certs, ""
}

// parseKey parses an unencrypted PEM private key.
func parseKey(text string) (crypto.Signer, string) {
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, "is not a PEM private key"
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, "is encrypted; give it unencrypted (connmgr encrypts it at rest)"
	default:
		return nil, "is not a PEM private key"
	}
	signer, ok := key.(crypto.Signer)
	if err != nil || !ok {
		return nil, "is not a PEM private key"
	}
	return signer, ""
}

// samePublic reports whether a and b are the same public key.
func samePublic(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// forClients reports whether c may authenticate a client: it lists no
// extended key usage, or client authentication or any among them.
func forClients(c *x509.Certificate) bool {
	return len(c.ExtKeyUsage) == 0 || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) ||
		slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}

// hostName reports whether s is an IP address (without a zone) or a DNS
// name, as a TLS server name: letters, digits, '-', '_' and dots between
// labels, nothing else.
func hostName(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	if len(s) > maxServerName || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// redacted returns t with the key hidden, for String and its kin.
func (t TLS) redacted() TLS {
	if t.ClientKeyPEM != "" {
		t.ClientKeyPEM = "********"
	}
	return t
}

// tlsFields is TLS's shape for printing without its methods.
type tlsFields TLS

// String prints t with ClientKeyPEM hidden.
func (t TLS) String() string { return fmt.Sprintf("%+v", tlsFields(t.redacted())) }

// GoString prints t with ClientKeyPEM hidden, for %#v.
func (t TLS) GoString() string { return fmt.Sprintf("outbound.TLS%+v", tlsFields(t.redacted())) }

// Format prints t with ClientKeyPEM hidden whatever the verb.
func (t TLS) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, t.GoString())
		return
	}
	fmt.Fprint(f, t.String())
}

// LogValue logs t with ClientKeyPEM hidden.
func (t TLS) LogValue() slog.Value {
	r := t.redacted()
	return slog.GroupValue(slog.String("clientCertificatePem", r.ClientCertificatePEM),
		slog.String("clientKeyPem", r.ClientKeyPEM), slog.String("caCertificatesPem", r.CACertificatesPEM),
		slog.String("serverName", r.ServerName))
}

// MarshalJSON encodes t with ClientKeyPEM hidden: a TLS is never stored or
// sent as JSON with its key.
func (t TLS) MarshalJSON() ([]byte, error) {
	r := t.redacted()
	return json.Marshal(struct {
		ClientCertificatePEM string `json:"clientCertificatePem,omitempty"`
		ClientKeyPEM         string `json:"clientKeyPem,omitempty"`
		CACertificatesPEM    string `json:"caCertificatesPem,omitempty"`
		ServerName           string `json:"serverName,omitempty"`
	}{r.ClientCertificatePEM, r.ClientKeyPEM, r.CACertificatesPEM, r.ServerName})
}
