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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security"
)

// Errors of a call that did not get an answer from the target, for the api
// to map to statuses. Errors from Resolve (ErrInvalidRelativeURI,
// ErrTemplate), from the egress guard (outbound.ErrEgressDenied) and from
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
	// ErrLoop means the call has already passed through connmgr more than
	// MaxHops times: a connection that invokes connmgr itself (api: 508).
	ErrLoop = errors.New("invoke loop detected")
)

// DefaultMaxBody is the request body limit of a Proxy whose MaxBody is not
// positive.
const DefaultMaxBody = 10 << 20

// MaxHops is how many times a call may already have passed through connmgr
// (its Via entries) before Serve refuses it with ErrLoop.
const MaxHops = 3

// maxReplay is the largest body of unknown replayability that Serve buffers
// so that it can send it again after a rejected token.
const maxReplay = 64 << 10

// userAgent is what targets see instead of the caller's User-Agent.
const userAgent = "connmgr"

// via is connmgr's entry in the Via header of the calls it forwards
// (RFC 9110 §7.6.3): a pseudonym, not a host name.
const via = "1.1 connmgr"

// Credentials applies a connection's credential to outbound requests.
// *security.Manager implements it. Implementations must be safe for
// concurrent use.
type Credentials interface {
	// Apply sets c's credential on req and says what it applied. Errors
	// wrap security.ErrTokenUnavailable or security.ErrNeedsConsent and
	// are safe to show.
	Apply(ctx context.Context, c *connections.Connection, req *http.Request) (*security.Applied, error)
	// Rejected reports that the target rejected tok and says whether the
	// call is worth sending again with a fresh token.
	Rejected(ctx context.Context, c *connections.Connection, tok *security.Token) bool
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
	// so Serve may read it whole to send it again after a rejected token.
	// Other bodies are buffered for that only when their length is known
	// and at most 64 KiB; larger ones stream and are never sent twice. Only
	// token connections buffer at all: without a token there is no retry.
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
	// Transports returns the egress-guarded transport for a connection
	// (with its TLS settings). Every call goes through it; it must not
	// follow redirects or use proxy environment variables.
	Transports func(c *connections.Connection) (http.RoundTripper, error)
	// MaxBody is the request body limit in bytes; not positive means
	// DefaultMaxBody. A larger body fails with an error wrapping
	// ErrBodyTooLarge: before the target is contacted if the length is
	// known, while streaming otherwise.
	MaxBody int64
	// Logger receives a warning for each call that could not reach the
	// target (timeout, unreachable, egress denied); nil logs nothing.
	Logger *slog.Logger

	metrics *proxyMetrics
	limits  limits
	bases   baseCache
	bufs    *bufferPool
	errLog  *log.Logger
}

// NewProxy returns a proxy that sends calls through transports with creds'
// credentials, and registers its metrics with reg (nil: not registered):
// connmgr_invoke_duration_seconds{connection} and
// connmgr_invoke_responses_total{connection, class}, class being the
// target's status class (2xx to 5xx) or "error" for a call that got no
// answer. transports is required.
func NewProxy(creds Credentials, transports func(*connections.Connection) (http.RoundTripper, error), reg prometheus.Registerer) *Proxy {
	if transports == nil {
		// http.DefaultTransport would bypass the egress guard.
		panic("invoke: NewProxy needs transports")
	}
	p := &Proxy{Credentials: creds, Transports: transports, metrics: newProxyMetrics(reg), bufs: &bufferPool{}}
	p.errLog = log.New(logWriter{p}, "", 0)
	return p
}

// exchange is the state of one call, shared by Serve and the hooks of its
// ReverseProxy, which close over it.
type exchange struct {
	p         *Proxy
	ctx       context.Context // the call's context, with the connection's deadline
	caller    context.Context // the caller's request context
	conn      *connections.Connection
	transport http.RoundTripper
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
	// applied is what the last Apply set, for the response filter.
	applied *security.Applied
	// err is connmgr's own error for the caller, set by the error hook.
	err error
}

// errDeadline is the cause of a call's context when the connection's
// timeout elapsed, telling it apart from a caller that went away.
var errDeadline = errors.New("invoke: connection timeout elapsed")

