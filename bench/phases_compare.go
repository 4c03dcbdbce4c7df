package bench

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The comparison of a phase run with its static configurations (issue 14:
// on each phase, throughput at the p99 bound within 10% of the best static
// configuration's, reached within 5 s of the change).
const (
	// settleTime is how long after a phase's start its steady window
	// begins, and how soon the self-sized run must reach the best static
	// configuration's throughput.
	settleTime = 5 * time.Second
	// reachFraction of the best static throughput is what "reached"
	// means, and the least ratio that counts as "within 10%".
	reachFraction = 0.9
)

// StageSizing is what the server's metrics said of one stage over a run:
// whether a controller sized it at any sample's end (quartet_stage_auto)
// and the least and greatest size it had then (quartet_stage_size).
type StageSizing struct {
	Stage string  `json:"stage"`
	Auto  bool    `json:"auto"`
	Min   float64 `json:"min_size"`
	Max   float64 `json:"max_size"`
}

// String reads "processor 8" or "processor 4..260 (controller)".
func (z StageSizing) String() string {
	s := z.Stage + " " + strconv.FormatFloat(z.Min, 'f', -1, 64)
	if z.Max != z.Min {
		s += ".." + strconv.FormatFloat(z.Max, 'f', -1, 64)
	}
	if z.Auto {
		s += " (controller)"
	}
	return s
}

// pinnedStages are the stages a static configuration pins.
var pinnedStages = []string{"reader", "processor", "writer"}

// stageSizing reads each stage's quartet_stage_size and quartet_stage_auto
// over the samples; a stage missing either series is left out.
func stageSizing(samples []PhaseSample) []StageSizing {
	const sizeKey, autoKey = `quartet_stage_size{stage="`, `quartet_stage_auto{stage="`
	byStage := map[string]*StageSizing{}
	autoSeen := map[string]bool{}
	get := func(stage string) *StageSizing {
		z := byStage[stage]
		if z == nil {
			z = &StageSizing{Stage: stage, Min: math.Inf(1), Max: math.Inf(-1)}
			byStage[stage] = z
		}
		return z
	}
	for _, s := range samples {
		for k, v := range s.Server {
			switch {
			case strings.HasPrefix(k, sizeKey) && strings.HasSuffix(k, `"}`):
				z := get(strings.TrimSuffix(strings.TrimPrefix(k, sizeKey), `"}`))
				z.Min, z.Max = math.Min(z.Min, v), math.Max(z.Max, v)
			case strings.HasPrefix(k, autoKey) && strings.HasSuffix(k, `"}`):
				stage := strings.TrimSuffix(strings.TrimPrefix(k, autoKey), `"}`)
				autoSeen[stage] = true
				get(stage).Auto = get(stage).Auto || v != 0
			}
		}
	}
	var out []StageSizing
	for stage, z := range byStage {
		if autoSeen[stage] && !math.IsInf(z.Min, 1) {
			out = append(out, *z)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stage < out[j].Stage })
	return out
}

// static reports whether the run's metrics showed every pinned stage
// without a controller and at one size throughout; known is false when
// they did not show every such stage.
func (r *PhaseTrace) static() (static, known bool) {
	static = true
	for _, name := range pinnedStages {
		found := false
		for _, z := range r.Sizing {
			if z.Stage == name {
				found = true
				static = static && !z.Auto && z.Min == z.Max
			}
		}
		if !found {
			return false, false
		}
	}
	return static, true
}

// SizingString summarises Sizing for a report: "static (controllers off):
// reader 1, processor 8, writer 1", or the sizes a controller moved through.
func (r *PhaseTrace) SizingString() string {
	if len(r.Sizing) == 0 {
		return "stage sizes not read from the server"
	}
	parts := make([]string, len(r.Sizing))
	for i, z := range r.Sizing {
		parts[i] = z.String()
	}
	head := "sized by controllers"
	if st, known := r.static(); st && known {
		head = "static (controllers off, sizes constant)"
	}
	return head + ": " + strings.Join(parts, ", ")
}

// pinned reports whether p fixes every stage's size, which turns each
// stage's controller off (runtime.Config: a size without bounds is
// pinned).
func pinned(p ServerParams) bool {
	return p.Readers > 0 && p.Processors > 0 && p.Writers > 0
}

// stagesLabel names a run's configuration: "self-sizing", "static R1 P8
// W1", or, for stages partly pinned, "R auto P64 W auto".
func stagesLabel(p ServerParams) string {
	var s string
	switch {
	case pinned(p):
		s = fmt.Sprintf("static R%d P%d W%d", p.Readers, p.Processors, p.Writers)
	case p.Readers == 0 && p.Processors == 0 && p.Writers == 0:
		s = "self-sizing"
	default:
		var parts []string
		for _, st := range []struct {
			name string
			v    int
		}{{"R", p.Readers}, {"P", p.Processors}, {"W", p.Writers}} {
			if st.v > 0 {
				parts = append(parts, st.name+strconv.Itoa(st.v))
			} else {
				parts = append(parts, st.name+" auto")
			}
		}
		s = strings.Join(parts, " ")
	}
	if p.QueueCapacity > 0 {
		s += " Q" + strconv.Itoa(p.QueueCapacity)
	}
	if p.MaxConns > 0 {
		s += " max-conns " + strconv.Itoa(p.MaxConns)
	}
	return s
}

// phaseRuns are the stage configurations a phase run goes through: the
// spec's own stages, then each against configuration, which takes the
// queue capacity and connection limit of the spec's stages where it sets
// none, so that only the stage sizes differ.
func (s *Spec) phaseRuns() []ServerParams {
	runs := []ServerParams{s.Stages}
	for _, a := range s.Against {
		if a.QueueCapacity == 0 {
			a.QueueCapacity = s.Stages.QueueCapacity
		}
		if a.MaxConns == 0 {
			a.MaxConns = s.Stages.MaxConns
		}
		runs = append(runs, a)
	}
	return runs
}

// PhaseFigures are one run's figures for one phase, over its steady
// window: the phase's whole sampling intervals that begin at least
// settleTime after the phase's start (half the phase, for a phase shorter
// than twice that) and end by its measurement's end (the drain after it
// excluded).
type PhaseFigures struct {
	Label string `json:"label"`
	// Throughput is the mean, over the steady window's intervals, of each
	// interval's good responses (all but 5xx) per second, counted as 0
	// for an interval whose p99 is above the bound, in which more than 1%
	// of the requests failed (timeouts, lost connections, 5xx refusals),
	// or that had none: throughput at the p99 bound.
	Throughput float64 `json:"throughput"`
	// Intervals is the steady window's length in intervals, Meeting how
	// many of them met the bound; SteadyFrom is where the window began,
	// in seconds from the phase's start.
	Intervals  int     `json:"intervals"`
	Meeting    int     `json:"intervals_meeting"`
	SteadyFrom float64 `json:"steady_from_s"`
	// Share5xx is the share of the window's responses that were 5xx
	// (mostly 503: refused by admission control); an interval with more
	// than 1% of them counts 0 in Throughput.
	Share5xx float64 `json:"share_5xx"`
}

// PhaseComparison is one phase of the run with the spec's own stages
// (normally self-sizing) against the best static configuration for it.
type PhaseComparison struct {
	Phase string `json:"phase"`
	// P99Max is the bound (the objective's p99_max; 0: none).
	P99Max time.Duration  `json:"p99_max_ns"`
	Own    PhaseFigures   `json:"own"`
	Static []PhaseFigures `json:"static"`
	// Best indexes Static: the highest Throughput, -1 when no static
	// configuration had any at the bound.
	Best int `json:"best"`
	// Ratio is Own.Throughput over the best's (0 without a best).
	Ratio float64 `json:"ratio"`
	// ReachedIn is the time from the phase's start to the end of the
	// first of its intervals in which the own run's good responses per
	// second reached 90% of the best's Throughput with p99 within the
	// bound (resolution: one sample); -1 if none did. Held is the share
	// of the phase's intervals from that one on that stayed there.
	ReachedIn float64 `json:"reached_in_s"`
	Held      float64 `json:"held"`
	// OK: Ratio at least 0.9 and reached within 5 s. Note says why not.
	OK   bool   `json:"ok"`
	Note string `json:"note,omitempty"`
}

// sampleInterval is one sample seen as a span of its run's time line.
type sampleInterval struct {
	from, to float64 // seconds since the run's start
	good     float64 // good responses per second
	// meets: some good responses, p99 within the bound, at most
	// maxFailedShare of the requests failed.
	meets           bool
	s5xx, responses uint64
}

// phaseIntervals are the samples of tr whose whole interval lies within
// its i-th phase's measurement, in order, and that phase's start; ok is
// false when the run did not get to that phase.
func phaseIntervals(tr *PhaseTrace, i int, every time.Duration, bound time.Duration) (start float64, out []sampleInterval, ok bool) {
	if i >= len(tr.Phases) {
		return 0, nil, false
	}
	o := tr.Phases[i]
	end := math.Min(o.End, o.Start+o.Duration.Seconds())
	const eps = 1e-3 // the times are floats of the same clock
	step := every.Seconds()
	for _, s := range tr.Samples {
		if from, to := s.T-step, s.T; from < o.Start-eps || to > end+eps {
			continue
		}
		out = append(out, newSampleInterval(s, step, bound))
	}
	return o.Start, out, true
}

// maxFailedShare is the share of an interval's requests that may fail
// (time out, lose their connection, or be refused with a 5xx) for it to
// meet the p99 bound. A failed request took longer than any bound, so more
// than 1% of them puts the interval's true p99 above it whatever the
// responses' p99. A refused one was not served at all: a configuration
// that refuses a quarter of a closed-loop mix's slow requests answers the
// fast ones sooner, and would otherwise win the phase by not serving it.
const maxFailedShare = 0.01

// newSampleInterval reads sample s, of an interval step seconds long.
func newSampleInterval(s PhaseSample, step float64, bound time.Duration) sampleInterval {
	good := s.Requests - min(s.Status5xx, s.Requests)
	failed := float64(s.Errors+min(s.Status5xx, s.Requests)) > maxFailedShare*float64(s.Requests+s.Errors)
	return sampleInterval{from: s.T - step, to: s.T, good: float64(good) / step, s5xx: s.Status5xx, responses: s.Requests,
		meets: good > 0 && !failed && (bound <= 0 || s.P99 <= bound)}
}

// steadyFigures computes a run's PhaseFigures for a phase from its
// intervals (see PhaseFigures).
func steadyFigures(label string, start, length float64, ivs []sampleInterval) PhaseFigures {
	settle := settleTime.Seconds()
	if length < 2*settle {
		settle = length / 2
	}
	f := PhaseFigures{Label: label, SteadyFrom: settle}
	const eps = 1e-3
	sum := 0.0
	var s5xx, responses uint64
	for _, iv := range ivs {
		if iv.from < start+settle-eps {
			continue
		}
		f.Intervals++
		s5xx, responses = s5xx+iv.s5xx, responses+iv.responses
		if iv.meets {
			f.Meeting++
			sum += iv.good
		}
	}
	if f.Intervals > 0 {
		f.Throughput = sum / float64(f.Intervals)
	}
	if responses > 0 {
		f.Share5xx = float64(s5xx) / float64(responses)
	}
	return f
}

// reached finds the first interval at or above target that meets the
// bound: the seconds from start to its end (-1 if none), and the share of
// the intervals from it on that stay there.
func reached(start, target float64, ivs []sampleInterval) (in, held float64) {
	for i, iv := range ivs {
		if !iv.meets || iv.good < target {
			continue
		}
		n := 0
		for _, later := range ivs[i:] {
			if later.meets && later.good >= target {
				n++
			}
		}
		return iv.to - start, float64(n) / float64(len(ivs)-i)
	}
	return -1, 0
}

// comparePhases compares own with each of static, phase by phase (the
// spec's phases, in order).
func comparePhases(spec *Spec, own *PhaseTrace, static []PhaseTrace) []PhaseComparison {
	bound := spec.Objective.P99Max
	var out []PhaseComparison
	for i, ph := range spec.Phases {
		start, ivs, ok := phaseIntervals(own, i, spec.Sample, bound)
		if !ok {
			break
		}
		c := PhaseComparison{Phase: ph.Name, P99Max: bound, Best: -1, ReachedIn: -1,
			Own: steadyFigures(own.Label, start, own.Phases[i].measured(), ivs)}
		for j := range static {
			f := PhaseFigures{Label: static[j].Label}
			if st, sivs, ok := phaseIntervals(&static[j], i, spec.Sample, bound); ok {
				f = steadyFigures(static[j].Label, st, static[j].Phases[i].measured(), sivs)
			}
			c.Static = append(c.Static, f)
			if f.Throughput > 0 && (c.Best < 0 || f.Throughput > c.Static[c.Best].Throughput) {
				c.Best = j
			}
		}
		switch {
		case len(static) == 0:
			c.Note = "no static configuration to compare with"
		case c.Best < 0:
			c.Note = "no static configuration had throughput within the p99 bound"
		default:
			best := c.Static[c.Best].Throughput
			c.Ratio = c.Own.Throughput / best
			c.ReachedIn, c.Held = reached(start, reachFraction*best, ivs)
			var why []string
			if c.Ratio < reachFraction {
				why = append(why, fmt.Sprintf("below 90%% of the best (%.0f%%)", 100*c.Ratio))
			}
			switch {
			case c.ReachedIn < 0:
				why = append(why, "never reached 90% of the best")
			case c.ReachedIn > settleTime.Seconds()+1e-3:
				why = append(why, fmt.Sprintf("reached 90%% of the best after %.1fs, later than %v", c.ReachedIn, settleTime))
			}
			c.OK = len(why) == 0
			c.Note = strings.Join(why, "; ")
		}
		out = append(out, c)
	}
	return out
}

// measured is how long the phase's load ran, in seconds: its duration, or
// less if it was cut short (the drain after it excluded).
func (o PhaseOutcome) measured() float64 {
	return math.Min(o.End-o.Start, o.Duration.Seconds())
}

// compare fills r.Comparison when there are static runs to compare with.
func (r *PhaseResult) compare() {
	if len(r.Spec.Against) == 0 {
		return
	}
	r.Comparison = comparePhases(r.Spec, &r.PhaseTrace, r.Against)
}
