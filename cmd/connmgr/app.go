package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/connmgr/connmgr/cmd/connmgr/wire"
	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
)

// app holds what every subcommand opens: configuration, logger, database
// (migrated) and key ring.
type app struct {
	cfg    *config
	log    *slog.Logger
	db     *store.DB
	schema migrations.Result // what opening the database migrated
	ring   *keyring.KeyRing
}

// openApp opens what cfg configures. keys says whether the command needs
// the key ring (migrate does not, and so never creates a key file).
func openApp(ctx context.Context, cfg *config, keys bool, stderr *os.File) (*app, error) {
	log := newLogger(stderr, isTerminal(stderr), cfg.LogLevel)
	warnUnknown(log, os.Environ())
	db, err := store.OpenDB(ctx, cfg.DatabaseURL, cfg.DataDir)
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
	a := &app{cfg: cfg, log: log, db: db, schema: res}
	if keys {
		if a.ring, err = loadKeyRing(ctx, cfg, db, log); err != nil {
			db.Close()
			return nil, err
		}
	}
	return a, nil
}

// loadKeyRing reads CONNMGR_ENCRYPTION_KEYS or, without it, the key file in
// the data directory. A key file is generated only for a database that
// holds no secrets yet: on a database whose secrets some other key sealed
// (a second replica started without the keys), a fresh key would make
// every call fail, so the start fails instead.
func loadKeyRing(ctx context.Context, cfg *config, db *store.DB, log *slog.Logger) (*keyring.KeyRing, error) {
	if cfg.ring != nil {
		return cfg.ring, nil
	}
	path := filepath.Join(cfg.DataDir, "master.key")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		held, err := store.HasSecrets(ctx, db)
		if err != nil {
			return nil, err
		}
		if held {
			return nil, &configError{"CONNMGR_ENCRYPTION_KEYS", "the database holds secrets sealed with keys this process does not have (" +
				path + " does not exist); set CONNMGR_ENCRYPTION_KEYS to the keys the other replicas use"}
		}
	}
	ring, created, err := keyring.LoadOrCreateKeyFile(path)
	if err != nil {
		return nil, &configError{"CONNMGR_ENCRYPTION_KEYS", fmt.Sprintf("unset, and the generated key file cannot be used: %v", err)}
	}
	msg := "using the generated encryption key file; set CONNMGR_ENCRYPTION_KEYS in production and keep the key out of the data directory"
	if created {
		msg = "generated an encryption key file; set CONNMGR_ENCRYPTION_KEYS in production and keep the key out of the data directory"
	}
	log.Warn(msg, "path", path)
	return ring, nil
}

// build makes the object graph for a command; a key ring that does not fit
// the database is a configuration error naming CONNMGR_ENCRYPTION_KEYS.
func (a *app) build(ctx context.Context, o wire.Options) (*wire.Graph, error) {
	g, err := wire.Build(ctx, a.db, a.ring, o)
	if wire.IsKeyError(err) {
		return nil, &configError{"CONNMGR_ENCRYPTION_KEYS", err.Error()}
	}
	return g, err
}

func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) error {
	cfg, err := parseConfig("migrate", args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	a, err := openApp(ctx, cfg, false, stderr)
	if err != nil {
		return err
	}
	defer a.db.Close()
	fmt.Fprintf(stdout, "database schema at version %d (%s)\n", a.schema.Current, a.db.Dialect)
	return nil
}

func rotateKeys(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) error {
	cfg, err := parseConfig("keys rotate", args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	a, err := openApp(ctx, cfg, true, stderr)
	if err != nil {
		return err
	}
	defer a.db.Close()
	// Building the graph checks the keys first and records the new one.
	if _, err := a.build(ctx, wire.Options{Logger: a.log}); err != nil {
		return err
	}
	counts, err := store.Reseal(ctx, a.db, a.ring)
	total := 0
	for _, c := range counts {
		total += c.N
		fmt.Fprintf(stdout, "%s: %d re-encrypted\n", c.What, c.N)
	}
	if err != nil {
		return fmt.Errorf("rotate: %w (%d re-encrypted so far; safe to run again)", err, total)
	}
	fmt.Fprintf(stdout, "all secrets are encrypted under key %q (%d re-encrypted)\n", a.ring.Primary(), total)
	return nil
}

func generateKey(args []string, stdout io.Writer, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	help := slices.ContainsFunc(args, func(a string) bool { return slices.Contains(helpFlags, a) })
	if help {
		fs.SetOutput(stdout)
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: connmgr keys generate [--id ID]\n\nprint a new key id:base64key for CONNMGR_ENCRYPTION_KEYS.\n\nflags:\n")
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\n\"connmgr --help\" lists the commands.")
	}
	id := fs.String("id", "k2", "key id")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) && help {
			return errHelpShown
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (connmgr keys generate --help lists the flags)", fs.Arg(0))
	}
	spec, err := keyring.GenerateKeySpec(*id)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, spec)
	return nil
}
