package migrations_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// openEmpty returns a raw, unmigrated database on engine e, and its dialect.
func openEmpty(t *testing.T, e storetest.Engine) (*sql.DB, migrations.Dialect) {
	t.Helper()
	var url, dir string
	if e == storetest.Postgres {
		url = storetest.CreatePostgres(t)
	} else {
		dir = t.TempDir()
	}
	return openURL(t, url, dir)
}

func openURL(t *testing.T, url, dir string) (*sql.DB, migrations.Dialect) {
	t.Helper()
	db, err := store.OpenDB(context.Background(), url, dir)
	if err != nil {
		t.Fatalf("OpenDB: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	sqlDB, err := db.DB.DB()
	if err != nil {
		t.Fatal(err)
	}
	return sqlDB, db.Dialect
}

var tables = []string{"connections", "connection_secrets", "tokens", "oauth_states", "api_keys", "audit_events",
	"key_checks", "instance_secrets"}

func versions(latest int64) []int64 {
	var vs []int64
	for v := int64(1); v <= latest; v++ {
		vs = append(vs, v)
	}
	return vs
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			db, dialect := openEmpty(t, engine)
			latest, err := migrations.Latest(dialect)
			if err != nil || latest < 1 {
				t.Fatalf("Latest(%s) = %d, %v", dialect, latest, err)
			}

			first, err := migrations.Apply(ctx, db, dialect)
			if err != nil {
				t.Fatalf("Apply(empty) = %v", err)
			}
			if want := versions(latest); !slices.Equal(first.Applied, want) || first.Current != latest {
				t.Errorf("Apply(empty) = %+v, want Applied %v, Current %d", first, want, latest)
			}
			for _, table := range tables {
				var n int64
				if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
					t.Errorf("table %s after Apply: %v", table, err)
				}
			}

			again, err := migrations.Apply(ctx, db, dialect)
			if err != nil {
				t.Fatalf("Apply(up to date) = %v", err)
			}
			if len(again.Applied) != 0 || again.Current != first.Current {
				t.Errorf("Apply(up to date) = %+v, want nothing applied, Current %d", again, first.Current)
			}
		})
	}
}

// TestLatestAgree: Latest is the newest file's version, at least 4 (the
// health and fingerprint columns), and the same on both engines.
func TestLatestAgree(t *testing.T) {
	var latest []int64
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		entries, err := os.ReadDir(string(d))
		if err != nil {
			t.Fatal(err)
		}
		var newest int64
		for _, e := range entries {
			var v int64
			if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err == nil && strings.HasSuffix(e.Name(), ".sql") {
				newest = max(newest, v)
			}
		}
		got, err := migrations.Latest(d)
		if err != nil || got != newest || got < 4 {
			t.Errorf("Latest(%s) = %d, %v, want %d (the newest file), at least 4", d, got, err, newest)
		}
		latest = append(latest, got)
	}
	if latest[0] != latest[1] {
		t.Errorf("Latest(postgres) = %d, Latest(sqlite) = %d, want the same versions on both", latest[0], latest[1])
	}
	if _, err := migrations.Latest("mysql"); err == nil {
		t.Errorf("Latest(mysql) = nil error, want an error")
	}
}

// TestApplyConcurrently runs Apply from three "processes" (pools) at once on
// one fresh PostgreSQL database: all succeed and each version runs once.
func TestApplyConcurrently(t *testing.T) {
	storetest.RequirePostgres(t)
	ctx := context.Background()
	url := storetest.CreatePostgres(t)
	const n = 3
	dbs := make([]*sql.DB, n)
	for i := range dbs {
		dbs[i], _ = openURL(t, url, "")
	}
	results := make([]migrations.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = migrations.Apply(ctx, dbs[i], migrations.Postgres) })
	}
	wg.Wait()

	latest, _ := migrations.Latest(migrations.Postgres)
	var applied []int64
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Apply #%d = %v", i, errs[i])
		}
		if results[i].Current != latest {
			t.Errorf("Apply #%d Current = %d, want %d", i, results[i].Current, latest)
		}
		applied = append(applied, results[i].Applied...)
	}
	slices.Sort(applied)
	if want := versions(latest); !slices.Equal(applied, want) {
		t.Errorf("versions applied by all calls = %v, want each of %v once", applied, want)
	}
	var rows int64
	if err := dbs[0].QueryRowContext(ctx, "SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != latest {
		t.Errorf("goose_db_version holds %d applied versions, want %d", rows, latest)
	}
}

