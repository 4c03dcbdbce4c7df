package runtime

import (
	"testing"
	"time"
)

// TestRateInForce: the reported minimum rates read the settings as the
// reader and the writer do, so /metrics never shows a limit that is not
// the one applied.
func TestRateInForce(t *testing.T) {
	const defRate, defGrace = 500, 20 * time.Second
	for _, tc := range []struct {
		name      string
		rate      int64
		grace     time.Duration
		wantRate  int64
		wantGrace time.Duration
	}{
		{"zero means the defaults", 0, 0, defRate, defGrace},
		{"explicit values", 1000, 5 * time.Second, 1000, 5 * time.Second},
		{"explicit rate, default grace", 1000, 0, 1000, defGrace},
		{"negative rate is off", -1, 5 * time.Second, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, g := rateInForce(tc.rate, tc.grace, defRate, defGrace)
			if r != tc.wantRate || g != tc.wantGrace {
				t.Fatalf("rateInForce(%d, %v) = %d, %v; want %d, %v", tc.rate, tc.grace, r, g, tc.wantRate, tc.wantGrace)
			}
		})
	}
}
