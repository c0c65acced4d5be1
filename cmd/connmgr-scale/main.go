// Command connmgr-scale measures connmgr at scale on PostgreSQL (`make
// scale`): it builds connmgr, creates a throw-away database, starts
// several replicas on it, and
//
//   - lists: fills the database with -connections connections over the
//     API and times list pages (every filter, first, middle and last
//     cursor position) against the 20 ms target;
//   - refresh: gives -oauth of them (OAuth client credentials, 60 s
//     tokens from a local token endpoint) a first token, then leaves them
//     alone for -duration with no invoke traffic, and reports whether
//     every token was refreshed before it expired, once per cycle, and how
//     evenly the token endpoint's load was spread over the seconds.
//
// The database is dropped and every process stopped at the end. It needs
// a PostgreSQL server (CONNMGR_TEST_DATABASE_URL, default
// postgres://postgres@127.0.0.1:5432/postgres).
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/connmgr/connmgr/cmd/internal/devproc"
)

func main() {
	total := flag.Int("connections", 100000, "connections in the database (list part)")
	oauth := flag.Int("oauth", 10000, "of them, OAuth client-credentials connections with 60s tokens (refresh part)")
	replicas := flag.Int("replicas", 3, "connmgr processes on the database")
	duration := flag.Duration("duration", 5*time.Minute, "how long the refresh part watches")
	ttl := flag.Int("ttl", 60, "token lifetime in seconds")
	parts := flag.String("parts", "lists,refresh", "which parts to run")
	keep := flag.Bool("keep", false, "keep the database afterwards and print its URL (set CONNMGR_ENCRYPTION_KEYS to open it again)")
	flag.Parse()
	if err := run(*total, *oauth, *replicas, *ttl, *duration, *parts, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "connmgr-scale:", err)
		os.Exit(1)
	}
}

type cluster struct {
	admin string
	urls  []string
	procs []*exec.Cmd
	hc    *http.Client
}

func run(total, oauth, replicas, ttl int, duration time.Duration, parts string, keep bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "connmgr-scale")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := devproc.Build(dir)
	if err != nil {
		return err
	}
	dbURL, drop, err := createDatabase(ctx)
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Printf("database kept: %s\n", dbURL)
	} else {
		defer drop()
	}

	te := newTokenEndpoint(ttl)
	defer te.srv.Close()
	cl, err := startCluster(ctx, bin, dir, dbURL, replicas)
	if err != nil {
		return err
	}
	defer cl.stop()
	fmt.Printf("connmgr scale: %d replicas on one PostgreSQL database\n", replicas)

	start := time.Now()
	if err := cl.populate(total, oauth, te.srv.URL); err != nil {
		return err
	}
	fmt.Printf("created %d connections (%d OAuth client credentials) in %s\n", total, min(oauth, total), time.Since(start).Round(time.Second))
	if err := vacuum(ctx, dbURL); err != nil {
		return err
	}

	failed := false
	if strings.Contains(parts, "lists") {
		if !cl.measureLists() {
			failed = true
		}
	}
	if strings.Contains(parts, "refresh") && oauth > 0 {
		if !cl.measureRefresh(te, min(oauth, total), ttl, duration) {
			failed = true
		}
	}
	if failed {
		return errors.New("a target was missed")
	}
	return nil
}

// createDatabase creates a fresh database on the server of
// CONNMGR_TEST_DATABASE_URL and returns its URL and a function dropping it.
func createDatabase(ctx context.Context) (string, func(), error) {
	server := os.Getenv("CONNMGR_TEST_DATABASE_URL")
	if server == "" {
		server = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL (%s): %w", "CONNMGR_TEST_DATABASE_URL", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "connmgr_scale_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close(ctx)
		return "", nil, err
	}
	admin.Close(ctx)
	u, _ := url.Parse(server)
	u.Path = "/" + name
	drop := func() {
		c, err := pgx.Connect(context.Background(), server)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	}
	return u.String(), drop, nil
}

