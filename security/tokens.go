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

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
)

// tokenPolicy is a policy that obtains tokens from a token endpoint.
type tokenPolicy interface {
	connections.Security
	// obtain asks for a new token for c; prev is the stored token (nil
	// when none), whose refresh token it may use. Errors are *TokenError
	// or wrap ErrNeedsConsent.
	obtain(ctx context.Context, e *tokenEnv, c *connections.Connection, prev *Token) (*Token, error)
}

// optionalTokens is a token policy whose settings decide whether it has
// tokens at all (AWS SigV4 has them only with assumeRole).
type optionalTokens interface {
	hasTokens() bool
}

// HasTokens reports whether connections of policy s obtain tokens.
func HasTokens(s connections.Security) bool {
	if o, ok := s.(optionalTokens); ok {
		return o.hasTokens()
	}
	_, ok := s.(tokenPolicy)
	return ok
}

// ConnectionSource gives the token manager the current connections.
type ConnectionSource interface {
	// Get returns the named connection (from a cache is fine: changes
	// invalidate it). Returns connections.ErrNotFound.
	Get(ctx context.Context, name string) (*connections.Connection, error)
}

// StatusSink records a connection's status after token requests.
type StatusSink interface {
	SetStatus(ctx context.Context, c *connections.Connection, next connections.Status, reason string, test *connections.TestResult) error
}

