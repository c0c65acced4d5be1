package main

// Regression tests of issue #8 against the built binary: what an attacker
// with no key, or with an invoker's or developer's key, could do to the
// process (hold its connections, make it call itself, read its metrics),
// and starts that must fail rather than serve wrongly (wrong keys, a
// second process on one SQLite data directory).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store/storetest"
)

// hostPort is the address of p's URL.
func (p *proc) hostPort() string { return strings.TrimPrefix(p.url, "http://") }

// metricsOf returns p's metrics: from its own metrics address when it has
// one (no key), else from /metrics with the admin key.
func metricsOf(p *proc) ([]byte, error) {
	url, key := p.url+"/metrics", p.admin()
	if addr := p.logged("metrics listening", "addr"); addr != "" {
		url, key = "http://"+addr+"/metrics", ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := request(ctx, client, "GET", url, key, nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("GET %s = %d", url, r.status)
	}
	return r.body, nil
}

// scrape is metricsOf that fails t on an error.
func scrape(t testing.TB, p *proc) []byte {
	t.Helper()
	b, err := metricsOf(p)
	if err != nil {
		t.Fatalf("metrics of %s: %v", p.name, err)
	}
	return b
}

// withGoroutines adds p's go_goroutines to u, read from p's metrics
// address (p's main address may be busy with what is measured).
func withGoroutines(p *proc, u footprint) (footprint, error) {
	b, err := metricsOf(p)
	if err != nil {
		return u, err
	}
	n, ok := metric(b, "go_goroutines")
	if !ok {
		return u, fmt.Errorf("%s has no go_goroutines metric", p.name)
	}
	u.goroutines = int(n)
	return u, nil
}

// measure returns p's footprint, with its goroutines when p serves
// metrics on an address of their own.
func measure(t testing.TB, p *proc) footprint {
	t.Helper()
	u := p.footprint(t)
	if p.logged("metrics listening", "addr") == "" {
		return u
	}
	u, err := withGoroutines(p, u)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// sample measures p every 50ms until stop is called; peak returns the
// largest figures seen.
func sample(p *proc) (peak func() footprint, stop func()) {
	var mu sync.Mutex
	var top footprint
	goroutines := p.logged("metrics listening", "addr") != ""
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if u, err := procFootprint(p.pid()); err == nil {
				if goroutines {
					u, _ = withGoroutines(p, u)
				}
				mu.Lock()
				top = footprint{max(top.fds, u.fds), max(top.rssKB, u.rssKB), max(top.goroutines, u.goroutines)}
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() footprint {
			mu.Lock()
			defer mu.Unlock()
			return top
		}, func() {
			close(done)
			<-stopped
		}
}

// TestSlowSockets (#8 item 4): 300 sockets that send headers announcing a
// body they never send, or half a request, or nothing, or one request and
// then nothing, cannot take connmgr down: the process holds at most
// CONNMGR_MAX_CONNECTIONS of them at a time, closes each within
// CONNMGR_READ_TIMEOUT of taking it, and once they are closed /healthz
// answers within 2s. Its file descriptors and goroutines stay bounded.
func TestSlowSockets(t *testing.T) {
	t.Parallel()
	const (
		maxConns    = 64
		readTimeout = 2 * time.Second
		sockets     = 300
		// closeWithin bounds how long the last socket may be held: they
		// are served maxConns at a time, each for readTimeout.
		closeWithin = 30 * time.Second
	)
	p := startProc(t, "connmgr", newEnv(t).with("CONNMGR_MAX_CONNECTIONS", strconv.Itoa(maxConns),
		"CONNMGR_READ_TIMEOUT", readTimeout.String(), "CONNMGR_METRICS_ADDR", "127.0.0.1:0"))
	kinds := []struct {
		name string
		send string
	}{
		{"Content-Length: 1000 and no body, no key", "POST /api/v1/connections HTTP/1.1\r\nHost: c\r\n" +
			"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"},
		{"Content-Length: 1000 and no body, to /healthz", "GET /healthz HTTP/1.1\r\nHost: c\r\nContent-Length: 1000\r\n\r\n"},
		{"Content-Length: 1000 and 10 bytes, with a key", "POST /api/v1/connections HTTP/1.1\r\nHost: c\r\n" +
			"Authorization: Bearer " + p.admin() + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\": \""},
		{"half a request line", "GET /heal"},
		{"headers never finished", "GET /healthz HTTP/1.1\r\nHost: c\r\n"},
		{"nothing", ""},
		{"one request, then idle", "GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n"},
	}

	before := measure(t, p)
	peak, stop := sample(p)
	type outcome struct {
		kind   string
		closed bool // by the server: EOF or reset before closeWithin
		after  time.Duration
		err    error
	}
	start := time.Now()
	outcomes := make(chan outcome, sockets)
	var wg sync.WaitGroup
	for i := range sockets {
		kind := kinds[i%len(kinds)]
		wg.Go(func() {
			o := outcome{kind: kind.name}
			defer func() { outcomes <- o }()
			c, err := net.DialTimeout("tcp", p.hostPort(), 5*time.Second)
			if err != nil {
				o.err = err
				return
			}
			defer c.Close()
			if _, err := io.WriteString(c, kind.send); err != nil {
				o.err = err
				return
			}
			_ = c.SetReadDeadline(start.Add(closeWithin))
			_, err = io.Copy(io.Discard, c) // whatever the server answers, until it closes
			o.after = time.Since(start)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				o.err = fmt.Errorf("still open after %v", closeWithin)
			case err == nil || errors.Is(err, syscall.ECONNRESET):
				o.closed = true
			default:
				o.err = err
			}
		})
	}
	wg.Wait()
	close(outcomes)
	closedAll := time.Since(start)
	stop()

	held := map[string]int{}
	var last time.Duration
	for o := range outcomes {
		if !o.closed {
			held[o.kind+": "+o.err.Error()]++
		}
		last = max(last, o.after)
	}
	for what, n := range held {
		t.Errorf("%d sockets not closed by connmgr (%s)", n, what)
	}

	// Once they are gone, /healthz answers at once.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	r, err := request(context.Background(), fresh, "GET", p.url+"/healthz", "", nil)
	switch {
	case err != nil:
		t.Errorf("GET /healthz after the slow sockets were closed: %v, want 200 within 2s", err)
	case r.status != http.StatusOK:
		t.Errorf("GET /healthz after the slow sockets were closed = %s, want 200", r)
	default:
		t.Logf("GET /healthz after the slow sockets: 200 in %v", r.took.Round(time.Millisecond))
	}
	after, top := measure(t, p), peak()
	t.Logf("%d slow sockets, at most %d served at a time, read timeout %v: the last closed after %v (all done %v)",
		sockets, maxConns, readTimeout, last.Round(time.Millisecond), closedAll.Round(time.Millisecond))
	t.Logf("before: %s; at the peak: %s; after: %s", before, top, after)
	if limit := before.fds + maxConns + 16; top.fds > limit {
		t.Errorf("connmgr held %d file descriptors at the peak, want at most %d (%d before + CONNMGR_MAX_CONNECTIONS + 16)",
			top.fds, limit, before.fds)
	}
	if limit := before.goroutines + 2*maxConns + 32; top.goroutines > limit {
		t.Errorf("connmgr ran %d goroutines at the peak, want at most %d (%d before + 2 per connection + 32)",
			top.goroutines, limit, before.goroutines)
	}
	if after.fds > before.fds+8 {
		t.Errorf("connmgr holds %d file descriptors after the slow sockets, %d before", after.fds, before.fds)
	}
}

// TestIdleConnectionsShed (#8 item 4): connections that each send one
// request and then stay idle cannot fill CONNMGR_MAX_CONNECTIONS until
// their idle timeout (here the default minute): past 90% of the slots
// connmgr closes idle connections, so a new caller is served.
func TestIdleConnectionsShed(t *testing.T) {
	t.Parallel()
	const maxConns = 20
	p := startProc(t, "connmgr", newEnv(t).with("CONNMGR_MAX_CONNECTIONS", strconv.Itoa(maxConns)))
	for i := range maxConns {
		c, err := net.DialTimeout("tcp", p.hostPort(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		res.Body.Close()
	}
	// The idle timeout is a minute: a caller that got no slot would wait
	// that long.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	r, err := request(context.Background(), fresh, "GET", p.url+"/healthz", "", nil)
	switch {
	case err != nil:
		t.Errorf("GET /healthz with %d idle connections open: %v, want 200", maxConns, err)
	case r.status != http.StatusOK:
		t.Errorf("GET /healthz with %d idle connections open = %s, want 200", maxConns, r)
	default:
		t.Logf("GET /healthz with %d idle connections open: 200 in %v", maxConns, r.took.Round(time.Millisecond))
	}
}

// serverSocket finds, in /proc/net/tcp, the socket of the server side of
// the connection from client to the server at serverPort, and returns its
// inode: 0 once no process holds it (closed, the kernel finishing it), -1
// when the kernel has none left.
func serverSocket(t testing.TB, client net.Addr, serverPort int) int {
	t.Helper()
	// /proc/net/tcp writes an IPv4 address as one little-endian word.
	hexAddr := func(ip net.IP, port int) string {
		ip = ip.To4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], port)
	}
	ta := client.(*net.TCPAddr)
	local, remote := hexAddr(net.IPv4(127, 0, 0, 1), serverPort), hexAddr(ta.IP, ta.Port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[1] != local || f[2] != remote {
			continue
		}
		inode, _ := strconv.Atoi(f[9])
		return inode
	}
	return -1
}

// TestSlowReaderOfAStream (#8 item 4): a caller that stops reading a
// streamed invoke answer cannot hold connmgr's connection: it is cut
// after the connection's timeout (plus the invoke slack), not held until
// the caller reads, though CONNMGR_WRITE_TIMEOUT is a minute.
func TestSlowReaderOfAStream(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	// cutWithin: the connection's timeout, the 10s slack invokes get on
	// top of it, and time to notice.
	const cutWithin = timeout + 10*time.Second + 5*time.Second
	var streamed atomic.Int64
	stream := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := bytes.Repeat([]byte("s"), 32<<10)
		for {
			n, err := w.Write(chunk)
			streamed.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	p := startProc(t, "connmgr", newEnv(t).with("CONNMGR_WRITE_TIMEOUT", "60s"))
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Stream", "role": "INVOKE",
		"baseUrl": stream.URL, "timeoutMs": timeout.Milliseconds(), "security": map[string]any{"policy": "NONE"}})
	port, _ := strconv.Atoi(p.hostPort()[strings.LastIndexByte(p.hostPort(), ':')+1:])

	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", p.hostPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "GET /invoke/Conn_Stream/x HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer "+p.admin()+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the stream fills the buffers", func() string {
		if streamed.Load() == 0 || serverSocket(t, c.LocalAddr(), port) <= 0 {
			return "not yet"
		}
		return ""
	})
	// The caller reads nothing: connmgr's write blocks until its deadline.
	eventually(t, cutWithin, "connmgr closes the connection of a caller that stopped reading", func() string {
		if inode := serverSocket(t, c.LocalAddr(), port); inode > 0 {
			return fmt.Sprintf("connmgr still holds the socket (inode %d); %d bytes streamed", inode, streamed.Load())
		}
		return ""
	})
	took := time.Since(start)
	t.Logf("a caller that stopped reading was cut %v after its invoke started (connection timeout %v); %.1f MiB streamed by the target",
		took.Round(100*time.Millisecond), timeout, float64(streamed.Load())/(1<<20))
	if took < timeout {
		t.Errorf("cut %v after the invoke started, before the connection's timeout of %v", took, timeout)
	}
	// The caller then finds a cut-off answer, not one that goes on.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("after connmgr closed the connection the caller still reads (%d bytes, then %v)", n, err)
	}
}

