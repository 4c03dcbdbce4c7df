package bench

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// load is a synthetic run's figures for the interval that begins at
// from (seconds since the run's start): responses per second, how many of
// them 5xx, and p99.
type load func(from float64) (rps, s5xx float64, p99 time.Duration)

func steady(rps float64, p99 time.Duration) load {
	return func(float64) (float64, float64, time.Duration) { return rps, 0, p99 }
}

// synthTrace is one run of the phase that compareCases use: 10 s from
// 0.3 s on, its drain until 11.2 s, sampled every second from 0 to 12 s.
// The intervals [0,1) (before the phase) and [10,11) (the drain) get
// figures far off, which the comparison must leave out.
// stepUp is a load of rps0 at p99 p0 until at seconds, then rps1 at p1,
// without 5xx.
func stepUp(at, rps0 float64, p0 time.Duration, rps1 float64, p1 time.Duration) load {
	return func(from float64) (float64, float64, time.Duration) {
		if from < at {
			return rps0, 0, p0
		}
		return rps1, 0, p1
	}
}

func synthTrace(label string, f load) PhaseTrace {
	tr := PhaseTrace{Label: label, Phases: []PhaseOutcome{{Phase: Phase{Name: "p", Duration: 10 * time.Second}, Start: 0.3, End: 11.2}}}
	for from := 0.0; from < 12; from++ {
		rps, s5xx, p99 := f(from)
		if from == 0 || from >= 10 {
			rps, s5xx, p99 = 1e6, 0, time.Millisecond
		}
		tr.Samples = append(tr.Samples, PhaseSample{T: from + 1, Phase: "p", Requests: uint64(rps), Status5xx: uint64(s5xx), P99: p99})
	}
	return tr
}

