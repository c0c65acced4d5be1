package alerts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/connmgr/connmgr/alerts"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/outbound/outboundtest"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	secret = []byte("test-secret-0123456789")
	conn   = &connections.Connection{Name: "Conn_REST_Orders"}
)

// delivery is a request as the receiver saw it.
type delivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is an httptest webhook receiver that records every request and
// answers with respond(n, w, r), n counting requests from 1.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []delivery
	hits atomic.Int64
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, delivery{r.Header.Clone(), body, time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		rc.hits.Add(1)
		if respond != nil {
			respond(n, w, r)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// localClient is a guarded client that may reach the loopback receivers.
func localClient(t *testing.T, timeout time.Duration) *http.Client {
	t.Helper()
	return outboundtest.Loopback(t).Client(timeout)
}

// newNotifier fills cfg with the test defaults (secret, local client, 1ms
// backoff, a fresh registry) and returns the Notifier and its registry.
func newNotifier(t *testing.T, cfg alerts.Config) (*alerts.Notifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	if cfg.Client == nil {
		cfg.Client = localClient(t, 2*time.Second)
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func(int) time.Duration { return time.Millisecond }
	}
	n, err := alerts.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return n, reg
}

// start runs n.Run until the test ends.
func start(t *testing.T, n *alerts.Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// closeWithin closes n, giving it d to deliver what is queued.
func closeWithin(t *testing.T, n *alerts.Notifier, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return n.Close(ctx)
}

// metric returns the value of the named metric with the given outcome
// label ("" for none).
func metric(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if outcome != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != outcome) {
				continue
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{outcome=%q} not found", name, outcome)
	return 0
}

// outcomes returns the delivery counters as delivered/retried/failed/dropped.
func outcomes(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	var s []string
	for _, o := range []string{"delivered", "retried", "failed", "dropped"} {
		s = append(s, strconv.FormatFloat(metric(t, reg, "connmgr_webhook_deliveries_total", o), 'f', -1, 64))
	}
	return strings.Join(s, "/")
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		secret  []byte
		wantErr string // "" for success
	}{
		{"valid https", "https://hooks.example.com/connmgr", secret, ""},
		{"valid http", "http://127.0.0.1:9000/hook", secret, ""},
		{"empty URL", "", secret, "CONNMGR_WEBHOOK_URL"},
		{"relative URL", "/hook", secret, "CONNMGR_WEBHOOK_URL"},
		{"no host", "https:///hook", secret, "CONNMGR_WEBHOOK_URL"},
		{"other scheme", "ftp://hooks.example.com/x", secret, "CONNMGR_WEBHOOK_URL"},
		{"unparsable URL", "http://[::1/x", secret, "CONNMGR_WEBHOOK_URL"},
		{"no secret", "https://hooks.example.com/connmgr", nil, "CONNMGR_WEBHOOK_SECRET"},
		{"short secret", "https://hooks.example.com/connmgr", []byte("fifteen-bytes!!"), "CONNMGR_WEBHOOK_SECRET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := alerts.New(alerts.Config{URL: tt.url, Secret: tt.secret, Registerer: prometheus.NewRegistry()})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New(%q) = %v, want nil", tt.url, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("New(%q) = %v, want an error naming %s", tt.url, err, tt.wantErr)
			case err != nil && (len(tt.url) > 0 && strings.Contains(err.Error(), tt.url) ||
				len(tt.secret) > 0 && strings.Contains(err.Error(), string(tt.secret))):
				t.Fatalf("New(%q) = %v, which repeats a configured value", tt.url, err)
			}
		})
	}
}

