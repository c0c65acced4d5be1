package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/security"
)

// app holds what every subcommand opens: configuration, logger, database
// (migrated) and key ring.
type app struct {
	cfg    *config
	log    *slog.Logger
	db     *connections.DB
	schema migrations.Result // what opening the database migrated
	ring   *security.KeyRing
}

func openApp(ctx context.Context, name string, args []string, getenv func(string) string, stderr *os.File) (*app, error) {
	cfg, err := parseConfig(name, args, getenv, stderr)
	if err != nil {
		return nil, err
	}
	log := newLogger(stderr, isTerminal(stderr), cfg.LogLevel)
	ring, err := loadKeyRing(cfg, log)
	if err != nil {
		return nil, err
	}
	db, err := connections.OpenDB(ctx, cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		// Driver errors span lines (one per address tried); the start
		// fails with one line that names the variable to check.
		variable := "CONNMGR_DATA_DIR"
		if cfg.DatabaseURL != "" {
			variable = "CONNMGR_DATABASE_URL"
		}
		return nil, &configError{variable, strings.Join(strings.Fields(err.Error()), " ")}
	}
	res, err := db.Migrate(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if len(res.Applied) > 0 {
		log.Info("database migrated", "engine", string(db.Dialect), "applied", res.Applied, "version", res.Current)
	}
	return &app{cfg: cfg, log: log, db: db, schema: res, ring: ring}, nil
}

func loadKeyRing(cfg *config, log *slog.Logger) (*security.KeyRing, error) {
	if cfg.EncryptionKeys != "" {
		ring, err := security.ParseKeyRing(cfg.EncryptionKeys)
		if err != nil {
			return nil, &configError{"CONNMGR_ENCRYPTION_KEYS", err.Error()}
		}
		return ring, nil
	}
	path := filepath.Join(cfg.DataDir, "master.key")
	ring, created, err := security.LoadOrCreateKeyFile(path)
	if err != nil {
		return nil, &configError{"CONNMGR_DATA_DIR", fmt.Sprintf("cannot use the generated encryption key file (or set CONNMGR_ENCRYPTION_KEYS): %v", err)}
	}
	msg := "using the generated encryption key file; set CONNMGR_ENCRYPTION_KEYS in production and keep the key out of the data directory"
	if created {
		msg = "generated an encryption key file; set CONNMGR_ENCRYPTION_KEYS in production and keep the key out of the data directory"
	}
	log.Warn(msg, "path", path)
	return ring, nil
}

func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) error {
	a, err := openApp(ctx, "migrate", args, getenv, stderr)
	if err != nil {
		return err
	}
	defer a.db.Close()
	fmt.Fprintf(stdout, "database schema at version %d (%s)\n", a.schema.Current, a.db.Dialect)
	return nil
}

func rotateKeys(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) error {
	a, err := openApp(ctx, "keys rotate", args, getenv, stderr)
	if err != nil {
		return err
	}
	defer a.db.Close()
	total := 0
	for _, r := range resealers(a) {
		n, err := r.reseal(ctx, a.ring.Stale)
		total += n
		if err != nil {
			return fmt.Errorf("rotate %s: %w (%d re-encrypted so far; safe to run again)", r.what, err, total)
		}
		fmt.Fprintf(stdout, "%s: %d re-encrypted\n", r.what, n)
	}
	fmt.Fprintf(stdout, "all secrets are encrypted under key %q (%d re-encrypted)\n", a.ring.Primary(), total)
	return nil
}

type resealer struct {
	what   string
	reseal func(ctx context.Context, stale func([]byte) bool) (int, error)
}

// resealers lists every store of sealed secrets that keys rotate goes through.
func resealers(a *app) []resealer {
	conns := connections.NewGormStore(a.db.DB, a.ring)
	tokens := security.NewManager(security.ManagerConfig{DB: a.db.DB, Sealer: a.ring, Connections: conns})
	consent := security.NewConsent(a.db.DB, a.ring, tokens, "")
	return []resealer{{"connection secrets", conns.Reseal}, {"tokens", tokens.Reseal}, {"pending consents", consent.Reseal}}
}

func generateKey(args []string, stdout io.Writer, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "k2", "key id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	spec, err := security.GenerateKeySpec(*id)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, spec)
	return nil
}
