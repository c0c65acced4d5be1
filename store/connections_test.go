package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// TestFullConnection guards the round-trip tests: fullConnection must set
// every field a connection and its policy have, so that a new field the
// store forgets to keep fails TestStoreRoundTrip.
func TestFullConnection(t *testing.T) {
	setByCreate := []string{"Connection.ID", "Connection.Version", "Connection.CreatedAt", "Connection.UpdatedAt"}
	var unset []string
	for _, f := range zeroFields(reflect.ValueOf(fullConnection("Conn_Full")), "Connection") {
		if !slices.Contains(setByCreate, f) {
			unset = append(unset, f)
		}
	}
	if len(unset) > 0 {
		t.Errorf("fullConnection leaves %q unset; set them so the store tests cover them", unset)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	type roundTrip struct {
		name string
		conn func(name string) *connections.Connection
	}
	tests := []roundTrip{{name: "every field", conn: fullConnection}}
	for _, p := range security.Policies() {
		tests = append(tests, roundTrip{name: string(p), conn: func(name string) *connections.Connection { return sample(name, p) }})
	}
	tests = append(tests, roundTrip{name: "API key in query, empty prefix", conn: func(name string) *connections.Connection {
		c := sample(name, security.PolicyAPIKey)
		k := c.Security.(*security.APIKey)
		k.In, k.Name, k.ValuePrefix = security.InQuery, "api_key", ptr("")
		return c
	}})
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := tt.conn(fmt.Sprintf("Conn_%d", i))
				before := time.Now().Add(-time.Second)
				if err := env.conns.Create(ctx, c); err != nil {
					t.Fatalf("Create: %v", err)
				}
				if c.ID <= 0 || c.Version != 1 || c.CreatedAt.Before(before) || c.CreatedAt.After(time.Now()) ||
					!c.UpdatedAt.Equal(c.CreatedAt) {
					t.Errorf("Create set ID %d, Version %d, CreatedAt %v, UpdatedAt %v; want an ID, 1, now, now",
						c.ID, c.Version, c.CreatedAt, c.UpdatedAt)
				}
				got, err := env.conns.Get(ctx, c.Name)
				if err != nil {
					t.Fatalf("Get(%q) = %v", c.Name, err)
				}
				storetest.CheckSame(t, fmt.Sprintf("Get(%q)", c.Name), got, c)
				byID, err := env.conns.GetByID(ctx, c.ID)
				if err != nil {
					t.Fatalf("GetByID(%d) = %v", c.ID, err)
				}
				storetest.CheckSame(t, fmt.Sprintf("GetByID(%d)", c.ID), byID, c)
				list, _, err := env.conns.List(ctx, connections.Filter{Q: c.Name})
				if err != nil || len(list) != 1 {
					t.Fatalf("List(Q: %q) = %d connections, %v, want 1", c.Name, len(list), err)
				}
				storetest.CheckSame(t, fmt.Sprintf("List(Q: %q)[0]", c.Name), list[0], c)
			})
		}
	})
}

func TestStoreUpdate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := fullConnection("Conn_Update")
		if err := env.conns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		created := *c

		// Every mutable field changes; optional ones are cleared, secrets
		// left unset are dropped (the service carries them, not the store).
		u := sample("Conn_Update", security.PolicyBasic)
		u.ID, u.Version, u.CreatedAt, u.CreatedBy, u.UpdatedBy = c.ID, c.Version, c.CreatedAt, c.CreatedBy, "carol"
		u.Description, u.Keywords, u.Role = "changed", []string{"new"}, connections.RoleTrigger
		u.Status, u.StatusSince, u.Fingerprint = connections.StatusDraft, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), "fp-2"
		time.Sleep(2 * time.Millisecond) // UpdatedAt must move
		if err := env.conns.Update(ctx, u, false); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if u.Version != 2 || !u.UpdatedAt.After(created.UpdatedAt) {
			t.Errorf("Update set Version %d, UpdatedAt %v; want 2, after %v", u.Version, u.UpdatedAt, created.UpdatedAt)
		}
		got, err := env.conns.Get(ctx, u.Name)
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckSame(t, "Get after Update", got, u)
		if n := storetest.Count(t, env.db.DB, "SELECT COUNT(*) FROM connection_secrets WHERE connection_id = ?", c.ID); n != 1 {
			t.Errorf("connection_secrets holds %d rows after an update to BASIC, want 1", n)
		}

		// Back to every field: the cleared fields come back.
		full := fullConnection("Conn_Update")
		full.ID, full.Version, full.CreatedAt = u.ID, u.Version, u.CreatedAt
		if err := env.conns.Update(ctx, full, false); err != nil {
			t.Fatalf("Update: %v", err)
		}
		got, err = env.conns.Get(ctx, full.Name)
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckSame(t, "Get after second Update", got, full)
	})
}

