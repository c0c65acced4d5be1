package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connmgr/connmgr/migrations"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
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
// version, keys generate and migrate (repeatable).
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
	// migrate needs no key: it leaves none behind.
	unkeyed := env{"CONNMGR_DATA_DIR": t.TempDir()}
	command(t, unkeyed, "migrate")
	if _, err := os.Stat(filepath.Join(unkeyed["CONNMGR_DATA_DIR"], "master.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("connmgr migrate without CONNMGR_ENCRYPTION_KEYS made a key file (stat: %v)", err)
	}
}

// TestKeysRotate rotates the encryption key on each engine as the README
// says: serve with the new key first and the old one second, run keys
// rotate while serving (twice: it is repeatable), then serve with the new
// key alone. Every secret and token stored before opens with it, and what
// is derived from the instance (audit fingerprints, list cursors,
// connection fingerprints that tokens belong to) is the same before and
// after (#8 item 11).
func TestKeysRotate(t *testing.T) {
	t.Parallel()
	forEachEngine(t, keysRotate)
}

func keysRotate(t *testing.T, e env) {
	target := echoTarget(t, "target")
	te := newTokenEndpoint(t, time.Hour)
	bearer := bearerTarget(t, "bearer", te)
	password, changed := "pw-"+randHex(12), "pw2-"+randHex(12)
	canaries := []string{password, changed, te.secretPrefix}
	basic := func(name, pw string) map[string]any {
		return map[string]any{"name": name, "role": "INVOKE", "baseUrl": target.URL,
			"security": map[string]any{"policy": "BASIC", "username": "user", "password": pw}}
	}

	before := startProc(t, "before rotation", e, canaries...)
	before.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", basic("Conn_Rotate", password))
	before.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", clientCredentials("Conn_Rotate_OAuth", bearer.URL, te, "client-r"))
	before.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Rotate_Plain",
		"role": "INVOKE", "baseUrl": target.URL, "security": map[string]any{"policy": "NONE"}})
	if _, msg := invokeEcho(before, "Conn_Rotate_OAuth", before.admin()); msg != "" {
		t.Fatalf("invoke Conn_Rotate_OAuth before rotation: %s", msg)
	}
	// What was issued before the rotation: cursors of both lists, the
	// pages they lead to, and the fingerprint of the password.
	type page struct{ path, cursor, next string }
	pages := []page{{path: "/api/v1/connections?limit=1"}, {path: "/api/v1/audit?limit=1"}}
	for i, pg := range pages {
		pages[i].cursor = nextCursor(t, before, pg.path)
		pages[i].next = firstItem(t, before.mustStatus(t, http.StatusOK, "GET", pg.path+"&cursor="+url.QueryEscape(pages[i].cursor), nil))
	}
	fingerprint := auditDetail(t, before, "Conn_Rotate", "secret.set", "fingerprint")
	before.signal(t, syscall.SIGTERM)
	if st := before.wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
		t.Fatalf("connmgr after SIGTERM: %v, want exit code 0 within 10s", st)
	}

	// Serve with the new key first, then rotate while serving.
	spec, err := keyring.GenerateKeySpec("k2")
	if err != nil {
		t.Fatal(err)
	}
	both := e.with("CONNMGR_ENCRYPTION_KEYS", spec+","+e["CONNMGR_ENCRYPTION_KEYS"])
	serving := startProc(t, "serving during rotation", both, canaries...)
	serving.mustNotLog(strings.SplitN(spec, ":", 2)[1])
	tests := []struct {
		name string
		want map[string]int // re-encrypted, by column; every other column 0
	}{
		{"while serving", map[string]int{"connection_secrets.ciphertext": 2, "tokens.access_token": 1, "instance_secrets.ciphertext": 1}},
		{"again", nil},
	}
	for _, tt := range tests {
		out := command(t, both, "keys", "rotate")
		got := resealCounts(t, out)
		for column, n := range got {
			if n != tt.want[column] {
				t.Errorf("keys rotate (%s): %s: %d re-encrypted, want %d; output:\n%s", tt.name, column, n, tt.want[column], out)
			}
		}
		for column := range tt.want {
			if _, ok := got[column]; !ok {
				t.Errorf("keys rotate (%s) does not report %s; output:\n%s", tt.name, column, out)
			}
		}
		if !strings.Contains(out, `all secrets are encrypted under key "k2"`) {
			t.Errorf("keys rotate (%s) = %q, want all secrets under k2", tt.name, out)
		}
		for _, name := range []string{"Conn_Rotate", "Conn_Rotate_OAuth"} {
			if _, msg := invokeEcho(serving, name, serving.admin()); msg != "" {
				t.Errorf("invoke %s on the serving process after keys rotate (%s): %s, want 200", name, tt.name, msg)
			}
		}
	}
	serving.signal(t, syscall.SIGTERM)
	if st := serving.wait(10 * time.Second); st == nil || st.ExitCode() != 0 {
		t.Fatalf("connmgr after SIGTERM: %v, want exit code 0 within 10s", st)
	}

	// The new key alone: the start checks that it opens what is stored.
	after := startProc(t, "after rotation", e.with("CONNMGR_ENCRYPTION_KEYS", spec), canaries...)
	got, msg := invokeEcho(after, "Conn_Rotate", after.admin())
	if msg != "" {
		t.Fatalf("invoke with only the new key: %s, want 200", msg)
	}
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+password)); got.Authorization != want {
		t.Errorf("with only the new key the target saw Authorization %q, want the stored password", got.Authorization)
	}
	if _, msg := invokeEcho(after, "Conn_Rotate_OAuth", after.admin()); msg != "" {
		t.Errorf("invoke Conn_Rotate_OAuth with only the new key: %s, want 200", msg)
	}
	te.checkOneToken(t, "client-r", "the token stored before the rotation opens with the new key and still belongs to the connection", after)
	_, tokens, _ := te.log()
	for _, pg := range pages {
		r := after.do(t, "GET", pg.path+"&cursor="+url.QueryEscape(pg.cursor), after.admin(), nil)
		if r.status != http.StatusOK {
			t.Errorf("GET %s with a cursor issued before the rotation = %s, want 200", pg.path, r)
			continue
		}
		if item := firstItem(t, r); item != pg.next {
			t.Errorf("GET %s with a cursor issued before the rotation leads to %s, want %s as before", pg.path, item, pg.next)
		}
	}
	after.mustStatus(t, http.StatusOK, "PUT", "/api/v1/connections/Conn_Rotate", basic("Conn_Rotate", changed))
	if old := auditDetail(t, after, "Conn_Rotate", "secret.changed", "oldFingerprint"); old != fingerprint {
		t.Errorf("after the rotation the password's old fingerprint is %q, want %q as recorded before", old, fingerprint)
	}
	after.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", basic("Conn_Rotate_Same", password))
	if again := auditDetail(t, after, "Conn_Rotate_Same", "secret.set", "fingerprint"); again != fingerprint {
		t.Errorf("after the rotation the same password has fingerprint %q, want %q as before", again, fingerprint)
	}
	for _, name := range []string{"Conn_Rotate", "Conn_Rotate_OAuth", "Conn_Rotate_Same"} {
		for _, path := range []string{"/api/v1/connections/" + name, "/api/v1/connections/" + name + "/token"} {
			r := after.do(t, "GET", path, after.admin(), nil)
			for _, s := range append(canaries, tokens...) {
				if bytes.Contains(r.body, []byte(s)) {
					t.Errorf("GET %s shows a secret (%.6s...): %d", path, s, r.status)
				}
			}
		}
	}
	noPlaintext(t, e, append(canaries, tokens...))
}

