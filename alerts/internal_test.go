package alerts

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    string
		want time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "3", 3 * time.Second},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"capped", "86400", maxWait},
		{"huge", "99999999999999999", maxWait},
		{"date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"date far ahead", now.Add(48 * time.Hour).Format(http.TimeFormat), maxWait},
		{"garbage", "soon", 0},
		{"fraction", "1.5", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.v, now); got != tt.want {
				t.Errorf("retryAfter(%q) = %v, want %v", tt.v, got, tt.want)
			}
		})
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "-1", "300", "Wed, 21 Oct 2015 07:28:00 GMT", "1e9"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if got := retryAfter(v, now); got < 0 || got > maxWait {
			t.Errorf("retryAfter(%q) = %v, want within [0, %v]", v, got, maxWait)
		}
	})
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name    string
		attempt int
		ceiling time.Duration
	}{
		{"first", 1, time.Second},
		{"third", 3, 4 * time.Second},
		{"ninth", 9, 256 * time.Second},
		{"capped", 10, maxWait},
		{"far past the cap", 1000, maxWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 1000 {
				if got := backoff(tt.attempt); got < 0 || got >= tt.ceiling {
					t.Fatalf("backoff(%d) = %v, want within [0, %v)", tt.attempt, got, tt.ceiling)
				}
			}
		})
	}
}

func TestClip(t *testing.T) {
	tests := []struct {
		name, in string
		want     int // length in bytes
	}{
		{"short", "token endpoint answered 401", 27},
		{"exactly the cap", strings.Repeat("a", maxDetail), maxDetail},
		{"long", strings.Repeat("a", 2000), maxDetail},
		{"multibyte at the cut", "a" + strings.Repeat("é", 400), maxDetail - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clip(tt.in)
			if len(got) != tt.want || !utf8.ValidString(got) || !strings.HasPrefix(tt.in, got) {
				t.Errorf("clip(%.20q…) has %d bytes (valid UTF-8 %v), want a %d-byte prefix",
					tt.in, len(got), utf8.ValidString(got), tt.want)
			}
		})
	}
}