// ManagerConfig configures a Manager. Store, Connections and Clients are
// required.
type ManagerConfig struct {
	Store       TokenStore
	Connections ConnectionSource
	// Status receives status changes; nil records none.
	Status StatusSink
	// Clients returns the egress-guarded HTTP client for c's token
	// requests (with c's TLS settings), whose Timeout bounds one request.
	Clients func(c *connections.Connection) (*http.Client, error)
	// DefaultTTL is the lifetime assumed when neither expires_in nor a JWT
	// exp says (default 1h).
	DefaultTTL time.Duration
	// RequestTimeout bounds one token request, waiting for another
	// process's lease included (default 30s).
	RequestTimeout time.Duration
	// RejectCooldown is how long after a target rejected a connection's
	// token another rejection may drop a token again (default 10s).
	RejectCooldown time.Duration
	// OnFailure, when set, hears of every failed token request (for the
	// audit log); reason is safe to record.
	OnFailure func(ctx context.Context, c *connections.Connection, reason string)
	// Concurrency bounds scheduled refreshes running at once (default 32).
	Concurrency int
	Now         func() time.Time
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Manager obtains, caches, persists and refreshes the tokens of
// connections. It is the caching, single-flight decorator around each
// policy's token source: tokens are cached in memory and stored encrypted,
// so a restart or another replica reuses them; callers of Token on a cold
// cache share one token request per process, and a database lease makes
// that one request across replicas. A token belongs to the fingerprint of
// the connection's credential configuration it was obtained under; one
// from another is neither stored nor served. RefreshDue, run by the
// scheduler, refreshes tokens ahead of expiry. It is safe for concurrent
// use; token requests run on the Manager's own context and deadline, never
// a caller's.
type Manager struct {
	store    TokenStore
	conns    ConnectionSource
	status   StatusSink
	clients  func(*connections.Connection) (*http.Client, error)
	onFail   func(context.Context, *connections.Connection, string)
	now      func() time.Time
	ttl      time.Duration
	timeout  time.Duration
	cooldown time.Duration
	owner    string
	flights  atomic.Uint64 // numbers this process's lease holders
	log      *slog.Logger
	metrics  *tokenMetrics
	conc     int
	meta     *metadataCache

	sem     chan struct{}  // bounds scheduled refreshes in flight
	running sync.WaitGroup // scheduled refreshes

	secretsByConfig sync.Map     // secretKey → []string, see secretValues
	secretsCount    atomic.Int64 // entries stored in secretsByConfig

	mu       sync.RWMutex
	cache    map[int64]*cachedToken
	rejected map[int64]time.Time // when a target last made us drop a token
	pending  map[int64]bool      // scheduled refreshes, by connection
	group    singleflight.Group
}

type cachedToken struct {
	tok         *Token
	fingerprint string
}

// NewManager returns a manager for cfg.
func NewManager(cfg ManagerConfig) *Manager {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	m := &Manager{store: cfg.Store, conns: cfg.Connections, status: cfg.Status, clients: cfg.Clients,
		onFail: cfg.OnFailure, owner: hex.EncodeToString(b), log: cfg.Logger, conc: cfg.Concurrency,
		ttl: cfg.DefaultTTL, timeout: cfg.RequestTimeout, cooldown: cfg.RejectCooldown,
		cache: map[int64]*cachedToken{}, rejected: map[int64]time.Time{}, pending: map[int64]bool{}}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	// UTC: SQLite compares timestamps as text, which orders only times
	// written with the same offset.
	m.now = func() time.Time { return now().UTC() }
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.conc <= 0 {
		m.conc = 32
	}
	m.sem = make(chan struct{}, m.conc)
	if m.ttl <= 0 {
		m.ttl = time.Hour
	}
	if m.timeout <= 0 {
		m.timeout = 30 * time.Second
	}
	if m.cooldown <= 0 {
		m.cooldown = 10 * time.Second
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m.metrics = newTokenMetrics(reg)
	m.meta = newMetadataCache(m.now)
	return m
}

// leaseFor is how long a process may hold a connection's refresh lease; it
// exceeds the request timeout, so a lease only expires on its own when its
// holder died, and then soon, so that other replicas take over.
func (m *Manager) leaseFor() time.Duration { return m.timeout + 5*time.Second }

// env returns what c's token requests need.
func (m *Manager) env(c *connections.Connection) (*tokenEnv, error) {
	client, err := m.clients(c)
	if err != nil {
		return nil, &TokenError{Reason: "cannot set up the connection's client: " + err.Error(), Permanent: true}
	}
	e := &tokenEnv{client: client, now: m.now(), defaultTTL: m.ttl, manager: m}
	for _, r := range c.AllSecrets() {
		if v := r.Value(); v.IsSet() {
			e.secrets = append(e.secrets, v.Reveal())
		}
	}
	if f, ok := c.Security.(interface{ sentForms() []string }); ok {
		e.secrets = append(e.secrets, f.sentForms()...)
	}
	e.discover = func(ctx context.Context, issuer string) (*Metadata, error) {
		return m.meta.get(ctx, client, issuer)
	}
	return e, nil
}

// mode says when obtain asks the token endpoint.
type mode int

const (
	ifInvalid mode = iota // the stored token cannot be used
	ifDue                 // the stored token is due for refresh (scheduler)
	always                // asked for explicitly (refresh, test)
)

// Token returns a valid token for c, whose policy has tokens. Errors wrap
// ErrNeedsConsent, ErrNoTokens, or ErrTokenUnavailable with a *TokenError
// that says why.
func (m *Manager) Token(ctx context.Context, c *connections.Connection) (*Token, error) {
	m.mu.RLock()
	e := m.cache[c.ID]
	m.mu.RUnlock()
	if e != nil && e.fingerprint == c.Fingerprint && e.tok.Valid(m.now()) {
		m.metrics.hits.Inc()
		return e.tok, nil
	}
	m.metrics.misses.Inc()
	return m.shared(ctx, "token:", c, ifInvalid, 0)
}

// Refresh obtains a new token for c now, even when the stored one is valid
// or automatic refresh is blocked after a permanent failure.
func (m *Manager) Refresh(ctx context.Context, c *connections.Connection) (*Token, error) {
	if !HasTokens(c.Security) {
		return nil, ErrNoTokens
	}
	st, err := m.store.Load(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	return m.shared(ctx, "refresh:", c, always, st.Version)
}

// shared runs obtain once per connection, configuration and kind for all
// callers; each caller stops waiting when its own context ends.
func (m *Manager) shared(ctx context.Context, kind string, c *connections.Connection, md mode, seen int64) (*Token, error) {
	if !HasTokens(c.Security) {
		return nil, ErrNoTokens
	}
	key := kind + strconv.FormatInt(c.ID, 10) + "/" + c.Fingerprint
	ch := m.group.DoChan(key, func() (any, error) {
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.timeout)
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
		return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{Reason: "gave up waiting for the token endpoint", cause: ctx.Err()})
	}
}

// usable reports whether st holds a token of c's configuration.
func usable(st *TokenState, c *connections.Connection) bool {
	return st.Token != nil && st.Fingerprint == c.Fingerprint
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
		st, err := m.store.Load(ctx, c.ID)
		if err != nil {
			return nil, unavailable(err)
		}
		now := m.now()
		if tok, done, err := m.settled(c, st, md, seen, now); done {
			return tok, err
		}
		ok, err := m.store.Lease(ctx, c.ID, owner, now, now.Add(m.leaseFor()))
		if err != nil {
			return nil, unavailable(err)
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
				return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{
					Reason: "waited too long for another replica's token request", cause: ctx.Err()})
			}
		}
		// Holding the lease, look again: the last holder may just have
		// stored a token.
		if st, err = m.store.Load(ctx, c.ID); err != nil {
			_ = m.store.Release(ctx, c.ID, owner)
			return nil, unavailable(err)
		}
		if tok, done, err := m.settled(c, st, md, seen, now); done {
			_ = m.store.Release(ctx, c.ID, owner)
			return tok, err
		}
		return m.request(ctx, c, st, owner)
	}
}