func TestStoreErrors(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := sample("Conn_REST_Orders", security.PolicyBasic)
		if err := env.conns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		stale := c.Clone()
		newer := c.Clone()
		newer.Description = "newer"
		if err := env.conns.Update(ctx, newer, false); err != nil {
			t.Fatal(err)
		}
		before, err := env.conns.Get(ctx, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		secrets := storetest.Count(t, env.db.DB, "SELECT COUNT(*) FROM connection_secrets")

		tests := []struct {
			name string
			op   func() error
			want error
		}{
			{name: "create duplicate", want: connections.ErrExists,
				op: func() error { return env.conns.Create(ctx, sample("Conn_REST_Orders", security.PolicyBasic)) }},
			{name: "create same identifier", want: connections.ErrExists,
				op: func() error { return env.conns.Create(ctx, sample("CONN_rest_orders", security.PolicyBasic)) }},
			{name: "get missing", want: connections.ErrNotFound,
				op: func() error { _, err := env.conns.Get(ctx, "Conn_Missing"); return err }},
			{name: "get other case", want: connections.ErrNotFound,
				op: func() error { _, err := env.conns.Get(ctx, "conn_rest_orders"); return err }},
			{name: "get by missing id", want: connections.ErrNotFound,
				op: func() error { _, err := env.conns.GetByID(ctx, c.ID+1000); return err }},
			{name: "update missing", want: connections.ErrNotFound,
				op: func() error {
					m := sample("Conn_Missing", security.PolicyNone)
					m.ID, m.Version = c.ID+1000, 1
					return env.conns.Update(ctx, m, true)
				}},
			{name: "update stale version", want: connections.ErrVersionMismatch,
				op: func() error { s := stale.Clone(); s.Description = "lost update"; return env.conns.Update(ctx, s, true) }},
			{name: "delete missing", want: connections.ErrNotFound,
				op: func() error { _, err := env.conns.Delete(ctx, "Conn_Missing", 0); return err }},
			{name: "delete stale version", want: connections.ErrVersionMismatch,
				op: func() error { _, err := env.conns.Delete(ctx, c.Name, 1); return err }},
			{name: "delete future version", want: connections.ErrVersionMismatch,
				op: func() error { _, err := env.conns.Delete(ctx, c.Name, 3); return err }},
			{name: "set status of missing", want: connections.ErrNotFound,
				op: func() error {
					_, err := env.conns.SetStatus(ctx, c.ID+1000, connections.StatusError, "x", nil)
					return err
				}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.op(); !errors.Is(err, tt.want) {
					t.Errorf("%s = %v, want %v", tt.name, err, tt.want)
				}
				after, err := env.conns.Get(ctx, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				storetest.CheckSame(t, "stored connection", after, before)
				if n := storetest.Count(t, env.db.DB, "SELECT COUNT(*) FROM connection_secrets"); n != secrets {
					t.Errorf("connection_secrets holds %d rows, want %d", n, secrets)
				}
			})
		}
	})
}

