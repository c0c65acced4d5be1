package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/connmgr/connmgr/store/storetest"
)

// forwarder is a TCP proxy in front of the database that the test can
// stop (no listener, every forwarded connection closed) and start again on
// the same address: a database outage as connmgr sees it. Frozen, it
// passes nothing on, in either direction, on any connection: a database
// that hangs. Started as a black hole, it accepts connections and never
// answers: a database host behind a network that drops its packets.
type forwarder struct {
	t      testing.TB
	target string
	addr   string
	frozen atomic.Bool

	mu    sync.Mutex
	ln    net.Listener // nil while stopped
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newForwarder(t testing.TB, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	f.serve(ln, true)
	t.Cleanup(f.stop)
	return f
}

func (f *forwarder) serve(ln net.Listener, forward bool) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !forward {
				f.mu.Lock()
				f.conns[c] = true
				f.mu.Unlock()
				continue
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.pipe(c)
			}()
		}
	}()
}

func (f *forwarder) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	if f.ln == nil { // stopped meanwhile
		f.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	f.conns[c], f.conns[up] = true, true
	f.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { f.copy(up, c); done <- struct{}{} }()
	go func() { f.copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, up)
	f.mu.Unlock()
}

// copy copies src to dst until either fails, holding what it read while
// the forwarder is frozen.
func (f *forwarder) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for f.frozen.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freeze stops passing anything on, until stop.
func (f *forwarder) freeze() { f.frozen.Store(true) }

// stop closes the listener and every forwarded connection.
func (f *forwarder) stop() {
	f.mu.Lock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.frozen.Store(false) // held copies find their connections closed
	f.wg.Wait()
}

// start listens on the same address again, forwarding or (forward
// false) as a black hole.
func (f *forwarder) start(forward bool) {
	f.t.Helper()
	var err error
	for range 20 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", f.addr); err == nil {
			f.serve(ln, forward)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("listen again on %s: %v", f.addr, err)
}

