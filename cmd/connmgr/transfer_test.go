package main

// Connections as code (#13) as a team runs it: connections made on a
// test instance (SQLite) are exported, kept in a directory as in git, and
// applied to another instance (PostgreSQL) with sealed secrets and with
// environment references, where they invoke without anyone retyping a
// secret; applies are idempotent, dry runs and diff show changes, prune
// keeps to its selector, and hostile files apply nothing.

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store/storetest"
)

// cliRun is the outcome of one client command.
type cliRun struct {
	code           int
	stdout, stderr string
}

// asClient runs connmgr args as a client of p, with extra environment kv,
// and fails t when its output holds one of canaries.
func asClient(t *testing.T, p *proc, canaries []string, kv []string, args ...string) cliRun {
	t.Helper()
	e := env{"CONNMGR_URL": p.url, "CONNMGR_API_KEY": p.admin()}.with(kv...)
	code, stdout, stderr := runCLI(t, e, args...)
	for _, s := range append(canaries, p.admin()) {
		if strings.Contains(stdout+stderr, s) {
			t.Errorf("connmgr %s printed a secret (%.8s...)", strings.Join(args, " "), s)
		}
	}
	return cliRun{code, stdout, stderr}
}

// identityFile writes a new age identity to a 0600 file and returns its
// path and recipient.
func identityFile(t *testing.T) (string, string) {
	t.Helper()
	id, recipient, err := keyring.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "identity.txt")
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, recipient
}

// refreshEndpoint is a token endpoint that takes only the refresh token
// grant with one refresh token, and keeps the access tokens it issued.
type refreshEndpoint struct {
	url, client, secret, refreshToken string
	mu                                sync.Mutex
	issued                            []string
}