// TestSelfInvoke (#8 item 5): a connection may not target connmgr's own
// public URL or listen address (422 at create and replace); one that
// reaches connmgr under another name (here through a TCP forwarder, as
// behind a load balancer) stops with 508 loop_detected after a few hops,
// instead of recursing until the process runs out of file descriptors.
func TestSelfInvoke(t *testing.T) {
	t.Parallel()
	const public = "https://connmgr.example.test"
	p := startProc(t, "connmgr", newEnv(t).with("CONNMGR_PUBLIC_URL", public+"/"))
	port := p.hostPort()[strings.LastIndexByte(p.hostPort(), ':')+1:]
	target := echoTarget(t, "target")
	body := func(name, base string) map[string]any {
		return map[string]any{"name": name, "role": "INVOKE", "baseUrl": base,
			"security": map[string]any{"policy": "API_KEY", "key": p.admin(), "in": "HEADER"}}
	}
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", body("Conn_Elsewhere", target.URL))

	for i, tt := range []struct{ name, base string }{
		{"listen address", p.url + "/invoke/Conn_Self"},
		{"listen address, upper case", "HTTP://127.0.0.1:" + port + "/invoke/Conn_Self"},
		{"listen address as localhost", "http://localhost:" + port + "/invoke/Conn_Self"},
		{"listen address as ::1", "http://[::1]:" + port + "/invoke/Conn_Self"},
		{"public URL", public + "/invoke/Conn_Self"},
		{"public URL with its default port", "https://CONNMGR.example.test:443/invoke/Conn_Self"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct{ method, path, name string }{
				{"POST", "/api/v1/connections", fmt.Sprintf("Conn_Self_%d", i)},
				{"PUT", "/api/v1/connections/Conn_Elsewhere", "Conn_Elsewhere"},
			} {
				r := p.do(t, c.method, c.path, p.admin(), body(c.name, tt.base))
				if !r.isProblem(http.StatusUnprocessableEntity, "validation_failed") || !bytes.Contains(r.body, []byte("baseUrl")) {
					t.Errorf("%s %s with baseUrl %s = %.300s, want 422 naming baseUrl", c.method, c.path, tt.base, r)
				}
			}
		})
	}
	if got := p.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections/Conn_Elsewhere", nil).object(t)["baseUrl"]; got != target.URL {
		t.Errorf("after the refused replacements Conn_Elsewhere has baseUrl %v, want %s", got, target.URL)
	}
	if items := p.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections", nil).object(t)["items"].([]any); len(items) != 1 {
		t.Errorf("%d connections after the refused creations, want 1", len(items))
	}

	// connmgr under another name: a TCP forwarder in front of it.
	fwd := newForwarder(t, p.hostPort())
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Loop", "role": "INVOKE",
		"baseUrl": "http://" + fwd.addr + "/invoke/Conn_Loop", "timeoutMs": 5000,
		"security": map[string]any{"policy": "API_KEY", "key": p.admin(), "in": "HEADER"}})
	invokes := func() float64 {
		n, _ := metric(scrape(t, p), "connmgr_http_requests_total", `route="/invoke/:name/*path"`)
		m, _ := metric(scrape(t, p), "connmgr_http_requests_total", `route="/api/v1/connections/:name/invoke"`)
		return n + m
	}
	for _, tt := range []struct {
		name, method, path string
		body               any
	}{
		{"transparent", "GET", "/invoke/Conn_Loop/x", nil},
		{"dynamic", "POST", "/api/v1/connections/Conn_Loop/invoke", map[string]any{"method": "GET", "relativeUri": "/x"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, n0 := p.footprint(t), invokes()
			peak, stop := sample(p)
			const calls = 20
			var took time.Duration
			var failed *reply
			made := 0
			for made < calls {
				r := p.do(t, tt.method, tt.path, p.admin(), tt.body)
				made++
				took = max(took, r.took)
				if !r.isProblem(http.StatusLoopDetected, "loop_detected") {
					failed = r
					break
				}
			}
			stop()
			n1 := invokes()
			after := p.footprint(t)
			perCall := (n1 - n0) / float64(made)
			t.Logf("%d calls of a connection that invokes itself: %.0f invokes reached connmgr (%.1f per call), the slowest call took %v; before %s, at the peak %s, after %s",
				made, n1-n0, perCall, took.Round(time.Millisecond), before, peak(), after)
			if failed != nil {
				t.Errorf("call %d of a connection that invokes connmgr = %.300s, want 508 loop_detected", made, failed)
			}
			if perCall > 5 {
				t.Errorf("each call reached connmgr %.1f times, want at most 5", perCall)
			}
			if after.fds > before.fds+16 {
				t.Errorf("connmgr holds %d file descriptors after the loops, %d before", after.fds, before.fds)
			}
		})
	}
}

