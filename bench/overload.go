package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// Overload is issue 14's overload experiment: find the rate the server
// sustains in open loop, then offer Factor times it and see what it
// answers. Capacity is searched in open loop, not taken from a closed
// loop, because the two do not cost a server the same: a closed loop
// keeps the generator busy, and on loopback a response written to a
// client that is not asleep costs the server less (the client's receive
// runs on the server's core, and waking a sleeping client costs more).
// Against its closed-loop throughput a server looks up to 10% worse at
// 2x overload than against the open-loop rate it sustains.
type Overload struct {
	// Load is the run's settings: URL, connections, duration, warm-up,
	// timeout, server PID. Its Rate is ignored.
	Load Config
	// Factor is the overload: offered rate = Factor × capacity.
	Factor float64
	// Capacity, if positive, skips the search.
	Capacity float64
	// Step is the search's precision: it stops when the highest rate
	// sustained and the lowest not are within Step (0.05: 5%) of each other.
	Step float64
	// A rate is sustained when its run had no client-side error, at least
	// Sustained of its responses were 2xx, their p99 (from the intended
	// send) was within MaxP99, and the responses came back at no less
	// than 95% of the rate (a server that falls behind without refusing
	// answers fewer than were due in the window).
	Sustained float64
	MaxP99    time.Duration
	// MaxSteps bounds the search's runs.
	MaxSteps int
	// Log, if set, gets a line per run as it ends.
	Log io.Writer
}

// OverloadStep is one open-loop run of the capacity search.
type OverloadStep struct {
	Rate      float64       `json:"rate"`
	OK        float64       `json:"ok_per_sec"` // 2xx per second
	Shed      float64       `json:"shed_per_sec"`
	Errors    uint64        `json:"errors"`
	P99       time.Duration `json:"p99_ns"`
	Sustained bool          `json:"sustained"`
}

// OverloadResult is the experiment's outcome.
type OverloadResult struct {
	// ClosedLoop and ClosedLoopAll are the 2xx and the whole throughput
	// of a closed-loop run with the same connections; the search starts
	// from ClosedLoopAll (both 0 when Capacity was given).
	ClosedLoop    float64        `json:"closed_loop_ok_per_sec"`
	ClosedLoopAll float64        `json:"closed_loop_per_sec"`
	Steps         []OverloadStep `json:"steps"`
	Capacity      float64        `json:"capacity"`
	// Capped: the search ran out of steps (MaxSteps) before it had the
	// capacity within Step: it may be higher than found.
	Capped  bool    `json:"search_capped,omitempty"`
	Factor  float64 `json:"factor"`
	Offered float64 `json:"offered"`
	// Goodput is the overload run's 2xx per second, and GoodputRatio
	// that over Capacity.
	Goodput      float64 `json:"goodput"`
	GoodputRatio float64 `json:"goodput_ratio"`
	Run          *Result `json:"run"`
	// PeakRSS is the largest server RSS sampled during the overload run
	// (every 100 ms; 0 without a server PID).
	PeakRSS uint64 `json:"peak_rss_bytes,omitempty"`
}

// Defaults of the search.
const (
	DefaultOverloadFactor    = 2
	DefaultOverloadStep      = 0.05
	DefaultOverloadSustained = 0.99
	DefaultOverloadMaxP99    = time.Second
	DefaultOverloadMaxSteps  = 16
)

// okRate is a run's 2xx responses per second of its window.
func okRate(r *Result) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Status[2]) / r.Elapsed.Seconds()
}

func (o *Overload) step(ctx context.Context, rate float64) (OverloadStep, *Result, error) {
	cfg := o.Load
	cfg.Rate = rate
	res, err := Run(ctx, cfg)
	if err != nil {
		return OverloadStep{}, nil, err
	}
	s := OverloadStep{Rate: rate, OK: okRate(res), Errors: res.Errors.total(), P99: res.Latency.P99}
	if res.Elapsed > 0 {
		s.Shed = float64(res.Status503) / res.Elapsed.Seconds()
	}
	s.Sustained = s.Errors == 0 && float64(res.Status[2]) >= o.Sustained*float64(res.Requests) &&
		res.Latency.P99 <= o.MaxP99 && res.RequestsPerSec >= 0.95*rate
	return s, res, nil
}

func (o *Overload) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format, args...)
	}
}

