package invoke

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/connmgr/connmgr/connections"
)

// ErrRateLimited means a connection's rateLimit or maxConcurrent is used up
// in this process; connmgr answers 429 rather than burn the target's quota.
// The error is a *LimitError with the time to wait.
var ErrRateLimited = errors.New("connection limit reached")

// LimitError says which limit was hit and when to try again.
type LimitError struct {
	Reason     string
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return ErrRateLimited.Error() + ": " + e.Reason }

// Is reports whether target is ErrRateLimited.
func (e *LimitError) Is(target error) bool { return target == ErrRateLimited }

// limits holds each limited connection's token bucket and concurrency
// slots, per process. A connection's entry is rebuilt when its version
// changes, so new limits apply at once.
type limits struct {
	mu sync.Mutex
	m  map[int64]*connLimits
}

type connLimits struct {
	version int64
	bucket  *rate.Limiter // nil: no rate limit
	slots   chan struct{} // nil: no concurrency limit
}

// acquire takes a token and a slot for a call to c, returning the function
// that gives the slot back, or a *LimitError.
func (l *limits) acquire(c *connections.Connection) (release func(), err error) {
	if c.RateLimit == nil && c.MaxConcurrent <= 0 {
		return func() {}, nil
	}
	cl := l.of(c)
	if cl.bucket != nil && !cl.bucket.Allow() {
		r := cl.bucket.Reserve()
		wait := r.Delay()
		r.Cancel()
		return nil, &LimitError{Reason: "requestsPerSecond exceeded", RetryAfter: max(wait, time.Second).Round(time.Second)}
	}
	if cl.slots == nil {
		return func() {}, nil
	}
	select {
	case cl.slots <- struct{}{}:
		return func() { <-cl.slots }, nil
	default:
		return nil, &LimitError{Reason: "maxConcurrent calls in flight", RetryAfter: time.Second}
	}
}

func (l *limits) of(c *connections.Connection) *connLimits {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[int64]*connLimits{}
	}
	cl := l.m[c.ID]
	if cl != nil && cl.version == c.Version {
		return cl
	}
	cl = &connLimits{version: c.Version}
	if r := c.RateLimit; r != nil {
		cl.bucket = rate.NewLimiter(rate.Limit(r.RequestsPerSecond), max(r.Burst, 1))
	}
	if c.MaxConcurrent > 0 {
		cl.slots = make(chan struct{}, c.MaxConcurrent)
	}
	l.m[c.ID] = cl
	return cl
}