// TestMetricsAccess (#8 item 8): /metrics names every connection, so it
// needs a key that may read everything (viewer, admin); invokers and
// developers get 403, callers without a key 401. With
// CONNMGR_METRICS_ADDR set, metrics are served there without a key, and
// not on the main address.
func TestMetricsAccess(t *testing.T) {
	t.Parallel()
	p := startProc(t, "connmgr", newEnv(t))
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Secret_Name",
		"role": "INVOKE", "baseUrl": echoTarget(t, "T").URL, "security": map[string]any{"policy": "NONE"}})
	p.mustStatus(t, http.StatusOK, "GET", "/invoke/Conn_Secret_Name/x", nil)
	keys := map[string]string{"admin": p.admin()}
	for _, role := range []string{"viewer", "developer", "invoker"} {
		body := map[string]any{"name": role, "role": role}
		if role == "invoker" {
			body["connections"] = []string{"Conn_*"}
		}
		keys[role], _ = p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/apikeys", body).object(t)["key"].(string)
		p.mustNotLog(keys[role])
	}
	for _, tt := range []struct {
		role   string
		status int
		code   string
	}{
		{"", http.StatusUnauthorized, "unauthorized"},
		{"invoker", http.StatusForbidden, "forbidden"},
		{"developer", http.StatusForbidden, "forbidden"},
		{"viewer", http.StatusOK, ""},
		{"admin", http.StatusOK, ""},
	} {
		t.Run(cmpOr(tt.role, "no key"), func(t *testing.T) {
			r := p.do(t, "GET", "/metrics", keys[tt.role], nil)
			if r.status != tt.status || r.code() != tt.code {
				t.Fatalf("GET /metrics = %d %q (%d bytes), want %d %q", r.status, r.code(), len(r.body), tt.status, tt.code)
			}
			if named := bytes.Contains(r.body, []byte("Conn_Secret_Name")); named != (tt.status == http.StatusOK) {
				t.Errorf("GET /metrics = %d naming the connection: %v", r.status, named)
			}
		})
	}

	t.Run("CONNMGR_METRICS_ADDR", func(t *testing.T) {
		q := startProc(t, "connmgr with a metrics address", newEnv(t).with("CONNMGR_METRICS_ADDR", "127.0.0.1:0"))
		addr := q.logged("metrics listening", "addr")
		if addr == "" {
			t.Fatalf("no \"metrics listening\" line with its addr:\n%s", q.logs)
		}
		if r := q.do(t, "GET", "/metrics", q.admin(), nil); !r.isProblem(http.StatusNotFound, "route_not_found") {
			t.Errorf("GET /metrics on the main address with the admin key = %d %q (%d bytes), want 404 route_not_found", r.status, r.code(), len(r.body))
		}
		r, err := request(context.Background(), client, "GET", "http://"+addr+"/metrics", "", nil)
		if err != nil || r.status != http.StatusOK || !bytes.Contains(r.body, []byte("connmgr_http_requests_total")) {
			t.Fatalf("GET /metrics on %s without a key: %.200v %v, want 200 with connmgr's metrics", addr, r, err)
		}
		for _, path := range []string{"/api/v1/connections", "/healthz", "/"} {
			if r, err := request(context.Background(), client, "GET", "http://"+addr+path, q.admin(), nil); err != nil || r.status != http.StatusNotFound {
				t.Errorf("GET %s on the metrics address = %v %v, want 404", path, r, err)
			}
		}
	})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// failedStart is the outcome of a start that must fail.