func TestStoreUpdateResetsCredentials(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		a := sample("Conn_A", security.PolicyClientCredentials)
		b := sample("Conn_B", security.PolicyClientCredentials)
		for _, c := range []*connections.Connection{a, b} {
			if err := env.conns.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			storetest.AddCredentialState(t, env.db.DB, c.ID)
		}
		tests := []struct {
			name            string
			reset           bool
			aTokens, aState int64
		}{
			{name: "keep", reset: false, aTokens: 1, aState: 1},
			{name: "reset", reset: true, aTokens: 0, aState: 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				a.Description = tt.name
				if err := env.conns.Update(ctx, a, tt.reset); err != nil {
					t.Fatal(err)
				}
				if tok, st := storetest.CredentialState(t, env.db.DB, a.ID); tok != tt.aTokens || st != tt.aState {
					t.Errorf("Update(reset %v): tokens, states of A = %d, %d, want %d, %d", tt.reset, tok, st, tt.aTokens, tt.aState)
				}
				if tok, st := storetest.CredentialState(t, env.db.DB, b.ID); tok != 1 || st != 1 {
					t.Errorf("Update(A, reset %v): tokens, states of B = %d, %d, want 1, 1", tt.reset, tok, st)
				}
			})
		}
	})
}

func TestStoreDelete(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		a := fullConnection("Conn_A")
		b := fullConnection("Conn_B")
		for _, c := range []*connections.Connection{a, b} {
			if err := env.conns.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			storetest.AddCredentialState(t, env.db.DB, c.ID)
		}
		deleted, err := env.conns.Delete(ctx, a.Name, a.Version)
		if err != nil {
			t.Fatalf("Delete(%q, %d) = %v", a.Name, a.Version, err)
		}
		if deleted.ID != a.ID || deleted.Name != a.Name || deleted.Version != a.Version {
			t.Errorf("Delete returned %d %q v%d, want %d %q v%d", deleted.ID, deleted.Name, deleted.Version, a.ID, a.Name, a.Version)
		}
		if _, err := env.conns.Get(ctx, a.Name); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Get(%q) after Delete = %v, want ErrNotFound", a.Name, err)
		}
		tables := []struct {
			table, column string
			a, b          int64
		}{
			{"connections", "id", 0, 1},
			{"connection_secrets", "connection_id", 0, 3},
			{"tokens", "connection_id", 0, 1},
			{"oauth_states", "connection_id", 0, 1},
		}
		for _, tt := range tables {
			query := "SELECT COUNT(*) FROM " + tt.table + " WHERE " + tt.column + " = ?"
			if n := storetest.Count(t, env.db.DB, query, a.ID); n != tt.a {
				t.Errorf("%s rows of the deleted connection = %d, want %d", tt.table, n, tt.a)
			}
			if n := storetest.Count(t, env.db.DB, query, b.ID); n != tt.b {
				t.Errorf("%s rows of the other connection = %d, want %d", tt.table, n, tt.b)
			}
		}
		if _, err := env.conns.Delete(ctx, a.Name, 0); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Delete(%q) again = %v, want ErrNotFound", a.Name, err)
		}
		if _, err := env.conns.Delete(ctx, b.Name, 0); err != nil {
			t.Errorf("Delete(%q, any version) = %v", b.Name, err)
		}
	})
}

