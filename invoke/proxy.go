package invoke

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// Errors of a call that did not get an answer from the target, for the api
// to map to statuses. Errors from Resolve (ErrInvalidRelativeURI,
// ErrTemplate), from the egress guard (ErrEgressDenied) and from
// Credentials (security.ErrTokenUnavailable, security.ErrNeedsConsent) are
// passed on as well.
var (
	// ErrUpstreamTimeout means the connection's timeout elapsed before the
	// target answered (api: 504).
	ErrUpstreamTimeout = errors.New("upstream timeout")
	// ErrUpstreamUnreachable means the target could not be reached or broke
	// off before answering: connection refused or reset, DNS or TLS failure
	// (api: 502).
	ErrUpstreamUnreachable = errors.New("upstream unreachable")
	// ErrBodyTooLarge means the request body exceeds Proxy.MaxBody
	// (api: 413).
	ErrBodyTooLarge = errors.New("request body too large")
)

// DefaultMaxBody is the request body limit of a Proxy whose MaxBody is not
// positive.
const DefaultMaxBody = 10 << 20

// maxReplay is the largest body of unknown replayability that Serve buffers
// so that it can send it again after a 401.
const maxReplay = 64 << 10

// userAgent is what targets see instead of the caller's User-Agent.
const userAgent = "connmgr"

// Credentials applies a connection's credential to outbound requests.
// *security.Manager implements it. Implementations must be safe for
// concurrent use.
type Credentials interface {
	// Apply sets c's credential on req; it returns the OAuth token used
	// (nil for other policies). Errors wrap security.ErrTokenUnavailable
	// or security.ErrNeedsConsent and are safe to show.
	Apply(ctx context.Context, c *connections.Connection, req *http.Request) (*security.Token, error)
	// Rejected reports that the target answered 401 to tok.
	Rejected(ctx context.Context, c *connections.Connection, tok *security.Token)
}

var _ Credentials = (*security.Manager)(nil)

// Call is one invoke: the connection (already looked up and authorised by
// the caller of Serve) and what to send.
type Call struct {
	Conn *connections.Connection
	// Target is resolved against Conn.BaseURL with Resolve.
	Target Target
	// Method is the HTTP method; "" means GET. The api checks that it is a
	// valid method token.
	Method string
	// Header holds the caller's headers; only the allowlist passes. Serve
	// does not modify it.
	Header http.Header
	// Body is the request body; nil or http.NoBody means none. Serve reads
	// it but does not close it: that is left to its owner (the server, for
	// a request's Body).
	Body io.ReadCloser
	// ContentLength is Body's length, -1 if unknown. As for an outgoing
	// http.Request, 0 with a Body other than http.NoBody means unknown.
	ContentLength int64
	// Replayable says Body is already in memory (the dynamic form's body),
	// so Serve may read it whole to send it again after a 401. Other bodies
	// are buffered for that only when their length is known and at most
	// 64 KiB; larger ones stream and are never sent twice. Only OAuth
	// connections buffer at all: without a token there is no retry.
	Replayable bool
	// RequestID is sent upstream and back to the caller as X-Request-Id.
	RequestID string
}

// Proxy forwards calls to the targets of connections with their
// credentials, returning the target's status, allowlisted headers and body
// as they come. Create it with NewProxy and set the optional fields before
// the first call; it is then safe for concurrent use.
type Proxy struct {
	// Credentials applies connections' credentials. Nil sends calls
	// without one.
	Credentials Credentials
	// Transport is the egress-guarded transport (Guard.Transport) that
	// every call goes through. It must not follow redirects or use proxy
	// environment variables.
	Transport http.RoundTripper
	// MaxBody is the request body limit in bytes; not positive means
	// DefaultMaxBody. A larger body fails with an error wrapping
	// ErrBodyTooLarge: before the target is contacted if the length is
	// known, while streaming otherwise.
	MaxBody int64
	// ErrorHandler renders connmgr's own errors, those that leave the call
	// without an answer from the target. Serve calls it at most once per
	// call and only before anything was written to w. r is Serve's
	// request. Nil writes a plain-text 502.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
	// Logger receives a warning for each call that could not reach the
	// target (timeout, unreachable, egress denied); nil logs nothing.
	Logger *slog.Logger

	rp      *httputil.ReverseProxy
	metrics *proxyMetrics
	limits  limits
}

