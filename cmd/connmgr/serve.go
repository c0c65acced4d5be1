package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/api"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// shutdownGrace bounds how long in-flight calls may take after SIGTERM.
const shutdownGrace = 30 * time.Second

func resealers(a *app) []resealer {
	conns := connections.NewGormStore(a.db.DB, a.ring)
	return []resealer{{"connection secrets", conns.Reseal}}
}

func serve(ctx context.Context, args []string, getenv func(string) string, stderr *os.File) error {
	a, err := openApp(ctx, "serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	defer a.db.Close()
	log := a.log

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
	svc := &connections.Service{Store: store}
	svc.Observers = append(svc.Observers, cache.Observe)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := api.New(api.Config{Connections: svc, Keys: keys, OpenAPI: connmgr.OpenAPI,
		CursorKey: a.ring.Derive("cursor"), MaxBody: a.cfg.MaxBody, Ready: a.db.Ping, Logger: log, Registry: reg})

	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10, ErrorLog: nil}
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return &configError{"CONNMGR_ADDR", err.Error()}
	}
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
