// Package wire builds connmgr's object graph: the one place where the
// stores, services, token manager, proxy and API are made and connected.
// connmgr serve, the commands that need the graph, and the API test
// harness all call Build, so what they run cannot drift apart.
package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/alerts"
	"github.com/connmgr/connmgr/api"
	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/console"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
)

// Options are the settings the graph is built from: cmd/connmgr's
// configuration, or a test's.
type Options struct {
	// PublicURL is connmgr's external base URL (the OAuth callback).
	PublicURL string
	// OwnOrigins are origins that reach connmgr itself besides PublicURL's
	// (its listen address); connections may not target them.
	OwnOrigins []string
	// EgressAllow lists the non-public prefixes outbound calls may reach.
	EgressAllow []netip.Prefix
	// DefaultTokenTTL is the token lifetime assumed when the provider
	// gives none (default 1h).
	DefaultTokenTTL time.Duration
	// TokenTimeout bounds one token request (default 15s).
	TokenTimeout time.Duration
	// MaxBody is the request body limit (default 10 MiB).
	MaxBody int64
	// AdminToken, when set, is an admin API key (CONNMGR_ADMIN_TOKEN).
	AdminToken string
	// WebhookURL and WebhookSecret configure status alerts (none when the
	// URL is empty).
	WebhookURL, WebhookSecret string
	// MetricsElsewhere says /metrics is served on its own listener.
	MetricsElsewhere bool
	// Routes, when set, adds routes to the API's engine.
	Routes func(g *Graph, r *gin.Engine)
	// Console, when set, serves the admin console at /console/ with
	// these session settings; sign-ins are kept in the database, so that
	// replicas share them.
	Console *ConsoleOptions
	// ImportIdentity opens the sealed secrets of applied documents
	// (CONNMGR_IMPORT_IDENTITY); nil refuses them.
	ImportIdentity *keyring.Identity
	Logger         *slog.Logger
	// Registry collects the metrics; a new one with Go and process
	// collectors when nil.
	Registry *prometheus.Registry
}

// Graph is connmgr's object graph on one database.
type Graph struct {
	DB       *store.DB
	Ring     *keyring.KeyRing
	Store    *store.Connections
	Service  *connections.Service
	Cache    *connections.Cache
	Keys     *access.Keys
	Tokens   *security.Manager
	Consent  *security.Consent
	Guard    *outbound.Guard
	Proxy    *invoke.Proxy
	Tester   *invoke.Tester
	Audit    *audit.Log
	Alerts   *alerts.Notifier
	Registry *prometheus.Registry
	API      *api.Server
	Log      *slog.Logger
	// Console is the admin console and Sessions its sign-ins, nil unless
	// Options.Console is set.
	Console  *console.Console
	Sessions *access.Sessions

	// transports carry invokes and token requests, one per distinct TLS
	// settings of the connections.
	transports *outbound.Transports
}

// tokenRequestTimeout bounds one request to a token endpoint by default.
const tokenRequestTimeout = 15 * time.Second

