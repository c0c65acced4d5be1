package audit_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

var testKey = []byte("audit-test-fingerprint-key-32byt")

// t0 is the start of the test clock.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// clock is a settable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// testEnv is a migrated database on one engine with an audit log on it.
type testEnv struct {
	engine storetest.Engine
	db     *store.DB
	log    *audit.Log
	clock  *clock
}

func newEnv(t *testing.T, engine storetest.Engine) *testEnv {
	t.Helper()
	db := storetest.Open(t, engine)
	c := &clock{t: t0}
	log := audit.New(store.NewAuditEvents(db), testKey)
	log.Now = c.Now
	return &testEnv{engine: engine, db: db, log: log, clock: c}
}

// forEngine runs f on a fresh database for every engine under test.
func forEngine(t *testing.T, f func(t *testing.T, env *testEnv)) {
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) { f(t, newEnv(t, engine)) })
	}
}

var canary = storetest.Canary

// all returns every event of the log, oldest first.
func all(t *testing.T, s *audit.Log, f audit.Filter) []audit.Event {
	t.Helper()
	var events []audit.Event
	for {
		page, more, err := s.List(context.Background(), f)
		if err != nil {
			t.Fatalf("List(%+v) = %v", f, err)
		}
		events = append(events, page...)
		if !more {
			break
		}
		f.Before = page[len(page)-1].ID
	}
	slices.Reverse(events)
	return events
}

func actions(events []audit.Event) []string {
	var as []string
	for _, e := range events {
		as = append(as, e.Action)
	}
	return as
}

func TestRecordList(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		at := time.Date(2026, 11, 26, 10, 30, 15, 123456789, time.FixedZone("CET", 3600))
		want := audit.Event{At: at, Actor: "alice", Action: audit.ActionConnectionUpdated, Connection: "Conn_A",
			Detail: map[string]any{"changed": []any{"baseUrl", "headers"}, "credentialsReset": true,
				"note": `quotes " and \ and ünïcode`}, RequestID: "req-1"}
		if err := env.log.Record(ctx, want); err != nil {
			t.Fatalf("Record = %v", err)
		}
		if err := env.log.Record(ctx, audit.Event{Action: audit.ActionConnectionDeleted, Connection: "Conn_A"}); err != nil {
			t.Fatalf("Record(no detail) = %v", err)
		}

		got, more, err := env.log.List(ctx, audit.Filter{})
		if err != nil || more || len(got) != 2 {
			t.Fatalf("List = %d events, more %v, %v; want 2, false, nil", len(got), more, err)
		}
		if got[0].ID <= got[1].ID {
			t.Errorf("List IDs = %d, %d; want newest first", got[0].ID, got[1].ID)
		}
		want.ID = got[1].ID
		want.At = at.UTC().Truncate(time.Microsecond)
		if !reflect.DeepEqual(got[1], want) {
			t.Errorf("List()[1] = %+v, want %+v", got[1], want)
		}
		deleted := audit.Event{ID: got[0].ID, At: t0, Actor: audit.SystemActor, Action: audit.ActionConnectionDeleted,
			Connection: "Conn_A", Detail: map[string]any{}}
		if !reflect.DeepEqual(got[0], deleted) {
			t.Errorf("List()[0] = %+v, want %+v", got[0], deleted)
		}
	})
}

func TestRecordInvalid(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for _, tt := range []struct {
			name string
			e    audit.Event
		}{
			{"no action", audit.Event{Actor: "alice"}},
			{"detail not JSON", audit.Event{Action: audit.ActionConnectionTested, Detail: map[string]any{"f": func() {}}}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if err := env.log.Record(ctx, tt.e); err == nil {
					t.Errorf("Record(%+v) = nil, want an error", tt.e)
				}
			})
		}
		if events := all(t, env.log, audit.Filter{}); len(events) != 0 {
			t.Errorf("log after invalid records = %+v, want empty", events)
		}
	})
}

