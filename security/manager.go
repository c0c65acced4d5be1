package security

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections"
)

// ConnectionSource loads connections by row id (for scheduled refreshes).
type ConnectionSource interface {
	// GetByID returns the connection. Returns connections.ErrNotFound.
	GetByID(ctx context.Context, id int64) (*connections.Connection, error)
}

// StatusSink records a connection's status after token requests.
type StatusSink interface {
	SetStatus(ctx context.Context, c *connections.Connection, next connections.Status, test *connections.TestResult, detail string) error
}

// ManagerConfig configures a Manager. DB, Sealer, Client and Connections
// are required.
type ManagerConfig struct {
	DB          *gorm.DB
	Sealer      connections.Sealer
	Connections ConnectionSource
	// Status receives status changes; nil records none.
	Status StatusSink
	// Client makes token requests; it should be the egress-guarded client
	// that invokes use, with a timeout.
	Client *http.Client
	// DefaultTTL is the lifetime assumed when expires_in is missing or
	// not positive (default 1h).
	DefaultTTL time.Duration
	// OnFailure, when set, hears of every failed token request (for the
	// audit log); reason is safe to record.
	OnFailure func(ctx context.Context, c *connections.Connection, reason string)
	// Concurrency bounds scheduled refreshes running at once (default 4).
	Concurrency int
	Now         func() time.Time
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// obtainTimeout bounds one token request, waits for another process's
// lease included.
const obtainTimeout = 30 * time.Second

// leaseFor is how long a process may hold a connection's refresh lease; it
// exceeds obtainTimeout, so a lease only expires on its own when its holder
// died — and then soon, so that other replicas take over.
const leaseFor = obtainTimeout + 5*time.Second

// Manager obtains, caches, persists and refreshes the OAuth tokens of
// connections. Tokens are cached in memory and stored encrypted, so that a
// restart or another replica reuses them. Callers of Token on a cold cache
// share one token request per process (single-flight), and a database
// lease makes that one request across replicas. RefreshDue, run by the
// scheduler, refreshes tokens ahead of expiry. It is safe for concurrent
// use; token requests run on the Manager's own context and deadline, never
// a caller's.
type Manager struct {
	store   *tokenStore
	tc      tokenClient
	conns   ConnectionSource
	status  StatusSink
	onFail  func(context.Context, *connections.Connection, string)
	now     func() time.Time
	owner   string
	flights atomic.Uint64 // numbers this process's lease holders
	log     *slog.Logger
	metrics *tokenMetrics
	conc    int

	mu    sync.RWMutex
	cache map[int64]*cachedToken
	group singleflight.Group
}

type cachedToken struct {
	tok         *Token
	connVersion int64
}

// NewManager returns a manager for cfg.
func NewManager(cfg ManagerConfig) *Manager {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	m := &Manager{store: &tokenStore{db: cfg.DB, sealer: cfg.Sealer}, conns: cfg.Connections, status: cfg.Status, onFail: cfg.OnFailure,
		owner: hex.EncodeToString(b), log: cfg.Logger, conc: cfg.Concurrency, cache: map[int64]*cachedToken{}}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	// UTC: SQLite compares timestamps as text, which orders only times
	// written with the same offset (a DST change or another TZ would make
	// an expired lease look held).
	m.now = func() time.Time { return now().UTC() }
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.conc <= 0 {
		m.conc = 4
	}
	ttl := cfg.DefaultTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	m.tc = tokenClient{client: cfg.Client, now: m.now, defaultTTL: ttl}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m.metrics = newTokenMetrics(reg)
	return m
}

// Reseal re-encrypts stored tokens and pending consents for key rotation.
func (m *Manager) Reseal(ctx context.Context, stale func([]byte) bool) (int, error) {
	return m.store.Reseal(ctx, stale)
}

// mode says when obtain asks the token endpoint.
type mode int

const (
	ifInvalid mode = iota // the stored token cannot be used
	ifDue                 // the stored token is due for refresh (scheduler)
	always                // asked for explicitly (refresh, test)
)

// Token returns a valid token for c, an OAuth connection. Errors wrap
// ErrNeedsConsent, or ErrTokenUnavailable with a *TokenError that says why.
func (m *Manager) Token(ctx context.Context, c *connections.Connection) (*Token, error) {
	m.mu.RLock()
	e := m.cache[c.ID]
	m.mu.RUnlock()
	if e != nil && e.connVersion == c.Version && e.tok.Valid(m.now()) {
		m.metrics.hits.Inc()
		return e.tok, nil
	}
	m.metrics.misses.Inc()
	return m.shared(ctx, "token:", c, ifInvalid, 0)
}

// Refresh obtains a new token for c now, even when the stored one is valid
// or automatic refresh is blocked after a permanent failure.
func (m *Manager) Refresh(ctx context.Context, c *connections.Connection) (*Token, error) {
	st, err := m.store.load(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	return m.shared(ctx, "refresh:", c, always, st.Version)
}

// shared runs obtain once per connection and kind for all callers; each
// caller stops waiting when its own context ends.
func (m *Manager) shared(ctx context.Context, kind string, c *connections.Connection, md mode, seen int64) (*Token, error) {
	ch := m.group.DoChan(kind+strconv.FormatInt(c.ID, 10), func() (any, error) {
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), obtainTimeout)
		defer cancel()
		return m.obtain(octx, c, md, seen)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		tok, _ := r.Val.(*Token)
		return tok, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, ctx.Err())
	}
}