// TestSigned checks a delivery as a receiver would, and that the signature
// covers the body and the timestamp under the secret.
func TestSigned(t *testing.T) {
	rc := newReceiver(t, nil)
	n, _ := newNotifier(t, alerts.Config{URL: rc.URL})
	start(t, n)
	before := time.Now().Add(-time.Second)
	n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusNeedsConsent, "invalid_grant")
	if err := closeWithin(t, n, 5*time.Second); err != nil {
		t.Fatalf("Close = %v", err)
	}
	got := rc.deliveries()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	d := got[0]
	if err := verify(secret, d.header, d.body, time.Now()); err != nil {
		t.Fatalf("verify(delivery) = %v, want nil", err)
	}
	var ev struct{ ID, Type, Connection, From, To, Detail, At string }
	if err := json.Unmarshal(d.body, &ev); err != nil {
		t.Fatalf("body %s: %v", d.body, err)
	}
	want := struct{ Type, Connection, From, To, Detail string }{
		"connection.status_changed", "Conn_REST_Orders", "CONFIGURED", "NEEDS_CONSENT", "invalid_grant"}
	if have := (struct{ Type, Connection, From, To, Detail string }{ev.Type, ev.Connection, ev.From, ev.To, ev.Detail}); have != want {
		t.Errorf("event = %+v, want %+v", have, want)
	}
	if at, err := time.Parse(time.RFC3339, ev.At); err != nil || at.Before(before) || at.After(time.Now()) {
		t.Errorf("at = %q (%v), want an RFC 3339 time of the call", ev.At, err)
	}
	if len(ev.ID) != 32 || strings.Trim(ev.ID, "0123456789abcdef") != "" {
		t.Errorf("id = %q, want 32 hex digits", ev.ID)
	}
	for h, want := range map[string]string{
		"Content-Type": "application/json", "User-Agent": "connmgr", "X-Connmgr-Event-Id": ev.ID,
	} {
		if got := d.header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}

	ts, _ := strconv.ParseInt(d.header.Get("X-Connmgr-Timestamp"), 10, 64)
	tampered := []struct {
		name   string
		secret []byte
		header func(http.Header)
		body   []byte
		now    time.Time
	}{
		{name: "other secret", secret: []byte("another-secret-0123456789")},
		{name: "body changed", body: bytes.Replace(d.body, []byte("NEEDS_CONSENT"), []byte("CONFIGURED"), 1)},
		{name: "timestamp changed", header: func(h http.Header) { h.Set("X-Connmgr-Timestamp", strconv.FormatInt(ts+1, 10)) }},
		{name: "signature missing", header: func(h http.Header) { h.Del("X-Connmgr-Signature") }},
		{name: "replayed later", now: time.Unix(ts, 0).Add(10 * time.Minute)},
	}
	for _, tt := range tampered {
		t.Run(tt.name, func(t *testing.T) {
			s, h, body, now := secret, d.header.Clone(), d.body, time.Now()
			if tt.secret != nil {
				s = tt.secret
			}
			if tt.header != nil {
				tt.header(h)
			}
			if tt.body != nil {
				body = tt.body
			}
			if !tt.now.IsZero() {
				now = tt.now
			}
			if err := verify(s, h, body, now); err == nil {
				t.Errorf("verify(%s) = nil, want an error", tt.name)
			}
		})
	}
}

// TestResigned checks that every attempt carries its own timestamp and a
// signature that verifies at that time.
func TestResigned(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	var clock atomic.Int64
	clock.Store(time.Now().Unix())
	now := func() time.Time { return time.Unix(clock.Add(60), 0) } // a minute per call
	n, _ := newNotifier(t, alerts.Config{URL: rc.URL, Now: now})
	n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, "")
	if err := closeWithin(t, n, 5*time.Second); err != nil {
		t.Fatalf("Close = %v", err)
	}
	got := rc.deliveries()
	if len(got) != 2 {
		t.Fatalf("receiver got %d requests, want 2", len(got))
	}
	ts := make([]string, 2)
	for i, d := range got {
		ts[i] = d.header.Get("X-Connmgr-Timestamp")
		sec, _ := strconv.ParseInt(ts[i], 10, 64)
		if err := verify(secret, d.header, d.body, time.Unix(sec, 0)); err != nil {
			t.Errorf("attempt %d: verify = %v, want nil", i+1, err)
		}
	}
	if ts[0] == ts[1] || got[0].header.Get("X-Connmgr-Signature") == got[1].header.Get("X-Connmgr-Signature") {
		t.Errorf("attempts share timestamp %s or signature, want each signed afresh", ts[0])
	}
	if got[0].header.Get("X-Connmgr-Event-Id") != got[1].header.Get("X-Connmgr-Event-Id") {
		t.Errorf("retry has another event id, want the same")
	}
}