// TestStoreSetStatus: the health fields round-trip. statusSince moves
// when the status changes and only then; the reason and the last test
// (with its steps and latency) are kept as given; the version and
// updatedAt stay, since a status is not a change of the connection.
func TestStoreSetStatus(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := sample("Conn_Status", security.PolicyBasic)
		c.StatusSince = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		if err := env.conns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		steps := func(token, request string) []connections.TestStep {
			return []connections.TestStep{{Step: "token", Result: token}, {Step: "request", Result: request, Detail: "HTTP 200"}}
		}
		ok := &connections.TestResult{At: time.Now().UTC().Truncate(time.Millisecond), Result: connections.TestSuccess,
			Detail: "200 OK", Latency: 87 * time.Millisecond, Steps: steps(connections.TestSkipped, connections.TestSuccess)}
		failed := &connections.TestResult{At: ok.At.Add(time.Minute), Result: connections.TestFailure, Detail: "connection refused",
			Latency: 3 * time.Second, Steps: steps(connections.TestFailure, connections.TestSkipped)}
		tests := []struct {
			name     string
			status   connections.Status
			reason   string
			test     *connections.TestResult
			prev     connections.Status
			lastTest *connections.TestResult
			moved    bool // statusSince moved
		}{
			{name: "tested", status: connections.StatusConfigured, test: ok, prev: connections.StatusDraft, lastTest: ok, moved: true},
			{name: "same status", status: connections.StatusConfigured, prev: connections.StatusConfigured, lastTest: ok},
			{name: "refresh failed", status: connections.StatusError, reason: "token endpoint: 503", prev: connections.StatusConfigured,
				lastTest: ok, moved: true},
			{name: "still failing, new reason", status: connections.StatusError, reason: "token endpoint: timeout",
				prev: connections.StatusError, lastTest: ok},
			{name: "test failed", status: connections.StatusError, reason: "test failed", test: failed, prev: connections.StatusError,
				lastTest: failed},
			{name: "consent", status: connections.StatusNeedsConsent, reason: "invalid_grant: consent again",
				prev: connections.StatusError, lastTest: failed, moved: true},
		}
		want := c.Clone()
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := time.Now().Add(-time.Second)
				prev, err := env.conns.SetStatus(ctx, c.ID, tt.status, tt.reason, tt.test)
				if err != nil || prev != tt.prev {
					t.Errorf("SetStatus(%s) = %s, %v, want %s", tt.status, prev, err, tt.prev)
				}
				got, err := env.conns.Get(ctx, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				if moved := !got.StatusSince.Equal(want.StatusSince); moved != tt.moved ||
					moved && (got.StatusSince.Before(before) || got.StatusSince.After(time.Now())) {
					t.Errorf("SetStatus(%s) after %s: statusSince %v (was %v), want moved %v, to now",
						tt.status, tt.prev, got.StatusSince, want.StatusSince, tt.moved)
				}
				want.Status, want.StatusReason, want.StatusSince, want.LastTest = tt.status, tt.reason, got.StatusSince, tt.lastTest
				storetest.CheckSame(t, "Get after SetStatus", got, want) // same version, same UpdatedAt
			})
		}
	})
}

// listFixture is the set of connections the List tests page through: names
// whose byte order differs from any collation's (case, '-', '_', digits),
// every role, four policies, every status, keywords with LIKE
// metacharacters, JSON syntax and non-ASCII letters.
var listFixture = []struct {
	name     string
	role     connections.Role
	policy   connections.Policy
	status   connections.Status
	keywords []string
}{
	{"Alpha_Orders", connections.RoleInvoke, security.PolicyBasic, connections.StatusDraft, []string{"orders"}},
	{"B-2", connections.RoleTrigger, security.PolicyNone, connections.StatusConfigured, []string{"Ünïcode"}},
	{"B_2", connections.RoleInvoke, security.PolicyAPIKey, connections.StatusError, nil},
	{"Ba", connections.RoleTriggerInvoke, security.PolicyBasic, connections.StatusDraft, []string{"x"}},
	{"Charlie", connections.RoleTriggerInvoke, security.PolicyAPIKey, connections.StatusConfigured, []string{"a_b", "x"}},
	{"Delta_x", connections.RoleInvoke, security.PolicyNone, connections.StatusDraft, nil},
	{"Z", connections.RoleTrigger, security.PolicyClientCredentials, connections.StatusNeedsConsent, []string{"zulu"}},
	{"a-1", connections.RoleInvoke, security.PolicyClientCredentials, connections.StatusError, []string{"100%"}},
	{"a_1", connections.RoleTrigger, security.PolicyNone, connections.StatusConfigured, []string{`"quoted"`}},
	{"aZ", connections.RoleInvoke, security.PolicyBasic, connections.StatusNeedsConsent, []string{"[bracket]"}},
	{"beta-billing", connections.RoleTrigger, security.PolicyNone, connections.StatusDraft, []string{"Finance", "100%"}},
	{"echo", connections.RoleInvoke, security.PolicyClientCredentials, connections.StatusError, []string{`back\slash`}},
}