func unavailable(err error) error {
	return fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{Reason: "the token store cannot be reached", cause: err})
}

// settled decides whether st answers the request without a token request.
func (m *Manager) settled(c *connections.Connection, st *TokenState, md mode, seen int64, now time.Time) (*Token, bool, error) {
	mine := usable(st, c)
	switch md {
	case ifInvalid:
		if mine && st.Token.Valid(now) {
			m.remember(c, st.Token)
			return st.Token, true, nil
		}
		if !mine && st.Fingerprint != c.Fingerprint && st.Version > 0 {
			// Bookkeeping of another configuration: start afresh.
			return nil, false, nil
		}
		if st.Blocked {
			return nil, true, m.blockedError(c, st)
		}
		if now.Before(st.NextAttempt) {
			return nil, true, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{
				Reason: st.LastError + "; next attempt at " + st.NextAttempt.Format(time.RFC3339)})
		}
	case ifDue:
		// A second of slack: the scheduler's timers run on the monotonic
		// clock and may wake a hair before the wall clock says it is time.
		if !mine || st.Blocked || now.Add(time.Second).Before(st.NextAttempt) || now.Add(time.Second).Before(st.RefreshAt) {
			return nil, true, nil
		}
	case always:
		if mine && st.Version > seen && st.Token.Valid(now) {
			m.remember(c, st.Token)
			return st.Token, true, nil
		}
	}
	return nil, false, nil
}

func (m *Manager) blockedError(c *connections.Connection, st *TokenState) error {
	if st.NeedsConsent || st.LastError == "" {
		return fmt.Errorf("%w: %w", ErrNeedsConsent, &TokenError{Reason: cmpOr(st.LastError, "consent is needed"), Permanent: true})
	}
	return fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{Reason: st.LastError +
		"; automatic refresh is stopped until the connection is changed or refreshed by hand", Permanent: true})
}