// TestRetries checks which answers are retried, and how often.
func TestRetries(t *testing.T) {
	second := time.Now().Truncate(time.Second)
	tests := []struct {
		name         string
		answers      []int // per attempt, the last repeats; 0 hangs past the client timeout
		retryAfter   string
		now          func() time.Time
		maxAttempts  int
		wantAttempts int
		wantOutcomes string // delivered/retried/failed/dropped
		wantGap      time.Duration
	}{
		{name: "200 at once", answers: []int{200}, wantAttempts: 1, wantOutcomes: "1/0/0/0"},
		{name: "any 2xx", answers: []int{204}, wantAttempts: 1, wantOutcomes: "1/0/0/0"},
		{name: "500 then 200", answers: []int{500, 200}, wantAttempts: 2, wantOutcomes: "1/1/0/0"},
		{name: "502, 503 then 200", answers: []int{502, 503, 200}, wantAttempts: 3, wantOutcomes: "1/2/0/0"},
		{name: "408 then 200", answers: []int{408, 200}, wantAttempts: 2, wantOutcomes: "1/1/0/0"},
		{name: "timeout then 200", answers: []int{0, 200}, wantAttempts: 2, wantOutcomes: "1/1/0/0"},
		{name: "429 then 200", answers: []int{429, 200}, wantAttempts: 2, wantOutcomes: "1/1/0/0"},
		{name: "429 with Retry-After seconds", answers: []int{429, 200}, retryAfter: "1",
			wantAttempts: 2, wantOutcomes: "1/1/0/0", wantGap: time.Second},
		{name: "429 with Retry-After date", answers: []int{429, 200},
			retryAfter:   second.Add(time.Second).UTC().Format(http.TimeFormat),
			now:          func() time.Time { return second },
			wantAttempts: 2, wantOutcomes: "1/1/0/0", wantGap: time.Second},
		{name: "always 500 gives up after MaxAttempts", answers: []int{500}, maxAttempts: 3,
			wantAttempts: 3, wantOutcomes: "0/2/1/0"},
		{name: "always 500, default MaxAttempts", answers: []int{500}, wantAttempts: 8, wantOutcomes: "0/7/1/0"},
		{name: "400 is not retried", answers: []int{400, 200}, wantAttempts: 1, wantOutcomes: "0/0/1/0"},
		{name: "410 is not retried", answers: []int{410, 200}, wantAttempts: 1, wantOutcomes: "0/0/1/0"},
		{name: "redirect is neither followed nor retried", answers: []int{302, 200}, wantAttempts: 1, wantOutcomes: "0/0/1/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
				code := tt.answers[min(n, len(tt.answers))-1]
				if code == 0 {
					<-r.Context().Done() // the client gives up first
					return
				}
				if code == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(code)
			})
			n, reg := newNotifier(t, alerts.Config{URL: rc.URL, MaxAttempts: tt.maxAttempts, Now: tt.now,
				Client: localClient(t, 200*time.Millisecond)})
			start(t, n)
			n.StatusChanged(context.Background(), conn, connections.StatusError, connections.StatusConfigured, "")
			if err := closeWithin(t, n, 10*time.Second); err != nil {
				t.Fatalf("Close = %v", err)
			}
			got := rc.deliveries()
			if len(got) != tt.wantAttempts {
				t.Errorf("receiver got %d attempts, want %d", len(got), tt.wantAttempts)
			}
			if o := outcomes(t, reg); o != tt.wantOutcomes {
				t.Errorf("delivered/retried/failed/dropped = %s, want %s", o, tt.wantOutcomes)
			}
			if tt.wantGap > 0 && len(got) >= 2 {
				if gap := got[1].at.Sub(got[0].at); gap < tt.wantGap {
					t.Errorf("retry came after %v, want at least %v (Retry-After: %s)", gap, tt.wantGap, tt.retryAfter)
				}
			}
		})
	}
}

// TestNetworkError checks that an unreachable receiver is retried, then
// given up.
func TestNetworkError(t *testing.T) {
	rc := newReceiver(t, nil)
	rc.Close() // nothing listens there any more
	n, reg := newNotifier(t, alerts.Config{URL: rc.URL, MaxAttempts: 4})
	n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, "")
	if err := closeWithin(t, n, 10*time.Second); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if o := outcomes(t, reg); o != "0/3/1/0" {
		t.Errorf("delivered/retried/failed/dropped = %s, want 0/3/1/0", o)
	}
}