func createListFixture(t *testing.T, env *testEnv) {
	t.Helper()
	ctx := context.Background()
	if env.engine == storetest.Postgres {
		// Byte order must not depend on the database's collation: give
		// the names one that sorts otherwise ("a" before "B"), if the
		// server has one (test servers often run with C.UTF-8).
		var collation string
		err := env.db.Raw(`SELECT collname FROM pg_collation WHERE collname IN ('und-x-icu', 'en-x-icu', 'en_US.utf8', 'en_US')
			ORDER BY collname DESC LIMIT 1`).Scan(&collation).Error
		if err != nil || collation == "" {
			t.Logf("no non-byte collation on this server (%v): names keep the database's collation", err)
		} else if err := env.db.Exec(`ALTER TABLE connections ALTER COLUMN name TYPE TEXT COLLATE "` + collation + `"`).Error; err != nil {
			t.Fatalf("collate names with %s: %v", collation, err)
		}
	}
	for _, f := range listFixture {
		c := sample(f.name, f.policy)
		c.Role, c.Keywords = f.role, f.keywords
		if err := env.conns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := env.conns.SetStatus(ctx, c.ID, f.status, "", nil); err != nil {
			t.Fatal(err)
		}
	}
}

func names(cs []*connections.Connection) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestStoreList(t *testing.T) {
	all := []string{"Alpha_Orders", "B-2", "B_2", "Ba", "Charlie", "Delta_x", "Z", "a-1", "aZ", "a_1", "beta-billing", "echo"}
	tests := []struct {
		name   string
		filter connections.Filter
		want   []string
		more   bool
		bug    string
	}{
		{name: "all, by name in byte order", filter: connections.Filter{}, want: all},
		{name: "first page", filter: connections.Filter{Limit: 2}, want: []string{"Alpha_Orders", "B-2"}, more: true},
		{name: "middle page", filter: connections.Filter{After: "Charlie", Limit: 2}, want: []string{"Delta_x", "Z"}, more: true},
		{name: "last page, full", filter: connections.Filter{After: "a_1", Limit: 2}, want: []string{"beta-billing", "echo"}},
		{name: "last page, short", filter: connections.Filter{After: "beta-billing", Limit: 2}, want: []string{"echo"}},
		{name: "after the end", filter: connections.Filter{After: "zulu"}, want: nil},
		{name: "after a name that does not exist", filter: connections.Filter{After: "B", Limit: 1}, want: []string{"B-2"}, more: true},
		{name: "limit too large", filter: connections.Filter{Limit: connections.MaxListLimit + 1}, want: all},
		{name: "role", filter: connections.Filter{Role: connections.RoleInvoke}, want: []string{"Alpha_Orders", "B_2", "Delta_x", "a-1", "aZ", "echo"}},
		{name: "role, paged", filter: connections.Filter{Role: connections.RoleInvoke, Limit: 1, After: "Alpha_Orders"}, want: []string{"B_2"}, more: true},
		{name: "policy", filter: connections.Filter{Policy: security.PolicyNone}, want: []string{"B-2", "Delta_x", "a_1", "beta-billing"}},
		{name: "status", filter: connections.Filter{Status: connections.StatusConfigured}, want: []string{"B-2", "Charlie", "a_1"}},
		{name: "q in name, other case", filter: connections.Filter{Q: "ALPHA"}, want: []string{"Alpha_Orders"}},
		{name: "q in name and keyword", filter: connections.Filter{Q: "orders"}, want: []string{"Alpha_Orders"}},
		{name: "q in keyword, other case", filter: connections.Filter{Q: "fINANCE"}, want: []string{"beta-billing"}},
		{name: "q non-ASCII keyword, other case", filter: connections.Filter{Q: "üNÏ"}, want: []string{"B-2"}},
		{name: "q and role", filter: connections.Filter{Q: "finance", Role: connections.RoleInvoke}, want: nil},
		{name: "q in keyword or name, and role", filter: connections.Filter{Q: "x", Role: connections.RoleInvoke}, want: []string{"Delta_x"}},
		{name: "q percent is literal", filter: connections.Filter{Q: "%"}, want: []string{"a-1", "beta-billing"}},
		{name: "q underscore is literal", filter: connections.Filter{Q: "_"}, want: []string{"Alpha_Orders", "B_2", "Charlie", "Delta_x", "a_1"}},
		{name: "q a_b is literal", filter: connections.Filter{Q: "a_b"}, want: []string{"Charlie"}},
		{name: "q backslash is literal", filter: connections.Filter{Q: `k\s`}, want: []string{"echo"}, bug: keywordsAsJSON},
		{name: "q no match", filter: connections.Filter{Q: "nothing"}, want: nil},
		{name: "q bracket", filter: connections.Filter{Q: "["}, want: []string{"aZ"}},
		{name: "q bracket of the JSON", filter: connections.Filter{Q: `["`}, want: nil, bug: keywordsAsJSON},
		{name: "q quote", filter: connections.Filter{Q: `"`}, want: []string{"a_1"}, bug: keywordsAsJSON},
		{name: "q across two keywords", filter: connections.Filter{Q: `a_b","x`}, want: nil, bug: keywordsAsJSON},
		{name: "q across name and keyword", filter: connections.Filter{Q: "charliea_b"}, want: nil},
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		createListFixture(t, env)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cs, next, err := env.conns.List(ctx, tt.filter)
				more := next != ""
				if err != nil {
					t.Fatalf("List(%+v) = %v", tt.filter, err)
				}
				if got := names(cs); !slices.Equal(got, tt.want) || more != tt.more {
					t.Errorf("List(%+v) = %q, more %v, want %q, more %v%s", tt.filter, got, more, tt.want, tt.more, tt.bug)
				}
			})
		}
	})
}

