// Package alerts delivers webhooks when a connection's status changes.
//
// A Notifier is a status observer of connections.Service: StatusChanged
// queues an event and returns at once, and Run posts the queued events, one
// at a time and in order, to CONNMGR_WEBHOOK_URL through the egress guard.
// Delivery is at least once; receivers drop repeats by event id.
//
// Each POST carries the JSON event
//
//	{"id": "5f0c…", "type": "connection.status_changed", "connection": "Conn_REST_Orders",
//	 "from": "CONFIGURED", "to": "ERROR", "detail": "token endpoint answered 401",
//	 "at": "2026-11-26T10:00:00.123Z"}
//
// and the headers X-Connmgr-Event-Id (the event id), X-Connmgr-Timestamp
// (unix seconds of this attempt) and X-Connmgr-Signature:
// "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)). A receiver
// verifies a delivery by computing the same HMAC over the timestamp header,
// a dot and the raw body exactly as received, comparing it with the
// signature in constant time (hmac.Equal), and rejecting timestamps more
// than a few minutes from its own clock, so that a captured delivery cannot
// be replayed later. Every attempt is signed afresh with its own timestamp.
// The package example shows a receiver doing this.
//
// Any 2xx answer is success. Timeouts, 408, 429, 5xx and the network
// errors that outbound.Classify calls transient (refused or reset
// connections, temporary DNS failures) are retried with outbound.Backoff,
// waiting at least as long as a Retry-After (outbound.RetryAfter, capped
// here at 5 minutes) on 429 and 503, up to Config.MaxAttempts. Other
// answers, redirects included, and permanent failures (refusals of the
// egress guard, TLS failures, a host name that does not exist) are given
// up at once.
package alerts

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
)

// EventType is the type of every event this package sends.
const EventType = "connection.status_changed"

// maxDetail caps the detail of an event, in bytes.
const maxDetail = 500

// maxWait caps the wait before a retry, whatever Backoff or Retry-After say:
// an alert that waits longer is stale.
const maxWait = 5 * time.Minute

