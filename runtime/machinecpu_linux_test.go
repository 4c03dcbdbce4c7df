package runtime

import (
	"testing"
	"time"
)

func TestParseCPULine(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		busy, total uint64
		ok          bool
	}{
		{"linux 6", "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 1 2 3 4\n", 170, 990, true},
		{"old kernel, four fields", "cpu 10 0 10 80\n", 20, 100, true},
		{"not the cpu line", "intr 1 2 3 4 5\n", 0, 0, false},
		{"too short", "cpu 1 2\n", 0, 0, false},
		{"garbage", "cpu 1 x 3 4 5\n", 0, 0, false},
		{"empty", "", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			busy, total, ok := parseCPULine([]byte(tt.in))
			if busy != tt.busy || total != tt.total || ok != tt.ok {
				t.Errorf("got %d %d %v, want %d %d %v", busy, total, ok, tt.busy, tt.total, tt.ok)
			}
		})
	}
}

// The reading is a fraction once there is a previous one.
func TestMachineCPU(t *testing.T) {
	var m machineCPU
	if _, ok := m.busyFraction(); ok {
		t.Fatal("a fraction from the first reading")
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // some ticks, some of them busy
	}
	f, ok := m.busyFraction()
	if !ok || f <= 0 || f > 1 {
		t.Errorf("busy fraction %v, %v after 50 ms of spinning", f, ok)
	}
}
