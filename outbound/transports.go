package outbound

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// DefaultMaxTransports is how many TLS transports a Transports made with
// a max that is not positive keeps.
const DefaultMaxTransports = 256

// Transports hands out guarded transports per TLS settings: the shared
// default transport for connections without settings, and one transport
// per distinct TLS (keyed by a hash of its fields), each with its own
// connection pool, dialing through the Guard. It keeps at most max of
// them, dropping the least recently used (its idle connections are
// closed; calls in flight on it finish). Safe for concurrent use.
type Transports struct {
	guard                 *Guard
	responseHeaderTimeout time.Duration
	max                   int
	def                   *http.Transport

	mu  sync.Mutex
	lru *list.List // of *entry, most recently used first
	m   map[[sha256.Size]byte]*list.Element
}

type entry struct {
	key [sha256.Size]byte
	tr  *tlsTransport
}

// NewTransports returns a Transports whose transports dial through g and
// wait at most responseHeaderTimeout for the headers of an answer (zero:
// no limit), as g.Transport does, keeping at most max TLS transports (not
// positive: DefaultMaxTransports).
func NewTransports(g *Guard, responseHeaderTimeout time.Duration, max int) *Transports {
	if max <= 0 {
		max = DefaultMaxTransports
	}
	return &Transports{guard: g, responseHeaderTimeout: responseHeaderTimeout, max: max,
		def: g.Transport(responseHeaderTimeout),
		lru: list.New(), m: map[[sha256.Size]byte]*list.Element{}}
}

// Default returns the shared transport of connections without TLS
// settings, the one For returns for a nil or zero TLS.
func (ts *Transports) Default() *http.Transport { return ts.def }

// For returns the transport for calls under t: Default for a nil or zero
// t, else the transport of t's settings, made on first use and reused for
// equal settings. Its TLS configuration
//   - trusts the system's roots plus t's CACertificatesPEM;
//   - verifies the server's certificate against ServerName when set (and
//     sends it as SNI), else against the URL's host;
//   - presents the client certificate whenever the server asks for one,
//     even if the server's list of acceptable CAs does not name its issuer,
//     so that the server's verdict (an alert that Classify names) says
//     what is wrong rather than "no certificate".
//
// Errors are the FieldErrors of settings that do not parse (Validate
// reports them too, and more); an expired client certificate is not an
// error here: the server judges it.
//
// With TLS 1.3 the server judges the client certificate after the
// handshake has completed on the client's side, and its alert reaches the
// client on the first read. Over HTTP/2, where the client writes first,
// the server's close often wins that race, and the call fails as a reset
// connection (or as an HTTP/2 connection that "could not be
// established"). So when a call over HTTPS fails that way, the transport
// makes one more handshake with the server, waits up to a second for its
// verdict, and if that is an alert returns an error that holds both: the
// alert, which Classify then names, and the call's own error.
func (ts *Transports) For(t *TLS) (http.RoundTripper, error) {
	if t.IsZero() {
		return ts.def, nil
	}
	key := t.key()
	if tr := ts.lookup(key); tr != nil {
		return tr, nil
	}
	// Built outside the lock: parsing and copying the system's roots take
	// a while. Two callers may race to build the same one; the first to
	// store it wins.
	cfg, err := ts.config(t)
	if err != nil {
		return nil, err
	}
	tr := &tlsTransport{Transport: ts.guard.transport(ts.responseHeaderTimeout, cfg), guard: ts.guard}
	return ts.store(key, tr), nil
}

// Client returns a client over For(t) that does not follow redirects, as
// Guard.Client does; timeout bounds each whole call (zero: no limit).
// Clients are cheap: make one per call if need be; the transport is what
// is shared.
func (ts *Transports) Client(t *TLS, timeout time.Duration) (*http.Client, error) {
	rt, err := ts.For(t)
	if err != nil {
		return nil, err
	}
	return client(rt, timeout), nil
}

// CloseIdleConnections closes the idle connections of every transport.
func (ts *Transports) CloseIdleConnections() {
	ts.def.CloseIdleConnections()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for e := ts.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*entry).tr.CloseIdleConnections()
	}
}

