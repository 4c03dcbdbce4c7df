package runtime

import (
	"context"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
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
		{"tabs are not blanks", "cpu\t1 2 3 4\n", 0, 0, false},
		{"cpu0 first", "cpu0 1 2 3 4\n", 0, 0, false},
		{"20 digits", "cpu 1 2 3 18446744073709551615\n", 0, 0, false},
		{"19 digits", "cpu 1 2 3 9999999999999999999\n", 6, 10000000000000000005, true},
		{"trailing blanks", "cpu  1 2 3 4 5  \n", 6, 15, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			busy, total, ok := parseCPULine([]byte(tt.in))
			if busy != tt.busy || total != tt.total || ok != tt.ok {
				t.Errorf("got %d %d %v, want %d %d %v", busy, total, ok, tt.busy, tt.total, tt.ok)
			}
		})
	}
	line := []byte(tests[0].in)
	if allocs := testing.AllocsPerRun(100, func() { parseCPULine(line) }); allocs != 0 {
		t.Errorf("%v allocations a line", allocs)
	}
}

// The reading is a fraction once there is a previous one, each from the
// file as it is then (not the first reading again), from one descriptor
// that close lets go.
func TestMachineCPU(t *testing.T) {
	fds := fdtest.Count(t)
	var m machineCPU
	if _, ok := m.busyFraction(); ok {
		t.Fatal("a fraction from the first reading")
	}
	for i := range 3 {
		spin(50 * time.Millisecond) // some ticks, some of them busy
		f, ok := m.busyFraction()
		if !ok || f <= 0 || f > 1 {
			t.Errorf("reading %d: busy fraction %v, %v after 50 ms of spinning", i+2, f, ok)
		}
		if n := fdtest.Count(t); n != fds+1 {
			t.Errorf("reading %d: %d descriptors open, want %d (the one before, and /proc/stat)", i+2, n, fds+1)
		}
	}
	m.close()
	if n := fdtest.Count(t); n != fds {
		t.Errorf("after close: %d descriptors open, want %d", n, fds)
	}
	m.close() // a second close does nothing
	spin(50 * time.Millisecond)
	if _, ok := m.busyFraction(); !ok {
		t.Error("no fraction from a reading after close")
	}
	m.close()
}

func spin(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
	}
}

// The control loop holds /proc/stat while it runs and lets it go when the
// server stops.
func TestControlLoopReleasesProcStat(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Handler: Builtin(nil)})
	if err != nil {
		t.Fatal(err)
	}
	s.tuner.period = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	if !eventually(5*time.Second, func() bool { return fdtest.On(t, "/proc/stat") == 1 }) {
		t.Fatalf("/proc/stat open %d times while serving, want 1", fdtest.On(t, "/proc/stat"))
	}
	time.Sleep(50 * time.Millisecond) // ten periods more: still the one
	if n := fdtest.On(t, "/proc/stat"); n != 1 {
		t.Errorf("/proc/stat open %d times after ten periods, want 1", n)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := fdtest.On(t, "/proc/stat"); n != 0 {
		t.Errorf("/proc/stat still open %d times after Serve returned", n)
	}
}