// request asks the token endpoint for c, holding the lease as owner, and
// stores the outcome (which releases the lease).
func (m *Manager) request(ctx context.Context, c *connections.Connection, st *TokenState, owner string) (*Token, error) {
	p := c.Security.(tokenPolicy)
	e, err := m.env(c)
	if err != nil {
		return nil, m.failed(ctx, c, st, owner, err)
	}
	var prev *Token
	if usable(st, c) {
		prev = st.Token
	}
	start := m.now()
	tok, err := p.obtain(ctx, e, c, prev)
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) && te.consent {
			// Another replica may have rotated the refresh token a moment
			// ago: a newer stored token means ours was merely stale.
			if latest, lerr := m.store.Load(ctx, c.ID); lerr == nil && usable(latest, c) &&
				latest.Version > st.Version && latest.Token.Valid(m.now()) {
				_ = m.store.Release(ctx, c.ID, owner)
				m.remember(c, latest.Token)
				return latest.Token, nil
			}
		}
		return nil, m.failed(ctx, c, st, owner, err)
	}
	return m.keep(ctx, c, st, tok, owner, start)
}

// keep saves a token obtained for c over st and caches it. A token of a
// configuration that changed meanwhile is dropped, never stored.
func (m *Manager) keep(ctx context.Context, c *connections.Connection, st *TokenState, tok *Token, owner string, start time.Time) (*Token, error) {
	if prev := st.Token; !tok.RefreshToken.IsSet() && prev != nil && usable(st, c) {
		tok.RefreshToken = prev.RefreshToken // a response without one keeps the old one
	}
	v, err := m.store.Save(ctx, c.ID, c.Fingerprint, st.Version, tok, m.refreshAt(tok), owner, m.now())
	switch {
	case errors.Is(err, ErrStale):
		// Our lease expired and another process stored a newer token; it wins.
		m.log.Warn("token request outlived its lease; keeping the newer token", "connection", c.Name)
		latest, err := m.store.Load(ctx, c.ID)
		if err != nil || !usable(latest, c) || !latest.Token.Valid(m.now()) {
			return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{Reason: "the token changed concurrently; try again"})
		}
		m.remember(c, latest.Token)
		return latest.Token, nil
	case errors.Is(err, ErrConfigChanged), errors.Is(err, connections.ErrNotFound):
		_ = m.store.Release(ctx, c.ID, owner)
		m.log.Info("token discarded: the connection changed during the token request", "connection", c.Name)
		return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{
			Reason: "the connection's configuration changed during the token request; try again", cause: err})
	case err != nil:
		return nil, unavailable(err)
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

// refreshAt picks when the scheduler refreshes tok: once it is due (see
// Token.RefreshAt), at a random point in the first half of the time left,
// so that tokens obtained together are not refreshed together.
func (m *Manager) refreshAt(tok *Token) time.Time {
	ahead := refreshAhead(tok.Lifetime())
	return tok.RefreshAt().Add(mrand.N(ahead/2 + 1))
}

// failed records a failed token request: permanent failures stop
// automatic refresh; transient ones back off exponentially with jitter,
// honouring Retry-After.
func (m *Manager) failed(ctx context.Context, c *connections.Connection, st *TokenState, owner string, err error) error {
	now := m.now()
	var te *TokenError
	if !errors.As(err, &te) {
		te = &TokenError{Reason: "the token request failed", cause: err}
	}
	failures := 1
	if st.Fingerprint == c.Fingerprint {
		failures = st.Failures + 1
	}
	f := Failure{Fingerprint: c.Fingerprint, Reason: te.Reason, Failures: failures, Blocked: te.Permanent,
		NeedsConsent: te.consent || errors.Is(err, ErrNeedsConsent)}
	status, outcome := connections.StatusError, "transient_error"
	if te.Permanent {
		outcome = "permanent_error"
	} else {
		t := now.Add(max(outbound.Backoff(failures), te.RetryAfter))
		f.NextAttempt = &t
	}
	if f.NeedsConsent {
		status, f.Blocked = connections.StatusNeedsConsent, true
	}
	if ferr := m.store.Fail(ctx, c.ID, owner, f, now); ferr != nil && !errors.Is(ferr, connections.ErrNotFound) {
		m.log.Error("cannot record token failure", "connection", c.Name, "error", ferr.Error())
	}
	m.metrics.requests.WithLabelValues(c.Name, outcome).Inc()
	attrs := []any{"connection", c.Name, "reason", te.Reason, "permanent", te.Permanent, "failures", failures}
	if f.NextAttempt != nil {
		attrs = append(attrs, "next_attempt", f.NextAttempt.Format(time.RFC3339))
	}
	m.log.Warn("token request failed", attrs...)
	if m.onFail != nil {
		m.onFail(ctx, c, te.Reason)
	}
	reason := te.Reason
	if status == connections.StatusNeedsConsent {
		reason += "; give consent again (POST .../consent)"
	} else if te.Permanent {
		reason += "; automatic refresh is stopped until the connection is fixed or refreshed by hand"
	}
	m.setStatus(ctx, c, status, reason)
	if status == connections.StatusNeedsConsent {
		return fmt.Errorf("%w: %w", ErrNeedsConsent, te)
	}
	return fmt.Errorf("%w: %w", ErrTokenUnavailable, te)
}

