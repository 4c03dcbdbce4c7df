package runtime

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/quartet-server/quartet/reader"
)

// What reader and writer loops counted of slow clients (cut off, reset,
// hung up) is kept when the loops leave: Stats' sums are Prometheus
// counters, and a counter that goes back reads as a restart.
func TestSlowClientCountsOutliveTheirLoops(t *testing.T) {
	s := startServer(t, Config{Readers: 2, Writers: 2, WriteTimeout: 300 * time.Millisecond, MinResponseRate: -1})
	// Clients that stop reading a long response, until every loop of
	// both stages has cut one off.
	everyLoopCounted := func() bool {
		ok := true
		s.readers.each(func(r *reader.Loop) { ok = ok && r.Resets() > 0 })
		s.writers.each(func(w *wloop) { ok = ok && w.TimedOut() > 0 })
		return ok
	}
	for i := 0; !everyLoopCounted(); i++ {
		if i == 32 {
			t.Fatalf("32 clients cut off, and not on every loop: %s", perLoopCounts(s))
		}
		c := dialSmall(t, s, 4096)
		io.WriteString(c, "GET /bytes?n=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
		if !eventually(10*time.Second, func() bool { return s.Stats().Slow.Resets == uint64(i+1) }) {
			t.Fatalf("client %d not cut off: %+v", i, s.Stats().Slow)
		}
	}
	before := s.Stats().Slow
	for _, st := range []Stage{StageReader, StageWriter} {
		if _, err := s.ChangeStage(st, StageChange{Size: 1, Min: 1, Max: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if !eventually(10*time.Second, func() bool { return tableSize(s) == [2]int{1, 1} }) {
		t.Fatalf("loops left in the tables (readers, writers): %v, want one of each", tableSize(s))
	}
	after := s.Stats().Slow
	if after.Resets != before.Resets || after.TimedOut != before.TimedOut {
		t.Errorf("with one loop left of each stage: %d resets and %d write timeouts, want %d and %d",
			after.Resets, after.TimedOut, before.Resets, before.TimedOut)
	}
}

// tableSize is how many loops each I/O stage's table holds.
func tableSize(s *Server) (n [2]int) {
	s.readers.each(func(*reader.Loop) { n[0]++ })
	s.writers.each(func(*wloop) { n[1]++ })
	return n
}

// perLoopCounts says what each loop counted.
func perLoopCounts(s *Server) string {
	var out string
	s.readers.each(func(r *reader.Loop) { out += fmt.Sprintf("reader %d: %d resets; ", r.ID(), r.Resets()) })
	s.writers.each(func(w *wloop) { out += fmt.Sprintf("writer %d: %d timed out; ", w.ID(), w.TimedOut()) })
	return out
}
