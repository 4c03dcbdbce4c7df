package runtime

import (
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/quartet-server/quartet/reader"
)

// What reader and writer loops counted of slow clients (cut off, reset,
// hung up) is kept when the loops leave: Stats' sums are Prometheus
// counters, and a counter that goes back reads as a restart.
// And the control loop logs the cut-offs (TestSlowClientEpisodes).
func TestSlowClientCountsOutliveTheirLoops(t *testing.T) {
	var logged syncBuffer
	s := startServer(t, Config{Readers: 2, Writers: 2, WriteTimeout: 300 * time.Millisecond, MinResponseRate: -1,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))})
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
	warned := regexp.MustCompile(`level=WARN msg="quartet: cutting off slow clients" cut_off=\d+ .* write_timeouts=\d+ write_timeout=300ms`)
	if !eventually(5*time.Second, func() bool { return warned.MatchString(logged.String()) }) {
		t.Errorf("no line of slow clients cut off in the log:\n%s", logged.String())
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

// Cut-offs of slow clients are logged as episodes: a WARN when they
// begin, a reminder a minute while they go on, an INFO once none has
// come for slowQuiet, each with the counts by cause since the start.
func TestSlowClientEpisodes(t *testing.T) {
	type period struct {
		at     time.Duration
		counts loopCounts // the loops' sums then
	}
	cut := func(headers, bodies, readers, timeouts uint64) loopCounts {
		return loopCounts{slowHeaders: headers, slowBodies: bodies, tooSlow: readers, timedOut: timeouts, resets: readers + timeouts}
	}
	for _, tt := range []struct {
		name    string
		periods []period
		want    []string // the lines' messages and counts, in order
	}{
		{"none cut off, no line", []period{{0, loopCounts{reads: 10}}, {time.Second, loopCounts{reads: 20, hangUps: 3}}}, nil},
		{"one client", []period{{0, cut(0, 0, 0, 0)}, {100 * time.Millisecond, cut(0, 0, 1, 0)},
			{time.Second, cut(0, 0, 1, 0)}, {100*time.Millisecond + slowQuiet, cut(0, 0, 1, 0)}},
			[]string{`WARN msg="quartet: cutting off slow clients" cut_off=1 slow_headers=0 header_timeout=20s slow_bodies=0 min_body_rate=\d+ slow_readers=1 min_response_rate=\d+ write_timeouts=0 write_timeout=30s`,
				`INFO msg="quartet: no slow clients cut off for 1m0s" lasted=0s cut_off=1 .* slow_bodies=0 .* slow_readers=1 .* write_timeouts=0`}},
		{"counts before the episode are not its own", []period{{0, cut(0, 2, 0, 1)}, {slowQuiet, cut(0, 2, 0, 1)},
			{slowQuiet + time.Second, cut(0, 3, 0, 3)}, {2*slowQuiet + time.Second, cut(0, 3, 0, 3)}},
			[]string{`cutting off slow clients" cut_off=3 slow_headers=0 .* slow_bodies=2 .* write_timeouts=1`, `no slow clients cut off for 1m0s" lasted=0s cut_off=3 .* slow_bodies=2`,
				`cutting off slow clients" cut_off=3 slow_headers=0 .* slow_bodies=1 .* write_timeouts=2`,
				`no slow clients cut off for 1m0s" lasted=0s cut_off=3 .* slow_bodies=1 .* write_timeouts=2`}},
		{"slowloris", []period{{0, cut(0, 0, 0, 0)}, {time.Second, cut(40, 0, 0, 0)}, {2 * time.Second, cut(90, 0, 0, 0)},
			{2*time.Second + slowQuiet, cut(90, 0, 0, 0)}},
			[]string{`cutting off slow clients" cut_off=40 slow_headers=40 header_timeout=20s slow_bodies=0`,
				`no slow clients cut off for 1m0s" lasted=1s cut_off=90 slow_headers=90 header_timeout=20s slow_bodies=0 .* slow_readers=0 .* write_timeouts=0`}},
		{"a trickle is one episode", []period{{0, cut(0, 0, 0, 1)}, {30 * time.Second, cut(0, 0, 0, 2)}, {time.Minute, cut(0, 0, 0, 3)},
			{90 * time.Second, cut(0, 0, 0, 4)}, {2 * time.Minute, cut(0, 0, 0, 5)}, {2*time.Minute + slowQuiet, cut(0, 0, 0, 5)}},
			[]string{`cutting off slow clients" cut_off=1 `, `still cutting off slow clients" for=1m0s cut_off_since_last_line=2 cut_off=3 `,
				`still cutting off slow clients" for=2m0s cut_off_since_last_line=2 cut_off=5 `, `no slow clients cut off for 1m0s" lasted=2m0s cut_off=5 `}},
		{"a long episode is reminded of", []period{{0, cut(0, 0, 0, 4)}, {30 * time.Second, cut(0, 0, 0, 8)},
			{episodeReminder, cut(0, 0, 0, 9)}, {episodeReminder + 2*slowQuiet, cut(0, 0, 0, 9)}},
			[]string{`cutting off slow clients" cut_off=4 .* write_timeouts=4`,
				`WARN msg="quartet: still cutting off slow clients" for=1m0s cut_off_since_last_line=5 cut_off=9 .* write_timeouts=9`,
				`no slow clients cut off for 1m0s" lasted=1m0s cut_off=9`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logged syncBuffer
			s := &Server{cfg: Config{Logger: slog.New(slog.NewTextHandler(&logged, nil))}}
			start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
			for _, p := range tt.periods {
				s.noteSlowClients(start.Add(p.at), p.counts)
			}
			expectLines(t, &logged, tt.want)
		})
	}
}
