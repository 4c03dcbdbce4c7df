package peers

import "testing"

// TestComputeMatchesQuartet: the peers' /compute does the same work as
// Quartet's (runtime's TestBuiltinEndpointsWithNetHTTPClient, computed3).
func TestComputeMatchesQuartet(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want string
	}{{0, "811c9dc5\n"}, {3, "57227b6d\n"}} {
		if got := string(ComputeAnswer(tt.n)); got != tt.want {
			t.Errorf("ComputeAnswer(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

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
