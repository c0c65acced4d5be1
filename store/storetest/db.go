// Package storetest opens real databases for tests: SQLite in a
// temporary directory and, when CONNMGR_TEST_DATABASE_URL is set, a fresh
// PostgreSQL database that is dropped when the test ends. It also makes
// the key ring tests seal with.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
)

// EnvURL names the variable with the URL of a PostgreSQL server (any
// database on it) where tests may create and drop databases.
const EnvURL = "CONNMGR_TEST_DATABASE_URL"

// Engine is a database engine to run a test on.
type Engine string

// The engines.
const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// Engines returns the engines to test on: SQLite always, PostgreSQL when
// EnvURL is set. When it is not, it says so in the test log.
func Engines(tb testing.TB) []Engine {
	if os.Getenv(EnvURL) == "" {
		tb.Logf("%s is not set: PostgreSQL cases are skipped (make test sets it)", EnvURL)
		return []Engine{SQLite}
	}
	return []Engine{SQLite, Postgres}
}

// RequirePostgres skips the test, saying why, when EnvURL is not set.
func RequirePostgres(tb testing.TB) {
	if os.Getenv(EnvURL) == "" {
		tb.Skipf("%s is not set: this test needs PostgreSQL (make test sets it)", EnvURL)
	}
}

// Open returns a migrated database on engine e, closed (and on PostgreSQL
// dropped) when the test ends.
func Open(tb testing.TB, e Engine) *store.DB {
	tb.Helper()
	db, _ := OpenURL(tb, e)
	return db
}

// OpenURL is Open that also returns the PostgreSQL URL of the new database
// (for tests that start more processes on it) or, for SQLite, its data
// directory.
func OpenURL(tb testing.TB, e Engine) (*store.DB, string) {
	tb.Helper()
	ctx := context.Background()
	var dbURL, dir string
	if e == Postgres {
		dbURL = CreatePostgres(tb)
	} else {
		dir = tb.TempDir()
	}
	db, err := store.OpenDB(ctx, dbURL, dir)
	if err != nil {
		tb.Fatalf("open %s: %v", e, err)
	}
	tb.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		tb.Fatalf("migrate %s: %v", e, err)
	}
	if e == Postgres {
		return db, dbURL
	}
	return db, dir
}

// CreatePostgres creates an empty database with a unique name on the server
// of EnvURL, drops it when the test ends, and returns its URL.
func CreatePostgres(tb testing.TB) string {
	tb.Helper()
	RequirePostgres(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, os.Getenv(EnvURL))
	if err != nil {
		tb.Fatalf("connect to %s: %v", EnvURL, err)
	}
	defer admin.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "connmgr_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, os.Getenv(EnvURL))
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(os.Getenv(EnvURL))
	if err != nil {
		tb.Fatalf("%s: %v", EnvURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

// TableText returns every column of every row of table as text ([]byte
// as a string), for tests that look for plaintext secrets at rest.
func TableText(tb testing.TB, db *gorm.DB, table string) []string {
	tb.Helper()
	rows, err := db.Raw("SELECT * FROM " + table).Rows()
	if err != nil {
		tb.Fatalf("select %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			tb.Fatal(err)
		}
		for _, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			out = append(out, fmt.Sprint(v))
		}
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// KeyRing returns a key ring with one fresh key, id "test".
func KeyRing(tb testing.TB) *keyring.KeyRing {
	tb.Helper()
	spec, err := keyring.GenerateKeySpec("test")
	if err != nil {
		tb.Fatal(err)
	}
	ring, err := keyring.ParseKeyRing(spec)
	if err != nil {
		tb.Fatal(err)
	}
	return ring
}
