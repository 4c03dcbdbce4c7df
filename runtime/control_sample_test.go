package runtime

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkControlSample is one period of the control loop on a serving,
// idle server: what it costs ten times a second, and whether it
// allocates (a server that serves nothing should allocate nothing).
func BenchmarkControlSample(b *testing.B) {
	next := idleSampled(b)
	b.ReportAllocs()
	for b.Loop() {
		next()
	}
}

// A period of an idle server's control loop allocates nothing, once the
// controllers have settled.
func TestControlSampleAllocatesNothing(t *testing.T) {
	next := idleSampled(t)
	for range 50 {
		next()
	}
	if n := testing.AllocsPerRun(100, next); n != 0 {
		t.Errorf("%v allocations a period", n)
	}
}

// idleSampled serves a server whose control loop is left to the caller:
// next runs its next period, 100 ms after the last.
func idleSampled(t testing.TB) func() {
	t.Helper()
	s, err := New(Config{Addr: "127.0.0.1:0", Handler: Builtin(nil), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.tuner.period = time.Hour // before Serve: the caller runs the periods
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })
	if !eventually(10*time.Second, s.Ready) {
		t.Fatal("the server did not become ready")
	}
	now := time.Now()
	s.sample(now, false)
	return func() {
		now = now.Add(100 * time.Millisecond)
		s.sample(now, true)
	}
}