func (ts *Transports) lookup(key [sha256.Size]byte) *tlsTransport {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if e, ok := ts.m[key]; ok {
		ts.lru.MoveToFront(e)
		return e.Value.(*entry).tr
	}
	return nil
}

// store keeps tr for key unless another is kept already, and returns the
// one kept, dropping the least recently used beyond max.
func (ts *Transports) store(key [sha256.Size]byte, tr *tlsTransport) *tlsTransport {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if e, ok := ts.m[key]; ok {
		ts.lru.MoveToFront(e)
		return e.Value.(*entry).tr
	}
	ts.m[key] = ts.lru.PushFront(&entry{key: key, tr: tr})
	for ts.lru.Len() > ts.max {
		old := ts.lru.Remove(ts.lru.Back()).(*entry)
		delete(ts.m, old.key)
		// Calls in flight keep their connections; idle ones would
		// otherwise stay open until IdleConnTimeout.
		old.tr.CloseIdleConnections()
	}
	return tr
}

// config returns the TLS configuration of t.
func (ts *Transports) config(t *TLS) (*tls.Config, error) {
	s, errs := t.parse()
	if errs != nil {
		return nil, errs
	}
	cfg := &tls.Config{ServerName: t.ServerName}
	if len(s.cas) > 0 {
		// A fresh copy of the system's roots on each call, to add to.
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool() // no system roots here: the CAs alone
		}
		for _, ca := range s.cas {
			pool.AddCert(ca)
		}
		cfg.RootCAs = pool
	}
	if cert := s.cert; cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg, nil
}

// key is a hash of t's fields, each preceded by its length so that no two
// different settings hash the same input.
func (t *TLS) key() [sha256.Size]byte {
	h := sha256.New()
	for _, f := range []string{t.ClientCertificatePEM, t.ClientKeyPEM, t.CACertificatesPEM, t.ServerName} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(f))))
		h.Write([]byte(f))
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// verdictWait bounds the wait for a server's verdict on a handshake.
const verdictWait = time.Second

// tlsTransport is the transport of TLS settings: a guarded transport that
// asks the server for its verdict when a call over HTTPS breaks off (see
// Transports.For).
type tlsTransport struct {
	*http.Transport
	guard *Guard
}

// RoundTrip sends req, and after a failure that may hide the server's TLS
// alert adds the alert to the error.
func (t *tlsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.Transport.RoundTrip(req)
	if err == nil || req.URL.Scheme != "https" {
		return res, err
	}
	switch Classify(err).Kind {
	case KindReset, KindClosed, KindOther:
	default:
		return res, err
	}
	if alert := t.verdict(req.Context(), req.URL); alert != nil {
		return nil, &verdictError{alert: alert, err: err}
	}
	return res, err
}

// verdict makes a TLS handshake with the server of u as the transport
// does, and returns the alert the server sends within verdictWait, or nil
// for none (it accepted, said nothing, or could not be reached). Nothing
// is sent over the connection but the handshake.
func (t *tlsTransport) verdict(ctx context.Context, u *url.URL) error {
	ctx, cancel := context.WithTimeout(ctx, verdictWait)
	defer cancel()
	port := u.Port()
	if port == "" {
		port = "443"
	}
	raw, err := t.guard.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil
	}
	defer raw.Close()
	cfg := t.TLSClientConfig.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	// Offering h2 makes an HTTP/2 server that accepted us speak first (its
	// SETTINGS), so that the wait is short.
	cfg.NextProtos = []string{"h2", "http/1.1"}
	conn := tls.Client(raw, cfg)
	if err = conn.HandshakeContext(ctx); err == nil {
		deadline, _ := ctx.Deadline()
		conn.SetReadDeadline(deadline)
		_, err = conn.Read(make([]byte, 1))
	}
	if _, ok := alertOf(err); ok {
		return err
	}
	return nil
}

// verdictError is a failed call with the alert the server sent on a
// second handshake; Classify finds the alert first.
type verdictError struct{ alert, err error }

func (e *verdictError) Error() string {
	return e.err.Error() + " (the server then sent: " + e.alert.Error() + ")"
}
func (e *verdictError) Unwrap() []error { return []error{e.alert, e.err} }
