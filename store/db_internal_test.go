package store

import "testing"

func TestWithConnectTimeout(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"none set", "postgres://u@db:5432/app?sslmode=disable", "postgres://u@db:5432/app?connect_timeout=5&sslmode=disable"},
		{"kept", "postgres://u@db/app?connect_timeout=30", "postgres://u@db/app?connect_timeout=30"},
		{"escaped password", "postgres://u:p%40ss%2Fw@db/app", "postgres://u:p%40ss%2Fw@db/app?connect_timeout=5"},
		{"several hosts", "postgresql://h1:5432,h2:5433/app", "postgresql://h1:5432,h2:5433/app?connect_timeout=5"},
		{"unparsable, left to the driver", "postgres://u:pa ss@db/app", "postgres://u:pa ss@db/app"},
		{"SQLite", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withConnectTimeout(tt.in); got != tt.want {
				t.Errorf("withConnectTimeout(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