// NewProxy returns a proxy that sends calls through transport with creds'
// credentials, and registers its metrics with reg (nil: not registered):
// connmgr_invoke_duration_seconds{connection} and
// connmgr_invoke_responses_total{connection, class}, class being the
// target's status class (2xx to 5xx) or "error" for a call that got no
// answer. transport is required.
func NewProxy(creds Credentials, transport http.RoundTripper, reg prometheus.Registerer) *Proxy {
	if transport == nil {
		// http.DefaultTransport would bypass the egress guard.
		panic("invoke: NewProxy needs a transport")
	}
	p := &Proxy{Credentials: creds, Transport: transport, metrics: newProxyMetrics(reg)}
	// One ReverseProxy for all calls; per-call data travels in the
	// request's context as an *exchange.
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      roundTripper(p.roundTrip),
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.proxyError,
		BufferPool:     &bufferPool{},
		ErrorLog:       log.New(logWriter{p}, "", 0),
		// FlushInterval stays 0: ReverseProxy flushes every write of
		// event streams and of bodies of unknown length anyway, and
		// batches the rest.
	}
	return p
}

// exchange is the state of one call, shared by Serve and the
// ReverseProxy's hooks through the request context.
type exchange struct {
	// ctx is the call's context: Serve's request context with the
	// connection's deadline, holding the exchange itself.
	ctx       context.Context
	r         *http.Request // Serve's request, for ErrorHandler
	conn      *connections.Connection
	target    *url.URL
	requestID string
	timeout   time.Duration
	// replay says the body can be sent again: there is none, or it is in
	// body.
	replay bool
	body   []byte
	// tooLarge is set by limitedBody, possibly on the transport's goroutine.
	tooLarge atomic.Bool
	// status is the target's status, 0 if it gave none.
	status int
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// errDeadline is the cause of a call's context when the connection's
// timeout elapsed, telling it apart from a caller that went away.
var errDeadline = errors.New("invoke: connection timeout elapsed")

// Serve forwards call to its connection's target and writes the answer to
// w. Errors of connmgr itself go to ErrorHandler, before anything was
// written: those of Resolve and Credentials, ErrEgressDenied (a
// *DeniedError), ErrUpstreamTimeout, ErrUpstreamUnreachable,
// ErrBodyTooLarge, ErrRateLimited (a *LimitError) when the connection's
// rateLimit or maxConcurrent is used up in this process, context.Canceled
// when r's context ended, or an error reading call.Body.
//
// The connection's Timeout (connections.DefaultTimeout if not positive)
// bounds the whole call, streaming the response included: when it elapses
// before the target answered, the error is ErrUpstreamTimeout; after that,
// the response to the caller is cut off.
//
// Only an allowlist of the caller's headers reaches the target, plus those
// in Conn.ForwardHeaders; then Conn.Headers, the credential, and
// X-Request-Id are set. Only an allowlist of the target's headers reaches
// the caller; redirects are passed on, not followed. When the target
// answers 401 to an OAuth token, the token is reported to
// Credentials.Rejected and, if the body can be replayed, the call is sent
// once more with a new token.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, call Call) {
	start := time.Now()
	x := &exchange{r: r, conn: call.Conn, requestID: call.RequestID, timeout: timeoutOf(call.Conn)}
	defer p.metrics.observe(x, start)
	if call.RequestID != "" {
		w.Header().Set("X-Request-Id", call.RequestID)
	}

	target, err := resolveBase(call.Conn.BaseURL, call.Target)
	if err != nil {
		p.fail(w, x, err)
		return
	}
	x.target = target
	release, err := p.limits.acquire(call.Conn)
	if err != nil {
		p.fail(w, x, err)
		return
	}
	defer release()
	ctx, cancel := context.WithTimeoutCause(r.Context(), x.timeout, errDeadline)
	defer cancel()
	x.ctx = context.WithValue(ctx, exchangeKey{}, x)

	body, n, err := p.prepareBody(x, call)
	if err != nil {
		p.fail(w, x, err)
		return
	}

	in := r.WithContext(x.ctx)
	in.Method = call.Method
	if in.Method == "" {
		in.Method = http.MethodGet
	}
	// ReverseProxy clones in.URL as the outbound URL; it is already the
	// target, so Rewrite only sets the Host.
	in.URL = target
	in.Header = call.Header
	in.Body, in.ContentLength = body, n
	in.TransferEncoding, in.Trailer, in.Close = nil, nil, false
	in.Form, in.PostForm, in.MultipartForm = nil, nil, nil
	p.rp.ServeHTTP(w, in)
}

