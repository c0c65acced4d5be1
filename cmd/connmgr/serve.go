package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/netutil"

	"github.com/connmgr/connmgr/cmd/connmgr/wire"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
)

// shutdownGrace bounds how long in-flight calls may take after SIGTERM.
const shutdownGrace = 30 * time.Second

func serve(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) error {
	cfg, err := parseConfig("serve", args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	// Bind before anything is written: a bad or busy CONNMGR_ADDR (or
	// CONNMGR_METRICS_ADDR) fails the start with the data directory
	// untouched. With port 0, the default public URL needs the port
	// actually bound.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return &configError{"CONNMGR_ADDR", err.Error()}
	}
	defer ln.Close()
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return &configError{"CONNMGR_METRICS_ADDR", err.Error()}
		}
		defer metricsLn.Close()
	}
	if cfg.DatabaseURL == "" {
		unlock, err := store.LockDataDir(cfg.DataDir)
		if err != nil {
			return &configError{"CONNMGR_DATA_DIR", err.Error()}
		}
		defer unlock()
	}
	a, err := openApp(ctx, cfg, true, stderr)
	if err != nil {
		return err
	}
	defer a.db.Close()
	// From here on, one log line per request: lines are batched (Close
	// writes the rest when serve returns).
	logOut := newBatchWriter(stderr)
	defer logOut.Close()
	log := newLogger(logOut, isTerminal(stderr), a.cfg.LogLevel)

	bound := "http://" + ln.Addr().String()
	if a.cfg.PublicURL == "http://"+a.cfg.Addr {
		a.cfg.PublicURL = bound
	}
	g, err := a.build(ctx, wire.Options{PublicURL: a.cfg.PublicURL, OwnOrigins: ownOrigins(ln.Addr()),
		EgressAllow: a.cfg.EgressAllow, DefaultTokenTTL: a.cfg.DefaultTokenTTL, TokenTimeout: a.cfg.TokenTimeout,
		MaxBody: a.cfg.MaxBody, AdminToken: a.cfg.AdminToken, WebhookURL: a.cfg.WebhookURL,
		WebhookSecret: a.cfg.WebhookSecret, MetricsElsewhere: metricsLn != nil, Logger: log,
		Console: &wire.ConsoleOptions{}, ImportIdentity: a.cfg.importIdentity})
	if err != nil {
		return err
	}
	tokenPath := filepath.Join(a.cfg.DataDir, "admin.token")
	if created, err := g.Keys.Bootstrap(ctx, tokenPath); err != nil {
		return err
	} else if created {
		log.Warn("generated an admin API key; read it from the file and keep it safe", "path", tokenPath)
	}
	if g.Alerts != nil {
		actx, stopAlerts := context.WithCancel(context.Background())
		go g.Alerts.Run(actx)
		defer func() {
			stopAlerts()
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := g.Alerts.Close(cctx); err != nil {
				log.Warn("alerts left undelivered at shutdown", "error", err.Error())
			}
		}()
	}
	if a.db.Dialect == migrations.Postgres {
		// Other replicas change connections, tokens and keys too; their
		// changes reach this process's caches through LISTEN/NOTIFY.
		lctx, stopListen := context.WithCancel(context.Background())
		defer stopListen()
		go g.Listen(lctx, nil)
	}
	sched, err := security.StartScheduler(a.cfg.RefreshSchedule, g.Tokens, log)
	if err != nil {
		return &configError{"CONNMGR_REFRESH_SCHEDULE", err.Error()}
	}
	defer sched.Stop()

	errc := make(chan error, 2)
	var metricsSrv *http.Server
	if metricsLn != nil {
		// Logged before "connmgr listening": once that line is out, the
		// addresses of both are.
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", g.API.Metrics())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		log.Info("metrics listening", "addr", metricsLn.Addr().String(), "path", "/metrics")
		go func() { errc <- metricsSrv.Serve(netutil.LimitListener(metricsLn, 64)) }()
	}
	httpSrv := newServer(g.API, a.cfg, log)
	log.Info("connmgr listening", "addr", ln.Addr().String(), "engine", string(a.db.Dialect),
		"docs", a.cfg.PublicURL+"/docs/", "max_connections", a.cfg.MaxConnections,
		"read_timeout", a.cfg.ReadTimeout, "write_timeout", a.cfg.WriteTimeout, "token_timeout", a.cfg.TokenTimeout,
		"version", buildVersion())
	go func() { errc <- httpSrv.Serve(netutil.LimitListener(ln, a.cfg.MaxConnections)) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: refusing new connections, finishing in-flight calls", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(sctx)
	}
	if err := httpSrv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("in-flight calls did not finish in time", "error", err.Error())
	}
	g.CloseIdleConnections()
	log.Info("stopped")
	return nil
}

// ownOrigins returns the origins that reach this process at its listen
// address bound: a connection may not target them (it would invoke
// connmgr itself). Bound to a loopback or an unspecified address
// (0.0.0.0, ::), the loopback names reach it too.
func ownOrigins(bound net.Addr) []string {
	tcp, ok := bound.(*net.TCPAddr)
	if !ok {
		return []string{connections.Origin("http://" + bound.String())}
	}
	port := strconv.Itoa(tcp.Port)
	out := []string{connections.Origin("http://" + net.JoinHostPort(tcp.IP.String(), port))}
	if tcp.IP.IsLoopback() || tcp.IP.IsUnspecified() {
		for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
			out = append(out, connections.Origin("http://"+net.JoinHostPort(host, port)))
		}
	}
	return out
}

// newServer returns the HTTP server for h. Every request has a bounded
// time to send its headers, its body and to take its answer (invokes
// extend the body and answer deadlines to their connection's timeout), so
// that sockets that send slowly or not at all are closed rather than held.
func newServer(h http.Handler, cfg *config, log *slog.Logger) *http.Server {
	// An idle keep-alive connection holds one of the MaxConnections slots
	// too: it gets no longer than a request would to send itself, and
	// fewer than that when the slots run out (shedIdle).
	srv := &http.Server{Handler: h, ReadHeaderTimeout: min(10*time.Second, cfg.ReadTimeout),
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, IdleTimeout: min(120*time.Second, cfg.ReadTimeout),
		MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv.ConnState = shedIdle(srv, cfg.MaxConnections)
	return srv
}

// shedIdle returns a ConnState hook that keeps idle connections from
// holding the slots of a listener limited to limit connections: anyone
// can open connections, send one request each and leave them idle, and
// the next caller would wait for IdleTimeout. From 90% of the slots taken
// keep-alives are off, which closes the idle connections at once (and
// those that have not sent a request in 5s) and each other one after its
// answer; from half of them free, they are on again.
func shedIdle(srv *http.Server, limit int) func(net.Conn, http.ConnState) {
	var (
		mu       sync.Mutex
		open     int
		shedding bool
	)
	high, low := max(1, limit*9/10), limit/2
	return func(_ net.Conn, state http.ConnState) {
		if state != http.StateNew && state != http.StateHijacked && state != http.StateClosed {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if state == http.StateNew {
			open++
		} else {
			open--
		}
		switch {
		case !shedding && open >= high:
			shedding = true
			srv.SetKeepAlivesEnabled(false)
		case shedding && open <= low:
			shedding = false
			srv.SetKeepAlivesEnabled(true)
		}
	}
}
