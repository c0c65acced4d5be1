package main

// What a new user meets first (#9 item 16): help and version, each
// command's own flags, warnings about misspelt variables, the way from /
// to the docs, the token request timeout, durations with units in logs.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// runCLI runs connmgr with args and exactly e as its environment, and
// returns its exit code, stdout and stderr.
func runCLI(t *testing.T, e env, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, connmgrBin, args...)
	cmd.Env, cmd.Dir = e.list(), t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("connmgr %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// TestHelp: connmgr --help lists the commands and exits 0, --version
// prints the version, and each command's help shows its own flags only.
// Help writes nothing to the data directory and shows no secret of the
// environment.
func TestHelp(t *testing.T) {
	t.Parallel()
	commands := []string{"serve", "migrate", "keys rotate", "keys generate", "version"}
	serveFlags := []string{"-addr", "-data-dir", "-database-url", "-encryption-keys", "-admin-token", "-public-url",
		"-egress-allow", "-refresh-schedule", "-token-timeout", "-max-connections", "-read-timeout", "-write-timeout",
		"-metrics-addr"}
	tests := []struct {
		name string
		args []string
		// want must all be in stdout, notWant none of it.
		want, notWant []string
	}{
		{"--help", []string{"--help"}, commands, nil},
		{"-h", []string{"-h"}, commands, nil},
		{"help", []string{"help"}, commands, nil},
		{"--version", []string{"--version"}, []string{"connmgr "}, nil},
		{"version", []string{"version"}, []string{"connmgr "}, nil},
		{"serve --help", []string{"serve", "--help"}, serveFlags, nil},
		{"migrate --help", []string{"migrate", "--help"}, []string{"-data-dir", "-database-url", "-log-level"},
			[]string{"-addr", "-admin-token", "-encryption-keys", "-public-url", "-webhook", "-egress-allow", "-metrics-addr"}},
		{"help migrate", []string{"help", "migrate"}, []string{"-data-dir", "-database-url"}, []string{"-addr", "-admin-token"}},
		{"keys rotate --help", []string{"keys", "rotate", "--help"}, []string{"-encryption-keys", "-data-dir", "-database-url"},
			[]string{"-addr", "-admin-token", "-public-url", "-webhook", "-metrics-addr"}},
		{"keys generate --help", []string{"keys", "generate", "-h"}, []string{"-id"}, []string{"-addr", "-data-dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dataDir := filepath.Join(t.TempDir(), "data")
			e := newEnv(t).with("CONNMGR_DATA_DIR", dataDir, "CONNMGR_WEBHOOK_SECRET", "whs-"+randHex(10),
				"CONNMGR_DATABASE_URL", "postgres://u:dbpw-"+randHex(6)+"@127.0.0.1:1/x")
			code, stdout, stderr := runCLI(t, e, tt.args...)
			if code != 0 {
				t.Fatalf("connmgr %s: exit %d, want 0; stderr:\n%s", strings.Join(tt.args, " "), code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("connmgr %s does not show %q:\n%s", strings.Join(tt.args, " "), w, stdout)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stdout, w+" ") || strings.Contains(stdout, w+"\n") {
					t.Errorf("connmgr %s shows %q, a flag of another command:\n%s", strings.Join(tt.args, " "), w, stdout)
				}
			}
			for _, s := range append(e.secrets(), e["CONNMGR_WEBHOOK_SECRET"], e["CONNMGR_DATABASE_URL"]) {
				if strings.Contains(stdout+stderr, s) {
					t.Errorf("connmgr %s shows a secret of the environment (%.8s...)", strings.Join(tt.args, " "), s)
				}
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("connmgr %s created the data directory", strings.Join(tt.args, " "))
			}
		})
	}
	for _, args := range [][]string{{"frobnicate"}, {"keys", "forget"}, {"migrate", "--addr", "127.0.0.1:0"}} {
		code, stdout, stderr := runCLI(t, env{}, args...)
		if code == 0 || !strings.Contains(stderr, "--help") && !strings.Contains(stderr, "-h") {
			t.Errorf("connmgr %s: exit %d, stderr %q, want a non-zero exit and a pointer to --help", strings.Join(args, " "), code, stderr)
		}
		if stdout != "" {
			t.Errorf("connmgr %s printed on stdout: %q", strings.Join(args, " "), stdout)
		}
	}
}

// TestUnknownVariables: a CONNMGR_* variable connmgr does not know is a
// warning that names the closest known one (its value is not logged: a
// misspelt CONNMGR_ADMIN_TOKEN holds a secret).
func TestUnknownVariables(t *testing.T) {
	t.Parallel()
	tests := []struct{ variable, closest string }{
		{"CONNMGR_REFRESH_SCHEDUEL", "CONNMGR_REFRESH_SCHEDULE"},
		{"CONNMGR_ADMIN_TOKNE", "CONNMGR_ADMIN_TOKEN"},
		{"CONNMGR_MAX_CONECTIONS", "CONNMGR_MAX_CONNECTIONS"},
		{"CONNMGR_EGRESS_ALLOWED", "CONNMGR_EGRESS_ALLOW"},
	}
	e := newEnv(t)
	var values []string
	for _, tt := range tests {
		v := "value-" + randHex(8)
		values = append(values, v)
		e = e.with(tt.variable, v)
	}
	p := startProc(t, "connmgr", e, values...)
	warned := map[string]string{}
	for _, line := range p.logs.all() {
		var rec struct {
			Level, Msg, Variable string
			DidYouMean           string `json:"did_you_mean"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "unknown environment variable ignored" {
			if rec.Level != "WARN" {
				t.Errorf("the line about %s has level %s, want WARN", rec.Variable, rec.Level)
			}
			warned[rec.Variable] = rec.DidYouMean
		}
	}
	for _, tt := range tests {
		if got, ok := warned[tt.variable]; !ok || got != tt.closest {
			t.Errorf("warning about %s: %q (warned: %v), want one naming %s", tt.variable, got, ok, tt.closest)
		}
	}
	if len(warned) != len(tests) {
		t.Errorf("warnings about %v, want only the %d unknown variables", warned, len(tests))
	}
}

// TestRootLeadsToDocs: GET / is a page that leads to the API docs and the
// console.
func TestRootLeadsToDocs(t *testing.T) {
	t.Parallel()
	p := startProc(t, "connmgr", newEnv(t))
	r := p.do(t, "GET", "/", "", nil)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s, want an HTML page", r.status, r.header.Get("Content-Type"))
	}
	for _, link := range []string{`href="/docs/"`, `href="/console/"`} {
		if !strings.Contains(string(r.body), link) {
			t.Errorf("GET / has no %s: %s", link, r.body)
		}
	}
	for _, path := range []string{"/docs/", "/console/"} {
		if r := p.do(t, "GET", path, "", nil); r.status != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", path, r.status)
		}
	}
}

// TestTokenTimeout: CONNMGR_TOKEN_TIMEOUT bounds a request to a token
// endpoint that never answers, and an invoke never waits on a token
// endpoint longer than its own connection's timeout.
func TestTokenTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	held := map[string]time.Duration{} // by client id: how long the token endpoint was kept waiting
	hang := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id, _, _ := r.BasicAuth()
		_ = r.ParseForm() // until the body is read, the server does not notice the client hanging up
		select {
		case <-r.Context().Done():
		case <-release:
		}
		mu.Lock()
		held[id] = time.Since(start)
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for the handlers
	secret := "cs-" + randHex(12)
	tests := []struct {
		name         string
		tokenTimeout string
		timeoutMs    int
		// the invoke must answer 503 token_unavailable in [min, max]; the
		// token request must end within heldMax.
		min, max, heldMax time.Duration
	}{
		{"token timeout shorter than the connection's", "1s", 60000, 900 * time.Millisecond, 4 * time.Second, 4 * time.Second},
		{"connection timeout shorter than the token timeout", "10s", 500, 450 * time.Millisecond, 3 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, "connmgr", newEnv(t).with("CONNMGR_TOKEN_TIMEOUT", tt.tokenTimeout), secret)
			client := "client-" + randHex(4)
			p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Token_Hang",
				"role": "INVOKE", "baseUrl": echoTarget(t, "T").URL, "timeoutMs": tt.timeoutMs,
				"security": map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": hang.URL,
					"clientId": client, "clientSecret": secret}})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := request(ctx, &http.Client{}, "GET", p.url+"/invoke/Conn_Token_Hang/x", p.admin(), nil)
			if err != nil {
				t.Fatalf("invoke: %v", err)
			}
			t.Logf("CONNMGR_TOKEN_TIMEOUT=%s, connection timeout %dms: %d %s after %v", tt.tokenTimeout, tt.timeoutMs,
				r.status, r.code(), r.took.Round(time.Millisecond))
			if !r.isProblem(http.StatusServiceUnavailable, "token_unavailable") || r.took < tt.min || r.took > tt.max {
				t.Errorf("invoke while the token endpoint hangs = %s after %v, want 503 token_unavailable within %v to %v",
					r, r.took.Round(time.Millisecond), tt.min, tt.max)
			}
			if tt.heldMax == 0 {
				return
			}
			eventually(t, tt.heldMax, "the token request ends", func() string {
				mu.Lock()
				defer mu.Unlock()
				if d, ok := held[client]; ok {
					t.Logf("the token endpoint was kept waiting %v", d.Round(time.Millisecond))
					return ""
				}
				return "still waiting"
			})
		})
	}
}

// TestDurationsHaveUnits: the request line of every call says how long it
// took with a unit, as every duration of every log line does (startProc
// checks the rest of each process's output).
func TestDurationsHaveUnits(t *testing.T) {
	t.Parallel()
	p := startProc(t, "connmgr", newEnv(t))
	p.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections", nil)
	var line string
	eventually(t, 5*time.Second, "the request is logged", func() string {
		for _, l := range p.logs.all() {
			if strings.Contains(l, `"msg":"request"`) {
				line = l
				return ""
			}
		}
		return "no request line"
	})
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if d, ok := rec["duration"].(string); !ok || !hasUnit(d) {
		t.Errorf("a request line's duration is %v, want a duration with its unit such as \"1.2ms\": %s", rec["duration"], line)
	}
}