// Run runs the search (unless Capacity is given) and the overload run.
func (o *Overload) Run(ctx context.Context) (*OverloadResult, error) {
	if o.Factor <= 0 {
		o.Factor = DefaultOverloadFactor
	}
	if o.Step <= 0 || o.Step >= 1 {
		o.Step = DefaultOverloadStep
	}
	if o.Sustained <= 0 || o.Sustained > 1 {
		o.Sustained = DefaultOverloadSustained
	}
	if o.MaxP99 <= 0 {
		o.MaxP99 = DefaultOverloadMaxP99
	}
	if o.MaxSteps <= 0 {
		o.MaxSteps = DefaultOverloadMaxSteps
	}
	out := &OverloadResult{Factor: o.Factor, Capacity: o.Capacity}
	if out.Capacity <= 0 {
		closed := o.Load
		closed.Rate = 0
		res, err := Run(ctx, closed)
		if err != nil {
			return nil, err
		}
		out.ClosedLoop, out.ClosedLoopAll = okRate(res), res.RequestsPerSec
		o.logf("closed loop: %.0f 2xx/s, %.0f responses/s\n", out.ClosedLoop, out.ClosedLoopAll)
		if out.ClosedLoopAll <= 0 {
			return nil, errors.New("bench: overload: the closed loop got no response: nothing to search from")
		}
		if err := o.search(ctx, out); err != nil {
			return nil, err
		}
	}
	out.Offered = o.Factor * out.Capacity
	stop := make(chan struct{})
	peak := make(chan uint64, 1)
	go func() { peak <- sampleRSS(o.Load.ServerPID, stop) }()
	s, res, err := o.step(ctx, out.Offered)
	close(stop)
	out.PeakRSS = <-peak
	if err != nil {
		return nil, err
	}
	out.Run, out.Goodput = res, s.OK
	out.GoodputRatio = s.OK / out.Capacity
	return out, nil
}