// timeoutOf returns c's timeout, or the default.
func timeoutOf(c *connections.Connection) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return connections.DefaultTimeout
}

// resolveBase parses base and resolves t against it.
func resolveBase(base string, t Target) (*url.URL, error) {
	parsedBases.RLock()
	u := parsedBases.m[base]
	parsedBases.RUnlock()
	if u == nil {
		var err error
		if u, err = url.Parse(base); err != nil {
			// url.Error would echo the base URL.
			return nil, errors.New("invoke: connection base URL does not parse")
		}
		parsedBases.Lock()
		if len(parsedBases.m) >= maxParsedBases {
			clear(parsedBases.m) // many base URLs came and went; start over
		}
		parsedBases.m[base] = u
		parsedBases.Unlock()
	}
	return Resolve(u, t)
}

// parsedBases caches parsed base URLs (Resolve copies, never modifies,
// them), so that the hot path does not parse the same URL on every call.
var parsedBases = struct {
	sync.RWMutex
	m map[string]*url.URL
}{m: map[string]*url.URL{}}

const maxParsedBases = 4096

func (p *Proxy) maxBody() int64 {
	if p.MaxBody > 0 {
		return p.MaxBody
	}
	return DefaultMaxBody
}

// prepareBody returns the body to send and its length. Only a token can be
// rejected and renewed, so only calls of OAuth connections buffer their
// body for a replay; others stream it.
func (p *Proxy) prepareBody(x *exchange, call Call) (io.ReadCloser, int64, error) {
	body, n := call.Body, call.ContentLength
	if body == nil || body == http.NoBody {
		x.replay = true
		return nil, 0, nil
	}
	if n == 0 {
		n = -1
	}
	limit := p.maxBody()
	if n > limit {
		return nil, 0, tooLarge(limit)
	}
	if call.Conn.Security.Policy.OAuth() && (call.Replayable || n > 0 && n <= maxReplay) {
		b, err := readBody(body, n, limit)
		if err != nil {
			return nil, 0, err
		}
		x.body, x.replay = b, true
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
	if n < 0 {
		return &limitedBody{r: body, left: limit, x: x}, -1, nil
	}
	// The transport sends exactly n bytes, and n is within the limit.
	return body, n, nil
}

// readBody reads a body of length n (-1: unknown) into memory.
func readBody(body io.Reader, n, limit int64) ([]byte, error) {
	var b []byte
	var err error
	if n >= 0 {
		b = make([]byte, n)
		_, err = io.ReadFull(body, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(body, limit+1))
		if err == nil && int64(len(b)) > limit {
			return nil, tooLarge(limit)
		}
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return nil, tooLarge(mb.Limit)
	}
	if err != nil {
		return nil, fmt.Errorf("invoke: read request body: %w", err)
	}
	return b, nil
}

func tooLarge(limit int64) error {
	return fmt.Errorf("%w: the limit is %d bytes", ErrBodyTooLarge, limit)
}

// limitedBody fails a body of unknown length once it exceeds the limit,
// and records that, because the transport may report the failure as a
// broken connection rather than as the body's error.
type limitedBody struct {
	r    io.Reader
	left int64
	x    *exchange
}

var errLimit = errors.New("invoke: request body exceeds the limit")

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errLimit
	}
	// Read one byte past the limit to see whether there is more.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		b.left = -1
		b.x.tooLarge.Store(true)
		return n - 1, errLimit
	}
	b.left -= int64(n)
	return n, err
}

