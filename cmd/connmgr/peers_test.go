package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/cmd/connmgr/wire"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/store/storetest"
)

// TestSlowAndHangingPeers runs connmgr's invoke path in this process, wired
// as serve wires it, against a slow upstream, one that never answers, one
// that trickles its body forever and a token endpoint that never answers:
// every call ends within its connection's timeout, nothing leaks, and the
// heap stays flat over 200 such calls.
//
// It is not parallel: goroutine and heap figures need the process to
// itself. The other tests of this package call t.Parallel first, so they
// wait, without goroutines of their own, until it is done.
func TestSlowAndHangingPeers(t *testing.T) {
	// Registered first, so that it runs after every other cleanup: the
	// servers, transports and database are closed by then.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	release := make(chan struct{}) // ends every hanging handler
	var tokenRequests atomic.Int32
	slow := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(200 * time.Millisecond):
			_, _ = w.Write([]byte("slow but in time"))
		case <-r.Context().Done():
		}
	})
	hang := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	trickle := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := bytes.Repeat([]byte("x"), 1024)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-time.After(10 * time.Millisecond):
			case <-r.Context().Done():
				return
			case <-release:
				return
			}
		}
	})
	tokenHang := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		tokenRequests.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	// Runs before the servers' Close, which waits for their handlers.
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	front, admin, logs, closeIdle := inProcessConnmgr(t)
	t.Cleanup(closeIdle)
	callers := &http.Transport{}
	t.Cleanup(callers.CloseIdleConnections)
	caller := &http.Client{Transport: callers}
	clientSecret := "cs-" + randHex(12)

	for _, c := range []map[string]any{
		{"name": "Conn_Slow", "baseUrl": slow.URL, "timeoutMs": 2000, "security": map[string]any{"policy": "NONE"}},
		{"name": "Conn_Hang", "baseUrl": hang.URL, "timeoutMs": 500, "security": map[string]any{"policy": "NONE"}},
		{"name": "Conn_Trickle", "baseUrl": trickle.URL, "timeoutMs": 500, "security": map[string]any{"policy": "NONE"}},
		{"name": "Conn_Token_Hang", "baseUrl": slow.URL, "timeoutMs": 500, "security": map[string]any{
			"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": tokenHang.URL, "clientId": "c1", "clientSecret": clientSecret}},
		{"name": "Conn_Token_Hang_Long", "baseUrl": slow.URL, "timeoutMs": 600000, "security": map[string]any{
			"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": tokenHang.URL, "clientId": "c2", "clientSecret": clientSecret}},
	} {
		c["role"] = "INVOKE"
		r, err := request(context.Background(), caller, "POST", front+"/api/v1/connections", admin, c)
		if err != nil || r.status != http.StatusCreated {
			t.Fatalf("create %s: %v %v", c["name"], r, err)
		}
	}

	type outcome struct {
		status int
		code   string
		// body is what was read, bodyErr how reading it ended (nil: a
		// complete body).
		body    string
		bodyErr error
		took    time.Duration
	}
	// call invokes name as a caller who gives up after deadline.
	call := func(name string, deadline time.Duration) (outcome, error) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", front+"/invoke/"+name+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		start := time.Now()
		res, err := caller.Do(req)
		if err != nil {
			return outcome{took: time.Since(start)}, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		r := &reply{status: res.StatusCode, header: res.Header, body: b}
		return outcome{status: res.StatusCode, code: r.code(), body: string(b), bodyErr: err, took: time.Since(start)}, nil
	}
	type expectation struct {
		name, conn string
		deadline   time.Duration // the caller's
		status     int
		code       string // problem code; "" for the target's answer
		// truncated: the body must end in an error, not look complete.
		truncated bool
		// callerGivesUp: the caller's deadline ends the call first.
		callerGivesUp bool
		min, max      time.Duration
	}
	cases := []expectation{
		{name: "slow upstream within its timeout", conn: "Conn_Slow", deadline: 10 * time.Second,
			status: http.StatusOK, min: 200 * time.Millisecond, max: 1500 * time.Millisecond},
		{name: "upstream that never answers", conn: "Conn_Hang", deadline: 10 * time.Second,
			status: http.StatusGatewayTimeout, code: "upstream_timeout", min: 450 * time.Millisecond, max: 2 * time.Second},
		{name: "upstream that trickles its body forever", conn: "Conn_Trickle", deadline: 10 * time.Second,
			status: http.StatusOK, truncated: true, min: 450 * time.Millisecond, max: 2 * time.Second},
		{name: "token endpoint that never answers", conn: "Conn_Token_Hang", deadline: 10 * time.Second,
			status: http.StatusServiceUnavailable, code: "token_unavailable", min: 450 * time.Millisecond, max: 2 * time.Second},
		{name: "caller deadline while the token endpoint hangs", conn: "Conn_Token_Hang_Long", deadline: 300 * time.Millisecond,
			callerGivesUp: true, min: 250 * time.Millisecond, max: time.Second},
	}
	check := func(tc expectation) string {
		got, err := call(tc.conn, tc.deadline)
		switch {
		case tc.callerGivesUp:
			if !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Sprintf("got %+v, %v; want the caller's deadline to end the call", got, err)
			}
		case err != nil:
			return fmt.Sprintf("call failed after %v: %v", got.took, err)
		case got.status != tc.status || got.code != tc.code:
			return fmt.Sprintf("%d %q (%.200s), want %d %q", got.status, got.code, got.body, tc.status, tc.code)
		case tc.truncated && got.bodyErr == nil:
			return fmt.Sprintf("a %d-byte body that looks complete, want it cut off", len(got.body))
		case !tc.truncated && got.bodyErr != nil:
			return fmt.Sprintf("body cut off: %v", got.bodyErr)
		}
		if got.took < tc.min || got.took > tc.max {
			return fmt.Sprintf("took %v, want %v to %v", got.took.Round(time.Millisecond), tc.min, tc.max)
		}
		return ""
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if msg := check(tc); msg != "" {
				t.Error(msg)
			}
		})
	}
	if n := tokenRequests.Load(); n != 2 {
		t.Errorf("the hanging token endpoint got %d requests, want 1 per connection (2)", n)
	}

	// 200 more such calls, 25 at a time: the heap and the goroutines stay
	// flat.
	heapInUse := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	runAll := func(n int) []string {
		jobs := make(chan expectation)
		var mu sync.Mutex
		var failures []string
		var wg sync.WaitGroup
		for range 25 {
			wg.Go(func() {
				for tc := range jobs {
					if msg := check(tc); msg != "" {
						mu.Lock()
						failures = append(failures, tc.name+": "+msg)
						mu.Unlock()
					}
				}
			})
		}
		for i := range n {
			jobs <- cases[i%len(cases)]
		}
		close(jobs)
		wg.Wait()
		return failures
	}
	runAll(50) // warm pools and caches
	heapBefore, goroutinesBefore := heapInUse(), runtime.NumGoroutine()
	start := time.Now()
	failures := runAll(200)
	took := time.Since(start)
	heapAfter := heapInUse()
	for _, f := range failures {
		t.Error(f)
	}
	growth := int64(heapAfter) - int64(heapBefore)
	t.Logf("200 calls in %v: heap in use %.1f MiB -> %.1f MiB, goroutines %d -> %d", took.Round(time.Millisecond),
		float64(heapBefore)/(1<<20), float64(heapAfter)/(1<<20), goroutinesBefore, runtime.NumGoroutine())
	if growth > 4<<20 {
		t.Errorf("heap in use grew by %.1f MiB over 200 calls, want less than 4 MiB", float64(growth)/(1<<20))
	}
	eventually(t, 3*time.Second, "goroutines settle", func() string {
		if n := runtime.NumGoroutine(); n > goroutinesBefore+5 {
			return fmt.Sprintf("%d goroutines, %d before the 200 calls", n, goroutinesBefore)
		}
		return ""
	})

	// Let the token requests end, and wait for the manager to record that.
	close(release)
	eventually(t, 5*time.Second, "the hanging token requests end", func() string {
		got, err := call("Conn_Token_Hang_Long", 5*time.Second)
		if err != nil || got.code != "token_unavailable" {
			return fmt.Sprintf("%+v %v", got, err)
		}
		t.Logf("after the token endpoint answered: %d %s", got.status, got.body)
		return ""
	})
	for _, line := range logs.all() {
		for _, s := range []string{clientSecret, admin} {
			if strings.Contains(line, s) {
				t.Errorf("a log line holds a secret: %s", strings.ReplaceAll(line, s, "<SECRET>"))
			}
		}
	}
}

// inProcessConnmgr serves connmgr's API on SQLite from this process, wired
// by wire.Build as serve wires it (no scheduler), and returns its URL, an
// admin key, its log and a function that closes its idle outbound
// connections.
func inProcessConnmgr(t *testing.T) (url, admin string, logs *logLines, closeIdle func()) {
	t.Helper()
	db := storetest.Open(t, storetest.SQLite)
	logs = &logLines{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	allow, err := outbound.ParseAllow("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	g, err := wire.Build(context.Background(), db, storetest.KeyRing(t), wire.Options{PublicURL: "http://connmgr.test",
		EgressAllow: allow, Logger: log})
	if err != nil {
		t.Fatalf("wire.Build: %v", err)
	}
	_, admin, err = g.Keys.Create(context.Background(), access.NewKey{Name: "admin", Role: access.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(g.API)
	t.Cleanup(front.Close)
	return front.URL, admin, logs, g.CloseIdleConnections
}
