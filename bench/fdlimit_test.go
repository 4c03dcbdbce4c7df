//go:build linux

package bench

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RaiseFDLimit raises the soft limit only as far as asked, never lowers
// it, and names the hard limit when the ask is beyond what even root may
// set (fs.nr_open is at most 2^30). Not parallel: it changes the
// process's limit, and puts it back.
func TestRaiseFDLimit(t *testing.T) {
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Max < 4096 {
		t.Skipf("hard limit %d: too low to lower the soft one and raise it again", orig.Max)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
			t.Errorf("restoring the limit: %v", err)
		}
	})
	low := orig
	low.Cur = 1024
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	soft := func() uint64 {
		var l unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
			t.Fatal(err)
		}
		return l.Cur
	}
	tests := []struct {
		name       string
		want       uint64
		got, after uint64 // returned, and the soft limit after
		err        error
	}{
		{"already enough", 512, 1024, 1024, nil},
		{"raised to the ask", 2048, 2048, 2048, nil},
		{"beyond any hard limit", 1 << 40, 2048, 2048, ErrFDLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RaiseFDLimit(tt.want)
			if !errors.Is(err, tt.err) {
				t.Fatalf("RaiseFDLimit(%d): error %v, want %v", tt.want, err, tt.err)
			}
			if err != nil && !strings.Contains(err.Error(), "hard limit is "+strconv.FormatUint(orig.Max, 10)) {
				t.Errorf("error %q does not name the hard limit %d", err, orig.Max)
			}
			if got != tt.got {
				t.Errorf("RaiseFDLimit(%d) = %d, want %d", tt.want, got, tt.got)
			}
			if s := soft(); s != tt.after {
				t.Errorf("soft limit after: %d, want %d", s, tt.after)
			}
		})
	}
}
