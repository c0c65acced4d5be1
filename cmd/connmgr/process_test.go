package main

// The tests of this package run connmgr as an operator does: the binary,
// built once by TestMain, started as child processes configured only by
// CONNMGR_* variables, talked to over HTTP, stopped by signals. Every line
// a child writes is kept and checked for secrets when the test ends.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store/storetest"
)

// connmgrBin is the binary under test, built by TestMain.
var connmgrBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "connmgr-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	connmgrBin = filepath.Join(dir, "connmgr")
	build := exec.Command("go", "build", "-o", connmgrBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/connmgr: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a child's whole environment: nothing is inherited.
type env map[string]string

// with returns a copy of e with the pairs set; an empty value unsets.
func (e env) with(kv ...string) env {
	c := make(env, len(e)+len(kv)/2)
	for k, v := range e {
		c[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(c, kv[i])
		} else {
			c[kv[i]] = kv[i+1]
		}
	}
	return c
}

func (e env) list() []string {
	var l []string
	for k, v := range e {
		l = append(l, k+"="+v)
	}
	slices.Sort(l)
	return l
}

// secrets returns the values of e that must never be logged.
func (e env) secrets() []string {
	var s []string
	if v := e["CONNMGR_ADMIN_TOKEN"]; v != "" {
		s = append(s, v)
	}
	for entry := range strings.SplitSeq(e["CONNMGR_ENCRYPTION_KEYS"], ",") {
		if _, key, ok := strings.Cut(entry, ":"); ok && key != "" {
			s = append(s, key)
		}
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newEnv returns the configuration of a test process on SQLite in a data
// directory of its own, with a fresh encryption key and admin token. Copy
// it with with() to share the key and token between replicas.
func newEnv(t testing.TB) env {
	t.Helper()
	spec, err := keyring.GenerateKeySpec("t1")
	if err != nil {
		t.Fatal(err)
	}
	return env{
		"CONNMGR_ADDR":            "127.0.0.1:0",
		"CONNMGR_DATA_DIR":        t.TempDir(),
		"CONNMGR_ENCRYPTION_KEYS": spec,
		"CONNMGR_ADMIN_TOKEN":     "adm_" + randHex(20),
		"CONNMGR_EGRESS_ALLOW":    "127.0.0.0/8",
		"CONNMGR_LOG_LEVEL":       "debug",
	}
}

// logLines keeps every line a child wrote.
type logLines struct {
	mu    sync.Mutex
	lines []string
	// partial holds stdout bytes after the last newline.
	partial []byte
}

func (l *logLines) add(line string) {
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

// Write takes stdout, which is not parsed, only kept.
func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.lines)
	if len(l.partial) > 0 {
		out = append(out, string(l.partial))
	}
	return out
}

// messages returns the "msg" of every JSON log line.
func (l *logLines) messages() []string {
	var msgs []string
	for _, line := range l.all() {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg != "" {
			msgs = append(msgs, rec.Msg)
		}
	}
	return msgs
}

func (l *logLines) String() string { return strings.Join(l.all(), "\n") }

// proc is a running connmgr child process.
type proc struct {
	t    testing.TB
	name string
	env  env
	cmd  *exec.Cmd
	// url is "http://" and the address from the "connmgr listening" line.
	url  string
	logs *logLines
	// done is closed when the process has exited; state is set then.
	done  chan struct{}
	state *os.ProcessState

	mu       sync.Mutex
	canaries []string
}

// startProc starts connmgr with exactly e as its environment and waits
// until it listens. The process is killed when the test ends, and then
// none of its output lines may contain e's secrets or canaries.
func startProc(t testing.TB, name string, e env, canaries ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, env: e, logs: &logLines{}, done: make(chan struct{})}
	p.cmd = exec.Command(connmgrBin)
	p.cmd.Env = e.list()
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout = p.logs
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.mustNotLog(append(e.secrets(), canaries...)...)
	t.Cleanup(func() {
		p.kill()
		p.checkCanaries()
		p.checkDurations()
	})
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			p.logs.add(line)
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "connmgr listening" {
				select {
				case listening <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // after an over-long line
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	select {
	case addr := <-listening:
		p.url = "http://" + addr
	case <-p.done:
		t.Fatalf("%s exited (%v) before listening; output:\n%s", name, p.state, p.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not log \"connmgr listening\" within 30s; output:\n%s", name, p.logs)
	}
	return p
}

// mustNotLog adds secrets that no output line of p may contain.
func (p *proc) mustNotLog(secrets ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			p.canaries = append(p.canaries, s)
		}
	}
}

// checkCanaries fails the test for every output line holding a secret.
func (p *proc) checkCanaries() {
	p.mu.Lock()
	secrets := slices.Clone(p.canaries)
	p.mu.Unlock()
	for _, line := range p.logs.all() {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				p.t.Errorf("%s logged a secret (%.6s...): %s", p.name, s, strings.ReplaceAll(line, s, "<SECRET>"))
			}
		}
	}
}

