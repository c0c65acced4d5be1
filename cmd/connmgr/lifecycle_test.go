package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/connmgr/connmgr/access"
)

// TestDefaultStart starts connmgr as a stranger would, with nothing
// configured but where to listen and keep its data.
func TestDefaultStart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data") // does not exist yet
	e := env{"CONNMGR_ADDR": "127.0.0.1:0", "CONNMGR_DATA_DIR": dataDir}
	keyPath, tokenPath := filepath.Join(dataDir, "master.key"), filepath.Join(dataDir, "admin.token")
	target := echoTarget(t, "target")
	password := "pw-" + randHex(12)

	first := startProc(t, "first start", e, password)
	files := map[string][]byte{}
	for _, path := range []string{keyPath, tokenPath} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("first start did not create %s: %v", path, err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", path, mode)
		}
		files[path], _ = os.ReadFile(path)
	}
	adminKey := strings.TrimSpace(string(files[tokenPath]))
	if !strings.HasPrefix(adminKey, access.KeyPrefix) || len(adminKey) < 40 {
		t.Fatalf("admin.token holds %d characters starting %.4q, want an API key starting %q", len(adminKey), adminKey, access.KeyPrefix)
	}
	masterKey := strings.TrimSpace(string(files[keyPath]))
	first.mustNotLog(adminKey, masterKey)

	if r := first.do(t, "GET", "/api/v1/connections", adminKey, nil); r.status != http.StatusOK {
		t.Fatalf("GET /api/v1/connections with the key of admin.token = %s, want 200", r)
	}
	if r := first.do(t, "GET", "/api/v1/connections", "", nil); !r.isProblem(http.StatusUnauthorized, "unauthorized") {
		t.Fatalf("GET /api/v1/connections without a key = %s, want 401 unauthorized", r)
	}
	for _, path := range []string{keyPath, tokenPath} {
		if log := first.logs.String(); !strings.Contains(log, path) {
			t.Errorf("the log does not name %s:\n%s", path, log)
		}
	}
	checkDocsURL(t, first)

	conn := map[string]any{"name": "Conn_Default", "role": "INVOKE", "baseUrl": target.URL,
		"security": map[string]any{"policy": "BASIC", "username": "user", "password": password}}
	if r := first.do(t, "POST", "/api/v1/connections", adminKey, conn); r.status != http.StatusCreated {
		t.Fatalf("create = %s, want 201", r)
	}
	// With no CONNMGR_EGRESS_ALLOW, a loopback target is refused, and the
	// refusal says which variable would allow it.
	r := first.do(t, "GET", "/invoke/Conn_Default/x", adminKey, nil)
	if !r.isProblem(http.StatusForbidden, "egress_denied") || !bytes.Contains(r.body, []byte("CONNMGR_EGRESS_ALLOW")) {
		t.Fatalf("invoke of a loopback target by default = %s, want 403 egress_denied naming CONNMGR_EGRESS_ALLOW", r)
	}

	first.signal(t, syscall.SIGTERM)
	if st := first.wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
		t.Fatalf("first start after SIGTERM: %v, want exit code 0 within 10s", st)
	}

	// The second start reuses both files. It allows loopback egress, which
	// touches neither file, so that an invoke proves that the password
	// stored by the first start still decrypts.
	second := startProc(t, "second start", e.with("CONNMGR_EGRESS_ALLOW", "127.0.0.0/8"), password, adminKey, masterKey)
	for path, was := range files {
		now, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(now, was) {
			t.Errorf("second start changed %s (err %v)", path, err)
		}
	}
	if slices.Contains(second.logs.messages(), "generated an admin API key; read it from the file and keep it safe") {
		t.Errorf("second start generated another admin key:\n%s", second.logs)
	}
	r = second.do(t, "GET", "/invoke/Conn_Default/x", adminKey, nil)
	if r.status != http.StatusOK {
		t.Fatalf("invoke after restart with the same admin key = %s, want 200", r)
	}
	got, err := r.echoed()
	if err != nil {
		t.Fatal(err)
	}
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+password)); got.Authorization != want {
		t.Errorf("after restart the target saw Authorization %q, want the stored password", got.Authorization)
	}
}

