// Package store is all of connmgr's database code: gorm models, the
// SQLite and PostgreSQL drivers, migrations wiring, LISTEN/NOTIFY, the
// key checks and instance secrets, and the re-encryption of keys rotate.
// It implements the storage interfaces that connections, security,
// access and audit declare; secrets are sealed before they reach a row and
// opened on the way out.
package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/gofrs/flock"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/migrations"
)

// DB is an open database with the engine it runs on.
type DB struct {
	*gorm.DB
	Dialect migrations.Dialect
	// URL is the PostgreSQL URL (with connect_timeout), or "" for SQLite.
	URL string
}

// OpenDB opens PostgreSQL when databaseURL is a postgres:// URL, else the
// embedded SQLite database in dataDir/connmgr.db (created with the
// directory). It does not migrate; call Migrate.
func OpenDB(ctx context.Context, databaseURL, dataDir string) (*DB, error) {
	cfg := &gorm.Config{
		TranslateError:         true,
		SkipDefaultTransaction: true,
		Logger:                 logger.Discard,
		NowFunc:                func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	}
	if databaseURL != "" {
		if !strings.HasPrefix(databaseURL, "postgres://") && !strings.HasPrefix(databaseURL, "postgresql://") {
			return nil, fmt.Errorf("database URL must start with postgres:// or postgresql://")
		}
		databaseURL = withConnectTimeout(databaseURL)
		g, err := gorm.Open(postgres.New(postgres.Config{DSN: databaseURL}), cfg)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", redactURLError(err, databaseURL))
		}
		sqlDB, _ := g.DB()
		sqlDB.SetMaxOpenConns(20)
		sqlDB.SetMaxIdleConns(10)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
		return &DB{DB: g, Dialect: migrations.Postgres, URL: databaseURL}, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dataDir, "connmgr.db")
	dsn := "file:" + path + "?_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	g, err := gorm.Open(sqlite.Open(dsn), cfg)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	sqlDB, _ := g.DB()
	// One connection: SQLite has one writer anyway, and a single connection
	// rules out "database is locked" between our own goroutines.
	sqlDB.SetMaxOpenConns(1)
	if err := sqlDB.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	_ = os.Chmod(path, 0o600)
	return &DB{DB: g, Dialect: migrations.SQLite}, nil
}

// dbConnectTimeout bounds a connection attempt to PostgreSQL unless the URL
// sets connect_timeout: without it, a database host that drops packets or a
// server that accepts but never answers holds every call that needs a new
// connection for minutes instead of failing it with 503.
const dbConnectTimeout = "5"

// withConnectTimeout adds connect_timeout to a postgres:// URL that has
// none. A URL that does not parse is returned as it is, for the driver to
// report.
func withConnectTimeout(dbURL string) string {
	if dbURL == "" {
		return ""
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		return dbURL
	}
	q := u.Query()
	if q.Has("connect_timeout") {
		return dbURL
	}
	q.Set("connect_timeout", dbConnectTimeout)
	u.RawQuery = q.Encode()
	return u.String()
}

// Migrate applies the embedded migrations.
func (db *DB) Migrate(ctx context.Context) (migrations.Result, error) {
	sqlDB, err := db.DB.DB()
	if err != nil {
		return migrations.Result{}, err
	}
	return migrations.Apply(ctx, sqlDB, db.Dialect)
}

// Ping reports whether the database answers.
func (db *DB) Ping(ctx context.Context) error {
	sqlDB, err := db.DB.DB()
	if err != nil {
		return err
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: %v", connections.ErrUnavailable, err)
	}
	return nil
}

// Close closes the database.
func (db *DB) Close() error {
	sqlDB, err := db.DB.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// translate maps a database error to the domain's errors: no row to
// connections.ErrNotFound, a unique violation to connections.ErrExists, a
// lost connection to connections.ErrUnavailable (wrapped). Other errors are
// returned as they are.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gorm.ErrRecordNotFound):
		return connections.ErrNotFound
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return connections.ErrExists
	case unavailable(err):
		return fmt.Errorf("%w: %v", connections.ErrUnavailable, err)
	}
	return err
}

// LockDataDir takes the lock of a SQLite data directory for a serving
// process, so that a second one on the same files fails at start instead
// of sharing a database meant for one process. unlock releases it.
func LockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	l := flock.New(filepath.Join(dir, "connmgr.lock"))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if !ok {
		return nil, fmt.Errorf("another connmgr process is serving from the data directory %s (SQLite serves one process; use PostgreSQL for replicas)", dir)
	}
	return func() { _ = l.Unlock() }, nil
}

func unavailable(err error) bool {
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 08: connection exception, 57P01-03: admin shutdown, crash, cannot connect now.
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
	}
	return errors.As(err, &netErr) || errors.As(err, &connectErr) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "database is closed")
}

// redactURLError keeps a password in the database URL out of an error.
func redactURLError(err error, rawURL string) error {
	msg := err.Error()
	if i := strings.Index(rawURL, "://"); i >= 0 {
		if at := strings.LastIndex(rawURL, "@"); at > i {
			userinfo := rawURL[i+3 : at]
			if c := strings.Index(userinfo, ":"); c >= 0 && c+1 < len(userinfo) {
				msg = strings.ReplaceAll(msg, userinfo[c+1:], "xxxxx")
			}
		}
	}
	return errors.New(msg)
}
