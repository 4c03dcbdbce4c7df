package peers

import "testing"

func TestQuery(t *testing.T) {
	tests := []struct {
		raw, key string
		want     int
	}{
		{"ms=5", "ms", 5},
		{"x=1&n=4096", "n", 4096},
		{"n=", "n", 0},
		{"n=-3", "n", 0},
		{"n=abc", "n", 0},
		{"", "n", 0},
		{"nn=3", "n", 0},
	}
	for _, tt := range tests {
		if got := Query(tt.raw, tt.key); got != tt.want {
			t.Errorf("Query(%q, %q) = %d, want %d", tt.raw, tt.key, got, tt.want)
		}
	}
}