// resealCounts reads the "column: N re-encrypted" lines of keys rotate.
func resealCounts(t *testing.T, out string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z_]+\.[a-z_]+): (\d+) re-encrypted$`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[2])
		counts[m[1]] = n
	}
	if len(counts) == 0 {
		t.Fatalf("keys rotate printed no counts:\n%s", out)
	}
	return counts
}

// nextCursor returns the nextCursor of the list at path.
func nextCursor(t *testing.T, p *proc, path string) string {
	t.Helper()
	cur, _ := p.mustStatus(t, http.StatusOK, "GET", path, nil).object(t)["nextCursor"].(string)
	if cur == "" {
		t.Fatalf("GET %s has no nextCursor", path)
	}
	return cur
}

// firstItem names the first item of a list reply: its name, or its id.
func firstItem(t *testing.T, r *reply) string {
	t.Helper()
	items, _ := r.object(t)["items"].([]any)
	if len(items) == 0 {
		t.Fatalf("an empty page: %s", r)
	}
	it, _ := items[0].(map[string]any)
	if name, ok := it["name"].(string); ok {
		return name
	}
	return fmt.Sprint(it["id"])
}

// auditDetail returns detail.key of the newest audit event of action on
// connection.
func auditDetail(t *testing.T, p *proc, connection, action, key string) string {
	t.Helper()
	r := p.mustStatus(t, http.StatusOK, "GET", "/api/v1/audit?connection="+connection+"&action="+action+"&limit=1", nil)
	items, _ := r.object(t)["items"].([]any)
	if len(items) == 0 {
		t.Fatalf("no %s event for %s: %s", action, connection, r)
	}
	detail, _ := items[0].(map[string]any)["detail"].(map[string]any)
	v, _ := detail[key].(string)
	if v == "" {
		t.Fatalf("the %s event of %s has no %s: %s", action, connection, key, r)
	}
	return v
}

// tables are the tables of connmgr's schema.
var tables = []string{"connections", "connection_secrets", "tokens", "oauth_states", "api_keys", "audit_events",
	"instance_secrets", "key_checks"}

// noPlaintext fails t when a row of the database of e holds one of secrets
// as it is.
func noPlaintext(t *testing.T, e env, secrets []string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.OpenDB(ctx, e["CONNMGR_DATABASE_URL"], e["CONNMGR_DATA_DIR"])
	if err != nil {
		t.Fatalf("open the database: %v", err)
	}
	defer db.Close()
	for _, table := range tables {
		for _, v := range storetest.TableText(t, db.DB, table) {
			for _, s := range secrets {
				if strings.Contains(v, s) {
					t.Errorf("a row of %s holds a secret (%.6s...) in plaintext", table, s)
				}
			}
		}
	}
}