type failedStart struct {
	exit   int
	stderr string
	// plain are the lines of stderr that are not JSON log lines: the error.
	plain  []string
	stdout string
}

// startFails runs connmgr with exactly e as its environment (and args),
// and fails t unless it exits with a non-zero code within 30s, without
// having listened: a process that does is killed at once.
func startFails(t *testing.T, e env, args ...string) failedStart {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, connmgrBin, args...)
	cmd.Env, cmd.Dir = e.list(), t.TempDir()
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	listened := false
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		stderr.WriteString(line + "\n")
		var rec struct{ Msg string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "connmgr listening" {
			listened = true
			_ = cmd.Process.Kill()
		}
	}
	err = cmd.Wait()
	switch {
	case listened:
		t.Fatalf("connmgr started and listened (killed); stderr:\n%s", &stderr)
	case ctx.Err() != nil:
		t.Fatalf("connmgr still ran after 30s; stderr:\n%s", &stderr)
	case err == nil || cmd.ProcessState.ExitCode() <= 0:
		t.Fatalf("exit %v, want a non-zero exit code; stderr:\n%s", err, &stderr)
	}
	f := failedStart{exit: cmd.ProcessState.ExitCode(), stderr: stderr.String(), stdout: stdout.String()}
	for _, line := range strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n") {
		if !json.Valid([]byte(line)) {
			f.plain = append(f.plain, line)
		}
	}
	return f
}

