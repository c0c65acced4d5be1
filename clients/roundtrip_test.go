package clients

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connmgr/connmgr/clients/goclient"
)

// The round trip: a built connmgr (a child process on a free loopback port,
// SQLite in a temporary directory), an httptest target, and each generated
// client doing what an integration does: create one connection per policy
// of the contract, list, read, replace with If-Match, lose a stale replace,
// patch with If-Match, lose a stale patch, invoke with a template, tell
// connmgr's 404 from the target's, delete.

// connmgrProc is a running connmgr child process.
type connmgrProc struct {
	url   string // http://127.0.0.1:port
	token string // CONNMGR_ADMIN_TOKEN
	logs  *lines
}

// lines collects a child's output lines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, s)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.l, "\n")
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startConnmgr builds ./cmd/connmgr and starts it with only CONNMGR_*
// variables: a free port on 127.0.0.1, a temporary data directory, loopback
// targets allowed, a 40-character admin token. It is killed when the test
// ends.
func startConnmgr(t *testing.T) *connmgrProc {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "connmgr")
	build := exec.Command("go", "build", "-o", bin, "./cmd/connmgr")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/connmgr: %v\n%s", err, out)
	}
	p := &connmgrProc{token: randomHex(t, 20), logs: &lines{}}
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"CONNMGR_ADDR=127.0.0.1:0", "CONNMGR_DATA_DIR=" + t.TempDir(),
		"CONNMGR_EGRESS_ALLOW=127.0.0.0/8", "CONNMGR_ADMIN_TOKEN=" + p.token}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	listening := make(chan string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.logs.add(sc.Text())
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "connmgr listening" {
				select {
				case listening <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if strings.Contains(p.logs.String(), p.token) {
			t.Error("connmgr logged the admin token")
		}
	})
	select {
	case addr := <-listening:
		p.url = "http://" + addr
	case <-done:
		t.Fatalf("connmgr exited before listening:\n%s", p.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("connmgr did not listen within 30s:\n%s", p.logs)
	}
	return p
}

// echo is what the target answers: the request as it arrived.
type echo struct {
	Method        string `json:"method"`
	Path          string `json:"path"`
	Query         string `json:"query"`
	Body          string `json:"body"`
	Authorization string `json:"authorization"`
}

// echoTarget answers every request with its echo as JSON, except that a
// path ending in /missing gets the target's own JSON 404 (no Connmgr-Error,
// and not a problem either).
func echoTarget(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/missing") {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no such order","code":"E404"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(echo{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			Body: string(body), Authorization: r.Header.Get("Authorization")})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRoundTrip drives both generated clients through the round trip
// against one connmgr, each with its own connection names.
func TestRoundTrip(t *testing.T) {
	doc := contract(t)
	examples := policyExamples(t, doc)
	srv := startConnmgr(t)
	target := echoTarget(t)
	t.Run("go", func(t *testing.T) {
		t.Parallel()
		goRoundTrip(t, srv, target.URL, examples)
	})
	t.Run("typescript", func(t *testing.T) {
		t.Parallel()
		tsRoundTrip(t, srv, target.URL)
	})
	t.Cleanup(func() {
		// Secrets went in; none may come out in a log line.
		logs := srv.logs.String()
		for _, ex := range examples {
			for _, f := range ex.Secrets {
				values := []any{ex.Security[f]}
				if m, ok := ex.Security[f].(map[string]any); ok {
					values = slices.Collect(maps.Values(m))
				}
				for _, v := range values {
					if v, ok := v.(string); ok && v != "" && strings.Contains(logs, v) {
						t.Errorf("connmgr logged the %s of the %s example", f, ex.Policy)
					}
				}
			}
		}
	})
}

func goRoundTrip(t *testing.T, srv *connmgrProc, targetURL string, examples []policyExample) {
	ctx := context.Background()
	auth := goclient.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+srv.token)
		return nil
	})
	c, err := goclient.NewClientWithResponses(srv.url, auth)
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "Go_"
	var names []string

	// Create one connection per policy, from the contract's own examples.
	for _, ex := range examples {
		name := prefix + ex.Policy
		var sec goclient.SecurityCreate
		mustJSON(t, ex.Security, &sec)
		res, err := c.CreateConnectionWithResponse(ctx, goclient.ConnectionCreate{Name: name, Role: goclient.INVOKE,
			BaseUrl: targetURL + "/v2", Security: sec, Description: ptr("created by the generated Go client")})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		if res.StatusCode() != 201 || res.JSON201 == nil {
			t.Fatalf("create %s = %d %s", name, res.StatusCode(), res.Body)
		}
		if got := res.HTTPResponse.Header.Get("Location"); got != "/api/v1/connections/"+name {
			t.Errorf("create %s: Location = %q", name, got)
		}
		if got := res.HTTPResponse.Header.Get("ETag"); got != `"1"` {
			t.Errorf("create %s: ETag = %q, want \"1\"", name, got)
		}
		policy, err := res.JSON201.Security.Discriminator()
		if err != nil || policy != ex.Policy {
			t.Errorf("create %s: security.policy = %q, %v; want %s", name, policy, err, ex.Policy)
		}
		// The generated union gives the policy's own type; secrets are masked.
		v, err := res.JSON201.Security.ValueByDiscriminator()
		if err != nil {
			t.Fatalf("create %s: ValueByDiscriminator: %v", name, err)
		}
		shown := jsonMap(t, v)
		for f, sent := range ex.Security {
			if secretField(f, ex) {
				if !masked(shown[f], sent) {
					t.Errorf("create %s: security.%s = %v, want it masked (********)", name, f, shown[f])
				}
			} else if !equalJSON(shown[f], sent) {
				t.Errorf("create %s: security.%s = %v, want %v", name, f, shown[f], sent)
			}
		}
		names = append(names, name)
	}

	// A body of two policies at once is refused, as the contract says.
	mixed := map[string]any{"policy": "BASIC", "username": "u", "password": "p", "tokenUrl": "https://auth.example.com/t"}
	var sec goclient.SecurityCreate
	mustJSON(t, mixed, &sec)
	res, err := c.CreateConnectionWithResponse(ctx, goclient.ConnectionCreate{Name: prefix + "Mixed", Role: goclient.INVOKE,
		BaseUrl: targetURL, Security: sec})
	if err != nil || res.StatusCode() != 422 || res.ApplicationproblemJSON422 == nil ||
		res.ApplicationproblemJSON422.Code != "validation_failed" {
		t.Errorf("create with fields of two policies = %v %v %s, want 422 validation_failed", err, res.StatusCode(), res.Body)
	}

	// List: every connection made here, in name order.
	list, err := c.ListConnectionsWithResponse(ctx, &goclient.ListConnectionsParams{Q: ptr(prefix), Limit: ptr(500)})
	if err != nil || list.JSON200 == nil {
		t.Fatalf("list = %v %s", err, list.Body)
	}
	var listed []string
	for _, item := range list.JSON200.Items {
		listed = append(listed, item.Name)
	}
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(listed, want) || list.JSON200.NextCursor != nil {
		t.Errorf("list = %v (next %v), want %v", listed, list.JSON200.NextCursor, want)
	}

	// Read, then replace with If-Match; a stale If-Match loses.
	name := prefix + "BASIC"
	got, err := c.GetConnectionWithResponse(ctx, name)
	if err != nil || got.JSON200 == nil {
		t.Fatalf("get %s = %v %s", name, err, got.Body)
	}
	etag := got.HTTPResponse.Header.Get("ETag")
	var replace goclient.ConnectionReplace
	mustJSON(t, got.JSON200, &replace) // the document read, sent back
	replace.Description = ptr("replaced by the generated Go client")
	put, err := c.ReplaceConnectionWithResponse(ctx, name, &goclient.ReplaceConnectionParams{IfMatch: &etag}, replace)
	if err != nil || put.StatusCode() != 200 || put.JSON200 == nil {
		t.Fatalf("replace %s with If-Match %s = %v %s", name, etag, err, put.Body)
	}
	if put.JSON200.Description != *replace.Description || put.JSON200.Version == nil || *put.JSON200.Version != 2 ||
		put.HTTPResponse.Header.Get("ETag") != `"2"` {
		t.Errorf("replace %s: description %q, version %d, ETag %q", name, put.JSON200.Description, put.JSON200.Version,
			put.HTTPResponse.Header.Get("ETag"))
	}
	stale, err := c.ReplaceConnectionWithResponse(ctx, name, &goclient.ReplaceConnectionParams{IfMatch: ptr(`"1"`)}, replace)
	if err != nil || stale.StatusCode() != 412 || stale.ApplicationproblemJSON412 == nil ||
		stale.ApplicationproblemJSON412.Code != "precondition_failed" {
		t.Errorf("stale replace = %v %d %s, want 412 precondition_failed", err, stale.StatusCode(), stale.Body)
	}

	// A merge patch with If-Match changes the description alone, and a
	// new password; a stale one loses.
	patch := goclient.ConnectionPatch{Description: ptr("patched by the generated Go client"),
		Security: &goclient.SecurityPatch{AdditionalProperties: map[string]any{"password": "patched-password"}}}
	pat, err := c.PatchConnectionWithApplicationMergePatchPlusJSONBodyWithResponse(ctx, name,
		&goclient.PatchConnectionParams{IfMatch: ptr(`"2"`)}, patch)
	if err != nil || pat.StatusCode() != 200 || pat.JSON200 == nil {
		t.Fatalf("patch %s with If-Match \"2\" = %v %s", name, err, pat.Body)
	}
	if pat.JSON200.Description != *patch.Description || *pat.JSON200.Version != 3 || pat.JSON200.BaseUrl != targetURL+"/v2" ||
		pat.HTTPResponse.Header.Get("ETag") != `"3"` || strings.Contains(string(pat.Body), "patched-password") {
		t.Errorf("patch %s = %s", name, pat.Body)
	}
	stalePatch, err := c.PatchConnectionWithApplicationMergePatchPlusJSONBodyWithResponse(ctx, name,
		&goclient.PatchConnectionParams{IfMatch: ptr(`"2"`)}, patch)
	if err != nil || stalePatch.StatusCode() != 412 || stalePatch.ApplicationproblemJSON412 == nil ||
		stalePatch.ApplicationproblemJSON412.Code != "precondition_failed" {
		t.Errorf("stale patch = %v %d %s, want 412 precondition_failed", err, stalePatch.StatusCode(), stalePatch.Body)
	}

	// The patched password works: the target sees Basic credentials.
	basic, err := c.InvokeGetWithResponse(ctx, name, "whoami", nil)
	if err != nil || basic.StatusCode() != 200 {
		t.Fatalf("invokeGet %s = %v %s", name, err, basic.Body)
	}
	var user string
	for _, ex := range examples {
		if ex.Policy == "BASIC" {
			user, _ = ex.Security["username"].(string)
		}
	}
	if e := decodeEcho(t, basic.Body); e.Authorization != "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":patched-password")) ||
		e.Path != "/v2/whoami" {
		t.Errorf("invokeGet %s reached the target as %+v", name, e)
	}

	// A multi-segment call with query and body, through invokeConnection.
	none := prefix + "NONE"
	query := map[string]goclient.InvokeRequest_QueryParams_AdditionalProperties{}
	var expand, x goclient.InvokeRequest_QueryParams_AdditionalProperties
	if err := expand.FromInvokeRequestQueryParams1([]string{"items", "notes"}); err != nil {
		t.Fatal(err)
	}
	if err := x.FromInvokeRequestQueryParams0("1"); err != nil {
		t.Fatal(err)
	}
	query["expand"], query["x"] = expand, x
	method := goclient.InvokeRequestMethodPOST
	inv, err := c.InvokeConnectionWithResponse(ctx, none, goclient.InvokeRequest{Method: &method,
		RelativeUri: ptr("/orders/{orderId}/lines"), PathParams: &map[string]string{"orderId": "A/17"},
		QueryParams: &query, Body: map[string]any{"note": "hi"}})
	if err != nil || inv.StatusCode() != 200 {
		t.Fatalf("invokeConnection = %v %d %s", err, inv.StatusCode(), inv.Body)
	}
	if e := decodeEcho(t, inv.Body); e.Method != "POST" || e.Path != "/v2/orders/A%2F17/lines" ||
		e.Query != "expand=items&expand=notes&x=1" || e.Body != `{"note":"hi"}` {
		t.Errorf("invokeConnection reached the target as %+v", e)
	}
	if h := inv.HTTPResponse.Header.Get("Connmgr-Error"); h != "" {
		t.Errorf("the target's 200 carries Connmgr-Error %q", h)
	}

	// The transparent form with its free-form query: one segment is fine...
	tr, err := c.InvokeGetWithResponse(ctx, none, "orders", &goclient.InvokeGetParams{Query: &goclient.InvokeQuery{"expand": "items"}})
	if err != nil || tr.StatusCode() != 200 {
		t.Fatalf("invokeGet orders = %v %s", err, tr.Body)
	}
	if e := decodeEcho(t, tr.Body); e.Path != "/v2/orders" || e.Query != "expand=items" {
		t.Errorf("invokeGet orders reached the target as %+v", e)
	}
	// ...but the generated client encodes "orders/17" as orders%2F17, which
	// connmgr refuses instead of calling another resource.
	enc, err := c.InvokeGetWithResponse(ctx, none, "orders/17", nil)
	if err != nil || enc.StatusCode() != 400 || enc.Headers400 == nil || enc.Headers400.ConnmgrError == nil ||
		*enc.Headers400.ConnmgrError != "invalid_relative_uri" || !strings.Contains(string(enc.Body), "invokeConnection") {
		t.Errorf("invokeGet orders/17 = %v %d %+v %s, want 400 invalid_relative_uri naming invokeConnection",
			err, enc.StatusCode(), enc.Headers400, enc.Body)
	}

	// connmgr's 404 and the target's 404, told apart by Connmgr-Error.
	get := goclient.InvokeRequest{RelativeUri: ptr("/missing")}
	own, err := c.InvokeConnectionWithResponse(ctx, prefix+"Nope", get)
	if err != nil || own.StatusCode() != 404 || own.Headers404 == nil || own.Headers404.ConnmgrError == nil ||
		*own.Headers404.ConnmgrError != "connection_not_found" || own.ApplicationproblemJSON404.Code != "connection_not_found" {
		t.Errorf("invoke of an unknown connection = %v %d %s, want connmgr's 404 connection_not_found", err, own.StatusCode(), own.Body)
	}
	theirs, err := c.InvokeConnectionWithResponse(ctx, none, get)
	if err != nil || theirs.StatusCode() != 404 || theirs.Headers404 == nil {
		t.Fatalf("invoke /missing = %v %d %s", err, theirs.StatusCode(), theirs.Body)
	}
	if theirs.Headers404.ConnmgrError != nil || string(theirs.Body) != `{"error":"no such order","code":"E404"}` {
		t.Errorf("the target's 404 = %v %s, want its own body without Connmgr-Error", theirs.Headers404.ConnmgrError, theirs.Body)
	}
	theirsGet, err := c.InvokeGetWithResponse(ctx, none, "missing", nil)
	if err != nil || theirsGet.StatusCode() != 404 || theirsGet.Headers404.ConnmgrError != nil {
		t.Errorf("invokeGet missing = %v %d %+v, want the target's 404", err, theirsGet.StatusCode(), theirsGet.Headers404)
	}

	// Delete them all; then they are gone.
	for _, name := range names {
		del, err := c.DeleteConnectionWithResponse(ctx, name, nil)
		if err != nil || del.StatusCode() != 204 {
			t.Errorf("delete %s = %v %d %s", name, err, del.StatusCode(), del.Body)
		}
	}
	gone, err := c.GetConnectionWithResponse(ctx, name)
	if err != nil || gone.StatusCode() != 404 || gone.ApplicationproblemJSON404 == nil ||
		gone.ApplicationproblemJSON404.Code != "connection_not_found" {
		t.Errorf("get after delete = %v %d %s", err, gone.StatusCode(), gone.Body)
	}
	if h := gone.HTTPResponse.Header.Get("Connmgr-Error"); h != "" {
		t.Errorf("a management 404 carries Connmgr-Error %q", h)
	}
}

