package outbound

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxBackoff caps Backoff.
const MaxBackoff = 5 * time.Minute

// MaxRetryAfter caps RetryAfter: a server cannot park a caller for longer.
const MaxRetryAfter = time.Hour

// Backoff returns how long to wait after the nth consecutive failure of
// the same kind of call (n = 1 after the first failure; n < 1 counts as
// 1) before trying again: 1s doubling with every failure up to MaxBackoff
// (5 minutes), jittered uniformly over the upper half of that ceiling, so
// that the wait is in [ceiling/2, ceiling] (1s: 0.5s to 1s; from the 10th
// failure on, 2.5 to 5 minutes). The jitter keeps callers that failed
// together (replicas, queued webhooks) from retrying in step, and the
// lower bound keeps a retry from following its failure at once. Callers
// keep n themselves (token failures are counted in the database, so
// another replica goes on with the same sequence), and a Retry-After
// longer than Backoff wins: max(Backoff(n), RetryAfter(...)).
//
// Backoff is a pure function of n (apart from the jitter) because its
// callers persist n; the backoff libraries' iterators
// (cenkalti/backoff's ExponentialBackOff, sethvargo/go-retry) keep the
// attempt count inside an object, are not safe for concurrent use, and
// jitter around the interval in both directions, past the cap. Safe for
// concurrent use.
func Backoff(n int) time.Duration {
	// 1s << 9 is past MaxBackoff already; the bound keeps the shift small.
	ceiling := min(time.Second<<min(max(n-1, 0), 9), MaxBackoff)
	return ceiling/2 + rand.N(ceiling/2+1)
}

// RetryAfter parses the value of a Retry-After header (RFC 9110 §10.2.3):
// delta-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT",
// and the obsolete forms http.ParseTime accepts), read against now. It
// returns how long to wait, within [0, MaxRetryAfter]: 0 for an empty,
// malformed or negative value and for a date that has passed; a longer
// wait is capped at MaxRetryAfter (1 hour). Surrounding white space is
// ignored.
func RetryAfter(header string, now time.Time) time.Duration {
	v := strings.TrimSpace(header)
	var d time.Duration
	switch {
	case v == "":
		return 0
	case digits(v):
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter // out of range: very long
		}
		d = time.Duration(secs) * time.Second
	default:
		t, err := http.ParseTime(v)
		if err != nil {
			return 0
		}
		d = t.Sub(now) // saturates rather than overflows
	}
	return min(max(d, 0), MaxRetryAfter)
}

// digits reports whether s is made of ASCII digits only (RFC 9110's
// delta-seconds has no sign, fraction or exponent).
func digits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