// TestOrder checks that events arrive in the order of the calls, also when
// some attempts fail and are retried.
func TestOrder(t *testing.T) {
	const count = 100
	failed := func(n int) bool { return n%3 == 0 } // every third request
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if failed(n) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	accepted := func() []string {
		var details []string
		for i, d := range rc.deliveries() {
			if failed(i + 1) {
				continue
			}
			var ev struct{ Detail string }
			if err := json.Unmarshal(d.body, &ev); err != nil {
				t.Fatalf("body %s: %v", d.body, err)
			}
			details = append(details, ev.Detail)
		}
		return details
	}
	n, _ := newNotifier(t, alerts.Config{URL: rc.URL})
	start(t, n)
	for i := range count {
		n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, strconv.Itoa(i))
	}
	// Let Run deliver them all before Close takes over.
	for deadline := time.Now().Add(10 * time.Second); len(accepted()) < count && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if err := closeWithin(t, n, 5*time.Second); err != nil {
		t.Fatalf("Close = %v", err)
	}
	got := accepted()
	if len(got) != count {
		t.Fatalf("receiver accepted %d events, want %d", len(got), count)
	}
	for i, d := range got {
		if d != strconv.Itoa(i) {
			t.Fatalf("accepted event %d has detail %q, want %q: out of order", i, d, strconv.Itoa(i))
		}
	}
}

// TestFullQueue checks that a full queue drops and counts events without
// blocking the caller.
func TestFullQueue(t *testing.T) {
	const calls, size = 10_000, 10
	release := make(chan struct{})
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	n, reg := newNotifier(t, alerts.Config{URL: rc.URL, QueueSize: size, Client: localClient(t, time.Minute)})
	start(t, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range calls {
			n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, "")
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("StatusChanged blocked on a full queue")
	}
	for deadline := time.Now().Add(5 * time.Second); rc.hits.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	// One event is with the blocked receiver, size wait, the rest are dropped.
	dropped := metric(t, reg, "connmgr_webhook_deliveries_total", "dropped")
	queued := metric(t, reg, "connmgr_webhook_queue_length", "")
	if rc.hits.Load() != 1 || dropped+queued+1 != calls || queued > size {
		t.Errorf("in flight %d, queued %v, dropped %v; want 1 + queued (≤ %d) + dropped = %d",
			rc.hits.Load(), queued, dropped, size, calls)
	}
	close(release)
	if err := closeWithin(t, n, 10*time.Second); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if got := metric(t, reg, "connmgr_webhook_deliveries_total", "delivered"); got != calls-dropped {
		t.Errorf("delivered = %v, want %v", got, calls-dropped)
	}
	if got := metric(t, reg, "connmgr_webhook_queue_length", ""); got != 0 {
		t.Errorf("queue length after Close = %v, want 0", got)
	}
}