func TestWithRequest(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		req := audit.WithRequest(context.Background(), "alice", "req-7")
		c := &connections.Connection{Name: "Conn_A"}
		tests := []struct {
			name         string
			record       func() error
			actor, reqID string
		}{
			{"from the context", func() error {
				return env.log.Record(req, audit.Event{Action: audit.ActionConnectionTested})
			}, "alice", "req-7"},
			{"explicit actor wins", func() error {
				return env.log.Record(req, audit.Event{Action: audit.ActionConnectionTested, Actor: "bob"})
			}, "bob", "req-7"},
			{"explicit request id wins", func() error {
				return env.log.Record(req, audit.Event{Action: audit.ActionConnectionTested, RequestID: "req-8"})
			}, "alice", "req-8"},
			{"no request: connmgr itself", func() error {
				return env.log.Record(context.Background(), audit.Event{Action: audit.ActionConnectionTested})
			}, audit.SystemActor, ""},
			{"status observer", func() error {
				env.log.StatusChanged(req, c, connections.StatusDraft, connections.StatusConfigured, "ok")
				return nil
			}, "alice", "req-7"},
			{"change observer without actor", func() error {
				env.log.ConnectionChanged(req, connections.Change{Old: c})
				return nil
			}, "alice", "req-7"},
			{"change observer actor wins", func() error {
				env.log.ConnectionChanged(req, connections.Change{Old: c, Actor: "carol"})
				return nil
			}, "carol", "req-7"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.record(); err != nil {
					t.Fatalf("Record = %v", err)
				}
				got, _, err := env.log.List(context.Background(), audit.Filter{Limit: 1})
				if err != nil || len(got) != 1 {
					t.Fatalf("List = %v, %v", got, err)
				}
				if got[0].Actor != tt.actor || got[0].RequestID != tt.reqID {
					t.Errorf("recorded actor %q, request id %q; want %q, %q", got[0].Actor, got[0].RequestID, tt.actor, tt.reqID)
				}
			})
		}
	})
}

func TestListFilter(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		seed := []struct {
			at                        time.Duration
			actor, action, connection string
		}{
			{0, "alice", audit.ActionConnectionCreated, "Conn_A"},
			{time.Minute, "bob", audit.ActionConnectionCreated, "Conn_B"},
			{2*time.Minute + 500*time.Millisecond, "alice", audit.ActionConnectionUpdated, "Conn_A"},
			{3 * time.Minute, audit.SystemActor, audit.ActionStatusChanged, "Conn_A"},
			{4 * time.Minute, "bob", audit.ActionConnectionDeleted, "Conn_B"},
			{5 * time.Minute, "alice", audit.ActionAPIKeyCreated, ""},
		}
		for i, s := range seed {
			env.clock.Set(t0.Add(s.at))
			e := audit.Event{Actor: s.actor, Action: s.action, Connection: s.connection, RequestID: fmt.Sprintf("e%d", i+1)}
			if err := env.log.Record(ctx, e); err != nil {
				t.Fatalf("Record(%+v) = %v", e, err)
			}
		}
		cet := time.FixedZone("CET", 3600)
		tests := []struct {
			name   string
			filter audit.Filter
			want   []string // request ids, newest first
		}{
			{"all", audit.Filter{}, []string{"e6", "e5", "e4", "e3", "e2", "e1"}},
			{"connection", audit.Filter{Connection: "Conn_A"}, []string{"e4", "e3", "e1"}},
			{"no connection is not a filter", audit.Filter{Connection: ""}, []string{"e6", "e5", "e4", "e3", "e2", "e1"}},
			{"actor", audit.Filter{Actor: "alice"}, []string{"e6", "e3", "e1"}},
			{"actor connmgr", audit.Filter{Actor: audit.SystemActor}, []string{"e4"}},
			{"action", audit.Filter{Action: audit.ActionConnectionCreated}, []string{"e2", "e1"}},
			{"since is inclusive", audit.Filter{Since: t0.Add(2*time.Minute + 500*time.Millisecond)}, []string{"e6", "e5", "e4", "e3"}},
			{"since a microsecond later", audit.Filter{Since: t0.Add(2*time.Minute + 500*time.Millisecond + time.Microsecond)}, []string{"e6", "e5", "e4"}},
			{"since, other zone", audit.Filter{Since: t0.Add(2 * time.Minute).In(cet)}, []string{"e6", "e5", "e4", "e3"}},
			{"until is exclusive", audit.Filter{Until: t0.Add(2*time.Minute + 500*time.Millisecond)}, []string{"e2", "e1"}},
			{"until, other zone", audit.Filter{Until: t0.Add(3 * time.Minute).In(cet)}, []string{"e3", "e2", "e1"}},
			{"time range", audit.Filter{Since: t0.Add(time.Minute), Until: t0.Add(4 * time.Minute)}, []string{"e4", "e3", "e2"}},
			{"empty time range", audit.Filter{Since: t0.Add(4 * time.Minute), Until: t0.Add(time.Minute)}, nil},
			{"connection and actor", audit.Filter{Connection: "Conn_A", Actor: "alice"}, []string{"e3", "e1"}},
			{"connection, actor and time", audit.Filter{Connection: "Conn_A", Actor: "alice", Since: t0.Add(time.Second)}, []string{"e3"}},
			{"connection and action", audit.Filter{Connection: "Conn_B", Action: audit.ActionConnectionDeleted}, []string{"e5"}},
			{"all filters and a cursor", audit.Filter{Connection: "Conn_A", Actor: "alice", Action: audit.ActionConnectionCreated,
				Since: t0, Until: t0.Add(time.Hour), Before: 100}, []string{"e1"}},
			{"no match", audit.Filter{Actor: "mallory"}, nil},
			{"no match for a pattern", audit.Filter{Connection: "Conn_%"}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				events, more, err := env.log.List(ctx, tt.filter)
				if err != nil {
					t.Fatalf("List(%+v) = %v", tt.filter, err)
				}
				var got []string
				for _, e := range events {
					got = append(got, e.RequestID)
				}
				if !slices.Equal(got, tt.want) || more {
					t.Errorf("List(%+v) = %q, more %v; want %q, more false", tt.filter, got, more, tt.want)
				}
			})
		}
	})
}

