package runtime

import "testing"

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

// The reading is a fraction once there is a previous one, and the file
// it keeps open is let go.
func TestMachineCPU(t *testing.T) {
	var m machineCPU
	if _, ok := m.busyFraction(); ok {
		t.Fatal("a fraction from the first reading")
	}
	for i := 0; i < 1e6; i++ { // let some ticks pass
		_ = i * i
	}
	f, ok := m.busyFraction()
	if m.f == nil {
		t.Fatal("no file kept open")
	}
	if ok && (f < 0 || f > 1) {
		t.Errorf("busy fraction %v", f)
	}
	m.close()
	if m.f != nil {
		t.Error("file not released")
	}
}
