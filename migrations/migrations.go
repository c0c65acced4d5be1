// Package migrations holds connmgr's versioned SQL migrations, embedded in the
// binary, and applies them with goose. Each engine has its own directory
// (postgres/, sqlite/) with the same version numbers.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// Dialect names a supported database engine.
type Dialect string

// The supported engines.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// Result lists the migrations that an Apply call ran, oldest first.
type Result struct {
	Applied []int64
	Current int64
}

// Apply brings the schema of db up to the newest embedded version. It is safe
// to call on an up-to-date database (nothing runs) and, on PostgreSQL, from
// several processes at once: a session advisory lock serialises them.
func Apply(ctx context.Context, db *sql.DB, d Dialect) (Result, error) {
	p, err := provider(db, d)
	if err != nil {
		return Result{}, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("apply migrations: %w", err)
	}
	var r Result
	for _, m := range results {
		r.Applied = append(r.Applied, m.Source.Version)
	}
	if r.Current, err = p.GetDBVersion(ctx); err != nil {
		return r, fmt.Errorf("read schema version: %w", err)
	}
	return r, nil
}

// Latest returns the newest embedded migration version for d.
func Latest(d Dialect) (int64, error) {
	sub, err := fs.Sub(files, string(d))
	if err != nil {
		return 0, err
	}
	entries, err := fs.Glob(sub, "*.sql")
	if err != nil || len(entries) == 0 {
		return 0, fmt.Errorf("no migrations for %s", d)
	}
	var latest int64
	for _, e := range entries {
		var v int64
		if _, err := fmt.Sscanf(e, "%d_", &v); err == nil && v > latest {
			latest = v
		}
	}
	return latest, nil
}

func provider(db *sql.DB, d Dialect) (*goose.Provider, error) {
	sub, err := fs.Sub(files, string(d))
	if err != nil {
		return nil, err
	}
	var opts []goose.ProviderOption
	dialect := goose.DialectSQLite3
	if d == Postgres {
		dialect = goose.DialectPostgres
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return nil, err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	} else if d != SQLite {
		return nil, fmt.Errorf("unsupported database dialect %q", d)
	}
	return goose.NewProvider(dialect, db, sub, opts...)
}