// vacuum runs VACUUM ANALYZE, as autovacuum does on a database in service
// after a bulk load: the planner needs the tables' statistics, and lists
// read their indexes alone where the visibility map allows. A PostgreSQL
// with autovacuum off (as a CI server may be) would otherwise measure a
// database that was never analyzed.
func vacuum(ctx context.Context, dbURL string) error {
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	start := time.Now()
	if _, err := c.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	fmt.Printf("VACUUM ANALYZE in %s (as autovacuum would after the load)\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func startCluster(ctx context.Context, bin, dir, dbURL string, n int) (*cluster, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	cl := &cluster{admin: "scale-admin-" + hex.EncodeToString(key[:12]),
		hc: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	// A kept database (-keep) can be opened again with the keys given.
	keys := cmp.Or(os.Getenv("CONNMGR_ENCRYPTION_KEYS"), "k1:"+base64.StdEncoding.EncodeToString(key))
	for i := range n {
		cmd, addr, err := devproc.Start(ctx, bin, "CONNMGR_ADDR=127.0.0.1:0", "CONNMGR_DATABASE_URL="+dbURL,
			"CONNMGR_DATA_DIR="+filepath.Join(dir, fmt.Sprint("r", i)), "CONNMGR_ADMIN_TOKEN="+cl.admin,
			"CONNMGR_ENCRYPTION_KEYS="+keys, "CONNMGR_EGRESS_ALLOW=127.0.0.0/8", "CONNMGR_LOG_LEVEL=info")
		if err != nil {
			cl.stop()
			return nil, fmt.Errorf("replica %d: %w", i+1, err)
		}
		cl.procs = append(cl.procs, cmd)
		cl.urls = append(cl.urls, "http://"+addr)
	}
	return cl, nil
}

func (cl *cluster) stop() {
	for _, p := range cl.procs {
		if p.Process != nil {
			_ = p.Process.Signal(os.Interrupt)
		}
	}
	for _, p := range cl.procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

func (cl *cluster) call(method, u string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+cl.admin)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := cl.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

var words = []string{"orders", "billing", "crm", "hr", "payments", "ledger", "shipping", "catalog", "search", "audit"}

// populate creates total connections over the API, spread over the
// replicas, the first oauth of them OAuth client credentials.
func (cl *cluster) populate(total, oauth int, tokenURL string) error {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				body := connection(i, oauth, tokenURL)
				status, b, err := cl.call("POST", cl.urls[(i+w)%len(cl.urls)]+"/api/v1/connections", body)
				if err != nil || status != http.StatusCreated {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("create connection %d: %d %v %s", i, status, err, b)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func connection(i, oauth int, tokenURL string) map[string]any {
	roles := []string{"INVOKE", "TRIGGER", "TRIGGER_INVOKE"}
	name := fmt.Sprintf("Conn_REST_%s_%07d_%s", strings.ToUpper(words[i%len(words)][:1])+words[i%len(words)][1:], i, roles[i%3])
	c := map[string]any{"name": name, "role": roles[i%3], "baseUrl": "https://api.example.com/" + words[i%len(words)],
		"keywords": []string{words[i%len(words)], words[(i/7)%len(words)], fmt.Sprintf("tenant-%d", i%1000)}}
	switch {
	case i < oauth:
		c["role"] = "INVOKE"
		c["name"] = fmt.Sprintf("Conn_REST_Scale_%07d_OAuth", i)
		c["security"] = map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": tokenURL,
			"clientId": fmt.Sprintf("client-%d", i), "clientSecret": fmt.Sprintf("secret-%d", i)}
	case i%3 == 0:
		c["security"] = map[string]any{"policy": "BASIC", "username": "svc", "password": "pw-" + fmt.Sprint(i)}
	case i%3 == 1:
		c["security"] = map[string]any{"policy": "API_KEY", "key": "key-" + fmt.Sprint(i)}
	default:
		c["security"] = map[string]any{"policy": "NONE"}
	}
	return c
}

// measureLists times list pages: every filter, at the first page, a middle
// and a late cursor. It reports p50, p99 and max per case and whether every
// p99 is under 20 ms.
func (cl *cluster) measureLists() bool {
	base := cl.urls[0] + "/api/v1/connections"
	cases := []struct{ name, query string }{
		{"no filter", ""},
		{"role=INVOKE", "role=INVOKE"},
		{"policy=BASIC", "policy=BASIC"},
		{"status=DRAFT", "status=DRAFT"},
		{"role+policy (none)", "role=TRIGGER&policy=BASIC"},
		{"role+policy+status", "role=INVOKE&policy=BASIC&status=DRAFT"},
		{"q=orders (common)", "q=orders"},
		{"q=tenant-42 (rare)", "q=tenant-42"},
		{"q=zzz (no match)", "q=zzz"},
		{"q=tenant-423 (rarer)", "q=tenant-423"},
		{"role+policy+q", "role=TRIGGER&policy=API_KEY&q=crm"},
		{"status+q", "status=DRAFT&q=billing"},
	}
	fmt.Printf("\nlist pages (limit 100), %d samples each, milliseconds as the client sees them over loopback:\n", 50)
	fmt.Printf("%-22s %-8s %8s %8s %8s %6s\n", "filter", "cursor", "p50", "p99", "max", "items")
	ok := true
	for _, c := range cases {
		cursors := cl.cursors(base, c.query)
		for _, pos := range []string{"first", "middle", "last"} {
			u := base + "?limit=100"
			if c.query != "" {
				u += "&" + c.query
			}
			if cur := cursors[pos]; cur != "" {
				u += "&cursor=" + url.QueryEscape(cur)
			} else if pos != "first" {
				continue
			}
			var lat []time.Duration
			items := 0
			for range 50 {
				t := time.Now()
				status, b, err := cl.call("GET", u, nil)
				if err != nil || status != 200 {
					fmt.Printf("%-22s %-8s error %d %v\n", c.name, pos, status, err)
					ok = false
					break
				}
				lat = append(lat, time.Since(t))
				var page struct{ Items []json.RawMessage }
				_ = json.Unmarshal(b, &page)
				items = len(page.Items)
			}
			if len(lat) == 0 {
				continue
			}
			slices.Sort(lat)
			p99 := lat[len(lat)*99/100]
			mark := ""
			if p99 > 20*time.Millisecond {
				mark, ok = "  over 20 ms", false
			}
			fmt.Printf("%-22s %-8s %8.1f %8.1f %8.1f %6d%s\n", c.name, pos, ms(lat[len(lat)/2]), ms(p99), ms(lat[len(lat)-1]), items, mark)
		}
	}
	return ok
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cursors pages through a filter with the largest pages and returns the
// cursors of a middle and a late page.
func (cl *cluster) cursors(base, query string) map[string]string {
	var all []string
	cursor := ""
	for {
		u := base + "?limit=500"
		if query != "" {
			u += "&" + query
		}
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		status, b, err := cl.call("GET", u, nil)
		if err != nil || status != 200 {
			break
		}
		var page struct{ NextCursor string }
		if json.Unmarshal(b, &page) != nil || page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
		all = append(all, cursor)
	}
	out := map[string]string{}
	if len(all) > 0 {
		out["middle"] = all[len(all)/2]
		out["last"] = all[len(all)-1]
	}
	return out
}

// tokenEndpoint issues ttl-second tokens and records, per client, when
// each was issued, to tell refreshes that came after the previous token
// expired (late) or while it still had most of its life (duplicates).
type tokenEndpoint struct {
	srv *httptest.Server
	ttl time.Duration

	mu      sync.Mutex
	issued  map[string]time.Time // client → when its current token was issued
	perSec  map[int64]int
	late    int
	dup     int
	total   int
	counted bool // counting the measurement window
}

func newTokenEndpoint(ttl int) *tokenEndpoint {
	te := &tokenEndpoint{ttl: time.Duration(ttl) * time.Second, issued: map[string]time.Time{}, perSec: map[int64]int{}}
	te.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, _ := r.BasicAuth()
		now := time.Now()
		te.mu.Lock()
		if te.counted {
			te.total++
			te.perSec[now.Unix()]++
			if prev, ok := te.issued[id]; ok {
				age := now.Sub(prev)
				switch {
				case age > te.ttl:
					te.late++
				case age < te.ttl/4:
					te.dup++
				}
			}
		}
		te.issued[id] = now
		te.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"tok-%s-%d","token_type":"Bearer","expires_in":%d}`, id, now.UnixNano(), ttl)
	}))
	return te
}

// measureRefresh gives n connections a first token, spread over one token
// lifetime as traffic would, then watches the token endpoint for d.
func (cl *cluster) measureRefresh(te *tokenEndpoint, n, ttl int, d time.Duration) bool {
	fmt.Printf("\nrefresh: %d OAuth connections, %ds tokens, no invoke traffic\n", n, ttl)
	warm := time.Duration(ttl) * time.Second / 2
	start := time.Now()
	var wg sync.WaitGroup
	var failures atomic.Int64
	sem := make(chan struct{}, 32)
	for i := range n {
		at := start.Add(time.Duration(int64(warm) * int64(i) / int64(n)))
		time.Sleep(time.Until(at))
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u := fmt.Sprintf("%s/api/v1/connections/Conn_REST_Scale_%07d_OAuth/token/refresh", cl.urls[i%len(cl.urls)], i)
			if status, _, err := cl.call("POST", u, nil); err != nil || status != 200 {
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("first tokens: %d in %s, %d failed\n", n, time.Since(start).Round(time.Second), failures.Load())

	te.mu.Lock()
	te.counted = true
	te.mu.Unlock()
	watchStart := time.Now()
	time.Sleep(d)
	te.mu.Lock()
	te.counted = false
	end := time.Now()
	expired := 0
	for _, at := range te.issued {
		if end.Sub(at) > te.ttl {
			expired++
		}
	}
	total, late, dup := te.total, te.late, te.dup
	busiest, seconds := 0, 0
	for s := watchStart.Unix() + 1; s < end.Unix(); s++ {
		seconds++
		busiest = max(busiest, te.perSec[s])
	}
	te.mu.Unlock()

	// A token is refreshed when 15 to 30 s of a 60 s life are left (see
	// DESIGN.md §5), so a cycle lasts 37.5 s on average.
	lifetime := float64(ttl)
	ahead := max(lifetime/5, min(60, lifetime/2))
	cycle := lifetime - ahead*3/4
	expected := float64(n) * d.Seconds() / cycle
	avg := float64(total) / d.Seconds()
	fmt.Printf("watched %s: %d token requests (expected about %.0f: connections x cycles of %.1fs)\n", d.Round(time.Second), total, expected, cycle)
	fmt.Printf("late (after the previous token expired): %d; duplicates (refreshed with most of its life left): %d; expired at the end: %d\n", late, dup, expired)
	fmt.Printf("token endpoint load: average %.1f req/s, busiest second %d (%.2fx the average; target <= 2)\n", avg, busiest, float64(busiest)/avg)
	ok := late == 0 && expired == 0 && float64(busiest) <= 2*avg && float64(total) > 0.9*expected && float64(total) < 1.1*expected
	if !ok {
		fmt.Println("refresh: TARGET MISSED")
	}
	return ok
}
