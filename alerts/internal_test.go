package alerts

import (
	"strings"
	"testing"
	"unicode/utf8"
)

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
