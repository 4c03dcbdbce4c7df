package runtime

import (
	"net/http"
	"testing"
	"time"

	"github.com/quartet-server/quartet/control"
)

func TestNextPeriod(t *testing.T) {
	const base = control.DefaultPeriod
	cases := []struct {
		name   string
		period time.Duration
		quiet  []bool
		want   []time.Duration
	}{
		{"busy stays at the period", base, []bool{false, false, false}, []time.Duration{base, base, base}},
		{"quiet doubles up to a second", base, []bool{true, true, true, true, true, true},
			[]time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second, time.Second}},
		{"one busy period ends the stretch", base, []bool{true, true, true, false, true},
			[]time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, base, 200 * time.Millisecond}},
		{"a period longer than the stretch is kept", time.Hour, []bool{true, true, false}, []time.Duration{time.Hour, time.Hour, time.Hour}},
		{"a short period stretches to a second too", 5 * time.Millisecond, []bool{true, true, true, true, true, true, true, true, true},
			[]time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond,
				160 * time.Millisecond, 320 * time.Millisecond, 640 * time.Millisecond, time.Second, time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tu := &tuner{period: tc.period}
			for i, q := range tc.quiet {
				got := tu.nextPeriod(q)
				if got != tc.want[i] {
					t.Fatalf("period %d (quiet %v): %v, want %v", i, q, got, tc.want[i])
				}
				if tu.stretched.Load() != (got > tc.period) {
					t.Fatalf("period %d: stretched %v at %v", i, tu.stretched.Load(), got)
				}
			}
		})
	}
}

func TestKickEndsOnlyAStretchedPeriod(t *testing.T) {
	tu := &tuner{period: control.DefaultPeriod, kicked: make(chan struct{}, 1)}
	tu.kick()
	if len(tu.kicked) != 0 {
		t.Fatal("a kick at the normal period woke the control loop")
	}
	tu.nextPeriod(true)
	tu.kick()
	tu.kick() // a second before the loop wakes: one wake-up is enough
	if len(tu.kicked) != 1 || tu.stretched.Load() {
		t.Fatalf("after kicks in a stretched period: %d wake-ups queued, stretched %v; want 1, false", len(tu.kicked), tu.stretched.Load())
	}
}

// An idle server's control loop wakes once a second, not ten times; a
// request for the processors ends the long period at once, so that the
// controllers see it while it runs, and the period is the normal one
// while requests run.
func TestControlPeriodStretchesWhileQuiet(t *testing.T) {
	s := startServer(t, Config{})
	ctl := func() ControlStats { return s.Stats().Control }
	if !eventually(10*time.Second, func() bool { return ctl().Period >= maxQuietPeriod }) {
		t.Fatalf("idle, the control period is %v after 10 s, want %v", ctl().Period, maxQuietPeriod)
	}

	// Send the request just after a long period began, so that without
	// the kick the controllers would see it only a second later, when its
	// handler is done.
	last := ctl().Time
	if !eventually(3*time.Second, func() bool { return ctl().Time != last }) {
		t.Fatal("no period ended in 3 s")
	}
	began := ctl()
	if began.Period < maxQuietPeriod/2 {
		t.Fatalf("the period before the request was %v, want a stretched one", began.Period)
	}
	answered := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + s.Addr().String() + "/sleep?ms=500")
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	var saw ControlStats
	if !eventually(3*time.Second, func() bool { saw = ctl(); return saw.Time != began.Time }) {
		t.Fatal("no period ended in 3 s after the request")
	}
	if saw.Queued+saw.Running < 1 || saw.Period >= maxQuietPeriod/2 {
		t.Errorf("the first period after the request was %v long and saw %d queued, %d running; want it cut short, seeing the request",
			saw.Period, saw.Queued, saw.Running)
	}
	if !eventually(3*time.Second, func() bool { c := ctl(); return c.Running > 0 && c.Period < 2*s.tuner.period }) {
		t.Errorf("while the handler ran, the period was %v, want %v", ctl().Period, s.tuner.period)
	}
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	if !eventually(10*time.Second, func() bool { return ctl().Period >= maxQuietPeriod }) {
		t.Errorf("after the request, the control period stays at %v, want %v again", ctl().Period, maxQuietPeriod)
	}
}