func TestComparePhases(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name      string
		bound     time.Duration
		own       load
		static    []load
		best      int
		ratio     float64
		reachedIn float64 // -1: never
		held      float64
		ok        bool
		note      string  // a part of Note
		share5xx  float64 // the first static's
	}{
		{name: "matches the best, reached quickly", bound: 100 * ms,
			own:    stepUp(3, 100, 10*ms, 1000, 10*ms),
			static: []load{steady(1000, 10*ms), steady(800, 10*ms)},
			best:   0, ratio: 1, reachedIn: 3.7, held: 1, ok: true},
		{name: "below 90%, never reached", bound: 100 * ms, own: steady(850, 10*ms),
			static: []load{steady(800, 10*ms), steady(1000, 10*ms)},
			best:   1, ratio: 0.85, reachedIn: -1, note: "below 90% of the best (85%); never reached"},
		{name: "reached late", bound: 100 * ms,
			own:    stepUp(6, 100, 10*ms, 1000, 10*ms),
			static: []load{steady(1000, 10*ms)},
			best:   0, ratio: 1, reachedIn: 6.7, held: 1, note: "reached 90% of the best after 6.7s, later than 5s"},
		{name: "an interval above the bound counts 0", bound: 100 * ms, own: steady(1100, 10*ms),
			static: []load{func(from float64) (float64, float64, time.Duration) {
				if from == 6 || from == 8 {
					return 2000, 0, 200 * ms
				}
				return 2000, 0, 10 * ms
			}, steady(1200, 10*ms)},
			// The first: (0 + 2000 + 0 + 2000) / 4 = 1000 < 1200.
			best: 1, ratio: 1100.0 / 1200, reachedIn: 1.7, held: 1, ok: true},
		{name: "reaching needs the bound", bound: 100 * ms,
			own:    stepUp(4, 1000, 200*ms, 1000, 10*ms),
			static: []load{steady(1000, 10*ms)},
			best:   0, ratio: 1, reachedIn: 4.7, held: 1, ok: true},
		{name: "no static within the bound", bound: 100 * ms, own: steady(1000, 10*ms),
			static: []load{steady(5000, 200*ms)}, best: -1, reachedIn: -1, note: "no static configuration"},
		{name: "no bound", own: steady(1000, 10*ms), static: []load{steady(1000, time.Second)},
			best: 0, ratio: 1, reachedIn: 1.7, held: 1, ok: true},
		{name: "a few 5xx are not throughput", bound: 100 * ms, own: steady(597, 10*ms),
			static: []load{func(float64) (float64, float64, time.Duration) { return 1000, 5, ms }},
			best:   0, ratio: 0.6, reachedIn: -1, held: 0, note: "below 90%", share5xx: 0.005},
		{name: "refusing more than 1% is not serving the phase", bound: 100 * ms, own: steady(600, 10*ms),
			static: []load{func(float64) (float64, float64, time.Duration) { return 1000, 500, ms }},
			best:   -1, reachedIn: -1, note: "no static configuration", share5xx: 0.5},
		{name: "held counts the intervals that stay", bound: 100 * ms,
			own: func(from float64) (float64, float64, time.Duration) {
				if from >= 2 && int(from)%2 == 0 {
					return 1000, 0, 10 * ms
				}
				return 100, 0, 10 * ms
			},
			// Steady: 1000, 100, 1000, 100 from 6 s on; reached in [2,3),
			// then 4 of the 8 intervals from it on.
			static: []load{steady(1000, 10*ms)},
			best:   0, ratio: 0.55, reachedIn: 2.7, held: 0.5, note: "below 90%"},
		{name: "nothing to compare with", bound: 100 * ms, own: steady(1000, ms), best: -1, reachedIn: -1, note: "no static configuration to compare with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &Spec{Sample: time.Second, Objective: Objective{P99Max: tt.bound}, Phases: []Phase{{Name: "p", Duration: 10 * time.Second}}}
			own := synthTrace("self-sizing", tt.own)
			var static []PhaseTrace
			for i, l := range tt.static {
				static = append(static, synthTrace("static "+string(rune('A'+i)), l))
			}
			cs := comparePhases(spec, &own, static)
			if len(cs) != 1 {
				t.Fatalf("%d comparisons, want 1", len(cs))
			}
			c := cs[0]
			if c.Own.Intervals != 4 || c.Own.SteadyFrom != 5 || c.P99Max != tt.bound {
				t.Errorf("own figures %+v, bound %v: want 4 steady intervals from 5 s, bound %v", c.Own, c.P99Max, tt.bound)
			}
			if c.Best != tt.best || math.Abs(c.Ratio-tt.ratio) > 1e-9 || math.Abs(c.ReachedIn-tt.reachedIn) > 1e-9 ||
				math.Abs(c.Held-tt.held) > 1e-9 || c.OK != tt.ok {
				t.Errorf("best %d ratio %v reached in %v held %v ok %v; want %d %v %v %v %v (%+v)",
					c.Best, c.Ratio, c.ReachedIn, c.Held, c.OK, tt.best, tt.ratio, tt.reachedIn, tt.held, tt.ok, c)
			}
			if len(c.Static) > 0 && c.Static[0].Share5xx != tt.share5xx {
				t.Errorf("the first static's 5xx share %v, want %v", c.Static[0].Share5xx, tt.share5xx)
			}
			if !strings.Contains(c.Note, tt.note) || tt.ok != (c.Note == "") {
				t.Errorf("note %q, want it to hold %q", c.Note, tt.note)
			}
		})
	}
}

func TestSampleIntervalMeets(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name  string
		s     PhaseSample
		good  float64
		meets bool
	}{
		{"within the bound", PhaseSample{Requests: 500, P99: 10 * ms}, 1000, true},
		{"p99 above the bound", PhaseSample{Requests: 500, P99: 101 * ms}, 1000, false},
		{"p99 at the bound", PhaseSample{Requests: 500, P99: 100 * ms}, 1000, true},
		{"5xx are not good", PhaseSample{Requests: 1000, Status5xx: 10, P99: 10 * ms}, 1980, true},
		{"more than 1% refused", PhaseSample{Requests: 500, Status5xx: 200, P99: 10 * ms}, 600, false},
		{"errors and 5xx add up", PhaseSample{Requests: 995, Status5xx: 5, Errors: 6, P99: 10 * ms}, 1980, false},
		{"only 5xx", PhaseSample{Requests: 500, Status5xx: 500, P99: 10 * ms}, 0, false},
		{"no responses", PhaseSample{}, 0, false},
		{"1% failed", PhaseSample{Requests: 990, Errors: 10, P99: 10 * ms}, 1980, true},
		{"more than 1% failed", PhaseSample{Requests: 989, Errors: 11, P99: 10 * ms}, 1978, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.T = 3
			iv := newSampleInterval(tt.s, 0.5, 100*ms)
			if iv.good != tt.good || iv.meets != tt.meets || iv.from != 2.5 || iv.to != 3 {
				t.Errorf("%+v, want good %v meets %v over [2.5, 3)", iv, tt.good, tt.meets)
			}
		})
	}
}