// obtain returns the stored token when md allows, else asks the token
// endpoint under the connection's lease. seen is the token version the
// caller saw (mode always: a newer one satisfies it).
func (m *Manager) obtain(ctx context.Context, c *connections.Connection, md mode, seen int64) (*Token, error) {
	// Each call holds the lease under its own name: flights of different
	// kinds (a caller's, the scheduler's, a forced refresh) for the same
	// connection in this process exclude each other like other processes
	// do, so that a refresh token is never sent twice.
	owner := m.owner + "/" + strconv.FormatUint(m.flights.Add(1), 10)
	for {
		st, err := m.store.load(ctx, c.ID)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
		}
		now := m.now()
		if tok, done, err := m.settled(c, st, md, seen, now); done {
			return tok, err
		}
		ok, err := m.store.lease(ctx, c.ID, owner, now, now.Add(leaseFor))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
		}
		if !ok {
			if md == ifDue {
				return nil, nil // another process refreshes it
			}
			// Another process is asking; wait for its token.
			select {
			case <-time.After(50*time.Millisecond + mrand.N(100*time.Millisecond)):
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: waited for another process's token request: %w", ErrTokenUnavailable, ctx.Err())
			}
		}
		// Holding the lease, look again: the last holder may just have
		// stored a token.
		if st, err = m.store.load(ctx, c.ID); err != nil {
			_ = m.store.release(ctx, c.ID, owner)
			return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
		}
		if tok, done, err := m.settled(c, st, md, seen, now); done {
			_ = m.store.release(ctx, c.ID, owner)
			return tok, err
		}
		return m.request(ctx, c, st, owner)
	}
}

// settled decides whether st answers the request without a token request.
func (m *Manager) settled(c *connections.Connection, st *tokenState, md mode, seen int64, now time.Time) (*Token, bool, error) {
	switch md {
	case ifInvalid:
		if st.Token.Valid(now) {
			m.remember(c, st.Token)
			return st.Token, true, nil
		}
		if st.Blocked {
			return nil, true, m.blockedError(c, st)
		}
		if now.Before(st.NextAttempt) {
			return nil, true, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{
				Reason: st.LastError + "; next attempt at " + st.NextAttempt.Format(time.RFC3339)})
		}
	case ifDue:
		if st.Token == nil || st.Blocked || now.Before(st.NextAttempt) || now.Before(st.Token.RefreshAt()) {
			return nil, true, nil
		}
	case always:
		if st.Version > seen && st.Token.Valid(now) {
			m.remember(c, st.Token)
			return st.Token, true, nil
		}
	}
	return nil, false, nil
}

