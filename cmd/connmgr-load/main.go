// Command connmgr-load measures connmgr under steady load: it builds and
// starts connmgr (SQLite in a temporary directory), registers an OAuth
// connection to a local upstream and token endpoint, sends invokes from
// concurrent clients for a fixed time, and reports throughput, latency
// percentiles, errors, and the process's RSS and goroutines at the start
// and the end. connmgr logs at info level, a line per request, as it would
// in production. `make load` runs it; it is not part of `make test`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connmgr/connmgr/cmd/internal/devproc"
)

func main() {
	duration := flag.Duration("duration", 30*time.Second, "how long to send load")
	concurrency := flag.Int("concurrency", 32, "concurrent clients")
	payload := flag.Int("payload", 1024, "bytes the upstream answers")
	flag.Parse()
	if err := run(*duration, *concurrency, *payload); err != nil {
		fmt.Fprintln(os.Stderr, "connmgr-load:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, concurrency, payload int) error {
	dir, err := os.MkdirTemp("", "connmgr-load")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := devproc.Build(dir)
	if err != nil {
		return err
	}

	body := bytes.Repeat([]byte("x"), payload)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	}))
	defer upstream.Close()
	var tokenRequests atomic.Int64
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokenRequests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"load-%d","token_type":"Bearer","expires_in":3600}`, tokenRequests.Load())
	}))
	defer tokens.Close()

	admin := "load-admin-token-0123456789abcdefghij"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd, addr, err := devproc.Start(ctx, bin, "CONNMGR_ADDR=127.0.0.1:0", "CONNMGR_DATA_DIR="+dir,
		"CONNMGR_ADMIN_TOKEN="+admin, "CONNMGR_EGRESS_ALLOW=127.0.0.0/8", "CONNMGR_LOG_LEVEL=info")
	if err != nil {
		return err
	}
	defer cmd.Process.Kill()
	base := "http://" + addr
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency * 2, MaxIdleConns: concurrency * 2}}

	conn := map[string]any{"name": "Conn_Load", "role": "INVOKE", "baseUrl": upstream.URL,
		"security": map[string]any{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenUrl": tokens.URL, "clientId": "load", "clientSecret": "load-secret"}}
	if status, err := call(client, "POST", base+"/api/v1/connections", admin, conn); err != nil || status != 201 {
		return fmt.Errorf("create connection: %d %v", status, err)
	}
	target := base + "/invoke/Conn_Load/items/1"
	if status, err := call(client, "GET", target, admin, nil); err != nil || status != 200 {
		return fmt.Errorf("warm-up invoke: %d %v", status, err)
	}
	rss0, gor0 := sample(client, base, admin)

	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      atomic.Int64
		wg        sync.WaitGroup
	)
	deadline := time.Now().Add(duration)
	start := time.Now()
	// Memory and goroutines are sampled under load twice: once warm (a tenth
	// of the way in) and once at the end; flat means these two agree.
	var rssWarm, gorWarm, rssEnd, gorEnd float64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		time.Sleep(duration / 10)
		rssWarm, gorWarm = sample(client, base, admin)
		time.Sleep(time.Until(deadline) - 500*time.Millisecond)
		rssEnd, gorEnd = sample(client, base, admin)
	}()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t := time.Now()
				status, err := call(client, "GET", target, admin, nil)
				if err != nil || status != 200 {
					errs.Add(1)
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			latencies = append(latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	<-sampled

	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(float64(len(latencies))*p))]
	}
	fmt.Printf("connmgr load: %s, %d concurrent clients, %d-byte responses, OAuth client-credentials connection\n",
		duration, concurrency, payload)
	fmt.Printf("requests      %d ok, %d errors\n", len(latencies), errs.Load())
	fmt.Printf("throughput    %.0f req/s\n", float64(len(latencies))/elapsed.Seconds())
	fmt.Printf("latency       p50 %s  p90 %s  p99 %s  max %s\n", pct(.5), pct(.9), pct(.99), pct(1))
	fmt.Printf("rss           %.1f MiB idle before; under load %.1f MiB warm, %.1f MiB at the end\n",
		rss0/(1<<20), rssWarm/(1<<20), rssEnd/(1<<20))
	fmt.Printf("goroutines    %.0f idle before; under load %.0f warm, %.0f at the end\n", gor0, gorWarm, gorEnd)
	fmt.Printf("token requests %d (one expected: the token is cached)\n", tokenRequests.Load())
	if errs.Load() > 0 {
		return errors.New("there were errors")
	}
	return nil
}

func call(client *http.Client, method, url, key string, body any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

// sample reads process_resident_memory_bytes and go_goroutines from
// /metrics, which needs a viewer or admin key.
func sample(client *http.Client, base, key string) (rss, goroutines float64) {
	req, err := http.NewRequest("GET", base+"/metrics", nil)
	if err != nil {
		return 0, 0
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := client.Do(req)
	if err != nil {
		return 0, 0
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, 0
	}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "process_resident_memory_bytes "); ok {
			fmt.Sscanf(v, "%g", &rss)
		}
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			fmt.Sscanf(v, "%g", &goroutines)
		}
	}
	return rss, goroutines
}
