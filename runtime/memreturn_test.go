package runtime

import (
	"testing"
	"time"
)

// When memory is returned: once per burst of at least burstConns, after
// the count has stayed at a quarter of its peak for burstQuiet, and not
// again within returnEvery.
func TestMemoryReturnDecisions(t *testing.T) {
	type step struct {
		at      time.Duration // since the start
		conns   int
		return_ bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a burst that leaves", []step{
			{0, 10, false}, {time.Second, 500, false}, {2 * time.Second, 100, false},
			{3 * time.Second, 100, false}, {6 * time.Second, 100, false}, {7 * time.Second, 90, true},
			{9 * time.Second, 0, false}, {20 * time.Second, 0, false},
		}},
		{"too small a burst", []step{
			{0, burstConns - 1, false}, {time.Second, 0, false}, {time.Minute, 0, false},
		}},
		{"it comes back before the quiet is over", []step{
			{0, 400, false}, {time.Second, 50, false}, {4 * time.Second, 300, false},
			{5 * time.Second, 50, false}, {9 * time.Second, 50, false}, {11 * time.Second, 50, true},
		}},
		{"not more often than returnEvery", []step{
			{0, 400, false}, {time.Second, 0, false}, {6 * time.Second, 0, true},
			{7 * time.Second, 400, false}, {8 * time.Second, 0, false}, {14 * time.Second, 0, false},
			{36 * time.Second, 0, true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m memoryReturn
			start := time.Unix(1000, 0)
			for i, s := range tc.steps {
				if got := m.observe(start.Add(s.at), s.conns); got != s.return_ {
					t.Fatalf("step %d (%v, %d connections): return %v, want %v", i, s.at, s.conns, got, s.return_)
				}
			}
		})
	}
}
