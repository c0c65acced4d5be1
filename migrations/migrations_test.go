package migrations_test

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"testing"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/connectionstest"
	"github.com/connmgr/connmgr/migrations"
)

// openEmpty returns a raw, unmigrated database on engine e, and its dialect.
func openEmpty(t *testing.T, e connectionstest.Engine) (*sql.DB, migrations.Dialect) {
	t.Helper()
	var url, dir string
	if e == connectionstest.Postgres {
		url = connectionstest.CreatePostgres(t)
	} else {
		dir = t.TempDir()
	}
	return openURL(t, url, dir)
}

func openURL(t *testing.T, url, dir string) (*sql.DB, migrations.Dialect) {
	t.Helper()
	db, err := connections.OpenDB(context.Background(), url, dir)
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

var tables = []string{"connections", "connection_secrets", "tokens", "oauth_states", "api_keys"}

func versions(latest int64) []int64 {
	var vs []int64
	for v := int64(1); v <= latest; v++ {
		vs = append(vs, v)
	}
	return vs
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	for _, engine := range connectionstest.Engines(t) {
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

func TestLatestAgree(t *testing.T) {
	pg, err := migrations.Latest(migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	lite, err := migrations.Latest(migrations.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if pg != lite {
		t.Errorf("Latest(postgres) = %d, Latest(sqlite) = %d, want the same versions on both", pg, lite)
	}
	if _, err := migrations.Latest("mysql"); err == nil {
		t.Errorf("Latest(mysql) = nil error, want an error")
	}
}

// TestApplyConcurrently runs Apply from three "processes" (pools) at once on
// one fresh PostgreSQL database: all succeed and each version runs once.
func TestApplyConcurrently(t *testing.T) {
	connectionstest.RequirePostgres(t)
	ctx := context.Background()
	url := connectionstest.CreatePostgres(t)
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