// durationKey matches the log attributes that hold a duration.
var durationKey = regexp.MustCompile(`(?i)(^|_)(duration|latency|took|elapsed|grace|timeout|ttl|backoff|wait|delay|interval|lifetime)$`)

// checkDurations fails the test for every JSON output line with a
// duration that does not carry its unit ("1.5s", not 1500000000).
func (p *proc) checkDurations() {
	for _, line := range p.logs.all() {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if bad := unitless(rec, ""); len(bad) > 0 {
			p.t.Errorf("%s logged durations without units (%s): %s", p.name, strings.Join(bad, ", "), line)
		}
	}
}

// unitless returns the keys of rec (and of the groups in it) that name a
// duration whose value is not a duration with a unit.
func unitless(rec map[string]any, prefix string) []string {
	var bad []string
	for k, v := range rec {
		if group, ok := v.(map[string]any); ok {
			bad = append(bad, unitless(group, prefix+k+".")...)
			continue
		}
		if !durationKey.MatchString(k) {
			continue
		}
		if s, ok := v.(string); !ok || !hasUnit(s) {
			bad = append(bad, fmt.Sprintf("%s%s=%v", prefix, k, v))
		}
	}
	return bad
}

// hasUnit reports whether s is a Go duration with a unit, such as "1.5s".
func hasUnit(s string) bool {
	_, err := time.ParseDuration(s)
	return err == nil && strings.IndexFunc(s, unicode.IsLetter) >= 0
}

// logged returns the value of key of the first JSON line whose msg is msg,
// or "" if there is none.
func (p *proc) logged(msg, key string) string {
	for _, line := range p.logs.all() {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			v, _ := rec[key].(string)
			return v
		}
	}
	return ""
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// footprint is what a process holds: file descriptors and resident set
// size as the kernel says, goroutines (when known, else 0) as the process
// says in its metrics.
type footprint struct {
	fds, rssKB, goroutines int
}

func (u footprint) String() string {
	s := fmt.Sprintf("%d fds, RSS %.1f MiB", u.fds, float64(u.rssKB)/1024)
	if u.goroutines > 0 {
		s += fmt.Sprintf(", %d goroutines", u.goroutines)
	}
	return s
}

// footprint reads the open file descriptors (/proc/PID/fd) and the
// resident set size (VmRSS of /proc/PID/status) of the process.
func (p *proc) footprint(t testing.TB) footprint {
	t.Helper()
	u, err := procFootprint(p.pid())
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	return u
}

func procFootprint(pid int) (footprint, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return footprint{}, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return footprint{}, err
	}
	u := footprint{fds: len(fds)}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			u.rssKB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	if u.rssKB == 0 {
		return footprint{}, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return u, nil
}