// oneLineNaming fails t unless f's error is one line that names each of
// names, and stderr holds none of secrets.
func (f failedStart) oneLineNaming(t *testing.T, names []string, secrets ...string) {
	t.Helper()
	if len(f.plain) != 1 || !all(names, func(n string) bool { return strings.Contains(f.plain[0], n) }) {
		t.Errorf("stderr has %d plain lines, want one that names %s:\n%s", len(f.plain), strings.Join(names, " and "), f.stderr)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(f.stderr, s) {
			t.Errorf("stderr shows a secret (%.6s...):\n%s", s, strings.ReplaceAll(f.stderr, s, "<SECRET>"))
		}
	}
}

// keyMaterial returns the key of an id:base64key spec and its hex form.
func keyMaterial(spec string) []string {
	_, b64, _ := strings.Cut(strings.TrimSpace(spec), ":")
	raw, _ := base64.StdEncoding.DecodeString(b64)
	return []string{b64, hex.EncodeToString(raw)}
}

// TestWrongKeys (#8 item 10): two processes on one PostgreSQL database,
// each with the key file it generated: the first serves; the second
// refuses to start, with one line naming CONNMGR_ENCRYPTION_KEYS and no
// key material, whether it has no key file yet (it must not make one), a
// key file of its own, or keys with the right id and other key material.
// With the first one's key it starts and opens the secrets.
func TestWrongKeys(t *testing.T) {
	t.Parallel()
	dbURL := storetest.CreatePostgres(t)
	target := echoTarget(t, "target")
	password := "pw-" + randHex(12)
	admin := "adm_" + randHex(20)
	base := env{"CONNMGR_ADDR": "127.0.0.1:0", "CONNMGR_DATABASE_URL": dbURL, "CONNMGR_ADMIN_TOKEN": admin,
		"CONNMGR_EGRESS_ALLOW": "127.0.0.0/8"}
	firstDir := t.TempDir()
	first := startProc(t, "first", base.with("CONNMGR_DATA_DIR", firstDir), password)
	keyFile, err := os.ReadFile(filepath.Join(firstDir, "master.key"))
	if err != nil {
		t.Fatalf("the first process made no key file: %v", err)
	}
	firstKey := strings.TrimSpace(string(keyFile))
	first.mustNotLog(keyMaterial(firstKey)...)
	first.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Keyed", "role": "INVOKE",
		"baseUrl": target.URL, "security": map[string]any{"policy": "BASIC", "username": "user", "password": password}})
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+password))

	// ownKeyFile is a data directory with a key file connmgr generated
	// there, on another database.
	ownKeyFile := func(t *testing.T) (string, []string) {
		dir := t.TempDir()
		own := startProc(t, "a start that generates a key file", env{"CONNMGR_ADDR": "127.0.0.1:0", "CONNMGR_DATA_DIR": dir})
		own.signal(t, syscall.SIGTERM)
		if st := own.wait(10 * time.Second); st == nil {
			t.Fatal("connmgr did not stop after SIGTERM")
		}
		b, err := os.ReadFile(filepath.Join(dir, "master.key"))
		if err != nil {
			t.Fatal(err)
		}
		return dir, keyMaterial(string(b))
	}
	otherK1, err := keyring.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	otherK9, err := keyring.GenerateKeySpec("k9")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) (env, []string) // the second's environment and its key material
	}{
		{"no key file yet", func(t *testing.T) (env, []string) {
			return base.with("CONNMGR_DATA_DIR", t.TempDir()), nil
		}},
		{"a key file of its own", func(t *testing.T) (env, []string) {
			dir, material := ownKeyFile(t)
			return base.with("CONNMGR_DATA_DIR", dir), material
		}},
		{"the same key id with other key material", func(t *testing.T) (env, []string) {
			return base.with("CONNMGR_DATA_DIR", t.TempDir(), "CONNMGR_ENCRYPTION_KEYS", otherK1), keyMaterial(otherK1)
		}},
		{"another key id", func(t *testing.T) (env, []string) {
			return base.with("CONNMGR_DATA_DIR", t.TempDir(), "CONNMGR_ENCRYPTION_KEYS", otherK9), keyMaterial(otherK9)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, material := tt.setup(t)
			_, hadKeyFile := os.Stat(filepath.Join(e["CONNMGR_DATA_DIR"], "master.key"))
			f := startFails(t, e)
			f.oneLineNaming(t, []string{"CONNMGR_ENCRYPTION_KEYS"}, append(append(material, keyMaterial(firstKey)...), password, admin)...)
			if _, err := os.Stat(filepath.Join(e["CONNMGR_DATA_DIR"], "master.key")); hadKeyFile != nil && err == nil {
				t.Errorf("the refused start generated a key file")
			}
			if got, msg := invokeEcho(first, "Conn_Keyed", admin); msg != "" || got.Authorization != wantAuth {
				t.Errorf("the first process after the refused start: %+v %s, want 200 with the password", got, msg)
			}
		})
	}
	t.Run("the first one's key", func(t *testing.T) {
		second := startProc(t, "second", base.with("CONNMGR_DATA_DIR", t.TempDir(), "CONNMGR_ENCRYPTION_KEYS", firstKey),
			append(keyMaterial(firstKey), password)...)
		if got, msg := invokeEcho(second, "Conn_Keyed", admin); msg != "" || got.Authorization != wantAuth {
			t.Errorf("the second process with the first one's key: %+v %s, want 200 with the password", got, msg)
		}
	})
}