// Close leaves the body open: its owner closes it.
func (b *limitedBody) Close() error { return nil }

// requestHeaders are the caller's headers that reach the target.
var requestHeaders = canonicalSet("Accept", "Accept-Encoding", "Content-Type", "Content-Encoding",
	"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range", "Idempotency-Key")

// responseHeaders are the target's headers that reach the caller, besides
// RateLimit* and X-RateLimit-*.
var responseHeaders = canonicalSet("Content-Type", "Content-Length", "Content-Encoding",
	"Content-Language", "Content-Disposition", "Content-Range", "Accept-Ranges", "Cache-Control",
	"ETag", "Last-Modified", "Expires", "Vary", "Location", "Retry-After", "Link", "Warning",
	"Idempotency-Key")

func canonicalSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[http.CanonicalHeaderKey(n)] = true
	}
	return m
}

// forbidden reports whether a header may never be sent upstream from the
// caller or the connection's configuration, whatever lists allow it. The
// connection's validation refuses these names too; this check keeps a
// connection built elsewhere from sending them.
func forbidden(name string) bool {
	return connections.ForbiddenHeader(name) ||
		len(name) >= 6 && strings.EqualFold(name[:6], "Proxy-")
}

// rewrite builds the outbound request's headers: the allowlisted caller
// headers, the connection's static headers, User-Agent and X-Request-Id.
// The URL is already the target (see Serve).
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	x := exchangeOf(pr.In.Context())
	pr.Out.Host = x.target.Host
	h := pr.Out.Header
	// ReverseProxy has dropped the headers the caller's Connection header
	// names, but the allowlist must not depend on that.
	for _, v := range pr.In.Header["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			delete(h, http.CanonicalHeaderKey(strings.TrimSpace(name)))
		}
	}
	for k := range h {
		if !requestHeaders[k] && !forwarded(x.conn, k) {
			delete(h, k)
		}
	}
	setStatic(h, x.conn)
	if x.requestID != "" {
		h["X-Request-Id"] = []string{x.requestID}
	}
}

// setStatic sets what every request to c's target carries whatever the
// caller sent: User-Agent, then c's static Headers (which may replace it).
// Serve and Test both use it.
func setStatic(h http.Header, c *connections.Connection) {
	h["User-Agent"] = []string{userAgent}
	for k, v := range c.Headers {
		if !forbidden(k) {
			h.Set(k, v)
		}
	}
}

// forwarded reports whether c lists the header name in ForwardHeaders.
func forwarded(c *connections.Connection, name string) bool {
	for _, f := range c.ForwardHeaders {
		if strings.EqualFold(f, name) {
			return !forbidden(name)
		}
	}
	return false
}

// roundTripper adapts a function to http.RoundTripper.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// credentialError marks an error of Credentials.Apply, which Serve passes
// on as it is.
type credentialError struct{ err error }

func (e *credentialError) Error() string { return e.err.Error() }
func (e *credentialError) Unwrap() error { return e.err }