func (m *Manager) blockedError(c *connections.Connection, st *tokenState) error {
	// The stored failure counts as well as c.Status: c may be a copy read
	// before the refresh failed (the invoke path caches connections).
	needsConsent := c.Status == connections.StatusNeedsConsent || st.LastError == "invalid_grant"
	if c.Security.Policy == connections.PolicyAuthorizationCode && needsConsent || st.LastError == "" {
		return fmt.Errorf("%w: %w", ErrNeedsConsent, &TokenError{Reason: "consent is needed", Permanent: true})
	}
	return fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{Reason: st.LastError +
		"; automatic refresh is stopped until the connection is changed or refreshed by hand", Permanent: true})
}

// request asks the token endpoint for c, holding the lease as owner, and
// stores the outcome (which releases the lease).
func (m *Manager) request(ctx context.Context, c *connections.Connection, st *tokenState, owner string) (*Token, error) {
	g := grant{scopes: true}
	switch c.Security.Policy {
	case connections.PolicyClientCredentials:
		g.typ = "client_credentials"
	case connections.PolicyPassword:
		g.typ = "password"
		g.params = map[string][]string{"username": {c.Security.Username}, "password": {c.Security.Password.Reveal()}}
	case connections.PolicyAuthorizationCode:
		if st.Token == nil || !st.Token.RefreshToken.IsSet() {
			_ = m.store.release(ctx, c.ID, owner)
			m.setStatus(ctx, c, connections.StatusNeedsConsent, "no refresh token: consent is needed")
			return nil, fmt.Errorf("%w: %w", ErrNeedsConsent, &TokenError{Reason: "no refresh token: consent is needed", Permanent: true})
		}
		g = grant{typ: "refresh_token", params: map[string][]string{"refresh_token": {st.Token.RefreshToken.Reveal()}}}
	default:
		_ = m.store.release(ctx, c.ID, owner)
		return nil, fmt.Errorf("%w: policy %s has no tokens", ErrTokenUnavailable, c.Security.Policy)
	}
	start := m.now()
	tok, err := m.tc.request(ctx, c, g)
	if err != nil {
		return nil, m.failed(ctx, c, st, owner, err)
	}
	if !tok.RefreshToken.IsSet() && st.Token != nil {
		tok.RefreshToken = st.Token.RefreshToken // a response without one keeps the old one
	}
	v, err := m.store.save(ctx, c.ID, st.Version, tok, owner, m.now())
	if errors.Is(err, errStale) {
		// Our lease expired and another process stored a newer token; it wins.
		m.log.Warn("token request outlived its lease; keeping the newer token", "connection", c.Name)
		latest, err := m.store.load(ctx, c.ID)
		if err != nil || !latest.Token.Valid(m.now()) {
			return nil, fmt.Errorf("%w: token changed concurrently", ErrTokenUnavailable)
		}
		m.remember(c, latest.Token)
		return latest.Token, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
	}
	tok.Version = v
	m.remember(c, tok)
	m.metrics.requests.WithLabelValues(c.Name, "success").Inc()
	if st.Token != nil {
		m.metrics.timeLeft.Observe(max(0, st.Token.ExpiresAt.Sub(start).Seconds()))
	}
	m.log.Debug("token obtained", "connection", c.Name, "expires_at", tok.ExpiresAt, "version", v)
	m.setStatus(ctx, c, connections.StatusConfigured, "")
	return tok, nil
}

