// Package api is connmgr's HTTP interface: the gin router, handlers,
// request and response types, API key authentication, problem+json errors,
// and the served OpenAPI contract with its docs UI. Handlers bind the
// request, make one call to a service (connections.Service, invoke.Proxy,
// invoke.Tester, security.Consent, access.Keys, audit.Log) and render the
// answer; problemFor is the one place where errors become statuses.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
)

// Config is what the API needs. Connections, Keys, OpenAPI and CursorKey
// are required.
type Config struct {
	Connections *connections.Service
	Keys        *access.Keys
	// OpenAPI is the contract served at /openapi.yaml.
	OpenAPI []byte
	// CursorKey signs page cursors; replicas must share it, and it must
	// outlive key rotation.
	CursorKey []byte
	// MaxBody limits request bodies (bytes); 0 means 10 MiB.
	MaxBody int64
	// Tokens obtains and describes tokens.
	Tokens *security.Manager
	// Consent runs the authorization-code consent flow.
	Consent *security.Consent
	// Tester tests connections end to end and records the outcome.
	Tester *invoke.Tester
	// Audit records who did what and serves the audit log.
	Audit *audit.Log
	// Cache serves connections to the invoke path without database queries.
	Cache *connections.Cache
	// Proxy forwards invokes.
	Proxy *invoke.Proxy
	// Ready reports whether the service can serve (the database answers).
	Ready    func(context.Context) error
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// MetricsElsewhere says /metrics is served on its own address
	// (CONNMGR_METRICS_ADDR), so this server does not serve it; else it
	// serves it to viewer and admin keys only.
	MetricsElsewhere bool
	// Health, when set, adds the health metrics: connections by status and
	// each token's time to expiry.
	Health *Health
	// Extra, when set, installs more routes (the console) on the engine.
	Extra func(r *gin.Engine)
	// Sessions, when set, authenticates requests without an Authorization
	// header by the console's session cookie.
	Sessions Sessions
	// Transfer configures connections as code (apply and export).
	Transfer Transfer
}

// Sessions authenticates browser requests by a console session.
type Sessions interface {
	// Authenticate returns the API key of the session that r's cookie
	// names; nil and no error when r carries no session cookie;
	// access.ErrUnauthenticated when the session is unknown, ended or
	// expired, or its key is revoked or expired.
	Authenticate(r *http.Request) (*access.APIKey, error)
	// CheckCSRF returns an error, saying why, unless r (a request that
	// changes state, authenticated by its session) carries the session's
	// CSRF token and comes from connmgr's own pages.
	CheckCSRF(r *http.Request) error
}

// Server serves the API.
type Server struct {
	conns   *connections.Service
	keys    *access.Keys
	tokens  *security.Manager
	consent *security.Consent
	tester  *invoke.Tester
	cache   *connections.Cache
	audit   *audit.Log
	proxy   *invoke.Proxy
	openapi []byte
	cursors cursors
	maxBody int64
	ready   func(context.Context) error
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *httpMetrics
	engine  *gin.Engine
	// sessions authenticates by session cookie; nil when there is none.
	sessions Sessions
	transfer Transfer
}

// New returns a server for cfg with its routes installed.
func New(cfg Config) *Server {
	gin.SetMode(gin.ReleaseMode)
	s := &Server{conns: cfg.Connections, keys: cfg.Keys, tokens: cfg.Tokens, consent: cfg.Consent, tester: cfg.Tester,
		cache: cfg.Cache, audit: cfg.Audit, proxy: cfg.Proxy, openapi: cfg.OpenAPI, cursors: cursors{cfg.CursorKey},
		maxBody: cfg.MaxBody, ready: cfg.Ready, log: cfg.Logger, reg: cfg.Registry, sessions: cfg.Sessions,
		transfer: cfg.Transfer}
	if s.maxBody <= 0 {
		s.maxBody = 10 << 20
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.metrics = newHTTPMetrics(s.reg)
	if cfg.Health != nil {
		s.reg.MustRegister(cfg.Health)
	}
	s.engine = s.routes(cfg)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

// Routes returns the method and path of every route the server serves,
// in gin's syntax (/api/v1/connections/:name), so that tests can hold them
// to the contract.
func (s *Server) Routes() gin.RoutesInfo { return s.engine.Routes() }

// Metrics is the Prometheus handler of the server's registry, for a
// separate metrics listener.
func (s *Server) Metrics() http.Handler { return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}) }

