package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/audit"
)

const (
	ctxRequestID = "connmgr.requestID"
	ctxLogger    = "connmgr.logger"
	ctxKey       = "connmgr.apiKey"
)

func requestID(c *gin.Context) string { return c.GetString(ctxRequestID) }

// validRequestID accepts a caller's X-Request-Id only if it is short and
// plain, so it can go into logs and upstream headers as it is.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)) {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// observe assigns the request id, recovers panics, logs one line per
// request and counts it. The log line has the path but never the query
// (the OAuth callback's query holds the authorization code).
func (s *Server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		id := c.GetHeader("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		c.Set(ctxRequestID, id)
		c.Header("X-Request-Id", id)
		defer func() {
			r := recover()
			if r == http.ErrAbortHandler {
				// The proxy aborts a response it cannot finish (the target
				// broke off mid-body): the caller must see a broken
				// response, not a complete-looking one.
				defer panic(r)
				c.Writer.WriteHeaderNow()
			} else if r != nil {
				s.logger(c).Error("panic", "panic", r, "stack", string(debug.Stack()))
				if !c.Writer.Written() {
					s.renderProblem(c, newProblem(http.StatusInternalServerError, "internal_error",
						"connmgr failed to handle the request; the log has the details under this request id"))
				}
			}
			route := c.FullPath()
			if route == "" {
				route = "unmatched"
			}
			status := c.Writer.Status()
			elapsed := time.Since(start)
			method := metricMethod(c.Request.Method)
			s.metrics.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
			s.metrics.duration.WithLabelValues(method, route).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			if !s.log.Enabled(c.Request.Context(), level) {
				return
			}
			attrs := []slog.Attr{slog.String("request_id", id), slog.String("method", c.Request.Method),
				slog.String("path", c.Request.URL.Path), slog.String("route", route), slog.Int("status", status),
				slog.Duration("duration", elapsed), slog.Int("bytes", c.Writer.Size())}
			if k, ok := c.Get(ctxKey); ok {
				attrs = append(attrs, slog.String("actor", k.(*access.APIKey).Name))
			}
			// A record made here, without the caller's program counter that
			// Logger methods look up: one access line per request.
			rec := slog.NewRecord(time.Now(), level, "request", 0)
			rec.AddAttrs(attrs...)
			_ = s.log.Handler().Handle(c.Request.Context(), rec)
		}()
		c.Next()
	}
}

// logger is the log of this request: its lines carry the request id. It
// is made on first use; most requests log only their access line.
func (s *Server) logger(c *gin.Context) *slog.Logger {
	if l, ok := c.Get(ctxLogger); ok {
		return l.(*slog.Logger)
	}
	id := requestID(c)
	if id == "" {
		return s.log
	}
	l := s.log.With("request_id", id)
	c.Set(ctxLogger, l)
	return l
}

// authenticate requires a valid API key as a bearer token or, without an
// Authorization header and off the invoke routes, a console session.
func (s *Server) authenticate(c *gin.Context) {
	h := c.GetHeader("Authorization")
	if h == "" && s.sessions != nil && !onInvokeRoute(c) {
		s.authenticateSession(c)
		return
	}
	scheme, token, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		s.fail(c, access.ErrUnauthenticated)
		return
	}
	key, err := s.keys.Authenticate(c.Request.Context(), strings.TrimSpace(token))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Set(ctxKey, key)
	c.Next()
}

// authenticateSession authenticates c by its console session: it acts as
// the session's API key. A request that changes state must also carry the
// session's CSRF token from connmgr's own pages (403 otherwise), since a
// browser sends the cookie whoever made the page.
func (s *Server) authenticateSession(c *gin.Context) {
	key, err := s.sessions.Authenticate(c.Request)
	if err == nil && key == nil {
		err = access.ErrUnauthenticated
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if err := s.sessions.CheckCSRF(c.Request); err != nil {
			s.renderProblem(c, newProblem(http.StatusForbidden, "csrf_failed",
				"a change made with a console session needs its CSRF token, from connmgr's own pages: "+err.Error()))
			return
		}
	}
	c.Set(ctxKey, key)
	c.Next()
}

// auditContext names the caller in the request's context, for the audit
// records that the operation leads to.
func (s *Server) auditContext(c *gin.Context) {
	c.Request = c.Request.WithContext(audit.WithRequest(c.Request.Context(), actor(c), requestID(c)))
	c.Next()
}

// Deadlines of management calls: a database that stops answering makes
// them fail with 503 instead of hanging. Calls that ask a token endpoint or
// a target get longer (those have their own timeouts too); invokes are
// bounded by their connection's timeout instead, so their routes have no
// deadline.
const (
	managementDeadline = 10 * time.Second
	outboundDeadline   = 45 * time.Second
)

// deadline bounds the rest of the request's handling by d. Each route
// gets its deadline where it is registered.
func deadline(d time.Duration) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), d)
		defer cancel()
		c.Request = c.Request.WithContext(ctx)
		c.Next()
	}
}

// require lets the request through only if the key's role grants p.
func (s *Server) require(p access.Permission) gin.HandlerFunc {
	return func(c *gin.Context) {
		if k := apiKey(c); !k.Can(p) {
			s.renderProblem(c, newProblem(http.StatusForbidden, "forbidden",
				"the role of this API key ("+string(k.Role)+") does not allow this operation"))
			return
		}
		c.Next()
	}
}

func apiKey(c *gin.Context) *access.APIKey {
	k, _ := c.Get(ctxKey)
	key, _ := k.(*access.APIKey)
	return key
}

func actor(c *gin.Context) string {
	if k := apiKey(c); k != nil {
		return k.Name
	}
	return ""
}

// limitBody caps request bodies; reading past the cap fails with
// *http.MaxBytesError, which renders as 413.
func (s *Server) limitBody(c *gin.Context) {
	if c.Request.ContentLength > s.maxBody {
		s.fail(c, &http.MaxBytesError{Limit: s.maxBody})
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.maxBody)
	c.Next()
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connmgr_http_requests_total", Help: "HTTP requests served, by method, route and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "connmgr_http_request_duration_seconds", Help: "HTTP request latency, by method and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method", "route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// metricMethod is a request's method as a metric label: the standard
// methods as they are, any other as OTHER. Anyone can send a made-up
// method, without a key, and each label value would be a series kept
// for the life of the process.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}