func TestListPaging(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for i := range 7 {
			conn := "Conn_A"
			if i%2 == 1 {
				conn = "Conn_B"
			}
			if err := env.log.Record(ctx, audit.Event{Action: audit.ActionConnectionTested, Connection: conn,
				RequestID: fmt.Sprint(i + 1)}); err != nil {
				t.Fatal(err)
			}
		}
		pages := func(f audit.Filter) (got [][]string, mores []bool) {
			for {
				events, more, err := env.log.List(ctx, f)
				if err != nil {
					t.Fatalf("List(%+v) = %v", f, err)
				}
				var page []string
				for _, e := range events {
					page = append(page, e.RequestID)
				}
				got, mores = append(got, page), append(mores, more)
				if !more || len(got) > 10 {
					return got, mores
				}
				f.Before = events[len(events)-1].ID
			}
		}
		tests := []struct {
			name   string
			filter audit.Filter
			want   [][]string
			more   []bool
		}{
			{"pages of 3", audit.Filter{Limit: 3}, [][]string{{"7", "6", "5"}, {"4", "3", "2"}, {"1"}}, []bool{true, true, false}},
			{"exact pages", audit.Filter{Limit: 7}, [][]string{{"7", "6", "5", "4", "3", "2", "1"}}, []bool{false}},
			{"pages of 1", audit.Filter{Limit: 1, Connection: "Conn_B"}, [][]string{{"6"}, {"4"}, {"2"}}, []bool{true, true, false}},
			{"filtered pages", audit.Filter{Limit: 2, Connection: "Conn_A"}, [][]string{{"7", "5"}, {"3", "1"}}, []bool{true, false}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, more := pages(tt.filter)
				if !reflect.DeepEqual(got, tt.want) || !slices.Equal(more, tt.more) {
					t.Errorf("pages of List(%+v) = %q, more %v; want %q, more %v", tt.filter, got, more, tt.want, tt.more)
				}
			})
		}

		first, _, err := env.log.List(ctx, audit.Filter{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name   string
			before int64
			want   int
		}{
			{"before the newest", first[0].ID, 6},
			{"before the oldest", first[0].ID - 6, 0},
			{"before a future id", first[0].ID + 100, 7},
			{"zero is no cursor", 0, 7},
		} {
			t.Run(tt.name, func(t *testing.T) {
				events, _, err := env.log.List(ctx, audit.Filter{Before: tt.before})
				if err != nil || len(events) != tt.want {
					t.Errorf("List(Before %d) = %d events, %v; want %d", tt.before, len(events), err, tt.want)
				}
				for _, e := range events {
					if e.ID >= tt.before && tt.before > 0 {
						t.Errorf("List(Before %d) returned event %d", tt.before, e.ID)
					}
				}
			})
		}

		// An event recorded while paging shows on the next fresh start, not
		// in the middle of the pages.
		page1, _, _ := env.log.List(ctx, audit.Filter{Limit: 3})
		if err := env.log.Record(ctx, audit.Event{Action: audit.ActionConnectionTested, RequestID: "8"}); err != nil {
			t.Fatal(err)
		}
		page2, _, _ := env.log.List(ctx, audit.Filter{Limit: 3, Before: page1[2].ID})
		if page2[0].RequestID != "4" {
			t.Errorf("second page after a new event starts with %q, want %q", page2[0].RequestID, "4")
		}
	})
}