// checkDocsURL checks that the docs URL in the "connmgr listening" line
// has the real port, also when CONNMGR_ADDR asked for any port.
func checkDocsURL(t *testing.T, p *proc) {
	t.Helper()
	for _, line := range p.logs.all() {
		var rec struct{ Msg, Docs string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "connmgr listening" {
			if want := p.url + "/docs/"; rec.Docs != want {
				t.Errorf("the listening line shows docs at %q, want %q", rec.Docs, want)
			}
			return
		}
	}
	t.Errorf("no listening line in:\n%s", p.logs)
}

// TestBadConfiguration: a bad setting stops the start with one line on
// stderr that names the variable (with a hint where one helps), before
// anything is written to the data directory (#9 item 16).
func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dbPassword := "dbpw-" + randHex(8)
	tests := []struct {
		name, variable, value string
		// named is the variable the line must name, if not variable.
		named string
		// hint is more the line must say.
		hint string
	}{
		{name: "body size not a size", variable: "CONNMGR_MAX_BODY", value: "lots"},
		{name: "body size too small", variable: "CONNMGR_MAX_BODY", value: "10"},
		{name: "egress not a CIDR", variable: "CONNMGR_EGRESS_ALLOW", value: "not-a-cidr"},
		{name: "database not postgres", variable: "CONNMGR_DATABASE_URL", value: "mysql://x"},
		{name: "database unreachable", variable: "CONNMGR_DATABASE_URL", value: "postgres://u:" + dbPassword + "@127.0.0.1:1/x?connect_timeout=5"},
		{name: "log level", variable: "CONNMGR_LOG_LEVEL", value: "loud"},
		{name: "schedule", variable: "CONNMGR_REFRESH_SCHEDULE", value: "every now and then"},
		{name: "schedule as a duration", variable: "CONNMGR_REFRESH_SCHEDULE", value: "15s", hint: `"@every 15s"`},
		{name: "admin token short", variable: "CONNMGR_ADMIN_TOKEN", value: "short"},
		{name: "encryption keys", variable: "CONNMGR_ENCRYPTION_KEYS", value: "k1:not-base64"},
		{name: "token TTL", variable: "CONNMGR_DEFAULT_TOKEN_TTL", value: "forever"},
		{name: "token timeout", variable: "CONNMGR_TOKEN_TIMEOUT", value: "forever"},
		{name: "token timeout without unit", variable: "CONNMGR_TOKEN_TIMEOUT", value: "30"},
		{name: "read timeout too short", variable: "CONNMGR_READ_TIMEOUT", value: "1ms"},
		{name: "write timeout", variable: "CONNMGR_WRITE_TIMEOUT", value: "-1s"},
		{name: "max connections", variable: "CONNMGR_MAX_CONNECTIONS", value: "lots"},
		{name: "max connections too few", variable: "CONNMGR_MAX_CONNECTIONS", value: "1"},
		{name: "address not host:port", variable: "CONNMGR_ADDR", value: "nowhere"},
		{name: "address port out of range", variable: "CONNMGR_ADDR", value: "127.0.0.1:99999"},
		{name: "address not an address", variable: "CONNMGR_ADDR", value: "256.0.0.1:8080"},
		{name: "address in use", variable: "CONNMGR_ADDR", value: busy.Addr().String()},
		{name: "metrics address not host:port", variable: "CONNMGR_METRICS_ADDR", value: "nowhere"},
		{name: "metrics address in use", variable: "CONNMGR_METRICS_ADDR", value: busy.Addr().String()},
		{name: "public URL", variable: "CONNMGR_PUBLIC_URL", value: "ftp://x"},
		{name: "data dir is a file", variable: "CONNMGR_DATA_DIR", value: aFile},
		{name: "webhook without secret", variable: "CONNMGR_WEBHOOK_URL", value: "https://alerts.example.com/hook", named: "CONNMGR_WEBHOOK_SECRET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dataDir := filepath.Join(t.TempDir(), "data") // must stay absent
			e := env{"CONNMGR_ADDR": "127.0.0.1:0", "CONNMGR_DATA_DIR": dataDir}.with(tt.variable, tt.value)
			f := startFails(t, e)
			named := tt.variable
			if tt.named != "" {
				named = tt.named
			}
			// Log lines (JSON) may come first, when the problem shows only
			// once the database is open; the error itself is one line.
			if len(f.plain) != 1 || strings.Count(f.plain[0], named) != 1 || !strings.Contains(f.plain[0], tt.hint) {
				t.Fatalf("%s=%q: stderr has %d plain lines, want one that names %s once (and says %s):\n%s",
					tt.variable, tt.value, len(f.plain), named, cmpOr(tt.hint, "nothing more"), f.stderr)
			}
			if strings.Contains(f.stderr, dbPassword) {
				t.Errorf("stderr shows the database password:\n%s", f.stderr)
			}
			if f.stdout != "" {
				t.Errorf("stdout is not empty: %s", f.stdout)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				entries, _ := os.ReadDir(dataDir)
				t.Errorf("%s=%q: the refused start created the data directory (%v), holding %v", tt.variable, tt.value, err, entries)
			}
			if fi, err := os.Stat(aFile); err != nil || fi.Size() != 0 {
				t.Errorf("the refused start changed %s", aFile)
			}
		})
	}
}