// Config configures a Notifier. URL and Secret are required; the other
// fields have defaults.
type Config struct {
	// URL receives the events (CONNMGR_WEBHOOK_URL): an absolute http(s) URL.
	URL string
	// Secret is the HMAC-SHA256 key (CONNMGR_WEBHOOK_SECRET), at least 16
	// bytes. It is never logged or put in an error.
	Secret []byte
	// Client posts the events. It must be egress-guarded, as from
	// outbound.Guard.Client; its timeout bounds one attempt. Nil means a
	// client that reaches public addresses only, with a 10s timeout.
	Client *http.Client
	// QueueSize bounds the events waiting for delivery (default 1000).
	// When the queue is full, new events are dropped and counted.
	QueueSize int
	// MaxAttempts bounds the attempts per event (default 8).
	MaxAttempts int
	// Backoff returns the wait after the given number of failed attempts
	// (1 after the first). Nil means outbound.Backoff. A Retry-After longer
	// than the backoff wins.
	Backoff func(attempt int) time.Duration
	// Logger gets delivery failures and drops (default: discard).
	Logger *slog.Logger
	// Registerer gets the metrics (default: a private registry).
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Notifier queues status changes and delivers them as webhooks. Its
// methods are safe for concurrent use.
type Notifier struct {
	url     string
	sign    func(ts string, body []byte) string // holds the secret; a func prints as an address
	client  *http.Client
	max     int
	backoff func(int) time.Duration
	log     *slog.Logger
	now     func() time.Time

	queue    chan item
	mu       sync.RWMutex // guards closed against sends racing Close
	closed   bool
	stop     chan struct{} // closed by Close: Run hands over to Close
	stopOnce sync.Once
	worker   chan struct{} // a one-slot lock held by whoever delivers
	pending  *item         // the event being delivered; guarded by worker
	full     atomic.Bool   // the last event was dropped; logs once per episode

	deliveries *prometheus.CounterVec
}

// item is a queued event with its encoded body.
type item struct {
	id, conn string
	body     []byte
	attempts int
	next     time.Time // no attempt before
}

// New returns a Notifier for cfg. Errors name CONNMGR_WEBHOOK_URL or
// CONNMGR_WEBHOOK_SECRET and never contain their values.
func New(cfg Config) (*Notifier, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("CONNMGR_WEBHOOK_URL: must be an absolute http or https URL")
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("CONNMGR_WEBHOOK_SECRET: required with CONNMGR_WEBHOOK_URL, at least 16 bytes")
	}
	secret := bytes.Clone(cfg.Secret)
	n := &Notifier{
		url:     cfg.URL,
		client:  cmp.Or(cfg.Client, (&outbound.Guard{}).Client(10*time.Second)),
		max:     cmp.Or(max(cfg.MaxAttempts, 0), 8),
		backoff: cfg.Backoff,
		log:     cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		now:     cfg.Now,
		queue:   make(chan item, cmp.Or(max(cfg.QueueSize, 0), 1000)),
		stop:    make(chan struct{}),
		worker:  make(chan struct{}, 1),
		sign: func(ts string, body []byte) string {
			mac := hmac.New(sha256.New, secret)
			mac.Write([]byte(ts + "."))
			mac.Write(body)
			return "sha256=" + hex.EncodeToString(mac.Sum(nil))
		},
	}
	if n.backoff == nil {
		n.backoff = outbound.Backoff
	}
	if n.now == nil {
		n.now = time.Now
	}
	reg := cmp.Or(cfg.Registerer, prometheus.Registerer(prometheus.NewRegistry()))
	n.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connmgr_webhook_deliveries_total",
		Help: "Webhook events by outcome: delivered, retried (per retry), failed (given up), dropped (queue full or closed)."},
		[]string{"outcome"})
	length := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "connmgr_webhook_queue_length",
		Help: "Webhook events waiting for delivery."}, func() float64 { return float64(len(n.queue)) })
	reg.MustRegister(n.deliveries, length)
	for _, o := range []string{"delivered", "retried", "failed", "dropped"} {
		n.deliveries.WithLabelValues(o) // export zeros from the start
	}
	return n, nil
}

// StatusChanged queues an event saying that c went from prev to next. It
// has the signature of a connections.Service status observer; it never
// blocks and never fails: when the queue is full or the Notifier is
// closed, the event is dropped and counted.
func (n *Notifier) StatusChanged(_ context.Context, c *connections.Connection, prev, next connections.Status, detail string) {
	var id [16]byte
	rand.Read(id[:]) // never fails since Go 1.24
	ev := struct {
		ID         string             `json:"id"`
		Type       string             `json:"type"`
		Connection string             `json:"connection"`
		From       connections.Status `json:"from"`
		To         connections.Status `json:"to"`
		Detail     string             `json:"detail"`
		At         time.Time          `json:"at"`
	}{hex.EncodeToString(id[:]), EventType, c.Name, prev, next, clip(detail), n.now().UTC().Truncate(time.Millisecond)}
	body, _ := json.Marshal(ev) // cannot fail: strings and a time
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.closed {
		select {
		case n.queue <- item{id: ev.ID, conn: c.Name, body: body}:
			n.full.Store(false)
			return
		default:
		}
	}
	n.deliveries.WithLabelValues("dropped").Inc()
	if !n.full.Swap(true) {
		n.log.Warn("webhook event dropped: queue full or closed", "connection", c.Name, "closed", n.closed)
	}
}

// Run delivers queued events, one at a time and in order, until ctx ends
// or Close is called. An event interrupted by either is kept for Close.
// Only one Run delivers at a time; another waits for it.
func (n *Notifier) Run(ctx context.Context) {
	select {
	case n.worker <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-n.worker }()
	for {
		select {
		case <-n.stop: // before taking another event, which is Close's now
			return
		default:
		}
		if n.pending == nil {
			select {
			case <-ctx.Done():
				return
			case <-n.stop:
				return
			case it := <-n.queue:
				n.pending = &it
			}
		}
		if !n.deliver(ctx, n.stop, n.pending) {
			return
		}
		n.pending = nil
	}
}

