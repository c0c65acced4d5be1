package invoke_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/cmd/connmgr/wire"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound/outboundtest"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// benchPayload is what the upstream answers: a small JSON document, as most
// API calls return.
var benchPayload = bytes.Repeat([]byte(`{"id":"A-17","status":"open"},`), 20)

func benchUpstream(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(benchPayload)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// bareProxy is the baseline: httputil.ReverseProxy that only sets a fixed
// header, with a transport pooled like connmgr's (http.DefaultTransport
// keeps only 2 idle connections per host, which would handicap it).
func bareProxy(b *testing.B, upstream string) *httptest.Server {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = 512, 256
	u, _ := url.Parse(upstream)
	rp := &httputil.ReverseProxy{Transport: transport, Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.Out.Header.Set("Authorization", "Bearer fixed-token")
	}}
	srv := httptest.NewServer(rp)
	b.Cleanup(srv.Close)
	return srv
}

// connmgrServer is the whole service as connmgr serve wires it
// (wire.Build): router, API key check, connection cache, OAuth token
// injection on a token manager over the database, proxy, audit, metrics
// and JSON request logs at info level (written to io.Discard). queries
// counts the database statements it runs from then on.
func connmgrServer(b *testing.B, upstream string) (srv *httptest.Server, key string, queries *atomic.Int64) {
	ctx := context.Background()
	db := storetest.Open(b, storetest.SQLite)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	g, err := wire.Build(ctx, db, storetest.KeyRing(b), wire.Options{PublicURL: "http://connmgr.bench",
		EgressAllow: outboundtest.Loopback(b).Allow, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(g.CloseIdleConnections)
	_, key, err = g.Keys.Create(ctx, access.NewKey{Name: "bench", Role: access.RoleInvoker, Connections: []string{"Conn_*"}})
	if err != nil {
		b.Fatal(err)
	}
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "bench-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	b.Cleanup(tokenSrv.Close)
	err = g.Service.Create(ctx, "bench", &connections.Connection{Name: "Conn_Bench", Role: connections.RoleInvoke, BaseURL: upstream,
		Security: &security.ClientCredentials{Client: security.Client{TokenURL: tokenSrv.URL,
			ClientID: "bench", ClientSecret: connections.NewSecret("bench-secret")}}})
	if err != nil {
		b.Fatal(err)
	}
	queries = countQueries(b, db.DB)
	srv = httptest.NewServer(g.API)
	b.Cleanup(srv.Close)
	return srv, key, queries
}

// countQueries counts the statements run on db from now on.
func countQueries(tb testing.TB, db *gorm.DB) *atomic.Int64 {
	var n atomic.Int64
	count := func(*gorm.DB) { n.Add(1) }
	cb := db.Callback()
	for _, p := range []interface {
		Register(string, func(*gorm.DB)) error
	}{cb.Query().Before("*"), cb.Row().Before("*"), cb.Raw().Before("*"), cb.Create().Before("*"),
		cb.Update().Before("*"), cb.Delete().Before("*")} {
		if err := p.Register("invoke_test:count", count); err != nil {
			tb.Fatal(err)
		}
	}
	return &n
}

// getter returns a function that GETs target with key over keep-alive
// connections and fails unless the answer is 200.
func getter(b *testing.B, target, key string) func() error {
	// At most 256 connections: an overloaded server makes the paced
	// callers queue here rather than open sockets until the process runs
	// out of file descriptors.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256, MaxConnsPerHost: 256}}
	b.Cleanup(client.CloseIdleConnections)
	return func() error {
		req, _ := http.NewRequest("GET", target, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
}

// reportPercentiles reports the median and 99th percentile of lat.
func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// noQueries fails b when queries (nil for the bare proxy) grew past
// before, and reports them per call: the warm invoke path reads nothing
// from the database.
func noQueries(b *testing.B, queries *atomic.Int64, before int64) {
	if queries == nil {
		return
	}
	n := queries.Load() - before
	b.ReportMetric(float64(n)/float64(b.N), "queries/op")
	if n != 0 {
		b.Errorf("%d warm invokes made %d database queries, want 0", b.N, n)
	}
}

// load sends b.N GETs to url from parallel clients over keep-alive
// connections and reports latency percentiles and database queries.
func load(b *testing.B, target, key string, queries *atomic.Int64) {
	get := getter(b, target, key)
	if err := get(); err != nil { // warm: token fetched, caches filled
		b.Fatal(err)
	}
	var mu sync.Mutex
	var all []time.Duration
	b.SetParallelism(4) // 4 × GOMAXPROCS concurrent callers keep both servers busy
	b.ReportAllocs()
	before := counted(queries)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1024)
		for pb.Next() {
			start := time.Now()
			if err := get(); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	reportPercentiles(b, all)
	noQueries(b, queries, before)
}

func counted(queries *atomic.Int64) int64 {
	if queries == nil {
		return 0
	}
	return queries.Load()
}

// paced sends b.N GETs to target at a fixed rate, each from its own
// goroutine (an open loop, as wrk2 does: a slow answer delays no later
// request), and reports latency percentiles and database queries.
func paced(b *testing.B, target, key string, perSecond int, queries *atomic.Int64) {
	get := getter(b, target, key)
	for range 100 { // warm: token fetched, caches and connection pools filled
		if err := get(); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, b.N)
	interval := time.Second / time.Duration(perSecond)
	var wg sync.WaitGroup
	before := counted(queries)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		due := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Now()
			if err := get(); err != nil {
				b.Error(err)
			}
			lat[i] = time.Since(sent)
		}()
	}
	wg.Wait()
	b.StopTimer()
	reportPercentiles(b, lat)
	noQueries(b, queries, before)
}

// latencyRate is the offered load of the latency comparison: well below
// what either server sustains on a 2-core machine, so that the
// percentiles measure the proxies, not a queue.
const latencyRate = 2000

// BenchmarkInvoke compares connmgr's full invoke path with a bare
// httputil.ReverseProxy against the same upstream. `make bench` prints both
// and their ratios (the target: connmgr's throughput ≥ 0.9× and its p99 ≤
// 1.2× the bare proxy's).
func BenchmarkInvoke(b *testing.B) {
	upstream := benchUpstream(b)
	bare := bareProxy(b, upstream.URL)
	cm, key, queries := connmgrServer(b, upstream.URL)
	b.Run("bare", func(b *testing.B) { load(b, bare.URL+"/orders/A-17", "", nil) })
	b.Run("connmgr", func(b *testing.B) { load(b, cm.URL+"/invoke/Conn_Bench/orders/A-17", key, queries) })
	b.Run("bare-paced", func(b *testing.B) { paced(b, bare.URL+"/orders/A-17", "", latencyRate, nil) })
	b.Run("connmgr-paced", func(b *testing.B) { paced(b, cm.URL+"/invoke/Conn_Bench/orders/A-17", key, latencyRate, queries) })
}