// metric sums the samples of the Prometheus text exposition body named
// name whose labels contain every one of labels (`route="/healthz"`).
func metric(body []byte, name string, labels ...string) (float64, bool) {
	sum, found := 0.0, false
	for line := range strings.SplitSeq(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		i := strings.LastIndexByte(rest, ' ')
		set := rest[:i]
		if !all(labels, func(l string) bool { return strings.Contains(set, l) }) {
			continue
		}
		v, err := strconv.ParseFloat(rest[i+1:], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

func all[T any](s []T, f func(T) bool) bool {
	for _, v := range s {
		if !f(v) {
			return false
		}
	}
	return true
}

// signal sends sig to the process.
func (p *proc) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

// kill kills the process (if it still runs) and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// wait waits up to d for the process to exit and returns its state, or
// nil if it is still running.
func (p *proc) wait(d time.Duration) *os.ProcessState {
	select {
	case <-p.done:
		return p.state
	case <-time.After(d):
		return nil
	}
}

// client is the HTTP client of the tests that talk to children.
var client = &http.Client{Timeout: 15 * time.Second}

// reply is a response read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
}

func (r *reply) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

// object decodes the body as a JSON object.
func (r *reply) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object (%v): %s", err, r.body)
	}
	return m
}

// code returns the problem code of a problem+json reply, or "".
func (r *reply) code() string {
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") {
		return ""
	}
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(r.body, &p)
	return p.Code
}

// isProblem reports whether r is a problem+json with status and code.
func (r *reply) isProblem(status int, code string) bool {
	return r.status == status && r.code() == code
}

// request sends a request to base+path with key as bearer token (none if
// "") and body as JSON (unless nil), on c.
func request(ctx context.Context, c *http.Client, method, url, key string, body any) (*reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	return &reply{status: res.StatusCode, header: res.Header, body: b, took: time.Since(start)}, nil
}

// try sends a request to the process; safe in any goroutine.
func (p *proc) try(method, path, key string, body any) (*reply, error) {
	return request(context.Background(), client, method, p.url+path, key, body)
}

// do is try that fails t on a transport error.
func (p *proc) do(t testing.TB, method, path, key string, body any) *reply {
	t.Helper()
	r, err := p.try(method, path, key, body)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, p.name, err)
	}
	return r
}

// admin is the process's CONNMGR_ADMIN_TOKEN.
func (p *proc) admin() string { return p.env["CONNMGR_ADMIN_TOKEN"] }

// mustStatus sends a request as admin and fails t unless it answers want.
func (p *proc) mustStatus(t testing.TB, want int, method, path string, body any) *reply {
	t.Helper()
	r := p.do(t, method, path, p.admin(), body)
	if r.status != want {
		t.Fatalf("%s %s on %s = %s, want %d", method, path, p.name, r, want)
	}
	return r
}

// eventually calls cond every 50ms until it returns "" or d has passed,
// and returns how long that took; on timeout it fails with the last
// answer of cond.
func eventually(t testing.TB, d time.Duration, what string, cond func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		last := cond()
		if last == "" {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startServer starts an httptest server that is closed when the test ends.
func startServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// echoTarget is an upstream that answers {"target": name, "path": ...,
// "authorization": ..., "headers": {...}} for every call.
func echoTarget(t testing.TB, name string) *httptest.Server { return startServer(t, echo(name)) }

// echo is echoTarget's handler.
func echo(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hdr := map[string]string{}
		for k := range r.Header {
			hdr[k] = r.Header.Get(k)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"target": name, "path": r.URL.Path,
			"authorization": r.Header.Get("Authorization"), "headers": hdr})
	}
}

// echoed decodes an echoTarget answer.
type echoed struct {
	Target        string            `json:"target"`
	Path          string            `json:"path"`
	Authorization string            `json:"authorization"`
	Headers       map[string]string `json:"headers"`
}

func (r *reply) echoed() (*echoed, error) {
	var e echoed
	if err := json.Unmarshal(r.body, &e); err != nil || e.Target == "" {
		return nil, fmt.Errorf("not an echo target's answer: %s", r)
	}
	return &e, nil
}

// refused reports whether err is a refused connection: nothing listens.
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// tokenEndpoint is an OAuth 2.0 token endpoint for the client credentials
// grant (client authentication in a Basic header) that keeps its own log
// of requests, as an authorization server's operator would read it.
type tokenEndpoint struct {
	*httptest.Server
	ttl time.Duration
	// secretPrefix starts every client secret: "cs-<random>-".
	secretPrefix string

	mu       sync.Mutex
	requests map[string][]time.Time // by client id
	issued   map[string]issuedToken // by access token
	misuse   []string               // tokens a target saw that were unknown or expired
}