// TestKeyFileMode (#8 item 10): a key file that group or others may read
// is refused at start, naming the file, without showing the key.
func TestKeyFileMode(t *testing.T) {
	t.Parallel()
	e := env{"CONNMGR_ADDR": "127.0.0.1:0", "CONNMGR_DATA_DIR": t.TempDir()}
	p := startProc(t, "first start", e)
	p.signal(t, syscall.SIGTERM)
	if st := p.wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
		t.Fatalf("first start after SIGTERM: %v", st)
	}
	path := filepath.Join(e["CONNMGR_DATA_DIR"], "master.key")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	material := keyMaterial(string(b))
	for _, tt := range []struct {
		mode   os.FileMode
		starts bool
	}{
		{0o640, false}, {0o604, false}, {0o644, false}, {0o660, false}, {0o400, true}, {0o600, true},
	} {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			if tt.starts {
				q := startProc(t, "connmgr", e, material...)
				q.signal(t, syscall.SIGTERM)
				if st := q.wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
					t.Fatalf("after SIGTERM: %v", st)
				}
				return
			}
			startFails(t, e).oneLineNaming(t, []string{path}, material...)
		})
	}
}

// TestSecondProcessOnDataDir (#8 item 12): SQLite serves one process; a
// second connmgr serve on the same data directory fails at start naming
// the directory, and the first keeps serving. Once the first stops, a
// new start works.
func TestSecondProcessOnDataDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := startProc(t, "first", e)
	target := echoTarget(t, "T")
	first.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Before", "role": "INVOKE",
		"baseUrl": target.URL, "security": map[string]any{"policy": "NONE"}})

	startFails(t, e).oneLineNaming(t, []string{e["CONNMGR_DATA_DIR"]}, e.secrets()...)

	first.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_After", "role": "INVOKE",
		"baseUrl": target.URL, "security": map[string]any{"policy": "NONE"}})
	for _, name := range []string{"Conn_Before", "Conn_After"} {
		if _, msg := invokeEcho(first, name, first.admin()); msg != "" {
			t.Errorf("the first process after the second start: invoke %s: %s", name, msg)
		}
	}
	first.signal(t, syscall.SIGTERM)
	if st := first.wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
		t.Fatalf("first after SIGTERM: %v", st)
	}
	next := startProc(t, "after the first stopped", e)
	if _, msg := invokeEcho(next, "Conn_After", next.admin()); msg != "" {
		t.Errorf("invoke after a restart on the data directory: %s", msg)
	}
}
