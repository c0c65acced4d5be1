package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connmgr/connmgr/migrations"
)

// command runs connmgr with args and exactly e as its environment, and
// returns what it printed on stdout. It fails t when the command fails or
// its log (stderr) holds one of e's secrets.
func command(t *testing.T, e env, args ...string) string {
	t.Helper()
	cmd := exec.Command(connmgrBin, args...)
	cmd.Env = e.list()
	cmd.Dir = t.TempDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("connmgr %s: %v\n%s", strings.Join(args, " "), err, &stderr)
	}
	for _, s := range e.secrets() {
		if strings.Contains(stderr.String(), s) {
			t.Errorf("connmgr %s logged a secret: %s", strings.Join(args, " "), strings.ReplaceAll(stderr.String(), s, "<SECRET>"))
		}
	}
	return string(out)
}

// TestCommands runs the commands besides serve as an operator does:
// version, keys generate, migrate (repeatable) and keys rotate (online,
// repeatable), after which a secret stored under the old key is read
// with the new key alone.
func TestCommands(t *testing.T) {
	t.Parallel()
	if out := command(t, env{}, "version"); !strings.HasPrefix(out, "connmgr ") {
		t.Errorf("connmgr version = %q, want \"connmgr <version>\"", out)
	}
	spec := strings.TrimSpace(command(t, env{}, "keys", "generate", "--id", "k2"))
	if !regexp.MustCompile(`^k2:[A-Za-z0-9+/]{43}=$`).MatchString(spec) {
		t.Fatalf("connmgr keys generate --id k2 printed %d characters starting %.3q, want k2:<32 bytes in base64>", len(spec), spec)
	}

	e := newEnv(t)
	latest, err := migrations.Latest(migrations.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []string{"first", "again"} {
		if out, want := command(t, e, "migrate"), fmt.Sprintf("database schema at version %d (sqlite)\n", latest); out != want {
			t.Errorf("connmgr migrate (%s) = %q, want %q", run, out, want)
		}
	}

	target := echoTarget(t, "target")
	password := "pw-" + randHex(12)
	before := startProc(t, "before rotation", e, password)
	before.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Rotate",
		"role": "INVOKE", "baseUrl": target.URL,
		"security": map[string]any{"policy": "BASIC", "username": "user", "password": password}})

	rotated := e.with("CONNMGR_ENCRYPTION_KEYS", spec+","+e["CONNMGR_ENCRYPTION_KEYS"])
	tests := []struct {
		name, want string
	}{
		{"while serving", "connection secrets: 1 re-encrypted\n"},
		{"again", "connection secrets: 0 re-encrypted\n"},
	}
	for _, tt := range tests {
		out := command(t, rotated, "keys", "rotate")
		if !strings.Contains(out, tt.want) || !strings.Contains(out, `all secrets are encrypted under key "k2"`) {
			t.Errorf("connmgr keys rotate (%s) = %q, want %q and all secrets under k2", tt.name, out, tt.want)
		}
	}
	before.signal(t, syscall.SIGTERM)
	if st := before.wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
		t.Fatalf("connmgr after SIGTERM: %v, want exit code 0 within 10s", st)
	}

	after := startProc(t, "after rotation", e.with("CONNMGR_ENCRYPTION_KEYS", spec), password)
	r := after.do(t, "GET", "/invoke/Conn_Rotate/x", after.admin(), nil)
	if r.status != http.StatusOK {
		t.Fatalf("invoke with only the new key = %s, want 200", r)
	}
	got, err := r.echoed()
	if err != nil {
		t.Fatal(err)
	}
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+password)); got.Authorization != want {
		t.Errorf("with only the new key the target saw Authorization %q, want the stored password", got.Authorization)
	}
}