func TestListLimit(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		const n = audit.MaxLimit + 1
		for i := range n {
			if err := env.log.Record(ctx, audit.Event{Action: audit.ActionConnectionTested, RequestID: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			limit int
			want  int
		}{
			{1, 1}, {2, 2}, {audit.MaxLimit - 1, audit.MaxLimit - 1}, {audit.MaxLimit, audit.MaxLimit},
			{audit.MaxLimit + 1, audit.MaxLimit}, {1 << 30, audit.MaxLimit}, {0, audit.MaxLimit}, {-1, audit.MaxLimit},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
				events, more, err := env.log.List(ctx, audit.Filter{Limit: tt.limit})
				if err != nil || len(events) != tt.want || !more {
					t.Errorf("List(Limit %d) = %d events, more %v, %v; want %d, more true", tt.limit, len(events), more, err, tt.want)
				}
				if len(events) > 0 && events[0].RequestID != fmt.Sprint(n-1) {
					t.Errorf("List(Limit %d) starts with %q, want the newest, %q", tt.limit, events[0].RequestID, fmt.Sprint(n-1))
				}
			})
		}
		last, more, err := env.log.List(ctx, audit.Filter{Limit: 2, Before: 3})
		if err != nil || len(last) != 2 || more {
			t.Errorf("List(Limit 2, Before 3) = %d events, more %v, %v; want 2, more false", len(last), more, err)
		}
	})
}

func TestAppendOnly(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for _, a := range []string{"alice", "bob"} {
			if err := env.log.Record(ctx, audit.Event{Actor: a, Action: audit.ActionConnectionCreated, Connection: "Conn_A"}); err != nil {
				t.Fatal(err)
			}
		}
		before := all(t, env.log, audit.Filter{})
		statements := []string{
			"UPDATE audit_events SET actor = 'mallory'",
			"UPDATE audit_events SET detail = '{}' WHERE actor = 'alice'",
			"UPDATE audit_events SET id = id + 100",
			"DELETE FROM audit_events",
			"DELETE FROM audit_events WHERE actor = 'bob'",
		}
		if env.engine == storetest.Postgres {
			statements = append(statements, "TRUNCATE audit_events")
		}
		for _, stmt := range statements {
			t.Run(stmt, func(t *testing.T) {
				err := env.db.Exec(stmt).Error
				if err == nil || !strings.Contains(err.Error(), "append-only") {
					t.Errorf("Exec(%q) = %v, want the append-only error", stmt, err)
				}
			})
		}
		if after := all(t, env.log, audit.Filter{}); !reflect.DeepEqual(after, before) {
			t.Errorf("log after refused writes = %+v, want %+v", after, before)
		}
		if err := env.log.Record(ctx, audit.Event{Action: audit.ActionConnectionDeleted}); err != nil {
			t.Errorf("Record after refused writes = %v", err)
		}
	})
}

func TestFingerprint(t *testing.T) {
	s := audit.New(nil, testKey)
	other := audit.New(nil, []byte("another-key-of-enough-length-32b"))
	format := regexp.MustCompile(`^hmac-sha256:[0-9a-f]{16}$`)
	secret := canary("secret")
	fp := s.Fingerprint(secret)
	for _, tt := range []struct {
		name string
		got  string
		same bool
	}{
		{"same secret", s.Fingerprint(secret), true},
		{"other secret", s.Fingerprint(secret + "x"), false},
		{"empty secret", s.Fingerprint(""), false},
		{"other key", other.Fingerprint(secret), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !format.MatchString(tt.got) {
				t.Errorf("Fingerprint = %q, want %s", tt.got, format)
			}
			if (tt.got == fp) != tt.same {
				t.Errorf("Fingerprint = %q, first %q: same %v, want %v", tt.got, fp, tt.got == fp, tt.same)
			}
			if strings.Contains(tt.got, secret) {
				t.Errorf("Fingerprint = %q contains the secret", tt.got)
			}
		})
	}
	if got, want := s.Fingerprint("password"), "hmac-sha256:"+hmacPrefix(testKey, "password"); got != want {
		t.Errorf("Fingerprint(%q) = %q, want %q", "password", got, want)
	}
	defer func() {
		if recover() == nil {
			t.Errorf("New(short key) did not panic")
		}
	}()
	audit.New(nil, []byte("short"))
}