// tsRoundTrip generates the TypeScript client's types from openapi.yaml
// (openapi-typescript), type-checks and compiles ts/ (tsc), and runs
// ts/roundtrip.test.ts with node's test runner against srv. It needs
// clients/node_modules (npm ci; make test does it) and skips without it
// unless CONNMGR_REQUIRE_NODE is set, as make test and CI set it.
func tsRoundTrip(t *testing.T, srv *connmgrProc, targetURL string) {
	bin := filepath.Join("node_modules", ".bin")
	if _, err := os.Stat(filepath.Join(bin, "tsc")); err != nil {
		if os.Getenv("CONNMGR_REQUIRE_NODE") != "" {
			t.Fatalf("clients/node_modules is missing (run npm ci in clients/): %v", err)
		}
		t.Skip("clients/node_modules is missing: run npm ci in clients/ (make test does)")
	}
	specJSON := filepath.Join(t.TempDir(), "openapi.json")
	b, err := contract(t).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(specJSON, b, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(name string, env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		if testing.Verbose() {
			t.Logf("%s %s:\n%s", name, strings.Join(args, " "), out)
		}
		return string(out)
	}
	run(filepath.Join(bin, "openapi-typescript"), nil, "--redocly", filepath.Join("ts", "redocly.yaml"), "--default-non-nullable", "false")
	run(filepath.Join(bin, "tsc"), nil, "-p", filepath.Join("ts", "tsconfig.json"))
	out := run("node", []string{"CONNMGR_URL=" + srv.url, "CONNMGR_TOKEN=" + srv.token, "TARGET_URL=" + targetURL,
		"CONNMGR_OPENAPI_JSON=" + specJSON, "NAME_PREFIX=Ts_"},
		"--test", "--test-reporter=tap", filepath.Join("ts", "dist", "roundtrip.test.js"))
	// node exits 0 when no test ran at all: count them.
	var pass, fail int
	for line := range strings.Lines(out) {
		if n, ok := strings.CutPrefix(strings.TrimSpace(line), "# pass "); ok {
			pass, _ = strconv.Atoi(n)
		}
		if n, ok := strings.CutPrefix(strings.TrimSpace(line), "# fail "); ok {
			fail, _ = strconv.Atoi(n)
		}
	}
	if pass < 10 || fail != 0 {
		t.Errorf("the TypeScript round trip passed %d tests and failed %d, want 10 and 0:\n%s", pass, fail, out)
	}
}

func ptr[T any](v T) *T { return &v }

// mustJSON converts v into dst through JSON, as a client would.
func mustJSON(t testing.TB, v, dst any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, dst); err != nil {
		t.Fatalf("%s into %T: %v", b, dst, err)
	}
}

func jsonMap(t testing.TB, v any) map[string]any {
	var m map[string]any
	mustJSON(t, v, &m)
	return m
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func decodeEcho(t testing.TB, body []byte) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("the target's echo %q: %v", body, err)
	}
	return e
}