// roundTrip sends one call with its credential, and once more with a new
// token when the target rejected the first and the body can be replayed.
func (p *Proxy) roundTrip(req *http.Request) (*http.Response, error) {
	x := exchangeOf(req.Context())
	// The call's context has the same deadline and cancellation as req's
	// but not ReverseProxy's trace, which would copy the headers of 1xx
	// responses to the caller unfiltered. Without it 1xx are dropped.
	out := req.WithContext(x.ctx)
	tok, err := p.apply(x, out)
	if err != nil {
		return nil, err
	}
	res, err := p.Transport.RoundTrip(out)
	if err != nil || res.StatusCode != http.StatusUnauthorized || tok == nil {
		return res, err
	}
	p.Credentials.Rejected(x.ctx, x.conn, tok)
	if !x.replay {
		return res, nil
	}
	discard(res.Body)
	again := out.Clone(x.ctx)
	again.Body = nil
	if len(x.body) > 0 {
		again.Body = io.NopCloser(bytes.NewReader(x.body))
	}
	if _, err := p.apply(x, again); err != nil {
		return nil, err
	}
	return p.Transport.RoundTrip(again)
}

// apply sets the connection's credential on req.
func (p *Proxy) apply(x *exchange, req *http.Request) (*security.Token, error) {
	if p.Credentials == nil {
		return nil, nil
	}
	tok, err := p.Credentials.Apply(x.ctx, x.conn, req)
	if err != nil {
		return nil, &credentialError{err}
	}
	return tok, nil
}

// discard reads a little of a body, so that its connection can be reused
// if the rest is short, and closes it.
func discard(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
	_ = body.Close()
}

// errSwitch refuses a 1xx final response: ReverseProxy would hand the
// caller's connection to the target for a 101, and invoke relays HTTP only.
var errSwitch = &upstreamError{kind: ErrUpstreamUnreachable, reason: "the target switched protocols"}

// modifyResponse filters the target's headers and drops its trailers.
func (p *Proxy) modifyResponse(res *http.Response) error {
	if res.StatusCode < 200 {
		return errSwitch
	}
	x := exchangeOf(res.Request.Context())
	x.status = res.StatusCode
	for k := range res.Header {
		if !responseHeaders[k] && !rateLimitHeader(k) {
			delete(res.Header, k)
		}
	}
	// Only chunked HTTP/1 bodies and HTTP/2 bodies can end in trailers.
	if res.ContentLength < 0 || res.ProtoMajor > 1 || res.Trailer != nil {
		res.Body = &trailerless{ReadCloser: res.Body, res: res}
	}
	res.Trailer = nil
	return nil
}

// rateLimitHeader reports whether a canonical header name is one of the
// RateLimit headers (RateLimit, RateLimit-Policy, RateLimit-Remaining, ...)
// or X-RateLimit-*.
func rateLimitHeader(k string) bool {
	return strings.HasPrefix(k, "Ratelimit") || strings.HasPrefix(k, "X-Ratelimit-")
}

// trailerless drops the target's trailers. The transport fills
// res.Trailer when the body ends, and ReverseProxy reads it after closing
// the body to pass every trailer on, unfiltered.
type trailerless struct {
	io.ReadCloser
	res *http.Response
}

func (b *trailerless) Close() error {
	err := b.ReadCloser.Close()
	b.res.Trailer = nil
	return err
}

// proxyError receives the errors of ReverseProxy: those of roundTrip and
// modifyResponse.
func (p *Proxy) proxyError(w http.ResponseWriter, out *http.Request, err error) {
	x := exchangeOf(out.Context())
	err = p.classify(x, err)
	// Failures to reach the target are the operators' business; the
	// caller's mistakes and credential errors are logged elsewhere.
	if errors.Is(err, ErrUpstreamTimeout) || errors.Is(err, ErrUpstreamUnreachable) || errors.Is(err, ErrEgressDenied) {
		p.log().LogAttrs(x.ctx, slog.LevelWarn, "invoke failed",
			slog.String("connection", x.conn.Name), slog.String("request_id", x.requestID),
			slog.String("error", err.Error()), slog.String("cause", causeOf(err)))
	}
	p.fail(w, x, err)
}