// closedLog returns a log on a database that is closed.
func closedLog(t *testing.T, engine storetest.Engine, log *slog.Logger) *audit.Log {
	t.Helper()
	db := storetest.Open(t, engine)
	s := audit.New(store.NewAuditEvents(db), testKey)
	s.Logger = log
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUnavailable(t *testing.T) {
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			ctx := context.Background()
			var logs bytes.Buffer
			s := closedLog(t, engine, slog.New(slog.NewJSONHandler(&logs, nil)))
			err := s.Record(ctx, audit.Event{Action: audit.ActionConnectionTested})
			if !errors.Is(err, connections.ErrUnavailable) {
				t.Errorf("Record on a closed database = %v, want ErrUnavailable", err)
			}
			if _, _, err := s.List(ctx, audit.Filter{}); !errors.Is(err, connections.ErrUnavailable) {
				t.Errorf("List on a closed database = %v, want ErrUnavailable", err)
			}

			secret := canary("clientSecret")
			c := &connections.Connection{Name: "Conn_A", Role: connections.RoleInvoke, BaseURL: "https://api.example.com",
				Security: &security.Basic{Username: "u", Password: connections.NewSecret(secret)}}
			observers := []func(){
				func() { s.ConnectionChanged(ctx, connections.Change{New: c, Actor: "alice"}) },
				func() { s.ConnectionChanged(ctx, connections.Change{Old: c, New: c, Actor: "alice"}) },
				func() { s.ConnectionChanged(ctx, connections.Change{Old: c, Actor: "alice"}) },
				func() { s.StatusChanged(ctx, c, connections.StatusDraft, connections.StatusError, "refused") },
				func() { s.TokenFailed(ctx, c, "timeout") },
				func() { s.Consent(ctx, c, audit.ActionConsentStarted, "") },
				func() { s.Tested(ctx, c, &connections.TestResult{Result: connections.TestFailure, Detail: "refused"}) },
				func() { s.APIKey(ctx, audit.ActionAPIKeyCreated, "k1", "ci", "developer") },
				func() { s.TokenFailed(ctx, nil, "no connection") },
			}
			for _, o := range observers {
				o() // must return, not panic
			}
			if got := s.Failures(); got != int64(len(observers)) {
				t.Errorf("Failures() = %d, want %d", got, len(observers))
			}
			if n := strings.Count(logs.String(), "audit event not recorded"); n != len(observers) {
				t.Errorf("log has %d failure lines, want %d:\n%s", n, len(observers), logs.String())
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("log contains the secret:\n%s", logs.String())
			}
		})
	}
	// Without a logger, failures are still counted.
	s := closedLog(t, storetest.SQLite, nil)
	s.Tested(context.Background(), nil, &connections.TestResult{Result: connections.TestSuccess})
	if s.Failures() != 1 {
		t.Errorf("Failures() without a logger = %d, want 1", s.Failures())
	}
}

// TestMigration checks that the audit migration is applied, that applying
// again does nothing, and that it rolls back and forward cleanly.
func TestMigration(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		sqlDB, err := env.db.DB.DB()
		if err != nil {
			t.Fatal(err)
		}
		latest, err := migrations.Latest(env.db.Dialect)
		if err != nil || latest < 2 {
			t.Fatalf("Latest(%s) = %d, %v; want at least 2", env.db.Dialect, latest, err)
		}
		again, err := migrations.Apply(ctx, sqlDB, env.db.Dialect)
		if err != nil || len(again.Applied) != 0 || again.Current != latest {
			t.Errorf("Apply(migrated) = %+v, %v; want nothing applied, Current %d", again, err, latest)
		}
		if err := env.log.Record(ctx, audit.Event{Action: audit.ActionConnectionCreated}); err != nil {
			t.Fatal(err)
		}

		dialect := goose.DialectSQLite3
		if env.db.Dialect == migrations.Postgres {
			dialect = goose.DialectPostgres
		}
		p, err := goose.NewProvider(dialect, sqlDB, os.DirFS("../migrations/"+string(env.db.Dialect)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 1); err != nil {
			t.Fatalf("DownTo(1) = %v", err)
		}
		if err := exists(sqlDB, "audit_events"); err == nil {
			t.Errorf("audit_events exists after DownTo(1)")
		}
		if err := exists(sqlDB, "connections"); err != nil {
			t.Errorf("connections after DownTo(1): %v", err)
		}
		if _, err := migrations.Apply(ctx, sqlDB, env.db.Dialect); err != nil {
			t.Fatalf("Apply after DownTo(1) = %v", err)
		}
		if err := env.log.Record(ctx, audit.Event{Action: audit.ActionConnectionCreated}); err != nil {
			t.Errorf("Record after down and up = %v", err)
		}
		if err := env.db.Exec("DELETE FROM audit_events").Error; err == nil {
			t.Errorf("DELETE after down and up succeeded, want the append-only error")
		}
	})
}

func exists(db *sql.DB, table string) error {
	var n int64
	return db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n)
}

// hmacPrefix returns the first 16 hex digits of HMAC-SHA256(key, s).
func hmacPrefix(key []byte, s string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))[:16]
}