// TestSIGTERMFinishesInFlightInvokes: SIGTERM lets calls in flight finish,
// refuses new ones, and exits 0.
func TestSIGTERMFinishesInFlightInvokes(t *testing.T) {
	t.Parallel()
	var slow, late atomic.Int32
	target := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			slow.Add(1)
			time.Sleep(1500 * time.Millisecond)
			_, _ = w.Write([]byte("done"))
		case "/late":
			late.Add(1)
		}
	})
	p := startProc(t, "connmgr", newEnv(t))
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Slow", "role": "INVOKE",
		"baseUrl": target.URL, "security": map[string]any{"policy": "NONE"}, "timeoutMs": 10000})
	p.mustStatus(t, http.StatusOK, "GET", "/invoke/Conn_Slow/warm", nil)

	const n = 10
	start := time.Now()
	type result struct {
		r   *reply
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			r, err := p.try("GET", "/invoke/Conn_Slow/slow", p.admin(), nil)
			results <- result{r, err}
		}()
	}
	eventually(t, 2*time.Second, "all invokes reach the target", func() string {
		if got := slow.Load(); got < n {
			return strings.Repeat("*", int(got)) + " arrived"
		}
		return ""
	})
	time.Sleep(time.Until(start.Add(300 * time.Millisecond)))
	p.signal(t, syscall.SIGTERM)
	signalled := time.Now()
	eventually(t, 2*time.Second, "the shutdown is logged", func() string {
		for _, m := range p.logs.messages() {
			if strings.HasPrefix(m, "shutting down") {
				return ""
			}
		}
		return "no \"shutting down\" line"
	})
	time.Sleep(50 * time.Millisecond) // the listener closes right after the line

	// A new call on a new connection is refused, or answered 503, and
	// never reaches the target.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	r, err := request(context.Background(), fresh, "GET", p.url+"/invoke/Conn_Slow/late", p.admin(), nil)
	switch {
	case err != nil && !refused(err):
		t.Errorf("a call after SIGTERM failed with %v, want connection refused", err)
	case err == nil && r.status != http.StatusServiceUnavailable:
		t.Errorf("a call after SIGTERM = %s, want connection refused or 503", r)
	}

	for range n {
		res := <-results
		if res.err != nil || res.r.status != http.StatusOK || string(res.r.body) != "done" {
			t.Errorf("in-flight invoke after SIGTERM: %v %v, want 200 done", res.r, res.err)
		}
	}
	st := p.wait(5 * time.Second)
	if st == nil {
		t.Fatalf("connmgr still runs %v after SIGTERM", time.Since(signalled).Round(time.Millisecond))
	}
	if st.ExitCode() != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0; output:\n%s", st.ExitCode(), p.logs)
	}
	if !slices.Contains(p.logs.messages(), "stopped") {
		t.Errorf("the log does not say it stopped:\n%s", p.logs)
	}
	if got := late.Load(); got != 0 {
		t.Errorf("the call sent after SIGTERM reached the target %d times", got)
	}
	t.Logf("exited %v after SIGTERM", time.Since(signalled).Round(time.Millisecond))
}