// Serve forwards call to its connection's target and writes the target's
// answer to w. When connmgr itself cannot get an answer, Serve writes
// nothing and returns why: errors of Resolve and Credentials,
// outbound.ErrEgressDenied (errors.As finds the *outbound.DeniedError),
// ErrUpstreamTimeout and ErrUpstreamUnreachable (with outbound.Classify's
// reason), ErrBodyTooLarge, ErrLoop, ErrRateLimited (a
// *LimitError) when the connection's rateLimit or maxConcurrent is used up
// in this process, context.Canceled when r's context ended, or an error
// reading call.Body. Once the target answered, Serve returns nil.
//
// The connection's Timeout (connections.DefaultTimeout if not positive)
// bounds the whole call, streaming the response included: when it elapses
// before the target answered, the error is ErrUpstreamTimeout; after that,
// the response to the caller is cut off.
//
// Only an allowlist of the caller's headers reaches the target, plus those
// in Conn.ForwardHeaders; then Conn.Headers, the credential, Via and
// X-Request-Id are set. Only an allowlist of the target's headers reaches
// the caller, stripped of the credential; redirects are passed on, not
// followed. When the target answers a status that means "token rejected"
// (Conn.RejectedStatuses), the token is reported to Credentials.Rejected
// and, if the body can be replayed and Rejected allows, the call is sent
// once more with a new token.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, call Call) error {
	start := time.Now()
	x := &exchange{p: p, caller: r.Context(), conn: call.Conn, requestID: call.RequestID, timeout: timeoutOf(call.Conn)}
	defer p.metrics.observe(x, start)
	if hops(call.Header) >= MaxHops {
		return fmt.Errorf("%w: the call has passed through connmgr %d times already", ErrLoop, hops(call.Header))
	}
	base, err := p.bases.get(call.Conn.BaseURL)
	if err != nil {
		return err
	}
	if x.target, err = Resolve(base, call.Target); err != nil {
		return err
	}
	if x.transport, err = p.Transports(call.Conn); err != nil {
		return fmt.Errorf("%w: %w", ErrUpstreamUnreachable, err)
	}
	release, err := p.limits.acquire(call.Conn)
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := context.WithTimeoutCause(r.Context(), x.timeout, errDeadline)
	defer cancel()
	x.ctx = ctx

	body, n, err := p.prepareBody(x, call)
	if err != nil {
		return err
	}
	in := r.WithContext(ctx)
	in.Method = call.Method
	if in.Method == "" {
		in.Method = http.MethodGet
	}
	// ReverseProxy clones in.URL as the outbound URL; it is already the
	// target, so Rewrite only sets the Host.
	in.URL = x.target
	in.Header = call.Header
	in.Body, in.ContentLength = body, n
	in.TransferEncoding, in.Trailer, in.Close = nil, nil, false
	in.Form, in.PostForm, in.MultipartForm = nil, nil, nil
	if call.RequestID != "" {
		w.Header().Set("X-Request-Id", call.RequestID)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:        x.rewrite,
		Transport:      roundTripper(x.roundTrip),
		ModifyResponse: x.modifyResponse,
		ErrorHandler:   x.proxyError,
		BufferPool:     p.bufs,
		ErrorLog:       p.errLog,
		// FlushInterval stays 0: ReverseProxy flushes every write of
		// event streams and of bodies of unknown length anyway, and
		// batches the rest.
	}
	rp.ServeHTTP(w, in)
	return x.err
}

// hops counts connmgr's entries in Via headers.
func hops(h http.Header) int {
	n := 0
	for _, v := range h.Values("Via") {
		for entry := range strings.SplitSeq(v, ",") {
			f := strings.Fields(entry)
			if len(f) >= 2 && strings.EqualFold(f[1], "connmgr") {
				n++
			}
		}
	}
	return n
}

// timeoutOf returns c's timeout, or the default.
func timeoutOf(c *connections.Connection) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return connections.DefaultTimeout
}

// baseCache keeps parsed base URLs (Resolve copies, never modifies,
// them), so that the hot path does not parse the same URL on every call.
type baseCache struct {
	mu sync.RWMutex
	m  map[string]*url.URL
}

const maxParsedBases = 4096

func (b *baseCache) get(raw string) (*url.URL, error) {
	b.mu.RLock()
	u := b.m[raw]
	b.mu.RUnlock()
	if u != nil {
		return u, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error would echo the base URL.
		return nil, errors.New("invoke: connection base URL does not parse")
	}
	b.mu.Lock()
	if b.m == nil || len(b.m) >= maxParsedBases {
		b.m = map[string]*url.URL{} // many base URLs came and went; start over
	}
	b.m[raw] = u
	b.mu.Unlock()
	return u, nil
}

func (p *Proxy) maxBody() int64 {
	if p.MaxBody > 0 {
		return p.MaxBody
	}
	return DefaultMaxBody
}