type issuedToken struct {
	client  string
	expires time.Time
}

func newTokenEndpoint(t testing.TB, ttl time.Duration) *tokenEndpoint {
	te := &tokenEndpoint{ttl: ttl, secretPrefix: "cs-" + randHex(10) + "-",
		requests: map[string][]time.Time{}, issued: map[string]issuedToken{}}
	te.Server = startServer(t, te.serve)
	return te
}

// secret returns the client secret of client.
func (te *tokenEndpoint) secret(client string) string { return te.secretPrefix + client }

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	id, secret, ok := r.BasicAuth()
	if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"unsupported_grant_type"}`))
		return
	}
	if !ok || secret != te.secret(id) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	now := time.Now()
	tok := "at-" + randHex(16)
	te.mu.Lock()
	te.requests[id] = append(te.requests[id], now)
	te.issued[tok] = issuedToken{client: id, expires: now.Add(te.ttl)}
	te.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": int(te.ttl / time.Second)})
}

// check records a misuse unless auth is "Bearer <a token issued here that
// has not expired>".
func (te *tokenEndpoint) check(auth string) {
	tok, _ := strings.CutPrefix(auth, "Bearer ")
	now := time.Now()
	te.mu.Lock()
	defer te.mu.Unlock()
	switch it, ok := te.issued[tok]; {
	case !ok:
		te.misuse = append(te.misuse, fmt.Sprintf("unknown token %.12q", auth))
	case now.After(it.expires):
		te.misuse = append(te.misuse, fmt.Sprintf("token of %s used %v after it expired", it.client, now.Sub(it.expires)))
	}
}

// log returns the request times by client id, the tokens issued and the
// misuses seen.
func (te *tokenEndpoint) log() (requests map[string][]time.Time, tokens, misuse []string) {
	te.mu.Lock()
	defer te.mu.Unlock()
	requests = map[string][]time.Time{}
	for id, times := range te.requests {
		requests[id] = slices.Clone(times)
	}
	for tok := range te.issued {
		tokens = append(tokens, tok)
	}
	return requests, tokens, slices.Clone(te.misuse)
}

// checkOneToken fails t unless te issued exactly one token to client
// (why says why one is enough) and its targets saw no bad token. The
// tokens issued become canaries of every process in ps.
func (te *tokenEndpoint) checkOneToken(t testing.TB, client, why string, ps ...*proc) {
	t.Helper()
	requests, tokens, misuse := te.log()
	for _, p := range ps {
		p.mustNotLog(tokens...)
	}
	if n := len(requests[client]); n != 1 {
		t.Errorf("%d token requests of %s, want 1 (%s)", n, client, why)
	}
	if len(misuse) > 0 {
		t.Errorf("the target saw bad tokens: %s", strings.Join(misuse, "; "))
	}
}

// forEachEngine runs f in parallel subtests on SQLite and, when the
// tests have PostgreSQL, on a fresh PostgreSQL database, with a newEnv
// configured for it.
func forEachEngine(t *testing.T, f func(t *testing.T, e env)) {
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if engine == storetest.Postgres {
				e = e.with("CONNMGR_DATABASE_URL", storetest.CreatePostgres(t))
			}
			f(t, e)
		})
	}
}

// bearerTarget is an upstream that checks every bearer token with te and
// answers like echoTarget.
func bearerTarget(t testing.TB, name string, te *tokenEndpoint) *httptest.Server {
	answer := echo(name)
	return startServer(t, func(w http.ResponseWriter, r *http.Request) {
		te.check(r.Header.Get("Authorization"))
		answer(w, r)
	})
}

// clientCredentials is the body of an OAUTH2_CLIENT_CREDENTIALS connection
// that gets its tokens from te as client.
func clientCredentials(name, baseURL string, te *tokenEndpoint, client string) map[string]any {
	return map[string]any{"name": name, "role": "INVOKE", "baseUrl": baseURL,
		"security": map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": te.URL + "/token",
			"clientId": client, "clientSecret": te.secret(client)}}
}
