package bench

import (
	"strings"
	"testing"
	"time"
)

// TestCoreBusy: the busy time of the server's CPUs is user, nice,
// system, irq and softirq of their lines in /proc/stat, summed over
// them; a CPU not there, or a line cut short, is an error that says so.
func TestCoreBusy(t *testing.T) {
	stat := []byte(`cpu  900 9 900 9000 90 9 90 9 0 0
cpu0 100 1 200 5000 40 3 50 7 0 0
cpu1 10 0 20 4000 50 6 40 2 0 0
cpu12 1 1 1 1 1 1 1 1 0 0
intr 12345
`)
	tick := time.Second / clockTicks
	for _, tt := range []struct {
		name string
		stat []byte
		cpus []int
		want time.Duration
		err  string
	}{
		{"one CPU", stat, []int{0}, (100 + 1 + 200 + 3 + 50) * tick, ""},
		{"two", stat, []int{0, 1}, (354 + 10 + 20 + 6 + 40) * tick, ""},
		{"cpu1 is not cpu12", stat, []int{12}, 5 * tick, ""},
		{"none", stat, nil, 0, ""},
		{"not there", stat, []int{3}, 0, "no cpu3"},
		{"cut short", []byte("cpu0 1 2 3 4 5\n"), []int{0}, 0, "cpu0: 5 fields"},
		{"not a number", []byte("cpu0 1 2 x 4 5 6 7\n"), []int{0}, 0, "cpu0: strconv.ParseUint"},
	} {
		got, err := coreBusy(tt.stat, tt.cpus)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %v, %v; want an error saying %q", tt.name, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	if d, err := CoreBusy([]int{0}); err != nil || d <= 0 {
		t.Errorf("CoreBusy(cpu0) here: %v, %v", d, err)
	}
}