func (s *Server) routes(cfg Config) *gin.Engine {
	r := gin.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(s.observe())
	r.NoRoute(func(c *gin.Context) {
		s.renderProblem(c, newProblem(http.StatusNotFound, "route_not_found", "no such route; see /docs"))
	})
	r.NoMethod(func(c *gin.Context) {
		s.renderProblem(c, newProblem(http.StatusMethodNotAllowed, "method_not_allowed", "this route does not take "+c.Request.Method))
	})

	r.GET("/healthz", func(c *gin.Context) { s.writeJSON(c, http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.readyz)
	if !cfg.MetricsElsewhere {
		// Metrics name every connection: like the connections themselves
		// they are for keys that may read everything.
		metrics := s.Metrics()
		r.GET("/metrics", s.authenticate, s.require(access.PermMetrics), func(c *gin.Context) {
			metrics.ServeHTTP(c.Writer, c.Request)
		})
	}
	s.routeDocs(r)

	v1 := r.Group("/api/v1", s.authenticate, s.auditContext, s.limitBody)
	// Deadlines by route: management calls get managementDeadline, calls
	// that reach out get outboundDeadline, invokes none (see deadline).
	mgmt, outbound := v1.Group("", deadline(managementDeadline)), v1.Group("", deadline(outboundDeadline))
	read, write := s.require(access.PermRead), s.require(access.PermWrite)
	mgmt.POST("/connections", write, s.createConnection)
	mgmt.GET("/connections", read, s.listConnections)
	// Visibility comes before the role check: a key that may not see a
	// connection gets 404 for it, never 403.
	mgmt.GET("/connections/:name", s.visible, read, s.getConnection)
	mgmt.PUT("/connections/:name", s.visible, write, s.replaceConnection)
	mgmt.PATCH("/connections/:name", s.visible, write, s.patchConnection)
	mgmt.DELETE("/connections/:name", s.visible, write, s.deleteConnection)
	outbound.POST("/connections/:name/test", s.visible, write, s.testConnection)
	mgmt.GET("/connections/:name/token", s.visible, read, s.getToken)
	outbound.POST("/connections/:name/token/refresh", s.visible, write, s.refreshToken)
	outbound.POST("/connections/:name/consent", s.visible, write, s.startConsent)
	r.GET("/oauth/callback", deadline(outboundDeadline), s.oauthCallback)
	invoker := s.require(access.PermInvoke)
	v1.POST("/connections/:name/invoke", s.visible, invoker, s.invokeDynamic)
	// The transparent form streams bodies to the target; the proxy applies
	// the body limit itself.
	for _, m := range invokeMethods {
		r.Handle(m, "/invoke/:name", s.authenticate, s.visible, invoker, s.invokeTransparent)
		r.Handle(m, "/invoke/:name/*path", s.authenticate, s.visible, invoker, s.invokeTransparent)
	}

	mgmt.GET("/audit", s.require(access.PermAudit), s.listAudit)
	s.routeTransfer(r, outbound, write)

	keys := mgmt.Group("/apikeys", s.require(access.PermManageKeys))
	keys.POST("", s.createAPIKey)
	keys.GET("", s.listAPIKeys)
	keys.DELETE("/:id", s.revokeAPIKey)
	r.GET("/", s.home(cfg.Sessions != nil))
	if cfg.Extra != nil {
		cfg.Extra(r)
	}
	return r
}

var homePage = template.Must(template.New("home").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>connmgr</title></head>
<body><h1>connmgr</h1>
<p>connmgr holds the credentials to other people's APIs so that integrations don't have to.</p>
<ul>
{{if .Console}}<li><a href="/console/">Console</a>: connections, their health, API keys and the audit log.</li>{{end}}
<li><a href="/docs/">API docs</a>: every call, to try with an API key.</li>
<li><a href="/openapi.yaml">The contract</a> (OpenAPI 3.0), for generated clients.</li>
</ul></body></html>
`))

// home is the page at /: it leads to the console and to the docs.
func (s *Server) home(console bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Content-Security-Policy", "default-src 'none'")
		c.Header("X-Content-Type-Options", "nosniff")
		c.Header("Content-Type", "text/html; charset=utf-8")
		c.Status(http.StatusOK)
		if err := homePage.Execute(c.Writer, struct{ Console bool }{console}); err != nil {
			s.logger(c).Warn("render home page", "error", err.Error())
		}
	}
}

func (s *Server) readyz(c *gin.Context) {
	if s.ready != nil {
		if err := s.ready(c.Request.Context()); err != nil {
			s.logger(c).Warn("not ready", "error", err.Error())
			s.renderProblem(c, newProblem(http.StatusServiceUnavailable, "not_ready", "the database cannot be reached"))
			return
		}
	}
	s.writeJSON(c, http.StatusOK, gin.H{"status": "ready"})
}

// writeJSON renders v as JSON without HTML escaping, so that URLs keep
// their '&' and can be pasted into a browser.
func (s *Server) writeJSON(c *gin.Context, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.fail(c, err)
		return
	}
	if c.Writer.Header().Get("Content-Type") == "" {
		c.Header("Content-Type", "application/json; charset=utf-8")
	}
	c.Status(status)
	_, _ = c.Writer.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