// TestMigration4OverRows applies migration 00004 (and any later one) to a
// database at 00003
// that holds connections and tokens, as an upgrade does: it backfills the
// search text the store writes, status_since and the token refresh
// bookkeeping, and the store reads the rows afterwards.
func TestMigration4OverRows(t *testing.T) {
	ctx := context.Background()
	type conn struct {
		name, keywords string
		search         string // what the store would write
	}
	conns := []conn{
		{"Conn_Orders", `["Orders", "Finance"]`, "conn_orders\norders\nfinance"},
		{"Conn_Bare", `[]`, "conn_bare"},
		{"Conn_Odd", `["100%", "a_b", "back\\slash", "\"quoted\""]`, "conn_odd\n100%\na_b\nback\\slash\n\"quoted\""},
	}
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			var url, dir string
			if engine == storetest.Postgres {
				url = storetest.CreatePostgres(t)
			} else {
				dir = t.TempDir()
			}
			db, err := store.OpenDB(ctx, url, dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			sqlDB, err := db.DB.DB()
			if err != nil {
				t.Fatal(err)
			}
			dialect := goose.DialectSQLite3
			if db.Dialect == migrations.Postgres {
				dialect = goose.DialectPostgres
			}
			p, err := goose.NewProvider(dialect, sqlDB, os.DirFS(string(db.Dialect)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, 3); err != nil {
				t.Fatalf("UpTo(3) = %v", err)
			}
			updated := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
			obtained := updated.Add(time.Hour)
			for i, c := range conns {
				if err := db.Exec(`INSERT INTO connections (name, identifier, keywords, role, base_url, policy, status, version,
					created_at, updated_at) VALUES (?, ?, ?, 'INVOKE', 'https://api.example.com', 'NONE', 'CONFIGURED', 1, ?, ?)`,
					c.name, c.name, c.keywords, updated, updated.Add(time.Duration(i)*time.Minute)).Error; err != nil {
					t.Fatalf("insert %s: %v", c.name, err)
				}
			}
			if err := db.Exec(`INSERT INTO tokens (connection_id, access_token, obtained_at, expires_at, version, updated_at)
				SELECT id, ?, ?, ?, 1, ? FROM connections WHERE name = 'Conn_Orders'`,
				[]byte("sealed"), obtained, obtained.Add(time.Hour), obtained).Error; err != nil {
				t.Fatalf("insert token: %v", err)
			}

			latest, _ := migrations.Latest(db.Dialect)
			res, err := migrations.Apply(ctx, sqlDB, db.Dialect)
			if err != nil || !slices.Equal(res.Applied, versions(latest)[3:]) || res.Current != latest {
				t.Fatalf("Apply(at 3, with rows) = %+v, %v, want Applied 4 to %d", res, err, latest)
			}
			for _, c := range conns {
				var got struct {
					Search      string
					Fingerprint string
					Reason      string
					Since       int64
				}
				if err := db.Raw(`SELECT search, fingerprint, status_reason AS reason,
					(SELECT COUNT(*) FROM connections c2 WHERE c2.id = connections.id AND c2.status_since = c2.updated_at) AS since
					FROM connections WHERE name = ?`, c.name).Scan(&got).Error; err != nil {
					t.Fatal(err)
				}
				if got.Search != c.search || got.Fingerprint != "" || got.Reason != "" || got.Since != 1 {
					t.Errorf("%s after 00004: search %q, fingerprint %q, reason %q, statusSince = updatedAt %v; want %q, \"\", \"\", true",
						c.name, got.Search, got.Fingerprint, got.Reason, got.Since == 1, c.search)
				}
			}
			if n := storetest.Count(t, db.DB, "SELECT COUNT(*) FROM tokens WHERE last_refresh_at = obtained_at AND fingerprint = '' AND NOT needs_consent"); n != 1 {
				t.Errorf("tokens with last_refresh_at backfilled = %d, want 1", n)
			}
			if engine == storetest.Postgres {
				// 20% of a one-hour lifetime before expiry.
				if n := storetest.Count(t, db.DB, "SELECT COUNT(*) FROM tokens WHERE refresh_at = expires_at - interval '12 minutes'"); n != 1 {
					t.Errorf("tokens with refresh_at backfilled = %d, want 1", n)
				}
			}

			// The store reads and searches the migrated rows.
			cs := store.NewConnections(db, storetest.KeyRing(t))
			for q, want := range map[string][]string{"FIN": {"Conn_Orders"}, "conn_": {"Conn_Bare", "Conn_Odd", "Conn_Orders"},
				"%": {"Conn_Odd"}, `"quoted`: {"Conn_Odd"}, `\"`: nil, `["`: nil} {
				list, _, err := cs.List(ctx, connections.Filter{Q: q})
				var got []string
				for _, c := range list {
					got = append(got, c.Name)
				}
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("List(Q: %q) after 00004 = %q, %v, want %q", q, got, err, want)
				}
			}
			c, err := cs.Get(ctx, "Conn_Orders")
			if err != nil || !c.StatusSince.Equal(updated) || c.Status != connections.StatusConfigured {
				t.Errorf("Get(Conn_Orders) after 00004 = %+v, %v, want statusSince %v", c, err, updated)
			}
		})
	}
}