// prepareBody returns the body to send and its length. Only a token can be
// rejected and renewed, so only calls of token connections buffer their
// body for a replay; others stream it. A policy that signs the body (AWS
// SigV4, OAuth 1.0 with a form) needs it in memory whatever its size
// within the limit.
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
	if security.HasTokens(call.Conn.Security) && (call.Replayable || n > 0 && n <= maxReplay) ||
		security.Signs(call.Conn) && security.SignsBody(call.Conn, contentType(call), n) {
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

// contentType is the Content-Type the target gets: the connection's
// static header (which setStatic puts over the caller's), else the
// caller's.
func contentType(call Call) string {
	for k, v := range call.Conn.Headers {
		if strings.EqualFold(k, "Content-Type") {
			return v
		}
	}
	return call.Header.Get("Content-Type")
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
	"ETag", "Last-Modified", "Expires", "Vary", "Location", "Content-Location", "Retry-After", "Link",
	"Warning", "Idempotency-Key")

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
// headers, the connection's static headers, User-Agent, Via and
// X-Request-Id. The URL is already the target (see Serve).
func (x *exchange) rewrite(pr *httputil.ProxyRequest) {
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
	// The caller's Via entries go on, with connmgr's, so that a call that
	// comes back to connmgr is counted (see MaxHops). Clipped, so that
	// append copies rather than write into the caller's array.
	h["Via"] = append(slices.Clip(pr.In.Header["Via"]), via)
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
func (x *exchange) roundTrip(req *http.Request) (*http.Response, error) {
	// The call's context has the same deadline and cancellation as req's
	// but not ReverseProxy's trace, which would copy the headers of 1xx
	// responses to the caller unfiltered. Without it 1xx are dropped.
	out := req.WithContext(x.ctx)
	if x.body != nil && security.Signs(x.conn) {
		// The signature covers the body: the policy reads what is sent.
		body := x.body
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	if err := x.apply(out); err != nil {
		return nil, err
	}
	res, err := x.transport.RoundTrip(out)
	tok := x.token()
	if err != nil || tok == nil || !x.conn.Rejects(res.StatusCode) {
		return res, err
	}
	if !x.p.Credentials.Rejected(x.ctx, x.conn, tok) || !x.replay {
		return res, nil
	}
	discard(res.Body)
	again := out.Clone(x.ctx)
	again.Body = nil
	if len(x.body) > 0 {
		again.Body = io.NopCloser(bytes.NewReader(x.body))
	}
	if err := x.apply(again); err != nil {
		return nil, err
	}
	return x.transport.RoundTrip(again)
}

func (x *exchange) token() *security.Token {
	if x.applied == nil {
		return nil
	}
	return x.applied.Token
}

// apply sets the connection's credential on req; a policy that signs
// requests signs it afresh each time (a retry gets a new signature).
func (x *exchange) apply(req *http.Request) error {
	if x.p.Credentials == nil {
		return nil
	}
	a, err := x.p.Credentials.Apply(x.ctx, x.conn, req)
	if err != nil {
		return &credentialError{err}
	}
	x.applied = a
	return nil
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

// modifyResponse filters the target's headers, strips the credential from
// them, and drops trailers.
func (x *exchange) modifyResponse(res *http.Response) error {
	if res.StatusCode < 200 {
		return errSwitch
	}
	x.status = res.StatusCode
	for k := range res.Header {
		if !responseHeaders[k] && !rateLimitHeader(k) {
			delete(res.Header, k)
		}
	}
	if x.applied != nil {
		scrub(res.Header, x.applied)
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

// proxyError receives the errors of ReverseProxy (those of roundTrip and
// modifyResponse) and keeps the one Serve returns.
func (x *exchange) proxyError(_ http.ResponseWriter, _ *http.Request, err error) {
	err = x.classify(err)
	// Failures to reach the target are the operators' business; the
	// caller's mistakes and credential errors are logged elsewhere.
	if errors.Is(err, ErrUpstreamTimeout) || errors.Is(err, ErrUpstreamUnreachable) || errors.Is(err, outbound.ErrEgressDenied) {
		x.p.log().LogAttrs(x.ctx, slog.LevelWarn, "invoke failed",
			slog.String("connection", x.conn.Name), slog.String("request_id", x.requestID),
			slog.String("error", err.Error()), slog.String("cause", causeOf(err)))
	}
	x.err = err
}

// classify turns an error of the ReverseProxy into one that Serve
// documents. Which side ended the call is decided here; what went wrong on
// the network, by outbound.Classify.
func (x *exchange) classify(err error) error {
	var ce *credentialError
	var ue *upstreamError
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &ce):
		return ce.err
	case x.tooLarge.Load():
		return tooLarge(x.p.maxBody())
	case errors.As(err, &ue):
		return ue
	case context.Cause(x.ctx) == errDeadline:
		return &upstreamError{kind: ErrUpstreamTimeout, reason: "no answer within " + x.timeout.String(), cause: err}
	case x.caller.Err() != nil:
		return fmt.Errorf("invoke: the caller went away: %w", context.Canceled)
	case errors.As(err, &mb):
		return tooLarge(mb.Limit)
	}
	switch f := outbound.Classify(err); f.Kind {
	case outbound.KindEgressDenied:
		return f // wraps the *outbound.DeniedError, and its text is the guard's
	case outbound.KindTimeout:
		return &upstreamError{kind: ErrUpstreamTimeout, reason: f.Reason, cause: err}
	default:
		return &upstreamError{kind: ErrUpstreamUnreachable, reason: f.Reason, cause: err}
	}
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