// search finds the highest rate sustained: doubling (or halving) from
// the closed loop's throughput until one rate is sustained and the next
// is not, then bisecting between them until they are within Step of each
// other. It does not search by small steps from the closed loop, because
// a closed loop with many connections can be far from capacity either
// way: a server that sheds answers clients that resend at once mostly
// with 503s, and 12,000 such connections got 0 to 24 2xx/s, among 70,000
// responses/s, from a server that sustains 9,000/s.
func (o *Overload) search(ctx context.Context, out *OverloadResult) error {
	try := func(rate float64) (bool, error) {
		s, _, err := o.step(ctx, rate)
		if err != nil {
			return false, err
		}
		out.Steps = append(out.Steps, s)
		o.logf("  %8.0f/s offered: %8.0f 2xx/s, %6.0f 503/s, %d errors, p99 %v: %s\n",
			s.Rate, s.OK, s.Shed, s.Errors, s.P99, sustainedWord(s.Sustained))
		return s.Sustained, nil
	}
	var lo, hi float64 // sustained, and not; 0 while unknown
	rate := out.ClosedLoopAll
	for len(out.Steps) < o.MaxSteps && (lo == 0 || hi == 0) {
		ok, err := try(rate)
		if err != nil {
			return err
		}
		if ok {
			lo, rate = rate, rate*2
		} else {
			hi, rate = rate, rate/2
		}
	}
	for len(out.Steps) < o.MaxSteps && lo > 0 && hi > 0 && hi > lo*(1+o.Step) {
		mid := (lo + hi) / 2
		ok, err := try(mid)
		if err != nil {
			return err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return fmt.Errorf("bench: overload: no rate down to %.0f/s was sustained (%.0f%% answered 2xx, p99 within %v, no errors)",
			rate*2, 100*o.Sustained, o.MaxP99)
	}
	out.Capacity = lo
	out.Capped = hi == 0 || hi > lo*(1+o.Step)
	return nil
}

func sustainedWord(ok bool) string {
	if ok {
		return "sustained"
	}
	return "not sustained"
}

// sampleRSS returns the largest RSS of pid read every 100 ms until stop
// (0 without a pid, or where RSS cannot be read).
func sampleRSS(pid int, stop <-chan struct{}) uint64 {
	if pid <= 0 {
		return 0
	}
	var peak uint64
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if rss, err := ProcRSS(pid); err == nil {
			peak = max(peak, rss)
		}
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}

// Print writes the result for a person.
func (r *OverloadResult) Print(w io.Writer) error {
	ew := &errWriter{w: w}
	if r.ClosedLoopAll > 0 {
		ew.printf("capacity: %.0f/s, the highest open-loop rate sustained (closed loop: %.0f 2xx/s of %.0f responses/s)\n", r.Capacity, r.ClosedLoop, r.ClosedLoopAll)
		if r.Capped {
			ew.printf("  (the search stopped at --max-steps before it was within --step: capacity may be higher)\n")
		}
	} else {
		ew.printf("capacity: %.0f/s (given)\n", r.Capacity)
	}
	ew.printf("overload: %.2f× capacity = %.0f/s offered\n", r.Factor, r.Offered)
	ew.printf("goodput: %.0f 2xx/s = %.3f of capacity\n", r.Goodput, r.GoodputRatio)
	res := r.Run
	if res.Answered != nil {
		ew.printf("admitted latency: p50 %v  p90 %v  p99 %v  max %v\n", res.Answered.P50, res.Answered.P90, res.Answered.P99, res.Answered.Max)
	} else {
		ew.printf("latency: p50 %v  p90 %v  p99 %v  max %v\n", res.Latency.P50, res.Latency.P90, res.Latency.P99, res.Latency.Max)
	}
	if res.Shed != nil {
		ew.printf("refusals (503): %.0f/s, p50 %v  p90 %v  p99 %v  max %v\n",
			float64(res.Status503)/res.Elapsed.Seconds(), res.Shed.P50, res.Shed.P90, res.Shed.P99, res.Shed.Max)
	} else {
		ew.printf("refusals (503): none\n")
	}
	e := res.Errors
	ew.printf("errors: connect %d  reset %d  write %d  timeout %d  parse %d\n", e.Connect, e.Reset, e.Write, e.Timeout, e.Parse)
	if res.ServerCPUKnown && res.Requests > 0 {
		ew.printf("server CPU: %v/response\n", (res.ServerCPU / time.Duration(res.Requests)).Round(10*time.Nanosecond))
	}
	if r.PeakRSS > 0 {
		ew.printf("server peak RSS during overload: %.1f MiB\n", float64(r.PeakRSS)/(1<<20))
	}
	return ew.err
}

func overloadMain(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("bench overload", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var f loadFlags
	f.register(fs)
	var o Overload
	fs.Float64Var(&o.Factor, "factor", DefaultOverloadFactor, "offered load as a multiple of the capacity")
	fs.Float64Var(&o.Capacity, "capacity", 0, "capacity in requests/s (skips the search)")
	fs.Float64Var(&o.Step, "step", DefaultOverloadStep, "the search's precision: it ends when the highest rate sustained and the lowest not are this close")
	fs.Float64Var(&o.Sustained, "sustained", DefaultOverloadSustained, "a sustained rate's least fraction of 2xx responses (and no errors)")
	fs.DurationVar(&o.MaxP99, "max-p99", DefaultOverloadMaxP99, "a sustained rate's largest p99 latency")
	fs.IntVar(&o.MaxSteps, "max-steps", DefaultOverloadMaxSteps, "search runs at most")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, `usage: quartet bench overload [flags] URL

Finds the highest rate the server at URL sustains in open loop (at least
--sustained of the responses 2xx, p99 within --max-p99, no errors, and
the responses keeping up with the rate), doubling or halving from a closed
loop's throughput and then bisecting to within --step, then offers
--factor times that rate and reports the goodput (2xx per second)
against the capacity, the latency of admitted requests and of refusals
(503), errors, and with --server-pid the server's CPU per response and its
peak RSS during the overload. Each run takes -w then -d. Start the server yourself, pinned as you want it, e.g.
  GOMAXPROCS=1 taskset -c 0 quartet serve &
  taskset -c 1 quartet bench overload -c 12000 -d 15s -w 3s -server-pid $! 'http://127.0.0.1:8080/compute?n=100'`)
		fs.PrintDefaults()
	}
	target, err := parseOne(fs, args)
	if target == "" {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	if IsMsgTarget(target) {
		return usagef("bench: overload: the experiment reads HTTP statuses; a msg:// target has none")
	}
	if err := f.finish(target); err != nil {
		return err
	}
	switch {
	case f.cfg.Requests > 0:
		return usagef("bench: overload: runs last -d, not -n responses")
	case f.cfg.Rate > 0:
		return usagef("bench: overload: the rates are the search's; give --capacity to skip it")
	case f.csvOut:
		return usagef("bench: overload: prints text or --json, not CSV")
	}
	if !f.jsonOut {
		o.Log = env.Stderr
	}
	o.Load = f.cfg
	res, err := o.Run(ctx)
	if err != nil {
		return err
	}
	if f.jsonOut {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return res.Print(env.Stdout)
}