func TestWrap(t *testing.T) {
	got := wrap("a bb ccc dddd ≤≤≤≤ f", 7)
	if want := "a bb\nccc\ndddd\n≤≤≤≤ f"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestSteadyFigures(t *testing.T) {
	ivs := func(goods ...float64) []sampleInterval {
		var out []sampleInterval
		for i, g := range goods {
			out = append(out, sampleInterval{from: float64(i), to: float64(i + 1), good: g, meets: g > 0})
		}
		return out
	}
	tests := []struct {
		name       string
		length     float64
		ivs        []sampleInterval
		want, from float64
		n, meeting int
	}{
		{name: "after 5 s", length: 10, ivs: ivs(9, 9, 9, 9, 9, 1, 2, 3, 4, 5), want: 3, from: 5, n: 5, meeting: 5},
		{name: "a short phase settles for half of it", length: 4, ivs: ivs(9, 9, 3, 4), want: 3.5, from: 2, n: 2, meeting: 2},
		{name: "a missed interval counts 0", length: 10, ivs: ivs(9, 9, 9, 9, 9, 4, 0, 4, 0, 4), want: 2.4, from: 5, n: 5, meeting: 3},
		{name: "nothing steady", length: 10, ivs: ivs(9, 9), from: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := steadyFigures("x", 0, tt.length, tt.ivs)
			if math.Abs(f.Throughput-tt.want) > 1e-9 || f.SteadyFrom != tt.from || f.Intervals != tt.n || f.Meeting != tt.meeting {
				t.Errorf("%+v, want throughput %v from %v over %d intervals, %d meeting", f, tt.want, tt.from, tt.n, tt.meeting)
			}
		})
	}
}

// TestComparePhasesTwoPhases: each run's phases are matched by position
// on the run's own time line, and a run that stopped early gives no
// figures for the phases it did not reach.
func TestComparePhasesTwoPhases(t *testing.T) {
	mk := func(label string, rps ...float64) PhaseTrace {
		tr := PhaseTrace{Label: label}
		start := 0.0
		for i, r := range rps {
			tr.Phases = append(tr.Phases, PhaseOutcome{Phase: Phase{Name: string(rune('a' + i)), Duration: 10 * time.Second}, Start: start, End: start + 10.4})
			for from := math.Ceil(start); from+1 <= start+10; from++ {
				tr.Samples = append(tr.Samples, PhaseSample{T: from + 1, Requests: uint64(r), P99: time.Millisecond})
			}
			start += 10.4
		}
		return tr
	}
	spec := &Spec{Sample: time.Second, Objective: Objective{P99Max: 10 * time.Millisecond},
		Phases: []Phase{{Name: "a", Duration: 10 * time.Second}, {Name: "b", Duration: 10 * time.Second}}}
	own := mk("self-sizing", 1000, 3000)
	cs := comparePhases(spec, &own, []PhaseTrace{mk("P8", 1000, 1000), mk("P256", 500, 3000), mk("cut short", 9000)})
	if len(cs) != 2 {
		t.Fatalf("%d comparisons", len(cs))
	}
	if cs[0].Best != 2 || cs[0].OK || cs[1].Best != 1 || !cs[1].OK || cs[1].Static[2].Intervals != 0 {
		t.Errorf("%+v", cs)
	}
	if cs[1].Own.Intervals != 4 || math.Abs(cs[1].ReachedIn-1.6) > 1e-9 {
		t.Errorf("phase b: %+v", cs[1])
	}
}