// TestEgressDenied checks that deliveries go through the egress guard, and
// that a refusal is permanent.
func TestEgressDenied(t *testing.T) {
	rc := newReceiver(t, nil)
	var logs bytes.Buffer
	n, reg := newNotifier(t, alerts.Config{URL: rc.URL, Client: (&outbound.Guard{}).Client(time.Second),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	start(t, n)
	n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, "")
	if err := closeWithin(t, n, 5*time.Second); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if hits := rc.hits.Load(); hits != 0 {
		t.Errorf("receiver got %d requests, want 0", hits)
	}
	if o := outcomes(t, reg); o != "0/0/1/0" {
		t.Errorf("delivered/retried/failed/dropped = %s, want 0/0/1/0", o)
	}
	if !strings.Contains(logs.String(), "CONNMGR_EGRESS_ALLOW") {
		t.Errorf("log %q does not say how to allow the receiver", logs.String())
	}
}

// TestNetworkFailures checks that network failures are retried when
// outbound.Classify calls them transient and given up at once otherwise,
// and that the log says why.
func TestNetworkFailures(t *testing.T) {
	untrusted := outboundtest.UntrustedTLS(t)
	for _, tt := range []struct {
		name         string
		url          string
		wantOutcomes string // delivered/retried/failed/dropped
		wantLog      string
	}{
		{name: "refused, retried", url: "http://" + outboundtest.ClosedPort(t), wantOutcomes: "0/2/1/0",
			wantLog: "connection refused"},
		{name: "untrusted certificate, given up", url: untrusted.URL, wantOutcomes: "0/0/1/0",
			wantLog: "TLS handshake failed: the server's certificate is self-signed and not trusted"},
		{name: "no such host, given up", url: "http://nowhere.invalid/hook", wantOutcomes: "0/0/1/0",
			wantLog: `no such host \"nowhere.invalid\"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			n, reg := newNotifier(t, alerts.Config{URL: tt.url, MaxAttempts: 3,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, "")
			if err := closeWithin(t, n, 5*time.Second); err != nil {
				t.Fatalf("Close = %v", err)
			}
			if o := outcomes(t, reg); o != tt.wantOutcomes {
				t.Errorf("delivered/retried/failed/dropped = %s, want %s", o, tt.wantOutcomes)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %s does not say %s", logs.String(), tt.wantLog)
			}
		})
	}
}

// TestClose checks that Close delivers what is queued, in order, stops
// accepting, and gives up when its context ends.
func TestClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name         string
		run          bool // whether Run was started
		hang         bool // whether the receiver never answers
		wantErr      error
		wantHits     int
		wantOutcomes string
	}{
		{name: "without Run", wantHits: 5, wantOutcomes: "5/0/0/1"},
		{name: "taking over from Run", run: true, wantHits: 5, wantOutcomes: "5/0/0/1"},
		{name: "context ends", hang: true, wantErr: context.DeadlineExceeded, wantHits: 1, wantOutcomes: "0/0/0/6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
				if tt.hang {
					<-r.Context().Done()
				}
			})
			n, reg := newNotifier(t, alerts.Config{URL: rc.URL, Client: localClient(t, time.Minute)})
			for i := range 5 {
				n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, strconv.Itoa(i))
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			if tt.run {
				go func() { defer close(done); n.Run(ctx) }()
			} else {
				close(done)
			}
			err := closeWithin(t, n, 500*time.Millisecond)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Close = %v, want %v", err, tt.wantErr)
			}
			cancel()
			<-done
			n.Run(context.Background()) // returns at once after Close
			n.StatusChanged(context.Background(), conn, connections.StatusError, connections.StatusConfigured, "late")
			got := rc.deliveries()
			if len(got) != tt.wantHits {
				t.Fatalf("receiver got %d requests, want %d", len(got), tt.wantHits)
			}
			for i, d := range got {
				var ev struct{ Detail string }
				if json.Unmarshal(d.body, &ev); ev.Detail != strconv.Itoa(i) {
					t.Errorf("request %d has detail %q, want %q", i, ev.Detail, strconv.Itoa(i))
				}
			}
			if o := outcomes(t, reg); o != tt.wantOutcomes {
				t.Errorf("delivered/retried/failed/dropped = %s, want %s", o, tt.wantOutcomes)
			}
		})
	}
}

// TestLogs checks that failures are logged with the connection and the
// attempts, and never with the secret, the signature or the URL, which may
// itself be a credential.
func TestLogs(t *testing.T) {
	const capability = "capability-token-4f9a"
	tests := []struct {
		name   string
		answer int
		closed bool // whether the receiver is gone
	}{
		{name: "given up on 400", answer: http.StatusBadRequest},
		{name: "given up after 500s", answer: http.StatusInternalServerError},
		{name: "network error", closed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.answer)
				fmt.Fprint(w, "receiver says: "+string(secret))
			})
			if tt.closed {
				rc.Close()
			}
			var logs bytes.Buffer
			n, _ := newNotifier(t, alerts.Config{URL: rc.URL + "/hooks/" + capability, MaxAttempts: 2,
				Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, "")
			if err := closeWithin(t, n, 5*time.Second); err != nil {
				t.Fatalf("Close = %v", err)
			}
			n.StatusChanged(context.Background(), conn, connections.StatusConfigured, connections.StatusError, "")
			out := logs.String()
			for _, leak := range []string{string(secret), "sha256=", capability, "receiver says"} {
				if strings.Contains(out, leak) {
					t.Errorf("log contains %q:\n%s", leak, out)
				}
			}
			for _, want := range []string{`"connection":"Conn_REST_Orders"`, `"attempts":`, `"level":"WARN"`} {
				if !strings.Contains(out, want) {
					t.Errorf("log lacks %s:\n%s", want, out)
				}
			}
		})
	}
}