// classify turns an error of the ReverseProxy into one that Serve
// documents.
func (p *Proxy) classify(x *exchange, err error) error {
	var ce *credentialError
	var denied *DeniedError
	var ue *upstreamError
	switch {
	case errors.As(err, &ce):
		return ce.err
	case x.tooLarge.Load():
		return tooLarge(p.maxBody())
	case errors.As(err, &ue):
		return ue
	case context.Cause(x.ctx) == errDeadline:
		return &upstreamError{kind: ErrUpstreamTimeout, reason: "no answer within " + x.timeout.String(), cause: err}
	case x.r.Context().Err() != nil:
		return fmt.Errorf("invoke: the caller went away: %w", context.Canceled)
	case errors.As(err, &denied):
		return denied
	case isTimeout(err):
		return &upstreamError{kind: ErrUpstreamTimeout, reason: "the target timed out", cause: err}
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return tooLarge(mb.Limit)
	}
	return &upstreamError{kind: ErrUpstreamUnreachable, reason: describe(err), cause: err}
}

// upstreamError is ErrUpstreamTimeout or ErrUpstreamUnreachable with a
// short, safe reason. The cause stays reachable for errors.Is and logs
// but is not part of the message.
type upstreamError struct {
	kind   error
	reason string
	cause  error
}

func (e *upstreamError) Error() string { return e.kind.Error() + ": " + e.reason }
func (e *upstreamError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// causeOf returns the text of the network error behind err, for logs.
func causeOf(err error) string {
	if ue, ok := err.(*upstreamError); ok && ue.cause != nil {
		return ue.cause.Error()
	}
	return ""
}

// fail hands err to the ErrorHandler.
func (p *Proxy) fail(w http.ResponseWriter, x *exchange, err error) {
	if h := p.ErrorHandler; h != nil {
		h(w, x.r, err)
		return
	}
	// Statuses are the api's business (its ErrorHandler); a bare Proxy
	// only says that the call did not get through.
	http.Error(w, err.Error(), http.StatusBadGateway)
}

func (p *Proxy) log() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return discardLog
}

// discardLog is the Logger of a Proxy without one.
var discardLog = slog.New(slog.DiscardHandler)

// logWriter turns ReverseProxy's log lines (body copy errors, which carry
// no secrets) into warnings of the Proxy's Logger.
type logWriter struct{ p *Proxy }

func (w logWriter) Write(b []byte) (int, error) {
	w.p.log().Warn(strings.TrimSpace(string(b)))
	return len(b), nil
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers, which it would
// otherwise allocate for every response.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte {
	if buf, ok := b.pool.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }

// proxyMetrics are the invoke metrics, with the series of each connection
// looked up once.
type proxyMetrics struct {
	duration  *prometheus.HistogramVec
	responses *prometheus.CounterVec
	conns     sync.Map // connection name → *connMetrics
}

type connMetrics struct {
	duration prometheus.Observer
	classes  [5]prometheus.Counter // error, 2xx, 3xx, 4xx, 5xx
}

var classNames = [5]string{"error", "2xx", "3xx", "4xx", "5xx"}

func newProxyMetrics(reg prometheus.Registerer) *proxyMetrics {
	m := &proxyMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "connmgr_invoke_duration_seconds",
			Help:    "Duration of invokes by connection, from the call to the end of the response body.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"connection"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connmgr_invoke_responses_total",
			Help: "Invokes by connection and the target's status class (2xx to 5xx), or error when it gave none.",
		}, []string{"connection", "class"}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.responses)
	}
	return m
}

// observe records a finished call.
func (m *proxyMetrics) observe(x *exchange, start time.Time) {
	name := x.conn.Name
	v, ok := m.conns.Load(name)
	if !ok {
		cm := &connMetrics{duration: m.duration.WithLabelValues(name)}
		for i, c := range classNames {
			cm.classes[i] = m.responses.WithLabelValues(name, c)
		}
		v, _ = m.conns.LoadOrStore(name, cm)
	}
	cm := v.(*connMetrics)
	cm.duration.Observe(time.Since(start).Seconds())
	class := 0
	if s := x.status / 100; s >= 2 && s <= 5 {
		class = s - 1
	}
	cm.classes[class].Inc()
}
