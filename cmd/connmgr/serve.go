package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/alerts"
	"github.com/connmgr/connmgr/api"
	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/security"
)

// tokenRequestTimeout bounds one request to a token endpoint.
const tokenRequestTimeout = 15 * time.Second

// shutdownGrace bounds how long in-flight calls may take after SIGTERM.
const shutdownGrace = 30 * time.Second

// readyTimeout bounds the database ping of /readyz.
const readyTimeout = 3 * time.Second

// readiness pings db within readyTimeout: a database that hangs, rather
// than refuses, must make /readyz answer 503, not hang with it.
func readiness(db *connections.DB) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		return db.Ping(ctx)
	}
}

func serve(ctx context.Context, args []string, getenv func(string) string, stderr *os.File) error {
	a, err := openApp(ctx, "serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	defer a.db.Close()
	// From here on, one log line per request: lines are batched (Close
	// writes the rest when serve returns).
	logOut := newBatchWriter(stderr)
	defer logOut.Close()
	log := newLogger(logOut, isTerminal(stderr), a.cfg.LogLevel)

	// Listen before wiring: with port 0 in CONNMGR_ADDR, the default public
	// URL (OAuth callback, docs) needs the port actually bound.
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return &configError{"CONNMGR_ADDR", err.Error()}
	}
	defer ln.Close()
	if a.cfg.PublicURL == "http://"+a.cfg.Addr {
		a.cfg.PublicURL = "http://" + ln.Addr().String()
	}

	keys := security.NewKeyStore(a.db.DB)
	if a.cfg.AdminToken != "" {
		if err := keys.SetAdminToken(a.cfg.AdminToken); err != nil {
			return &configError{"CONNMGR_ADMIN_TOKEN", err.Error()}
		}
	}
	tokenPath := filepath.Join(a.cfg.DataDir, "admin.token")
	if created, err := keys.Bootstrap(ctx, tokenPath); err != nil {
		return err
	} else if created {
		log.Warn("generated an admin API key; read it from the file and keep it safe", "path", tokenPath)
	}

	store := connections.NewGormStore(a.db.DB, a.ring)
	cache := connections.NewCache(store)
	auditLog := audit.NewStore(a.db.DB, a.ring.Derive("audit"))
	auditLog.Logger = log
	svc := &connections.Service{Store: store}
	svc.Observers = append(svc.Observers, cache.Observe, auditLog.ConnectionChanged)
	svc.StatusObservers = append(svc.StatusObservers, auditLog.StatusChanged)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	guard := &invoke.Guard{Allow: a.cfg.EgressAllow}
	if a.cfg.WebhookURL != "" {
		alerter, err := alerts.New(alerts.Config{URL: a.cfg.WebhookURL, Secret: []byte(a.cfg.WebhookSecret),
			Client: guard.Client(10 * time.Second), Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
		svc.StatusObservers = append(svc.StatusObservers, alerter.StatusChanged)
		actx, stopAlerts := context.WithCancel(context.Background())
		go alerter.Run(actx)
		defer func() {
			stopAlerts()
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := alerter.Close(cctx); err != nil {
				log.Warn("alerts left undelivered at shutdown", "error", err.Error())
			}
		}()
	}
	tokens := security.NewManager(security.ManagerConfig{DB: a.db.DB, Sealer: a.ring, Connections: store, Status: svc,
		Client: guard.Client(tokenRequestTimeout), DefaultTTL: a.cfg.DefaultTokenTTL, Logger: log, Registerer: reg,
		OnFailure: auditLog.TokenFailed})
	svc.Observers = append(svc.Observers, tokens.Observe)
	consent := security.NewConsent(a.db.DB, a.ring, tokens, a.cfg.PublicURL+"/oauth/callback")
	if a.db.Dialect == migrations.Postgres {
		// Other replicas change connections, tokens and keys too; their
		// changes reach this process's caches through LISTEN/NOTIFY.
		lctx, stopListen := context.WithCancel(context.Background())
		defer stopListen()
		go connections.Listen(lctx, a.db.URL, func(n connections.Notification) {
			switch n.Kind {
			case "connection":
				cache.Invalidate(n.Name)
				tokens.Forget(n.ID)
			case "token":
				tokens.Forget(n.ID)
			case "apikey":
				keys.Forget(n.Name)
			case "reset":
				cache.Invalidate("")
				tokens.Forget(0)
				keys.Forget("")
			}
		}, log, nil)
	}
	sched, err := security.StartScheduler(a.cfg.RefreshSchedule, tokens, log)
	if err != nil {
		return &configError{"CONNMGR_REFRESH_SCHEDULE", err.Error()}
	}
	defer sched.Stop()

	proxy := invoke.NewProxy(tokens, guard.Transport(0), reg)
	proxy.MaxBody, proxy.Logger = a.cfg.MaxBody, log
	srv := api.New(api.Config{Connections: svc, Keys: keys, Tokens: tokens, Consent: consent, Tester: proxy.Test,
		Cache: cache, Proxy: proxy, Audit: auditLog,
		OpenAPI: connmgr.OpenAPI, CursorKey: a.ring.Derive("cursor"), MaxBody: a.cfg.MaxBody, Ready: readiness(a.db),
		Logger: log, Registry: reg})

	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("connmgr listening", "addr", ln.Addr().String(), "engine", string(a.db.Dialect),
		"docs", a.cfg.PublicURL+"/docs/", "version", buildVersion())
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: refusing new connections, finishing in-flight calls", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("in-flight calls did not finish in time", "error", err.Error())
	}
	log.Info("stopped")
	return nil
}