// TestDatabaseOutage stops the database for about 4s while warm
// connections are invoked 20 times a second: invokes go on, management
// calls answer 503 database_unavailable, and everything recovers without
// a restart, with nothing acknowledged lost.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	realURL := storetest.CreatePostgres(t)
	u, err := url.Parse(realURL)
	if err != nil || u.Hostname() == "" {
		t.Skipf("%s must name a TCP host to put a forwarder in front of it", storetest.EnvURL)
	}
	dbAddr := u.Host
	if u.Port() == "" {
		dbAddr = net.JoinHostPort(u.Hostname(), "5432")
	}
	fwd := newForwarder(t, dbAddr)
	u.Host = fwd.addr
	var canaries []string
	if pw, ok := u.User.Password(); ok {
		canaries = append(canaries, pw)
	}
	te := newTokenEndpoint(t, time.Hour)
	target := bearerTarget(t, "T", te) // OAuth connections only
	plain := echoTarget(t, "P")
	canaries = append(canaries, te.secretPrefix)
	p := startProc(t, "connmgr", newEnv(t).with("CONNMGR_DATABASE_URL", u.String(), "CONNMGR_REFRESH_SCHEDULE", "@every 1s"), canaries...)

	// Before the outage: connections (one of each kind of credential, and
	// some that only need to survive), an invoker key, and one update.
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", clientCredentials("Conn_OAuth", target.URL, te, "client-1"))
	apiKey := "ak-" + randHex(10)
	p.mustNotLog(apiKey)
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Key", "role": "INVOKE",
		"baseUrl": plain.URL, "security": map[string]any{"policy": "API_KEY", "key": apiKey}})
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Direct", "role": "INVOKE",
		"baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}})
	written := map[string]string{} // name -> description acknowledged
	for i := range 5 {
		name := fmt.Sprintf("Conn_Kept_%d", i)
		p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": name, "role": "INVOKE",
			"description": "v1", "baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}})
		written[name] = "v1"
	}
	p.mustStatus(t, http.StatusOK, "PUT", "/api/v1/connections/Conn_Kept_0", map[string]any{"name": "Conn_Kept_0", "role": "INVOKE",
		"description": "v2", "baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}})
	written["Conn_Kept_0"] = "v2"
	key := p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/apikeys", map[string]any{"name": "outage invoker",
		"role": "invoker", "connections": []string{"Conn_*"}}).object(t)["key"].(string)
	p.mustNotLog(key)
	settle(t, p, realURL)
	for _, name := range []string{"Conn_OAuth", "Conn_Key", "Conn_Direct"} { // warm key, connections, token
		if _, msg := invokeEcho(p, name, key); msg != "" {
			t.Fatalf("warm-up invoke of %s: %s", name, msg)
		}
	}

	// The stream: 20 invokes a second for 10s, the database down from 2s
	// to about 6s.
	const rate, window = 20, 10 * time.Second
	type outcome struct {
		at  time.Duration
		msg string
	}
	var (
		mu       sync.Mutex
		failures []outcome
		calls    int
		wg       sync.WaitGroup
	)
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for i := 0; time.Since(start) < window; i++ {
			<-tick.C
			name := []string{"Conn_OAuth", "Conn_Key"}[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				sent := time.Since(start)
				_, msg := invokeEcho(p, name, key)
				mu.Lock()
				defer mu.Unlock()
				calls++
				if msg != "" {
					failures = append(failures, outcome{sent, name + ": " + msg})
				}
			}()
		}
	}()

	time.Sleep(2 * time.Second)
	fwd.stop()
	down := time.Now()
	t.Logf("database stopped at %v", down.Sub(start).Round(time.Millisecond))
	management := []struct {
		method, path string
		body         any
		code         string
	}{
		{"GET", "/readyz", nil, "not_ready"},
		{"GET", "/api/v1/connections", nil, "database_unavailable"},
		{"GET", "/api/v1/connections/Conn_Kept_1", nil, "database_unavailable"},
		{"POST", "/api/v1/connections", map[string]any{"name": "Conn_During", "role": "INVOKE",
			"baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}}, "database_unavailable"},
		{"PUT", "/api/v1/connections/Conn_Kept_1", map[string]any{"name": "Conn_Kept_1", "role": "INVOKE",
			"description": "during", "baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}}, "database_unavailable"},
		{"GET", "/api/v1/apikeys", nil, "database_unavailable"},
	}
	for round := range 2 {
		for _, m := range management {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := request(ctx, client, m.method, p.url+m.path, p.admin(), m.body)
			cancel()
			switch {
			case err != nil:
				t.Errorf("%s %s during the outage: %v, want 503 within 5s", m.method, m.path, err)
			case !r.isProblem(http.StatusServiceUnavailable, m.code):
				t.Errorf("%s %s during the outage = %s, want 503 problem %s", m.method, m.path, r, m.code)
			case r.took > 3*time.Second:
				t.Errorf("%s %s during the outage took %v", m.method, m.path, r.took)
			}
		}
		if round == 0 {
			time.Sleep(time.Until(down.Add(2 * time.Second)))
		}
	}
	time.Sleep(time.Until(down.Add(4 * time.Second)))
	fwd.start(true)
	up := time.Now()
	t.Logf("database back at %v", up.Sub(start).Round(time.Millisecond))
	took := eventually(t, 10*time.Second, "/readyz answers 200 after the outage", func() string {
		r, err := p.try("GET", "/readyz", "", nil)
		if err != nil {
			return err.Error()
		}
		if r.status != http.StatusOK {
			return r.String()
		}
		return ""
	})
	t.Logf("ready %v after the database came back", took.Round(time.Millisecond))

	time.Sleep(time.Until(start.Add(window)))
	wg.Wait()
	mu.Lock()
	for _, f := range failures {
		t.Errorf("invoke sent at %v failed: %s", f.at.Round(time.Millisecond), f.msg)
	}
	t.Logf("%d invokes, %d failed", calls, len(failures))
	mu.Unlock()

	// Management works again, and what was acknowledged is there.
	list := p.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections?limit=500", nil).object(t)
	listed := map[string]bool{}
	for _, it := range list["items"].([]any) {
		listed[it.(map[string]any)["name"].(string)] = true
	}
	for name, desc := range written {
		if !listed[name] {
			t.Errorf("%s, written before the outage, is not listed after it", name)
		}
		if got := p.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections/"+name, nil).object(t)["description"]; got != desc {
			t.Errorf("%s has description %v after the outage, want %q", name, got, desc)
		}
	}
	if listed["Conn_During"] {
		t.Errorf("Conn_During, refused with 503 during the outage, exists after it")
	}
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_After", "role": "INVOKE",
		"baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}})
	if _, msg := invokeEcho(p, "Conn_After", key); msg != "" {
		t.Errorf("invoke of a connection created after the outage: %s", msg)
	}

	// The change listener is back: once it listens again, a connection
	// deleted behind connmgr's back stops being served from the cache.
	eventually(t, 15*time.Second, "the change listener reconnects", func() string {
		n := listeners(t, realURL, up)
		if n == 0 {
			return "no LISTEN session started after the outage"
		}
		return ""
	})
	if _, msg := invokeEcho(p, "Conn_Direct", key); msg != "" {
		t.Fatalf("invoke of Conn_Direct after the outage: %s", msg)
	}
	execSQL(t, realURL, "DELETE FROM connections WHERE name = 'Conn_Direct'")
	eventually(t, 2*time.Second, "a deletion after the outage reaches the cache", func() string {
		r, err := p.try("GET", "/invoke/Conn_Direct/x", key, nil)
		if err != nil {
			return err.Error()
		}
		if !r.isProblem(http.StatusNotFound, "connection_not_found") {
			return r.String()
		}
		return ""
	})
	te.checkOneToken(t, "client-1", "the cached token of Conn_OAuth serves through the outage", p)
}

// listeners counts the sessions on the database of dbURL that run LISTEN
// and started after since.
func listeners(t testing.TB, dbURL string, since time.Time) int {
	t.Helper()
	return countSessions(t, dbURL, "query ILIKE 'LISTEN %' AND backend_start > $1", since)
}

// sessions counts the other sessions on the database of dbURL.
func sessions(t testing.TB, dbURL string) int {
	t.Helper()
	return countSessions(t, dbURL, "pid <> pg_backend_pid()")
}

// countSessions counts the sessions in pg_stat_activity on the database of
// dbURL that also meet cond (with args).
func countSessions(t testing.TB, dbURL, cond string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "+cond,
		args...).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDatabaseHangs: a database that hangs (frozen: nothing passes on any
// connection) or that cannot be reached (a black hole that accepts
// connections and never answers, as behind a network that drops packets)
// does not hold callers for minutes: /readyz and management calls answer
// 503 within seconds, and warm invokes go on.
func TestDatabaseHangs(t *testing.T) {
	t.Parallel()
	realURL := storetest.CreatePostgres(t)
	u, err := url.Parse(realURL)
	if err != nil || u.Hostname() == "" {
		t.Skipf("%s must name a TCP host to put a forwarder in front of it", storetest.EnvURL)
	}
	fwd := newForwarder(t, u.Host)
	u.Host = fwd.addr
	p := startProc(t, "connmgr", newEnv(t).with("CONNMGR_DATABASE_URL", u.String()))
	plain := echoTarget(t, "P")
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Warm", "role": "INVOKE",
		"baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}})
	settle(t, p, realURL)
	if _, msg := invokeEcho(p, "Conn_Warm", p.admin()); msg != "" {
		t.Fatalf("warm-up invoke: %s", msg)
	}
	type call struct {
		method, path string
		body         any
		code         string
	}
	// expect sends the calls at once and wants each to answer 503 with
	// its code within 8s.
	expect := func(state string, calls ...call) {
		var wg sync.WaitGroup
		for _, c := range calls {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				start := time.Now()
				r, err := request(ctx, client, c.method, p.url+c.path, p.admin(), c.body)
				took := time.Since(start).Round(time.Millisecond)
				switch {
				case err != nil:
					t.Errorf("%s %s with the database %s: %v after %v, want 503 within 8s", c.method, c.path, state, err, took)
				case !r.isProblem(http.StatusServiceUnavailable, c.code) || took > 8*time.Second:
					t.Errorf("%s %s with the database %s = %s after %v, want 503 %s within 8s", c.method, c.path, state, r, took, c.code)
				}
			})
		}
		if _, msg := invokeEcho(p, "Conn_Warm", p.admin()); msg != "" {
			t.Errorf("warm invoke with the database %s: %s", state, msg)
		}
		wg.Wait()
	}

	// Management calls are not sent to a frozen database: on a pooled
	// connection they would wait for it (see the report of this test).
	fwd.freeze()
	expect("frozen", call{"GET", "/readyz", nil, "not_ready"})

	fwd.stop() // drops the pooled connections
	fwd.start(false)
	expect("unreachable",
		call{"GET", "/readyz", nil, "not_ready"},
		call{"GET", "/api/v1/connections", nil, "database_unavailable"},
		call{"POST", "/api/v1/connections", map[string]any{"name": "Conn_New", "role": "INVOKE",
			"baseUrl": plain.URL, "security": map[string]any{"policy": "NONE"}}, "database_unavailable"},
		call{"GET", "/invoke/Conn_Cold/x", nil, "database_unavailable"})

	fwd.stop()
	fwd.start(true)
	eventually(t, 15*time.Second, "management works again", func() string {
		r, err := p.try("GET", "/api/v1/connections", p.admin(), nil)
		if err != nil {
			return err.Error()
		}
		if r.status != http.StatusOK {
			return r.String()
		}
		return ""
	})
}

// settle waits until p has handled the change notifications of the writes
// made so far (its own included) and its listener's first "reset": each
// drops cached entries, so a warm-up before them may be undone. It changes
// a sentinel connection behind p's back and waits for p to see it.
func settle(t testing.TB, p *proc, dbURL string) {
	t.Helper()
	before, after := echoTarget(t, "before"), echoTarget(t, "after")
	name := "Conn_Settle_" + randHex(4)
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": name, "role": "INVOKE",
		"baseUrl": before.URL, "security": map[string]any{"policy": "NONE"}})
	if _, msg := invokeEcho(p, name, p.admin()); msg != "" {
		t.Fatalf("invoke %s: %s", name, msg)
	}
	execSQL(t, dbURL, "UPDATE connections SET base_url = $1, version = version + 1 WHERE name = $2", after.URL, name)
	eventually(t, 10*time.Second, "the change notifications are handled", func() string {
		got, msg := invokeEcho(p, name, p.admin())
		if msg != "" {
			return msg
		}
		if got.Target != "after" {
			return "the sentinel still calls " + got.Target
		}
		return ""
	})
}