// Close stops accepting events, makes Run return after its current
// attempt, and delivers what is still queued (including the event Run was
// on) until ctx ends. It returns an error wrapping ctx.Err() if events
// were left undelivered; they count as dropped. Run returns at once after
// Close.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.stopOnce.Do(func() { close(n.stop) })
	defer n.client.CloseIdleConnections()
	select {
	case n.worker <- struct{}{}: // Run has returned
	case <-ctx.Done():
		return n.abandon(ctx, 0)
	}
	defer func() { <-n.worker }()
	for {
		if n.pending == nil {
			select {
			case it := <-n.queue:
				n.pending = &it
			default:
				return nil
			}
		}
		if !n.deliver(ctx, nil, n.pending) {
			n.pending = nil
			return n.abandon(ctx, 1)
		}
		n.pending = nil
	}
}

// abandon counts the queued events and extra others as dropped.
func (n *Notifier) abandon(ctx context.Context, extra int) error {
	left := len(n.queue) + extra
	n.deliveries.WithLabelValues("dropped").Add(float64(left))
	n.log.Warn("webhook events not delivered before shutdown", "events", left)
	return fmt.Errorf("alerts: close: %d events not delivered: %w", left, ctx.Err())
}

// deliver makes the attempts left for it. It returns false, with it kept
// for a later deliver, when ctx ends or stop is closed; true when it was
// delivered or given up.
func (n *Notifier) deliver(ctx context.Context, stop <-chan struct{}, it *item) bool {
	for {
		if !sleep(ctx, stop, time.Until(it.next)) {
			return false
		}
		retry, wait, err := n.attempt(ctx, it)
		if ctx.Err() != nil && err != nil {
			return false // our shutdown, not the receiver's failure
		}
		it.attempts++
		switch {
		case err == nil:
			n.deliveries.WithLabelValues("delivered").Inc()
			return true
		case !retry || it.attempts >= n.max:
			n.deliveries.WithLabelValues("failed").Inc()
			n.log.Warn("webhook delivery failed", "connection", it.conn, "event", it.id,
				"attempts", it.attempts, "error", err)
			return true
		}
		n.deliveries.WithLabelValues("retried").Inc()
		// Kept in the item, so that Close taking over from Run still waits.
		it.next = time.Now().Add(min(max(wait, n.backoff(it.attempts)), maxWait))
	}
}

// sleep waits for d and reports whether it did, rather than see ctx end or
// stop close.
func sleep(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// attempt posts it once, signed now. It returns whether a failure may pass
// on retry, and how long the receiver asked to wait (Retry-After). Errors
// never contain the URL, the secret or the signature.
func (n *Notifier) attempt(ctx context.Context, it *item) (retry bool, wait time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(it.body))
	if err != nil {
		return false, 0, errors.New("cannot build request")
	}
	ts := strconv.FormatInt(n.now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "connmgr")
	req.Header.Set("X-Connmgr-Event-Id", it.id)
	req.Header.Set("X-Connmgr-Timestamp", ts)
	req.Header.Set("X-Connmgr-Signature", n.sign(ts, it.body))
	resp, err := n.client.Do(req)
	if err != nil {
		// The *Failure's text is its reason, never the URL, which may
		// itself be a credential.
		f := outbound.Classify(err)
		return f.Transient, 0, f
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, 0, nil
	case c == http.StatusTooManyRequests || c == http.StatusServiceUnavailable:
		return true, outbound.RetryAfter(resp.Header.Get("Retry-After"), n.now()), fmt.Errorf("receiver answered %d", c)
	case c == http.StatusRequestTimeout || c >= 500:
		return true, 0, fmt.Errorf("receiver answered %d", c)
	default:
		return false, 0, fmt.Errorf("receiver answered %d", c)
	}
}

// clip cuts s to at most maxDetail bytes, on a rune boundary.
func clip(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	i := maxDetail
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
