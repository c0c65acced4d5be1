package outbound_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/connmgr/connmgr/outbound"
)

func TestBackoff(t *testing.T) {
	for _, tt := range []struct {
		name     string
		n        int
		min, max time.Duration
	}{
		{name: "first failure", n: 1, min: 500 * time.Millisecond, max: time.Second},
		{name: "zero counts as one", n: 0, min: 500 * time.Millisecond, max: time.Second},
		{name: "negative counts as one", n: -3, min: 500 * time.Millisecond, max: time.Second},
		{name: "third", n: 3, min: 2 * time.Second, max: 4 * time.Second},
		{name: "ninth", n: 9, min: 128 * time.Second, max: 256 * time.Second},
		{name: "capped", n: 10, min: outbound.MaxBackoff / 2, max: outbound.MaxBackoff},
		{name: "far past the cap", n: 1 << 40, min: outbound.MaxBackoff / 2, max: outbound.MaxBackoff},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi := tt.max, tt.min
			for range 2000 {
				got := outbound.Backoff(tt.n)
				if got < tt.min || got > tt.max {
					t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", tt.n, got, tt.min, tt.max)
				}
				lo, hi = min(lo, got), max(hi, got)
			}
			// The jitter spreads over the range rather than sitting at
			// one end.
			if spread := tt.max - tt.min; hi-lo < spread/2 {
				t.Errorf("Backoff(%d) took values in [%v, %v] only, want them spread over [%v, %v]", tt.n, lo, hi, tt.min, tt.max)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name   string
		header string
		want   time.Duration
	}{
		{name: "absent", header: "", want: 0},
		{name: "seconds", header: "3", want: 3 * time.Second},
		{name: "seconds with white space", header: " 120 ", want: 2 * time.Minute},
		{name: "zero", header: "0", want: 0},
		{name: "negative", header: "-5", want: 0},
		{name: "plus sign", header: "+5", want: 0},
		{name: "fraction", header: "1.5", want: 0},
		{name: "exponent", header: "1e3", want: 0},
		{name: "an hour", header: "3600", want: time.Hour},
		{name: "a day, capped", header: "86400", want: outbound.MaxRetryAfter},
		{name: "beyond int64", header: "99999999999999999999999", want: outbound.MaxRetryAfter},
		{name: "beyond Duration", header: "99999999999999999", want: outbound.MaxRetryAfter},
		{name: "HTTP-date", header: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second},
		{name: "RFC 850 date", header: now.Add(time.Minute).Format(time.RFC850), want: time.Minute},
		{name: "ANSI C date", header: now.Add(time.Minute).Format(time.ANSIC), want: time.Minute},
		{name: "date in the past", header: now.Add(-time.Hour).Format(http.TimeFormat), want: 0},
		{name: "date far ahead", header: now.Add(48 * time.Hour).Format(http.TimeFormat), want: outbound.MaxRetryAfter},
		{name: "date in year 9999", header: "Fri, 31 Dec 9999 23:59:59 GMT", want: outbound.MaxRetryAfter},
		{name: "garbage", header: "soon", want: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := outbound.RetryAfter(tt.header, now); got != tt.want {
				t.Errorf("RetryAfter(%q) = %v, want %v", tt.header, got, tt.want)
			}
		})
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "-1", "300", "3601", "Wed, 21 Oct 2015 07:28:00 GMT",
		"Thu, 26 Nov 2026 10:30:00 GMT", "1e9", " 7 ", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		got := outbound.RetryAfter(v, now)
		if got < 0 || got > outbound.MaxRetryAfter {
			t.Fatalf("RetryAfter(%q) = %v, want within [0, %v]", v, got, outbound.MaxRetryAfter)
		}
		// Delta-seconds mean what they say, up to the cap.
		if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
			want := outbound.MaxRetryAfter
			if secs < uint64(outbound.MaxRetryAfter/time.Second) {
				want = time.Duration(secs) * time.Second
			}
			if got != want {
				t.Fatalf("RetryAfter(%q) = %v, want %v", v, got, want)
			}
		}
	})
}

func ExampleRetryAfter() {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	fmt.Println(outbound.RetryAfter("120", now))
	fmt.Println(outbound.RetryAfter("Thu, 26 Nov 2026 10:00:30 GMT", now))
	fmt.Println(outbound.RetryAfter("86400", now))
	fmt.Println(outbound.RetryAfter("soon", now))
	// Output:
	// 2m0s
	// 30s
	// 1h0m0s
	// 0s
}

func ExampleBackoff() {
	// The wait after a failure: at least what the server asked for.
	failures, retryAfter := 3, outbound.RetryAfter("", time.Now())
	wait := max(outbound.Backoff(failures), retryAfter)
	fmt.Println(wait >= 2*time.Second && wait <= 4*time.Second)
	// Output: true
}