// keywordsAsJSON names the bug of matching Q against the JSON text of the
// keywords column, which matches JSON syntax and misses escaped
// characters.
const keywordsAsJSON = " (regression: List matches Q against the keywords' JSON text, not the search column)"

// TestStoreListPages pages through every combination of filters with
// several page sizes: the pages, joined, are exactly the matching
// connections in byte order, each page but the last says more follow, and
// none says so wrongly.
func TestStoreListPages(t *testing.T) {
	matches := func(i int, f connections.Filter) bool {
		c := listFixture[i]
		search := strings.ToLower(strings.Join(append([]string{c.name}, c.keywords...), "\n"))
		return (f.Role == "" || f.Role == c.role) && (f.Policy == "" || f.Policy == c.policy) &&
			(f.Status == "" || f.Status == c.status) && strings.Contains(search, strings.ToLower(f.Q))
	}
	var filters []connections.Filter
	for _, role := range append([]connections.Role{""}, connections.Roles...) {
		for _, policy := range []connections.Policy{"", security.PolicyNone, security.PolicyBasic} {
			for _, status := range []connections.Status{"", connections.StatusDraft, connections.StatusError} {
				for _, q := range []string{"", "a", "_", "B"} {
					filters = append(filters, connections.Filter{Role: role, Policy: policy, Status: status, Q: q})
				}
			}
		}
	}
	// qMatches counts the connections matching q alone: a search takes
	// the trigram path when they are few, whatever the other filters.
	qMatches := func(q string) int {
		n := 0
		for i := range listFixture {
			if matches(i, connections.Filter{Q: q}) {
				n++
			}
		}
		return n
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		createListFixture(t, env)
		for _, f := range filters {
			var want []string
			for i := range listFixture {
				if matches(i, f) {
					want = append(want, listFixture[i].name)
				}
			}
			slices.Sort(want) // byte order
			// A search reads a bounded stretch of names per page: with
			// the bounds shrunk to a few rows, pages may hold fewer items
			// and a last page may be empty, but the pages joined are the
			// same.
			for _, b := range []struct{ selective, window int }{{500, 10000}, {1, 2}, {0, 3}, {2, 1}} {
				env.conns.SetSearchBounds(b.selective, b.window)
				bounded := f.Q != "" && env.engine == storetest.Postgres && b.selective < qMatches(f.Q)
				for _, limit := range []int{1, 2, 5, connections.MaxListLimit} {
					f.Limit, f.After = limit, ""
					var got []string
					for page := 0; ; page++ {
						cs, next, err := env.conns.List(ctx, f)
						if err != nil {
							t.Fatalf("List(%+v) = %v", f, err)
						}
						got = append(got, names(cs)...)
						more, wantMore := next != "", len(got) < len(want)
						if more != wantMore && !(bounded && more) || len(cs) > limit {
							t.Errorf("List(%+v) with bounds %v page %d = %q, next %q; want at most %d, more %v",
								f, b, page, names(cs), next, limit, wantMore)
						}
						if !more || page > 2*len(listFixture) {
							break
						}
						f.After = next
					}
					if !slices.Equal(got, want) {
						t.Errorf("pages of List(%+v) with bounds %v = %q, want %q", f, b, got, want)
					}
				}
			}
			env.conns.SetSearchBounds(500, 10000)
		}
	})
}

