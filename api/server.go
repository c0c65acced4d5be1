// Package api is connmgr's HTTP interface: the gin router, handlers,
// request and response types, API key authentication, problem+json errors,
// and the served OpenAPI contract with its docs UI.
package api

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
)

// Config is what the API needs. Connections, Keys, OpenAPI and CursorKey
// are required.
type Config struct {
	Connections *connections.Service
	Keys        *security.KeyStore
	// OpenAPI is the contract served at /openapi.yaml.
	OpenAPI []byte
	// CursorKey signs page cursors; replicas must share it.
	CursorKey []byte
	// MaxBody limits request bodies (bytes); 0 means 10 MiB.
	MaxBody int64
	// Tokens obtains and describes OAuth tokens.
	Tokens *security.Manager
	// Consent runs the authorization-code consent flow.
	Consent *security.Consent
	// Tester tests a connection without OAuth tokens by calling its target;
	// detail says what happened, without secrets or response bodies.
	Tester func(ctx context.Context, c *connections.Connection) invoke.TestOutcome
	// Audit records who did what and serves the audit log.
	Audit *audit.Store
	// Cache serves connections to the invoke path without database queries.
	Cache *connections.Cache
	// Proxy forwards invokes; its ErrorHandler is set by New.
	Proxy *invoke.Proxy
	// Ready reports whether the service can serve (the database answers).
	Ready    func(context.Context) error
	Logger   *slog.Logger
	Registry *prometheus.Registry
}

// Server serves the API.
type Server struct {
	conns   *connections.Service
	keys    *security.KeyStore
	tokens  *security.Manager
	consent *security.Consent
	tester  func(context.Context, *connections.Connection) invoke.TestOutcome
	cache   *connections.Cache
	audit   *audit.Store
	proxy   *invoke.Proxy
	openapi []byte
	cursors cursors
	maxBody int64
	ready   func(context.Context) error
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *httpMetrics
	engine  *gin.Engine
}

// New returns a server for cfg with its routes installed.
func New(cfg Config) *Server {
	gin.SetMode(gin.ReleaseMode)
	s := &Server{conns: cfg.Connections, keys: cfg.Keys, tokens: cfg.Tokens, consent: cfg.Consent, tester: cfg.Tester, cache: cfg.Cache, audit: cfg.Audit, proxy: cfg.Proxy, openapi: cfg.OpenAPI, cursors: cursors{cfg.CursorKey},
		maxBody: cfg.MaxBody, ready: cfg.Ready, log: cfg.Logger, reg: cfg.Registry}
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
	if s.proxy != nil {
		s.proxy.ErrorHandler = s.invokeError
	}
	s.engine = s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

func (s *Server) routes() *gin.Engine {
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

	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.readyz)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
	s.routeDocs(r)

	v1 := r.Group("/api/v1", s.authenticate, s.auditContext, s.limitBody)
	// Deadlines by route: management calls get managementDeadline, calls
	// that reach out get outboundDeadline, invokes none (see deadline).
	mgmt, outbound := v1.Group("", deadline(managementDeadline)), v1.Group("", deadline(outboundDeadline))
	read, write := s.require(security.PermRead), s.require(security.PermWrite)
	mgmt.POST("/connections", write, s.createConnection)
	mgmt.GET("/connections", read, s.listConnections)
	// Visibility comes before the role check: a key that may not see a
	// connection gets 404 for it, never 403.
	mgmt.GET("/connections/:name", s.visible, read, s.getConnection)
	mgmt.PUT("/connections/:name", s.visible, write, s.replaceConnection)
	mgmt.DELETE("/connections/:name", s.visible, write, s.deleteConnection)
	outbound.POST("/connections/:name/test", s.visible, write, s.testConnection)
	mgmt.GET("/connections/:name/token", s.visible, read, s.getToken)
	outbound.POST("/connections/:name/token/refresh", s.visible, write, s.refreshToken)
	mgmt.POST("/connections/:name/consent", s.visible, write, s.startConsent)
	r.GET("/oauth/callback", s.oauthCallback)
	invoker := s.require(security.PermInvoke)
	v1.POST("/connections/:name/invoke", s.visible, invoker, s.invokeDynamic)
	// The transparent form streams bodies to the target; the proxy applies
	// the body limit itself.
	for _, m := range invokeMethods {
		r.Handle(m, "/invoke/:name", s.authenticate, s.visible, invoker, s.invokeTransparent)
		r.Handle(m, "/invoke/:name/*path", s.authenticate, s.visible, invoker, s.invokeTransparent)
	}

	mgmt.GET("/audit", s.require(security.PermAudit), s.listAudit)

	keys := mgmt.Group("/apikeys", s.require(security.PermManageKeys))
	keys.POST("", s.createAPIKey)
	keys.GET("", s.listAPIKeys)
	keys.DELETE("/:id", s.revokeAPIKey)
	return r
}

func (s *Server) readyz(c *gin.Context) {
	if s.ready != nil {
		if err := s.ready(c.Request.Context()); err != nil {
			s.logger(c).Warn("not ready", "error", err.Error())
			s.renderProblem(c, newProblem(http.StatusServiceUnavailable, "not_ready", "the database cannot be reached"))
			return
		}
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}