// failed records a failed token request: permanent failures stop
// automatic refresh; transient ones back off exponentially with jitter,
// honouring Retry-After.
func (m *Manager) failed(ctx context.Context, c *connections.Connection, st *tokenState, owner string, err error) error {
	now := m.now()
	te := classify(err, now)
	failures := st.Failures + 1
	var next *time.Time
	status, outcome := connections.StatusError, "transient_error"
	if te.Permanent {
		outcome = "permanent_error"
		if c.Security.Policy == connections.PolicyAuthorizationCode && te.OAuthCode == "invalid_grant" {
			status = connections.StatusNeedsConsent
		}
	} else {
		t := now.Add(max(backoff(failures), te.RetryAfter))
		next = &t
	}
	if ferr := m.store.fail(ctx, c.ID, owner, te.Reason, failures, next, te.Permanent, now); ferr != nil {
		m.log.Error("cannot record token failure", "connection", c.Name, "error", ferr.Error())
	}
	m.metrics.requests.WithLabelValues(c.Name, outcome).Inc()
	attrs := []any{"connection", c.Name, "reason", te.Reason, "permanent", te.Permanent, "failures", failures}
	if next != nil {
		attrs = append(attrs, "next_attempt", next.Format(time.RFC3339))
	}
	m.log.Warn("token request failed", attrs...)
	if m.onFail != nil {
		m.onFail(ctx, c, te.Reason)
	}
	m.setStatus(ctx, c, status, te.Reason)
	if status == connections.StatusNeedsConsent {
		return fmt.Errorf("%w: %w", ErrNeedsConsent, te)
	}
	return fmt.Errorf("%w: %w", ErrTokenUnavailable, te)
}

// backoff is the wait after the nth consecutive transient failure: 1s
// doubling to at most 5 minutes, with full jitter over its upper half.
func backoff(n int) time.Duration {
	d := time.Second << min(n-1, 9)
	d = min(d, 5*time.Minute)
	return d/2 + mrand.N(d/2+1)
}

func (m *Manager) setStatus(ctx context.Context, c *connections.Connection, s connections.Status, detail string) {
	if m.status == nil {
		return
	}
	if err := m.status.SetStatus(ctx, c, s, nil, detail); err != nil && !errors.Is(err, connections.ErrNotFound) {
		m.log.Warn("cannot record connection status", "connection", c.Name, "error", err.Error())
	}
}

func (m *Manager) remember(c *connections.Connection, t *Token) {
	m.mu.Lock()
	m.cache[c.ID] = &cachedToken{tok: t, connVersion: c.Version}
	m.mu.Unlock()
}

// Forget drops the cached token of connection id (it was changed or
// deleted, maybe by another process); id 0 drops every cached token.
func (m *Manager) Forget(id int64) {
	m.mu.Lock()
	if id == 0 {
		clear(m.cache)
	} else {
		delete(m.cache, id)
	}
	m.mu.Unlock()
}

// Observe is a connections.Service observer that forgets the tokens of
// changed connections.
func (m *Manager) Observe(_ context.Context, ch connections.Change) {
	if ch.Old != nil {
		m.Forget(ch.Old.ID)
	}
}

// Rejected reports that the target answered 401 to tok: unless a newer
// token replaced it meanwhile, it is dropped here and in the database, so
// that the next Token asks for a new one.
func (m *Manager) Rejected(ctx context.Context, c *connections.Connection, tok *Token) {
	m.mu.Lock()
	if e := m.cache[c.ID]; e != nil && e.tok == tok {
		delete(m.cache, c.ID)
	}
	m.mu.Unlock()
	if err := m.store.dropAccess(ctx, c.ID, tok.Version, m.now()); err != nil {
		m.log.Warn("cannot drop rejected token", "connection", c.Name, "error", err.Error())
	}
}

// RefreshDue refreshes every stored token whose refresh time has come:
// when less than max(20% of its lifetime, min(60s, half its lifetime)) is
// left. Refreshes start with a little jitter and run at most Concurrency
// at a time; the database lease makes each happen in one process only.
func (m *Manager) RefreshDue(ctx context.Context) {
	rows, err := m.store.due(ctx)
	if err != nil {
		m.log.Warn("scheduled refresh: cannot list tokens", "error", err.Error())
		return
	}
	now := m.now()
	sem := make(chan struct{}, m.conc)
	var wg sync.WaitGroup
	for _, r := range rows {
		if r.ExpiresAt == nil || r.ObtainedAt == nil || (r.NextAttemptAt != nil && now.Before(*r.NextAttemptAt)) ||
			(r.LeaseOwner != "" && r.LeaseUntil != nil && now.Before(*r.LeaseUntil)) {
			continue
		}
		t := Token{ObtainedAt: *r.ObtainedAt, ExpiresAt: *r.ExpiresAt}
		if now.Before(t.RefreshAt()) {
			continue
		}
		wg.Add(1)
		go func(id, version int64, ahead time.Duration) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// Jitter spreads the requests of a batch over a short while.
			select {
			case <-time.After(mrand.N(min(time.Second, ahead/20) + 1)):
			case <-ctx.Done():
				return
			}
			m.refreshOne(ctx, id, version)
		}(r.ConnectionID, r.Version, refreshAhead(t.Lifetime()))
	}
	wg.Wait()
}

