package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/connmgr/connmgr/store/storetest"
)

// execSQL runs one statement on the PostgreSQL database at dbURL, behind
// connmgr's back.
func execSQL(t testing.TB, dbURL, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("%s: %v (%d rows), want one row", sql, err, tag.RowsAffected())
	}
}

// propagated polls cond on every process every 50ms until it holds on all
// of them, and fails if it does not hold on one within d of since.
func propagated(t *testing.T, since time.Time, d time.Duration, what string, ps []*proc, cond func(*proc) string) {
	t.Helper()
	pending := map[*proc]string{}
	for _, p := range ps {
		pending[p] = "not asked yet"
	}
	for {
		for _, p := range ps {
			if _, ok := pending[p]; !ok {
				continue
			}
			if msg := cond(p); msg != "" {
				pending[p] = msg
				continue
			}
			delete(pending, p)
			t.Logf("%s %s after %v", p.name, what, time.Since(since).Round(time.Millisecond))
		}
		if len(pending) == 0 {
			return
		}
		if time.Since(since) > d {
			for p, msg := range pending {
				t.Errorf("%s: not %s within %v; last: %s", p.name, what, d, msg)
			}
			t.FailNow()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// invokeEcho invokes name on p as key and returns what the echo target saw.
func invokeEcho(p *proc, name, key string) (*echoed, string) {
	r, err := p.try("GET", "/invoke/"+name+"/x", key, nil)
	if err != nil {
		return nil, err.Error()
	}
	if r.status != http.StatusOK {
		return nil, r.String()
	}
	e, err := r.echoed()
	if err != nil {
		return nil, err.Error()
	}
	return e, ""
}

// TestReplicas runs three connmgr processes on one PostgreSQL database:
// a change made through one reaches the caches of the others within 2
// seconds, and each token is refreshed by one of them at a time.
func TestReplicas(t *testing.T) {
	t.Parallel()
	dbURL := storetest.CreatePostgres(t) // skips without PostgreSQL
	shared := newEnv(t).with("CONNMGR_DATABASE_URL", dbURL, "CONNMGR_REFRESH_SCHEDULE", "@every 1s")
	var procs []*proc
	for _, name := range []string{"A", "B", "C"} {
		procs = append(procs, startProc(t, "replica "+name, shared.with("CONNMGR_DATA_DIR", t.TempDir())))
	}
	a, others := procs[0], procs[1:]
	canary := func(s ...string) {
		for _, p := range procs {
			p.mustNotLog(s...)
		}
	}

	t.Run("a change through one replica reaches the others", func(t *testing.T) {
		t1, t2 := echoTarget(t, "T1"), echoTarget(t, "T2")
		key1, key2 := "ak1-"+randHex(10), "ak2-"+randHex(10)
		canary(key1, key2)
		conn := func(base, key string) map[string]any {
			return map[string]any{"name": "Conn_Replicated", "role": "INVOKE", "baseUrl": base,
				"security": map[string]any{"policy": "API_KEY", "key": key, "in": "HEADER", "name": "X-Api-Key"}}
		}
		a.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", conn(t1.URL, key1))
		for _, p := range procs {
			settle(t, p, dbURL) // a late notification of the creation would empty the caches below
		}
		// Every replica serves the first version, from its cache after the
		// first call.
		for _, p := range procs {
			for range 3 {
				got, msg := invokeEcho(p, "Conn_Replicated", p.admin())
				if msg != "" || got.Target != "T1" || got.Headers["X-Api-Key"] != key1 {
					t.Fatalf("%s before the change: %+v %s, want T1 with the first key", p.name, got, msg)
				}
			}
		}

		// The warm path reads no database: a row changed behind connmgr's
		// back, without a new version and so without a notification, is
		// not seen.
		execSQL(t, dbURL, "UPDATE connections SET base_url = $1 WHERE name = 'Conn_Replicated'", t2.URL)
		for _, p := range procs {
			for range 3 {
				if got, msg := invokeEcho(p, "Conn_Replicated", p.admin()); msg != "" || got.Target != "T1" {
					t.Fatalf("%s after a silent database change: %+v %s, want T1 from its cache", p.name, got, msg)
				}
			}
		}

		a.mustStatus(t, http.StatusOK, "PUT", "/api/v1/connections/Conn_Replicated", conn(t2.URL, key2))
		changed := time.Now()
		propagated(t, changed, 2*time.Second, "invokes the new target", others, func(p *proc) string {
			got, msg := invokeEcho(p, "Conn_Replicated", p.admin())
			switch {
			case msg != "":
				return msg
			case got.Target != "T2":
				return "still " + got.Target
			case got.Headers["X-Api-Key"] != key2:
				return "the new target got the old key"
			}
			return ""
		})
		// ... and never goes back to the old version.
		for _, p := range procs {
			for range 5 {
				if got, msg := invokeEcho(p, "Conn_Replicated", p.admin()); msg != "" || got.Target != "T2" {
					t.Fatalf("%s after the change: %+v %s, want T2", p.name, got, msg)
				}
			}
		}

		a.mustStatus(t, http.StatusNoContent, "DELETE", "/api/v1/connections/Conn_Replicated", nil)
		propagated(t, time.Now(), 2*time.Second, "answers 404 for the deleted connection", others, func(p *proc) string {
			r, err := p.try("GET", "/invoke/Conn_Replicated/x", p.admin(), nil)
			if err != nil {
				return err.Error()
			}
			if !r.isProblem(http.StatusNotFound, "connection_not_found") {
				return r.String()
			}
			return ""
		})
	})

	t.Run("a key revoked on one replica is refused by all", func(t *testing.T) {
		target := echoTarget(t, "T")
		a.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Revoke",
			"role": "INVOKE", "baseUrl": target.URL, "security": map[string]any{"policy": "NONE"}})
		created := a.mustStatus(t, http.StatusCreated, "POST", "/api/v1/apikeys", map[string]any{"name": "replica invoker",
			"role": "invoker", "connections": []string{"Conn_Revoke"}}).object(t)
		key, _ := created["key"].(string)
		id, _ := created["id"].(string)
		canary(key)
		for _, p := range procs { // cached by every replica
			if _, msg := invokeEcho(p, "Conn_Revoke", key); msg != "" {
				t.Fatalf("%s with the new key: %s, want 200", p.name, msg)
			}
		}
		a.mustStatus(t, http.StatusNoContent, "DELETE", "/api/v1/apikeys/"+id, nil)
		propagated(t, time.Now(), 2*time.Second, "refuses the revoked key", procs, func(p *proc) string {
			r, err := p.try("GET", "/invoke/Conn_Revoke/x", key, nil)
			if err != nil {
				return err.Error()
			}
			if !r.isProblem(http.StatusUnauthorized, "unauthorized") {
				return r.String()
			}
			return ""
		})
	})

	t.Run("each token is refreshed once per cycle", func(t *testing.T) {
		const ttl, window = 4 * time.Second, 10 * time.Second
		te := newTokenEndpoint(t, ttl)
		canary(te.secretPrefix)
		target := bearerTarget(t, "T", te)
		clients := []string{"client-1", "client-2", "client-3"}
		for i, client := range clients {
			a.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections",
				clientCredentials(fmt.Sprintf("Conn_CC_%d", i+1), target.URL, te, client))
		}
		// Warm: A obtains each token, B and C find it in the database.
		for _, p := range procs {
			for i := range clients {
				if _, msg := invokeEcho(p, fmt.Sprintf("Conn_CC_%d", i+1), p.admin()); msg != "" {
					t.Fatalf("warm-up invoke on %s: %s", p.name, msg)
				}
			}
		}
		warmed := time.Now()
		requests, _, _ := te.log()
		for _, client := range clients {
			if n := len(requests[client]); n != 1 {
				t.Errorf("warming %s's connection on three replicas made %d token requests, want 1", client, n)
			}
		}

		// Invoke every connection on every replica through several token
		// lifetimes; the schedulers refresh ahead of expiry meanwhile.
		var failures []string
		calls := 0
		for time.Since(warmed) < window {
			for _, p := range procs {
				for i := range clients {
					calls++
					if _, msg := invokeEcho(p, fmt.Sprintf("Conn_CC_%d", i+1), p.admin()); msg != "" {
						failures = append(failures, fmt.Sprintf("%v %s Conn_CC_%d: %s", time.Since(warmed).Round(time.Millisecond), p.name, i+1, msg))
					}
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		if len(failures) > 0 {
			t.Errorf("%d of %d invokes failed while tokens were refreshed:\n%s", len(failures), calls, strings.Join(failures, "\n"))
		}

		requests, tokens, misuse := te.log()
		canary(tokens...)
		maxRequests := int(math.Ceil(float64(window)/float64(ttl/2))) + 2
		for _, client := range clients {
			times := requests[client]
			n := 0
			var gaps []string
			for i, at := range times {
				if at.After(warmed) && !at.After(warmed.Add(window)) {
					n++
				}
				if i > 0 {
					gap := at.Sub(times[i-1])
					gaps = append(gaps, gap.Round(10*time.Millisecond).String())
					if gap < time.Second {
						t.Errorf("%s: two token requests %v apart, want one per token lifetime", client, gap)
					}
				}
			}
			t.Logf("%s: %d token requests in %v after warm-up, gaps %v", client, n, window, gaps)
			if n < 2 || n > maxRequests {
				t.Errorf("%s: %d token requests in %v with %v tokens, want 2 to %d", client, n, window, ttl, maxRequests)
			}
		}
		if len(misuse) > 0 {
			t.Errorf("targets saw bad tokens:\n%s", strings.Join(misuse, "\n"))
		}
		for _, p := range procs {
			for _, m := range p.logs.messages() {
				if slices.Contains([]string{"token request failed", "token request outlived its lease; keeping the newer token"}, m) {
					t.Errorf("%s logged %q", p.name, m)
				}
			}
		}
	})
}
