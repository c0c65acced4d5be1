package outbound

import (
	"crypto/tls"
	"net/http"
	"time"
)

// Transport returns an *http.Transport for outbound calls that dials
// through g and
//   - ignores the proxy environment variables, which would otherwise send
//     calls (and credentials) to whoever set them;
//   - never asks for compression itself nor inflates answers
//     (DisableCompression): a caller's own Accept-Encoding goes out as
//     sent, and a compressed answer comes back as the target sent it, with
//     its Content-Encoding.
//
// responseHeaderTimeout bounds the wait for the upstream's headers; zero
// means no limit. Make one and reuse it: each has its own connection pool.
func (g *Guard) Transport(responseHeaderTimeout time.Duration) *http.Transport {
	return g.transport(responseHeaderTimeout, nil)
}

// transport is Transport with a TLS configuration (nil: the default).
func (g *Guard) transport(responseHeaderTimeout time.Duration, tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           g.DialContext,
		TLSClientConfig:       tlsConfig,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
	}
}

// Client returns an *http.Client over g.Transport(timeout) that never
// follows redirects: a 3xx goes back to the caller, and a redirect cannot
// carry a credential to another host. timeout bounds each whole call,
// including reading the body; zero means no limit.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	return client(g.Transport(timeout), timeout)
}

// client returns a client over rt that does not follow redirects.
func client(rt http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{Transport: rt, CheckRedirect: noRedirects, Timeout: timeout}
}

// noRedirects is the CheckRedirect of every outbound client.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