func (m *Manager) setStatus(ctx context.Context, c *connections.Connection, s connections.Status, reason string) {
	if m.status == nil {
		return
	}
	if err := m.status.SetStatus(ctx, c, s, reason, nil); err != nil && !errors.Is(err, connections.ErrNotFound) {
		m.log.Warn("cannot record connection status", "connection", c.Name, "error", err.Error())
	}
}

func (m *Manager) remember(c *connections.Connection, t *Token) {
	m.mu.Lock()
	m.cache[c.ID] = &cachedToken{tok: t, fingerprint: c.Fingerprint}
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

// Rejected reports that c's target rejected tok (a status in c's
// RejectedStatuses) and says whether the call is worth sending again with
// a fresh token. At most one rejection per connection per cool-down drops
// the token (in memory and in the database) so that the next Token asks
// for a new one; concurrent and later rejections within the cool-down
// share that one request: they retry only when a newer token is already
// there. So a target that rejects every token cannot make connmgr ask the
// token endpoint more than once per cool-down.
func (m *Manager) Rejected(ctx context.Context, c *connections.Connection, tok *Token) bool {
	now := m.now()
	m.mu.Lock()
	if e := m.cache[c.ID]; e != nil && e.tok != tok && e.fingerprint == c.Fingerprint && e.tok.Valid(now) {
		m.mu.Unlock()
		return true // someone already replaced it
	}
	if last, ok := m.rejected[c.ID]; ok && now.Sub(last) < m.cooldown {
		m.mu.Unlock()
		return false
	}
	m.rejected[c.ID] = now
	if len(m.rejected) > 10000 {
		for id, at := range m.rejected {
			if now.Sub(at) >= m.cooldown {
				delete(m.rejected, id)
			}
		}
	}
	m.mu.Unlock()
	// The stored token expires before the cached one goes: a caller that
	// misses the cache from then on reads it expired and asks for a new
	// one, instead of caching the rejected token again.
	if err := m.store.DropAccess(ctx, c.ID, tok.Version, now); err != nil {
		m.log.Warn("cannot drop rejected token", "connection", c.Name, "error", err.Error())
	}
	m.mu.Lock()
	if e := m.cache[c.ID]; e != nil && e.tok == tok {
		delete(m.cache, c.ID)
	}
	m.mu.Unlock()
	return true
}

// RefreshDue schedules the refresh of every stored token whose refresh
// time comes within lookahead (the time until the next run): each at its
// own jittered time, at most Concurrency at a time, so that the token
// endpoint sees a steady trickle rather than a burst per run. A token
// already scheduled is not scheduled twice; the database lease makes each
// refresh happen in one process only. It returns once the refreshes are
// scheduled; those not begun when ctx ends are dropped (see Wait).
func (m *Manager) RefreshDue(ctx context.Context, lookahead time.Duration) {
	now := m.now()
	rows, err := m.store.Due(ctx, now, now.Add(lookahead), 10000)
	if err != nil {
		m.log.Warn("scheduled refresh: cannot list tokens", "error", err.Error())
		return
	}
	for _, r := range rows {
		m.mu.Lock()
		if m.pending[r.ConnectionID] {
			m.mu.Unlock()
			continue
		}
		m.pending[r.ConnectionID] = true
		m.mu.Unlock()
		m.running.Add(1)
		go func(r DueToken) {
			defer m.running.Done()
			defer func() {
				m.mu.Lock()
				delete(m.pending, r.ConnectionID)
				m.mu.Unlock()
			}()
			if wait := r.RefreshAt.Sub(m.now()); wait > 0 {
				t := time.NewTimer(wait)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
			select {
			case m.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-m.sem }()
			m.refreshOne(ctx, r)
		}(r)
	}
}

// Wait waits for the refreshes RefreshDue scheduled: those under way
// finish, those waiting for their time wait for it unless their context
// ended.
func (m *Manager) Wait() { m.running.Wait() }

func (m *Manager) refreshOne(ctx context.Context, r DueToken) {
	c, err := m.conns.Get(ctx, r.Name)
	if err != nil {
		if !errors.Is(err, connections.ErrNotFound) {
			m.log.Warn("scheduled refresh: cannot load connection", "connection", r.Name, "error", err.Error())
		}
		return
	}
	if c.ID != r.ConnectionID || !HasTokens(c.Security) {
		return
	}
	// A refresh that has begun is waited for even when ctx ends (the
	// scheduler stopping at shutdown): its answer may carry a rotated
	// refresh token, lost for good if the database closed before it was
	// stored. The request's own deadline bounds the wait.
	tok, err := m.shared(context.WithoutCancel(ctx), "due:", c, ifDue, r.Version)
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
	Present       bool
	ObtainedAt    time.Time
	ExpiresAt     time.Time
	RefreshAt     time.Time
	LastRefreshAt time.Time
	Scopes        []string
	Refreshable   bool
	LastError     string
	Failures      int
	NextAttempt   time.Time
	Blocked       bool
}

// info describes st for c.
func info(c *connections.Connection, st *TokenState) *TokenInfo {
	out := &TokenInfo{Refreshable: true}
	if st.Fingerprint == c.Fingerprint || st.Version == 0 {
		out.LastError, out.Failures, out.NextAttempt, out.Blocked = st.LastError, st.Failures, st.NextAttempt, st.Blocked
		out.LastRefreshAt = st.LastRefreshAt
	}
	if t := st.Token; t != nil && usable(st, c) {
		out.Present, out.ObtainedAt, out.ExpiresAt, out.Scopes = true, t.ObtainedAt, t.ExpiresAt, t.Scopes
		out.RefreshAt = st.RefreshAt
		if out.RefreshAt.IsZero() {
			out.RefreshAt = t.RefreshAt()
		}
	}
	if cp, ok := c.Security.(connections.ConsentPolicy); ok && cp.ConsentRequired() {
		out.Refreshable = out.Present && st.Token.RefreshToken.IsSet()
	}
	if out.Blocked {
		out.Refreshable = false
	}
	return out
}

// Info returns the metadata of c's stored token. Returns ErrNoTokens for a
// policy without tokens.
func (m *Manager) Info(ctx context.Context, c *connections.Connection) (*TokenInfo, error) {
	if !HasTokens(c.Security) {
		return nil, ErrNoTokens
	}
	st, err := m.store.Load(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	return info(c, st), nil
}

// Infos returns the token metadata of those of cs whose policies have
// tokens, by connection id, in one query.
func (m *Manager) Infos(ctx context.Context, cs []*connections.Connection) (map[int64]*TokenInfo, error) {
	var ids []int64
	for _, c := range cs {
		if HasTokens(c.Security) {
			ids = append(ids, c.ID)
		}
	}
	out := map[int64]*TokenInfo{}
	if len(ids) == 0 {
		return out, nil
	}
	states, err := m.store.States(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if !HasTokens(c.Security) {
			continue
		}
		st := states[c.ID]
		if st == nil {
			st = &TokenState{}
		}
		out[c.ID] = info(c, st)
	}
	return out, nil
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