// Build checks ring against db (CheckKeys), then makes and connects every
// part of connmgr. It starts nothing: see Listen and
// security.StartScheduler for the background work serve runs.
func Build(ctx context.Context, db *store.DB, ring *keyring.KeyRing, o Options) (*Graph, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := store.CheckKeys(ctx, db, ring); err != nil {
		return nil, err
	}
	instance, err := store.InstanceSecret(ctx, db, ring, "derive")
	if err != nil {
		return nil, err
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	g := &Graph{DB: db, Ring: ring, Registry: reg, Log: log}
	g.Store = store.NewConnections(db, ring)
	g.Cache = connections.NewCache(g.Store)
	g.Audit = audit.New(store.NewAuditEvents(db), keyring.Derive(instance, "audit"))
	g.Audit.Logger = log
	own := append([]string{connections.Origin(o.PublicURL)}, o.OwnOrigins...)
	g.Service = &connections.Service{Store: g.Store, Fingerprints: connections.NewFingerprinter(keyring.Derive(instance, "fingerprint")),
		OwnOrigins: own}
	g.Service.Observers = append(g.Service.Observers, g.Cache.Observe, g.Audit.ConnectionChanged)
	g.Service.StatusObservers = append(g.Service.StatusObservers, g.Audit.StatusChanged)

	g.Keys = access.NewKeys(store.NewAPIKeys(db))
	if o.AdminToken != "" {
		if err := g.Keys.SetAdminToken(o.AdminToken); err != nil {
			return nil, fmt.Errorf("CONNMGR_ADMIN_TOKEN: %w", err)
		}
	}

	g.Guard = &outbound.Guard{Allow: o.EgressAllow}
	if o.WebhookURL != "" {
		g.Alerts, err = alerts.New(alerts.Config{URL: o.WebhookURL, Secret: []byte(o.WebhookSecret),
			Client: g.Guard.Client(10 * time.Second), Logger: log, Registerer: reg})
		if err != nil {
			return nil, err
		}
		g.Service.StatusObservers = append(g.Service.StatusObservers, g.Alerts.StatusChanged)
	}
	timeout := o.TokenTimeout
	if timeout <= 0 {
		timeout = tokenRequestTimeout
	}
	g.transports = outbound.NewTransports(g.Guard, 0, outbound.DefaultMaxTransports)
	tokens := store.NewTokens(db, ring)
	g.Tokens = security.NewManager(security.ManagerConfig{Store: tokens, Connections: g.Cache,
		Status: g.Service, Clients: func(c *connections.Connection) (*http.Client, error) { return g.transports.Client(tlsOf(c), timeout) },
		DefaultTTL: o.DefaultTokenTTL, RequestTimeout: timeout + 5*time.Second, Logger: log, Registerer: reg,
		OnFailure: g.Audit.TokenFailed})
	g.Service.Observers = append(g.Service.Observers, g.Tokens.Observe)
	g.Consent = security.NewConsent(store.NewConsentStates(db, ring), g.Store, g.Tokens,
		strings.TrimRight(o.PublicURL, "/")+"/oauth/callback")
	g.Consent.Observe = g.Audit.ConsentStep

	g.Proxy = invoke.NewProxy(g.Tokens, func(c *connections.Connection) (http.RoundTripper, error) {
		return g.transports.For(tlsOf(c))
	}, reg)
	g.Proxy.MaxBody, g.Proxy.Logger = o.MaxBody, log
	g.Tester = &invoke.Tester{Proxy: g.Proxy, Tokens: g.Tokens, Status: g.Service, Tested: g.Audit.Tested}

	cfg := api.Config{Connections: g.Service, Keys: g.Keys, Tokens: g.Tokens, Consent: g.Consent, Tester: g.Tester,
		Cache: g.Cache, Proxy: g.Proxy, Audit: g.Audit, OpenAPI: connmgr.OpenAPI,
		CursorKey: keyring.Derive(instance, "cursor"), MaxBody: o.MaxBody, Ready: readiness(db), Logger: log,
		Registry: reg, MetricsElsewhere: o.MetricsElsewhere, Health: &api.Health{Statuses: g.Store.CountByStatus,
			Expiries: func(ctx context.Context) (map[string]time.Time, error) {
				list, err := tokens.Expiries(ctx)
				out := make(map[string]time.Time, len(list))
				for _, e := range list {
					out[e.Name] = e.ExpiresAt
				}
				return out, err
			}},
		Transfer: api.Transfer{Identity: o.ImportIdentity, Tokens: tokens}}
	if o.Console != nil {
		if err := g.newConsole(o); err != nil {
			return nil, err
		}
		cfg.Sessions = g.Sessions
	}
	if o.Routes != nil || g.Console != nil {
		cfg.Extra = func(r *gin.Engine) {
			if g.Console != nil {
				h := gin.WrapH(g.Console)
				r.GET("/console", h)
				r.Any("/console/*path", h)
			}
			if o.Routes != nil {
				o.Routes(g, r)
			}
		}
	}
	g.API = api.New(cfg)
	return g, nil
}

// ConsoleOptions are the console's session settings (zero: the defaults
// of access.SessionConfig).
type ConsoleOptions struct {
	TTL, Idle time.Duration
	// Now is the sessions' clock (tests); time.Now when nil.
	Now func() time.Time
}

// newConsole makes the console of o.Console on g, with sessions in g's
// database so that replicas share them.
func (g *Graph) newConsole(o Options) error {
	var err error
	g.Sessions, err = access.NewSessions(access.SessionConfig{Keys: g.Keys, Store: store.NewSessions(g.DB),
		PublicURL: o.PublicURL, AdminToken: o.AdminToken, TTL: o.Console.TTL, Idle: o.Console.Idle, Now: o.Console.Now})
	if err != nil {
		return err
	}
	g.Console, err = console.New(console.Config{Sessions: g.Sessions, OpenAPI: connmgr.OpenAPI, Logger: g.Log})
	return err
}

// CloseIdleConnections closes the idle outbound connections of invokes and
// token requests (at shutdown, and in tests that check for leaks).
func (g *Graph) CloseIdleConnections() { g.transports.CloseIdleConnections() }

// tlsOf returns c's TLS settings as the outbound transports take them, nil
// for none: the shared default transport.
func tlsOf(c *connections.Connection) *outbound.TLS {
	if c.TLS == nil {
		return nil
	}
	return &outbound.TLS{ClientCertificatePEM: c.TLS.ClientCertificatePEM, ClientKeyPEM: c.TLS.ClientKeyPEM.Reveal(),
		CACertificatesPEM: c.TLS.CACertificatesPEM, ServerName: c.TLS.ServerName}
}

// readyTimeout bounds the database ping of /readyz.
const readyTimeout = 3 * time.Second

// readiness pings db within readyTimeout: a database that hangs, rather
// than refuses, must make /readyz answer 503, not hang with it.
func readiness(db *store.DB) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		return db.Ping(ctx)
	}
}

// Listen follows the changes other replicas make (PostgreSQL
// LISTEN/NOTIFY) until ctx ends, dropping what this process cached of
// them. ready, when not nil, is closed once the listener is in place. On
// SQLite, which serves one process, it returns at once.
func (g *Graph) Listen(ctx context.Context, ready chan<- struct{}) {
	if g.DB.Dialect != migrations.Postgres {
		if ready != nil {
			close(ready)
		}
		return
	}
	store.Listen(ctx, g.DB.URL, func(n store.Notification) {
		switch n.Kind {
		case "connection":
			g.Cache.Invalidate(n.Name)
			g.Tokens.Forget(n.ID)
		case "token":
			g.Tokens.Forget(n.ID)
		case "apikey":
			g.Keys.Forget(n.Name)
		case "reset":
			g.Cache.Invalidate("")
			g.Tokens.Forget(0)
			g.Keys.Forget("")
		}
	}, g.Log, ready)
}

// ErrKeys is what Build's errors wrap when the key ring does not fit the
// database.
var ErrKeys = store.ErrWrongKeys

// IsKeyError reports whether err says the encryption keys are wrong.
func IsKeyError(err error) bool { return errors.Is(err, store.ErrWrongKeys) }