// TestStoreSearchColumn: q matches the search column, the lower-cased name
// and keywords one per line, which Create and Update keep current.
func TestStoreSearchColumn(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		c := sample("Conn_Search", security.PolicyNone)
		c.Keywords = []string{"Orders", "ÉTÉ"}
		if err := env.conns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		search := func() string {
			var s string
			if err := env.db.Raw("SELECT search FROM connections WHERE id = ?", c.ID).Scan(&s).Error; err != nil {
				t.Fatal(err)
			}
			return s
		}
		if got, want := search(), "conn_search\norders\nété"; got != want {
			t.Errorf("search after Create = %q, want %q", got, want)
		}
		c.Keywords = []string{"billing"}
		if err := env.conns.Update(ctx, c, false); err != nil {
			t.Fatal(err)
		}
		if got, want := search(), "conn_search\nbilling"; got != want {
			t.Errorf("search after Update = %q, want %q", got, want)
		}
		for q, want := range map[string]int{"orders": 0, "BILL": 1} {
			if cs, _, err := env.conns.List(ctx, connections.Filter{Q: q}); err != nil || len(cs) != want {
				t.Errorf("List(Q: %q) after Update = %d connections, %v, want %d", q, len(cs), err, want)
			}
		}
	})
}

// secretRows returns the ciphertexts of connection_secrets by "id/field".
func secretRows(t *testing.T, db *gorm.DB) map[string][]byte {
	t.Helper()
	var rows []struct {
		ConnectionID int64
		Field        string
		Ciphertext   []byte
	}
	if err := db.Raw("SELECT connection_id, field, ciphertext FROM connection_secrets").Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, r := range rows {
		m[fmt.Sprintf("%d/%s", r.ConnectionID, r.Field)] = r.Ciphertext
	}
	return m
}

// TestSecretsAtRest is the proof that no secret reaches the database in
// clear: canaries (connection secrets, tokens, a PKCE verifier) are
// searched in every column of every row and, on SQLite, in the bytes of
// the database files.
func TestSecretsAtRest(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		var canaries []string
		for i, c := range []*connections.Connection{
			fullConnection("Conn_Full"),
			sample("Conn_Basic", security.PolicyBasic),
			sample("Conn_Key", security.PolicyAPIKey),
			sample("Conn_Password", security.PolicyPassword),
		} {
			if err := env.conns.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			if i == 0 { // re-saved: secrets are written again
				if err := env.conns.Update(ctx, c, false); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range c.AllSecrets() {
				if v := r.Value().Reveal(); v != "" {
					canaries = append(canaries, v)
				}
			}
			tok := saveToken(t, env, c, c.Fingerprint)
			pc := consent(c, "state-"+c.Name)
			if err := env.states.Create(ctx, pc); err != nil {
				t.Fatal(err)
			}
			canaries = append(canaries, tok.AccessToken.Reveal(), tok.RefreshToken.Reveal(), pc.Verifier.Reveal())
		}
		// The PEM's base64 lines, each on its own, are secrets too.
		for line := range strings.Lines(storetest.RSAKeyPEM()) {
			if line = strings.TrimSpace(line); !strings.HasPrefix(line, "-----") {
				canaries = append(canaries, line)
			}
		}
		if len(canaries) < 20 {
			t.Fatalf("only %d canaries", len(canaries))
		}
		search := func(where string, data string) {
			t.Helper()
			for _, c := range canaries {
				if strings.Contains(data, c) {
					t.Errorf("%s contains the secret %.30q", where, c)
				}
			}
		}
		for _, table := range []string{"connections", "connection_secrets", "tokens", "oauth_states"} {
			values := storetest.TableText(t, env.db.DB, table)
			if len(values) == 0 {
				t.Fatalf("table %s is empty", table)
			}
			for _, v := range values {
				search("table "+table, v)
			}
		}
		if env.engine != storetest.SQLite {
			return
		}
		files := []string{"connmgr.db", "connmgr.db-wal"}
		read := func(when string) {
			for _, name := range files {
				b, err := os.ReadFile(filepath.Join(env.where, name))
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				search(when+" "+name, string(b))
			}
		}
		read("before checkpoint")
		if err := env.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)").Error; err != nil {
			t.Fatal(err)
		}
		read("after checkpoint")
		if b, err := os.ReadFile(filepath.Join(env.where, "connmgr.db")); err != nil || !bytes.Contains(b, []byte("Conn_Full")) {
			t.Fatalf("connmgr.db does not hold the connections (%v): the scan proves nothing", err)
		}
	})
}