func TestStageSizing(t *testing.T) {
	smp := func(kv ...any) PhaseSample {
		s := PhaseSample{Server: map[string]float64{}}
		for i := 0; i < len(kv); i += 2 {
			s.Server[kv[i].(string)] = kv[i+1].(float64)
		}
		return s
	}
	size := func(st string) string { return `quartet_stage_size{stage="` + st + `"}` }
	auto := func(st string) string { return `quartet_stage_auto{stage="` + st + `"}` }
	pinnedAt := func(r, p, w float64) PhaseSample {
		return smp(size("reader"), r, auto("reader"), 0.0, size("processor"), p, auto("processor"), 0.0,
			size("writer"), w, auto("writer"), 0.0, `quartet_stage_size_max{stage="processor"}`, 99.0)
	}
	tests := []struct {
		name          string
		samples       []PhaseSample
		static, known bool
		str           string
	}{
		{name: "pinned", samples: []PhaseSample{pinnedAt(1, 8, 1), pinnedAt(1, 8, 1)}, static: true, known: true,
			str: "static (controllers off, sizes constant): processor 8, reader 1, writer 1"},
		{name: "a controller", samples: []PhaseSample{pinnedAt(1, 8, 1), smp(size("processor"), 300.0, auto("processor"), 1.0)}, known: true,
			str: "sized by controllers: processor 8..300 (controller), reader 1, writer 1"},
		{name: "a size that moved", samples: []PhaseSample{pinnedAt(1, 8, 1), pinnedAt(2, 8, 1)}, known: true,
			str: "sized by controllers: processor 8, reader 1..2, writer 1"},
		{name: "no auto series", samples: []PhaseSample{smp(size("reader"), 1.0, size("processor"), 8.0, size("writer"), 1.0)},
			str: "stage sizes not read from the server"},
		{name: "a stage missing", samples: []PhaseSample{smp(size("reader"), 1.0, auto("reader"), 0.0)}, str: "sized by controllers: reader 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := PhaseTrace{Samples: tt.samples}
			tr.Sizing = stageSizing(tr.Samples)
			st, known := tr.static()
			if st != tt.static || known != tt.known || tr.SizingString() != tt.str {
				t.Errorf("static %v known %v %q; want %v %v %q", st, known, tr.SizingString(), tt.static, tt.known, tt.str)
			}
		})
	}
}

func TestParseAgainst(t *testing.T) {
	tests := []struct {
		name, yaml string
		wantErr    bool
	}{
		{name: "ok", yaml: "stages: {queue_capacity: 64}\nagainst: [{readers: 1, processors: 8, writers: 1}, {readers: 2, processors: 64, writers: 2, queue_capacity: 32}]\nphases: [{name: a}]"},
		{name: "a stage left to its controller", yaml: "against: [{readers: 1, processors: 8}]\nphases: [{name: a}]", wantErr: true},
		{name: "negative", yaml: "against: [{readers: 1, processors: 8, writers: 1, max_conns: -1}]\nphases: [{name: a}]", wantErr: true},
		{name: "url", yaml: "url: http://127.0.0.1:1\nagainst: [{readers: 1, processors: 8, writers: 1}]\nphases: [{name: a}]", wantErr: true},
		{name: "a sweep", yaml: "against: [{readers: 1, processors: 8, writers: 1}]\nmatrix: {readers: [1]}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(tt.yaml))
			if (err != nil) != tt.wantErr || err != nil && !errors.Is(err, ErrSpec) {
				t.Fatalf("err %v, want an error: %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			runs := s.phaseRuns()
			want := []string{"self-sizing Q64", "static R1 P8 W1 Q64", "static R2 P64 W2 Q32"}
			if len(runs) != len(want) {
				t.Fatalf("runs %+v", runs)
			}
			for i, r := range runs {
				if got := stagesLabel(r); got != want[i] {
					t.Errorf("run %d: %q, want %q", i, got, want[i])
				}
			}
		})
	}
	if got := stagesLabel(ServerParams{Processors: 64}); got != "R auto P64 W auto" {
		t.Errorf("partly pinned: %q", got)
	}
}