func (m *Manager) refreshOne(ctx context.Context, id, version int64) {
	c, err := m.conns.GetByID(ctx, id)
	if err != nil {
		if !errors.Is(err, connections.ErrNotFound) {
			m.log.Warn("scheduled refresh: cannot load connection", "connection_id", id, "error", err.Error())
		}
		return
	}
	if !c.Security.Policy.OAuth() {
		return
	}
	// A refresh that has begun is waited for even when ctx ends (the
	// scheduler stopping at shutdown): its answer may carry a rotated
	// refresh token, lost for good if the database closed before it was
	// stored. The request's own deadline bounds the wait.
	tok, err := m.shared(context.WithoutCancel(ctx), "due:", c, ifDue, version)
	switch {
	case err != nil:
		m.metrics.refreshes.WithLabelValues(c.Name, "failure").Inc()
	case tok != nil:
		m.metrics.refreshes.WithLabelValues(c.Name, "success").Inc()
	}
}

// TokenInfo is what may be shown about a connection's token: never the
// token itself.
type TokenInfo struct {
	Present     bool
	ObtainedAt  time.Time
	ExpiresAt   time.Time
	RefreshAt   time.Time
	Scopes      []string
	Refreshable bool
	LastError   string
	Failures    int
	NextAttempt time.Time
	Blocked     bool
}

// Info returns the metadata of c's stored token.
func (m *Manager) Info(ctx context.Context, c *connections.Connection) (*TokenInfo, error) {
	st, err := m.store.load(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	info := &TokenInfo{LastError: st.LastError, Failures: st.Failures, NextAttempt: st.NextAttempt, Blocked: st.Blocked,
		Refreshable: c.Security.Policy == connections.PolicyClientCredentials || c.Security.Policy == connections.PolicyPassword}
	if t := st.Token; t != nil {
		info.Present, info.ObtainedAt, info.ExpiresAt, info.RefreshAt, info.Scopes = true, t.ObtainedAt, t.ExpiresAt, t.RefreshAt(), t.Scopes
		if c.Security.Policy == connections.PolicyAuthorizationCode {
			info.Refreshable = t.RefreshToken.IsSet()
		}
	}
	if st.Blocked {
		info.Refreshable = false
	}
	return info, nil
}

type tokenMetrics struct {
	hits, misses prometheus.Counter
	requests     *prometheus.CounterVec
	refreshes    *prometheus.CounterVec
	timeLeft     prometheus.Histogram
}

func newTokenMetrics(reg prometheus.Registerer) *tokenMetrics {
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connmgr_token_cache_total",
		Help: "Token lookups by result: hit (served from memory) or miss."}, []string{"result"})
	m := &tokenMetrics{
		hits: cache.WithLabelValues("hit"), misses: cache.WithLabelValues("miss"),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connmgr_token_requests_total",
			Help: "Requests to token endpoints, by connection and outcome (success, transient_error, permanent_error)."},
			[]string{"connection", "outcome"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connmgr_token_refreshes_total",
			Help: "Scheduled refreshes run by this process, by connection and outcome."}, []string{"connection", "outcome"}),
		timeLeft: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "connmgr_token_time_left_at_refresh_seconds",
			Help:    "How long the replaced token still had to live when a new one was obtained (refresh lead).",
			Buckets: []float64{0, 1, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600}}),
	}
	reg.MustRegister(cache, m.requests, m.refreshes, m.timeLeft)
	return m
}