func TestSecretsFreshCiphertexts(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		a := sample("Conn_A", security.PolicyBasic)
		b := sample("Conn_B", security.PolicyBasic)
		b.Security.(*security.Basic).Password = a.Security.(*security.Basic).Password
		for _, c := range []*connections.Connection{a, b} {
			if err := env.conns.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		first := secretRows(t, env.db.DB)
		ka, kb := fmt.Sprintf("%d/password", a.ID), fmt.Sprintf("%d/password", b.ID)
		if bytes.Equal(first[ka], first[kb]) {
			t.Errorf("the same password of two connections has the same ciphertext")
		}
		if err := env.conns.Update(ctx, a, false); err != nil {
			t.Fatal(err)
		}
		if again := secretRows(t, env.db.DB); bytes.Equal(first[ka], again[ka]) {
			t.Errorf("re-saving a password kept its ciphertext: the nonce was reused")
		}
	})
}

// TestSecretsBoundToRowAndField copies ciphertexts where they do not
// belong: reading must fail, never return the other secret.
func TestSecretsBoundToRowAndField(t *testing.T) {
	tests := []struct {
		name                string
		fromConn, fromField string
		toConn, toField     string
	}{
		{name: "other connection, same field", fromConn: "Conn_A", fromField: "password", toConn: "Conn_B", toField: "password"},
		{name: "same connection, other field", fromConn: "Conn_A", fromField: "clientSecret", toConn: "Conn_A", toField: "password"},
		{name: "other connection, other field", fromConn: "Conn_B", fromField: "password", toConn: "Conn_A", toField: "clientSecret"},
	}
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ids := map[string]int64{}
				for _, name := range []string{"Conn_A", "Conn_B"} {
					c := sample(fmt.Sprintf("%s_%d", name, i), security.PolicyPassword)
					if err := env.conns.Create(ctx, c); err != nil {
						t.Fatal(err)
					}
					ids[name] = c.ID
				}
				res := env.db.Exec(`UPDATE connection_secrets SET ciphertext =
					(SELECT ciphertext FROM connection_secrets WHERE connection_id = ? AND field = ?)
					WHERE connection_id = ? AND field = ?`, ids[tt.fromConn], tt.fromField, ids[tt.toConn], tt.toField)
				if res.Error != nil || res.RowsAffected != 1 {
					t.Fatalf("copy ciphertext: %v, %d rows", res.Error, res.RowsAffected)
				}
				name := fmt.Sprintf("%s_%d", tt.toConn, i)
				got, err := env.conns.Get(ctx, name)
				if !errors.Is(err, keyring.ErrDecrypt) {
					t.Errorf("Get(%q) = %v, %v, want ErrDecrypt", name, got, err)
				}
				if _, _, err := env.conns.List(ctx, connections.Filter{Q: name}); !errors.Is(err, keyring.ErrDecrypt) {
					t.Errorf("List(Q: %q) = %v, want ErrDecrypt", name, err)
				}
			})
		}
	})
}

// TestAppendOnlyIsNotUnavailable: the audit table's refusal of a write is
// an ordinary error, not "database unavailable" (which would be a 503 and
// a retry).
func TestAppendOnlyIsNotUnavailable(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		if err := env.db.Exec("INSERT INTO audit_events (at, actor, action, connection, detail, request_id) VALUES (?, 'a', 'x', '', '{}', '')",
			time.Now().UTC()).Error; err != nil {
			t.Fatal(err)
		}
		err := env.db.Exec("DELETE FROM audit_events").Error
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Fatalf("DELETE FROM audit_events = %v, want the append-only error", err)
		}
		if errors.Is(store.Translate(err), connections.ErrUnavailable) {
			t.Errorf("Translate(%v) is ErrUnavailable, want a plain error", err)
		}
	})
}