func newRefreshEndpoint(t *testing.T) *refreshEndpoint {
	re := &refreshEndpoint{client: "code-client", secret: "cs-code-" + randHex(8), refreshToken: "rt-" + randHex(12)}
	re.url = startServer(t, func(w http.ResponseWriter, r *http.Request) {
		id, secret, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != re.refreshToken ||
			id != re.client || secret != re.secret {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
		tok := "at-code-" + randHex(10)
		re.mu.Lock()
		re.issued = append(re.issued, tok)
		re.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
	}).URL + "/token"
	return re
}

func (re *refreshEndpoint) tokens() []string {
	re.mu.Lock()
	defer re.mu.Unlock()
	return slices.Clone(re.issued)
}

// writeDoc writes one document to dir/name.yaml.
func writeDoc(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func listNames(t *testing.T, p *proc) []string {
	t.Helper()
	var l struct{ Items []struct{ Name string } }
	if err := json.Unmarshal(p.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections", nil).body, &l); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range l.Items {
		names = append(names, it.Name)
	}
	return names
}

func versionOf(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	v, _ := p.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections/"+name, nil).object(t)["version"].(float64)
	return v
}

// TestConnectionsAsCode is the team flow of #13, end to end.
func TestConnectionsAsCode(t *testing.T) {
	t.Parallel()
	password := "pw-" + randHex(12)
	te := newTokenEndpoint(t, 0)
	code := newRefreshEndpoint(t)
	canaries := []string{password, te.secret("orders-client"), code.secret, code.refreshToken}

	basicTarget := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if u, pw, _ := r.BasicAuth(); u != "svc" || pw != password {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		echo("basic")(w, r)
	})
	bearer := bearerTarget(t, "oauth", te)
	codeTarget := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); !slices.Contains(code.tokens(), tok) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		echo("code")(w, r)
	})

	// The test instance, on SQLite, where the team made its connections.
	idA, recipientA := identityFile(t)
	src := startProc(t, "source", newEnv(t).with("CONNMGR_IMPORT_IDENTITY", idA), canaries...)
	team := t.TempDir()
	writeDoc(t, team, "orders.yaml", `# Orders, made by hand on the test instance
apiVersion: connmgr/v1
kind: Connection
metadata:
  name: Conn_REST_Orders_Invoke_Basic
  labels: {team: orders}
spec:
  role: INVOKE
  baseUrl: `+basicTarget.URL+`
  security:
    policy: BASIC
    username: svc
    password: ${env:ORDERS_PASSWORD}
---
apiVersion: connmgr/v1
kind: Connection
metadata:
  name: Conn_REST_Billing_Invoke_OAuth
  labels: {team: orders}
spec:
  role: INVOKE
  baseUrl: `+bearer.URL+`
  security:
    policy: OAUTH2_CLIENT_CREDENTIALS
    tokenUrl: `+te.URL+`/token
    clientId: orders-client
    clientSecret: ${file:billing.secret}
`)
	if err := os.WriteFile(filepath.Join(team, "billing.secret"), []byte(te.secret("orders-client")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An authorization-code connection whose refresh token the source
	// holds (imported, sealed for the source itself).
	rs, err := keyring.ParseRecipients(recipientA)
	if err != nil {
		t.Fatal(err)
	}
	sealedRT, err := rs.Seal(keyring.Envelope{Connection: "Conn_REST_Calendar_Invoke_AuthCode", Field: "token.refreshToken",
		Origins: []string{connections.Origin(code.url)}, Value: code.refreshToken})
	if err != nil {
		t.Fatal(err)
	}
	writeDoc(t, team, "calendar.json", `[{"apiVersion": "connmgr/v1", "kind": "Connection",
  "metadata": {"name": "Conn_REST_Calendar_Invoke_AuthCode"},
  "spec": {"role": "INVOKE", "baseUrl": "`+codeTarget.URL+`",
    "security": {"policy": "OAUTH2_AUTHORIZATION_CODE", "authorizationUrl": "https://auth.example.com/authorize",
      "tokenUrl": "`+code.url+`", "clientId": "`+code.client+`", "clientSecret": "${env:CALENDAR_SECRET}"}},
  "token": {"refreshToken": "`+sealedRT+`"}}]`)
	secretsEnv := []string{"ORDERS_PASSWORD", password, "CALENDAR_SECRET", code.secret}
	r := asClient(t, src, canaries, secretsEnv, "apply", "-f", team)
	if r.code != 0 || !strings.Contains(r.stdout, "3 created") {
		t.Fatalf("apply to the source: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, name := range []string{"Conn_REST_Orders_Invoke_Basic", "Conn_REST_Billing_Invoke_OAuth", "Conn_REST_Calendar_Invoke_AuthCode"} {
		if _, msg := invokeEcho(src, name, src.admin()); msg != "" {
			t.Fatalf("invoke %s on the source: %s", name, msg)
		}
	}

	// Export: references by default, or sealed for the target.
	envDir, sealedDir := filepath.Join(t.TempDir(), "env"), filepath.Join(t.TempDir(), "sealed")
	idB, recipientB := identityFile(t)
	r = asClient(t, src, canaries, nil, "export", "--dir", envDir)
	if r.code != 0 || !strings.Contains(r.stderr, "CONN_REST_ORDERS_INVOKE_BASIC_PASSWORD") {
		t.Fatalf("export: exit %d, want the variables listed on stderr:\n%s", r.code, r.stderr)
	}
	r = asClient(t, src, canaries, nil, "export", "--dir", sealedDir, "--seal-to", recipientB, "--include-refresh-tokens")
	if r.code != 0 {
		t.Fatalf("export --seal-to: exit %d\n%s", r.code, r.stderr)
	}
	for _, dir := range []string{envDir, sealedDir} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if len(files) != 3 {
			t.Fatalf("export --dir %s wrote %v, want 3 files", dir, files)
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, s := range canaries {
				if strings.Contains(string(b), s) {
					t.Errorf("%s holds a secret (%.8s...)", f, s)
				}
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(envDir, "Conn_REST_Calendar_Invoke_AuthCode.yaml")); strings.Contains(string(b), "refreshToken") {
		t.Error("an export without --seal-to holds a refresh token")
	}
	if b, _ := os.ReadFile(filepath.Join(sealedDir, "Conn_REST_Calendar_Invoke_AuthCode.yaml")); !strings.Contains(string(b), "refreshToken: ${sealed:") {
		t.Errorf("the sealed export has no sealed refresh token:\n%s", b)
	}

	// The production instance, on PostgreSQL when there is one.
	prodEnv := newEnv(t).with("CONNMGR_IMPORT_IDENTITY", idB)
	if slices.Contains(storetest.Engines(t), storetest.Postgres) {
		prodEnv = prodEnv.with("CONNMGR_DATABASE_URL", storetest.CreatePostgres(t))
	}
	prod := startProc(t, "production", prodEnv, canaries...)
	r = asClient(t, prod, canaries, nil, "import", "-f", sealedDir, "-o", "json")
	var plan struct {
		Summary map[string]int
		Items   []struct {
			Name, Action string
			RefreshToken bool
		}
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &plan) != nil || plan.Summary["create"] != 3 {
		t.Fatalf("import of the sealed export: exit %d, want 3 creates as JSON:\n%s%s", r.code, r.stdout, r.stderr)
	}
	var seen []string
	for _, name := range []string{"Conn_REST_Orders_Invoke_Basic", "Conn_REST_Billing_Invoke_OAuth", "Conn_REST_Calendar_Invoke_AuthCode"} {
		got, msg := invokeEcho(prod, name, prod.admin())
		if msg != "" {
			t.Errorf("invoke %s on production after import: %s", name, msg)
			continue
		}
		seen = append(seen, got.Target)
	}
	if want := []string{"basic", "oauth", "code"}; !slices.Equal(seen, want) {
		t.Errorf("production reached %v, want %v", seen, want)
	}
	_, tokens, _ := te.log()
	prod.mustNotLog(append(tokens, code.tokens()...)...)
	src.mustNotLog(append(tokens, code.tokens()...)...)

	// Apply again: nothing changes, versions stay.
	before := versionOf(t, prod, "Conn_REST_Orders_Invoke_Basic")
	r = asClient(t, prod, canaries, nil, "apply", "-f", sealedDir)
	if r.code != 0 || !strings.Contains(r.stdout, "no changes: 3 connections are as declared") {
		t.Errorf("second apply: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if v := versionOf(t, prod, "Conn_REST_Orders_Invoke_Basic"); v != before {
		t.Errorf("the second apply moved the version from %v to %v", before, v)
	}
	if r = asClient(t, prod, canaries, nil, "diff", "-f", sealedDir); r.code != 0 {
		t.Errorf("diff against what was applied: exit %d, want 0\n%s", r.code, r.stdout)
	}

	// With environment references instead, on an instance of its own.
	staging := startProc(t, "staging", newEnv(t), canaries...)
	exported := []string{"CONN_REST_ORDERS_INVOKE_BASIC_PASSWORD", password,
		"CONN_REST_BILLING_INVOKE_OAUTH_CLIENT_SECRET", te.secret("orders-client"),
		"CONN_REST_CALENDAR_INVOKE_AUTHCODE_CLIENT_SECRET", code.secret}
	r = asClient(t, staging, canaries, exported[:4], "apply", "-f", envDir)
	if r.code == 0 || !strings.Contains(r.stderr, "Conn_REST_Calendar_Invoke_AuthCode.yaml#1 (Conn_REST_Calendar_Invoke_AuthCode): spec.security.clientSecret") ||
		!strings.Contains(r.stderr, "CONN_REST_CALENDAR_INVOKE_AUTHCODE_CLIENT_SECRET") {
		t.Errorf("apply with a variable missing: exit %d, want the file, document, field and variable named:\n%s", r.code, r.stderr)
	}
	if names := listNames(t, staging); len(names) != 0 {
		t.Fatalf("an apply that failed on one variable created %v", names)
	}
	if r = asClient(t, staging, canaries, exported, "apply", "-f", envDir); r.code != 0 {
		t.Fatalf("apply with references: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got, msg := invokeEcho(staging, "Conn_REST_Orders_Invoke_Basic", staging.admin())
	if msg != "" || got.Authorization != "Basic "+base64.StdEncoding.EncodeToString([]byte("svc:"+password)) {
		t.Errorf("invoke on staging: %v %s, want the password from the environment", got, msg)
	}
	if c, _ := staging.mustStatus(t, http.StatusOK, "GET", "/api/v1/connections/Conn_REST_Calendar_Invoke_AuthCode", nil).object(t)["status"].(string); c != "NEEDS_CONSENT" {
		t.Errorf("an authorization-code connection imported without its refresh token is %s, want NEEDS_CONSENT", c)
	}

	// A changed file: the dry run and diff show the field diff, secrets
	// only as changed or unchanged; nothing changes until applied.
	orders := filepath.Join(envDir, "Conn_REST_Orders_Invoke_Basic.yaml")
	b, _ := os.ReadFile(orders)
	changed := strings.Replace(string(b), "role: INVOKE", "description: moved to v2\n  role: INVOKE", 1)
	writeDoc(t, envDir, "Conn_REST_Orders_Invoke_Basic.yaml", changed)
	rotated := append(slices.Clone(exported), "CONN_REST_ORDERS_INVOKE_BASIC_PASSWORD", "pw2-"+randHex(8))
	before = versionOf(t, staging, "Conn_REST_Orders_Invoke_Basic")
	for _, args := range [][]string{{"apply", "--dry-run", "-f", envDir}, {"diff", "-f", envDir}} {
		r = asClient(t, staging, append(canaries, rotated[len(rotated)-1]), rotated, args...)
		want := []string{`Conn_REST_Orders_Invoke_Basic\s+update`, `spec\.description: \(none\) -> moved to v2`,
			`spec\.security\.password: \(secret\) changed`, `Conn_REST_Billing_Invoke_OAuth\s+unchanged`}
		wantCode := map[string]int{"apply": 0, "diff": 1}[args[0]]
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(r.stdout) {
				t.Errorf("connmgr %s: output lacks %s:\n%s", args[0], w, r.stdout)
			}
		}
		if r.code != wantCode {
			t.Errorf("connmgr %s: exit %d, want %d", args[0], r.code, wantCode)
		}
	}
	if v := versionOf(t, staging, "Conn_REST_Orders_Invoke_Basic"); v != before {
		t.Errorf("a dry run moved the version from %v to %v", before, v)
	}

	// Prune with a selector: the file removed goes, another team's stays.
	staging.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Other_Team",
		"role": "INVOKE", "baseUrl": basicTarget.URL, "security": map[string]any{"policy": "NONE"}})
	if err := os.Remove(filepath.Join(envDir, "Conn_REST_Billing_Invoke_OAuth.yaml")); err != nil {
		t.Fatal(err)
	}
	r = asClient(t, staging, canaries, exported, "apply", "-f", envDir, "--prune", "--selector", "team=orders", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "Conn_REST_Billing_Invoke_OAuth") || !strings.Contains(r.stdout, "delete") {
		t.Errorf("prune dry run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = asClient(t, staging, canaries, exported, "apply", "-f", envDir, "--prune"); r.code == 0 || !strings.Contains(r.stderr, "prune") {
		t.Errorf("prune without a selector or prefix: exit %d, want it refused:\n%s", r.code, r.stderr)
	}
	r = asClient(t, staging, canaries, exported, "apply", "-f", envDir, "--prune", "--selector", "team=orders")
	if names := listNames(t, staging); r.code != 0 || slices.Contains(names, "Conn_REST_Billing_Invoke_OAuth") || !slices.Contains(names, "Conn_Other_Team") {
		t.Errorf("prune --selector team=orders: exit %d, left %v; want Billing gone, Conn_Other_Team kept\n%s", r.code, names, r.stderr)
	}

	// Naming warnings: in the create answer and the list.
	r = asClient(t, staging, canaries, nil, "connections", "create", "--allow-plain-secrets", "-f", writeDoc(t, t.TempDir(), "w.yaml",
		"apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_REST_Misnamed_TriggerInvoke_OAuth}\nspec:\n  role: INVOKE\n  baseUrl: https://api.example.com\n  security: {policy: NONE}\n"))
	if r.code != 0 || !strings.Contains(r.stdout, "warning:") {
		t.Errorf("create of a misnamed connection: exit %d, want it created with warnings:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = asClient(t, staging, canaries, nil, "connections", "list")
	if !strings.Contains(r.stdout, "WARNINGS") || !strings.Contains(r.stdout, "name_role_mismatch,name_policy_mismatch") {
		t.Errorf("connections list does not show the warnings:\n%s", r.stdout)
	}

	// Hostile files: clear errors, nothing applied.
	hostile := t.TempDir()
	big := filepath.Join(hostile, "big.yaml")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(50 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	good := "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_Hostile_Good}\nspec: {role: INVOKE, baseUrl: 'https://api.example.com', security: {policy: NONE}}\n---\n"
	otherID, otherRecipient := identityFile(t)
	_ = otherID
	wrong, err := keyring.ParseRecipients(otherRecipient)
	if err != nil {
		t.Fatal(err)
	}
	sealedElsewhere, _ := wrong.Seal(keyring.Envelope{Connection: "Conn_Hostile_Sealed", Field: "security.password",
		Origins: []string{connections.Origin(basicTarget.URL)}, Value: "x"})
	forProd, err := keyring.ParseRecipients(recipientB)
	if err != nil {
		t.Fatal(err)
	}
	movedSecret, _ := forProd.Seal(keyring.Envelope{Connection: "Conn_Someone_Else", Field: "security.password",
		Origins: []string{connections.Origin(basicTarget.URL)}, Value: "x"})
	elsewhere, _ := forProd.Seal(keyring.Envelope{Connection: "Conn_Hostile_Dest", Field: "security.password",
		Origins: []string{"https://elsewhere.example.com:443"}, Value: "x"})
	sealedDoc := func(name, sealed string) string {
		return good + "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: " + name + "}\nspec: {role: INVOKE, baseUrl: '" +
			basicTarget.URL + "', security: {policy: BASIC, username: u, password: '" + sealed + "'}}\n"
	}
	tests := []struct {
		name, file string
		want       []string
	}{
		{"a sealed value moved to another connection", sealedDoc("Conn_Hostile_Moved", movedSecret),
			[]string{"hostile.yaml#2 (Conn_Hostile_Moved): spec.security.password", "cannot be moved"}},
		{"a sealed value sent to another host", sealedDoc("Conn_Hostile_Dest", elsewhere),
			[]string{"hostile.yaml#2 (Conn_Hostile_Dest): spec.security.password", "seal it again for this destination"}},
		{"unknown kind", good + "apiVersion: connmgr/v1\nkind: Secret\nmetadata: {name: X}\nspec: {}\n", []string{"kind", `unknown kind "Secret"`}},
		{"wrong types", good + "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_Hostile_Types}\nspec: {role: INVOKE, baseUrl: 'https://api.example.com', timeoutMs: fast, security: {policy: NONE}}\n",
			[]string{"hostile.yaml#2 (Conn_Hostile_Types): spec.timeoutMs", "must be an integer"}},
		{"missing variable", good + "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_Hostile_Env}\nspec: {role: INVOKE, baseUrl: 'https://api.example.com', security: {policy: BASIC, username: u, password: '${env:NOT_SET_ANYWHERE}'}}\n",
			[]string{"hostile.yaml#2 (Conn_Hostile_Env): spec.security.password", "NOT_SET_ANYWHERE"}},
		{"sealed for another", good + "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_Hostile_Sealed}\nspec: {role: INVOKE, baseUrl: '" + basicTarget.URL + "', security: {policy: BASIC, username: u, password: '" + sealedElsewhere + "'}}\n",
			[]string{"hostile.yaml#2 (Conn_Hostile_Sealed): spec.security.password", "another recipient"}},
		{"plain secret", good + "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_Hostile_Plain}\nspec: {role: INVOKE, baseUrl: 'https://api.example.com', security: {policy: BASIC, username: u, password: hunter2}}\n",
			[]string{"spec.security.password holds a secret value", "--allow-plain-secrets"}},
		{"alias bomb", good + "a: &a [x, x]\nb: [*a, *a]\n", []string{"anchors and aliases"}},
		{"50 MB", "", []string{"big.yaml", "50.0 MiB", "larger than"}},
	}
	for _, tt := range tests {
		t.Run("hostile "+tt.name, func(t *testing.T) {
			path := big
			if tt.file != "" {
				path = writeDoc(t, t.TempDir(), "hostile.yaml", tt.file)
			}
			r := asClient(t, prod, canaries, nil, "apply", "-f", path)
			if r.code == 0 {
				t.Fatalf("apply of a file with %s: exit 0\n%s", tt.name, r.stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("apply of a file with %s: stderr lacks %q:\n%s", tt.name, w, r.stderr)
				}
			}
			if slices.Contains(listNames(t, prod), "Conn_Hostile_Good") {
				t.Errorf("a file with %s was applied in part", tt.name)
			}
		})
	}

	// Exit codes and JSON of the other commands.
	r = asClient(t, prod, canaries, nil, "connections", "get", "Nope")
	if r.code != 1 || !strings.Contains(r.stderr, "404 connection_not_found") {
		t.Errorf("connections get Nope: exit %d %q, want 1 and the problem", r.code, r.stderr)
	}
	r = asClient(t, prod, canaries, nil, "connections", "list", "-o", "json")
	var list struct{ Items []struct{ Name string } }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &list) != nil || len(list.Items) != 3 {
		t.Errorf("connections list -o json: exit %d, want 3 items as JSON:\n%s", r.code, r.stdout)
	}
	if r = asClient(t, prod, canaries, nil, "connections", "list", "-o", "xml"); r.code != 2 {
		t.Errorf("-o xml: exit %d, want 2", r.code)
	}
	r = runCLIRun(t, env{"CONNMGR_URL": prod.url, "CONNMGR_API_KEY": "cmk_wrong"}, "audit")
	if r.code != 1 || !strings.Contains(r.stderr, "401 unauthorized") {
		t.Errorf("a wrong key: exit %d %q, want 1 and 401", r.code, r.stderr)
	}
}

func runCLIRun(t *testing.T, e env, args ...string) cliRun {
	t.Helper()
	code, stdout, stderr := runCLI(t, e, args...)
	return cliRun{code, stdout, stderr}
}

// TestClientCommands: profiles of the config file (refused while others
// may read a key in it), API keys, test, delete with If-Match, diff's
// exit code on error, YAML output and completion of names.
func TestClientCommands(t *testing.T) {
	t.Parallel()
	p := startProc(t, "server", newEnv(t))
	target := echoTarget(t, "target")
	p.mustStatus(t, http.StatusCreated, "POST", "/api/v1/connections", map[string]any{"name": "Conn_Local_Invoke_None",
		"role": "INVOKE", "baseUrl": target.URL, "security": map[string]any{"policy": "NONE"}})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	write := func(mode os.FileMode, text string) {
		if err := os.WriteFile(cfg, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(cfg, mode); err != nil {
			t.Fatal(err)
		}
	}
	profiles := "current: broken\nprofiles:\n  broken: {server: 'http://127.0.0.1:1', apiKey: nope}\n  test: {server: '" + p.url + "', apiKey: '" + p.admin() + "'}\n"
	tests := []struct {
		name     string
		mode     os.FileMode
		env      env
		args     []string
		code     int
		want     string
		inStderr bool
	}{
		{"a key in a file others read", 0o644, env{"CONNMGR_PROFILE": "test"}, []string{"connections", "list"}, 2, "chmod 600", true},
		{"--profile", 0o600, nil, []string{"connections", "list", "--profile", "test"}, 0, "Conn_Local_Invoke_None", false},
		{"CONNMGR_PROFILE", 0o600, env{"CONNMGR_PROFILE": "test"}, []string{"connections", "list", "-o", "yaml"}, 0, "name: Conn_Local_Invoke_None", false},
		{"current profile", 0o600, nil, []string{"connections", "list"}, 1, "127.0.0.1:1", true},
		{"flags win", 0o600, nil, []string{"connections", "list", "--server", p.url, "--api-key", p.admin()}, 0, "Conn_Local_Invoke_None", false},
		{"unknown profile", 0o600, nil, []string{"audit", "--profile", "nope"}, 2, `no profile "nope"`, true},
		{"test", 0o600, env{"CONNMGR_PROFILE": "test"}, []string{"connections", "test", "Conn_Local_Invoke_None"}, 0, "SUCCESS", false},
		{"delete with a stale version", 0o600, env{"CONNMGR_PROFILE": "test"}, []string{"connections", "delete", "Conn_Local_Invoke_None", "--if-match", "9"}, 1, "412 precondition_failed", true},
		{"completion of names", 0o600, env{"CONNMGR_PROFILE": "test"}, []string{"__complete", "connections", "get", "Conn_L"}, 0, "Conn_Local_Invoke_None", false},
		{"diff of a missing file", 0o600, env{"CONNMGR_PROFILE": "test"}, []string{"diff", "-f", filepath.Join(dir, "nope.yaml")}, 2, "nope.yaml", true},
		{"apikeys list", 0o600, env{"CONNMGR_PROFILE": "test"}, []string{"apikeys", "list"}, 0, "ROLE", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			write(tt.mode, profiles)
			e := env{"CONNMGR_CONFIG": cfg}
			for k, v := range tt.env {
				e[k] = v
			}
			r := runCLIRun(t, e, tt.args...)
			out := r.stdout
			if tt.inStderr {
				out = r.stderr
			}
			if r.code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("connmgr %s: exit %d, want %d and %q in its output:\n%s%s", strings.Join(tt.args, " "), r.code, tt.code, tt.want, r.stdout, r.stderr)
			}
			if tt.name != "flags win" && strings.Contains(r.stdout+r.stderr, p.admin()) {
				t.Errorf("connmgr %s printed the API key", strings.Join(tt.args, " "))
			}
		})
	}
	write(0o600, profiles)
	e := env{"CONNMGR_CONFIG": cfg, "CONNMGR_PROFILE": "test"}
	r := runCLIRun(t, e, "apikeys", "create", "--name", "ci", "--role", "viewer", "-o", "json")
	var created struct{ ID, Key string }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &created) != nil || created.Key == "" {
		t.Fatalf("apikeys create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = runCLIRun(t, e.with("CONNMGR_API_KEY", created.Key), "connections", "list"); r.code != 0 {
		t.Errorf("list with the new viewer key: exit %d %s", r.code, r.stderr)
	}
	if r = runCLIRun(t, e, "apikeys", "revoke", created.ID); r.code != 0 {
		t.Errorf("apikeys revoke: exit %d %s", r.code, r.stderr)
	}
	if r = runCLIRun(t, e.with("CONNMGR_API_KEY", created.Key), "connections", "list"); r.code != 1 || !strings.Contains(r.stderr, "401") {
		t.Errorf("list with a revoked key: exit %d %s, want 1 and 401", r.code, r.stderr)
	}
	if r = runCLIRun(t, e, "connections", "delete", "Conn_Local_Invoke_None", "--if-match", "1"); r.code != 0 {
		t.Errorf("delete at its version: exit %d %s", r.code, r.stderr)
	}
}

// TestLoadDocumentsSpecialPaths: a directory given through a symlink is
// read as the directory, and a FIFO named *.yaml (in a directory or as a
// ${file:...}) is refused at once instead of waiting for a writer forever.
func TestLoadDocumentsSpecialPaths(t *testing.T) {
	const doc = "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_A}\nspec: {role: INVOKE, security: {policy: NONE}}\n"
	o := loadOptions{getenv: func(string) string { return "" }}

	dir := t.TempDir()
	writeDoc(t, dir, "a.yaml", doc)
	link := filepath.Join(t.TempDir(), "connections")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if l, err := loadDocuments([]string{link}, o); err != nil || len(l.docs) != 1 {
		t.Errorf("loadDocuments(a symlink to a directory) = %v, want its one document", err)
	}

	fifoDir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(fifoDir, "fifo.yaml"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	writeDoc(t, fifoDir, "ref.yaml", strings.Replace(doc, "policy: NONE", "policy: BASIC, username: u, password: '${file:fifo.yaml}'", 1)+"\n")
	for _, paths := range [][]string{{fifoDir}, {filepath.Join(fifoDir, "ref.yaml")}} {
		done := make(chan error, 1)
		go func() { _, err := loadDocuments(paths, o); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("loadDocuments(%v) = %v, want the FIFO refused as not a regular file", paths, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("loadDocuments(%v) waits on the FIFO", paths)
		}
	}
}
