package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// scrapeTimeout bounds a read of the metrics endpoint: generous, since a
// server under overload answers late, and a late reading is still one (the
// loop skips the boundaries it missed).
const scrapeTimeout = 2 * time.Second

// PhaseOutcome is one phase as it ran.
type PhaseOutcome struct {
	Phase
	// Start and End are seconds since the experiment's start.
	Start  float64 `json:"start_s"`
	End    float64 `json:"end_s"`
	Result *Result `json:"result,omitempty"`
	Err    string  `json:"error,omitempty"`
}

// PhaseSample is one sampling interval of a phase run: the client's view
// and, where the server's metrics were read, the server's.
type PhaseSample struct {
	// T is the interval's end, in seconds since the experiment's start.
	T     float64 `json:"t_s"`
	Phase string  `json:"phase"`
	// Client side: responses that arrived in the interval, their rate and
	// latency (0 when none arrived), failures and 5xx/503 answers.
	Requests       uint64        `json:"requests"`
	RequestsPerSec float64       `json:"requests_per_sec"`
	P50            time.Duration `json:"p50_ns"`
	P99            time.Duration `json:"p99_ns"`
	Errors         uint64        `json:"errors"`
	Status5xx      uint64        `json:"status_5xx"`
	Status503      uint64        `json:"status_503"`
	// Server holds each sampled series' value for the interval (see
	// SeriesInfo.Kind); a series missing from a scrape is absent.
	Server map[string]float64 `json:"server,omitempty"`
}

// PhaseTrace is one server's way through a phase run's phases, on a time
// line of its own: the spec's own stages, or one of its against
// configurations.
type PhaseTrace struct {
	// Label names the run's stage configuration ("self-sizing", "static
	// R1 P8 W1"); Stages is what was asked for (zero: the server's
	// default, its controllers sizing the stage).
	Label  string       `json:"label"`
	Stages ServerParams `json:"stages"`
	// Started is when the run began; its phases' and samples' times count
	// from it.
	Started    time.Time     `json:"started"`
	Target     string        `json:"target"`
	MetricsURL string        `json:"metrics_url,omitempty"`
	Used       *ServerParams `json:"used,omitempty"`
	// Sizing is what the server's metrics said of each stage's size over
	// the run (empty when they were not read).
	Sizing  []StageSizing  `json:"sizing,omitempty"`
	Phases  []PhaseOutcome `json:"phases"`
	Samples []PhaseSample  `json:"samples"`
	Series  []SeriesInfo   `json:"series"`
	// ScrapeErrors counts failed reads of the metrics endpoint;
	// ScrapeError is the last failure.
	ScrapeErrors int    `json:"scrape_errors"`
	ScrapeError  string `json:"scrape_error,omitempty"`
}

// PhaseResult is a whole phase run: the run with the spec's own stages
// (the embedded trace) and, with against configurations, one more run per
// configuration and the per-phase comparison of the first with the best of
// the others.
type PhaseResult struct {
	Spec *Spec `json:"spec"`
	Host Host  `json:"host"`
	PhaseTrace
	Against    []PhaseTrace      `json:"against,omitempty"`
	Comparison []PhaseComparison `json:"comparison,omitempty"`
	Warnings   []string          `json:"warnings,omitempty"`
}

// PhaseRun runs spec's phases one after another against one server,
// sampling every spec.Sample on one time line: the generator's figures per
// interval, and the server's metrics read from its Prometheus endpoint at
// each interval's end. A server started by the tool gets its exporter
// switched on; a url server needs spec.MetricsURL for the server side.
//
// With spec.Against, the same phases then run once more per listed
// configuration, each against a server started afresh with its stages
// pinned, and the result compares the first run with the best of those
// phase by phase (see PhaseComparison).
func PhaseRun(ctx context.Context, spec *Spec, env SweepEnv) (*PhaseResult, error) {
	log := env.Log
	if log == nil {
		log = io.Discard
	}
	if len(spec.Phases) == 0 {
		return nil, fmt.Errorf("%w: no phases", ErrSpec)
	}
	most := 0
	for _, p := range spec.Phases {
		most = max(most, p.Connections)
	}
	if _, err := RaiseFDLimit(uint64(2*most) + 64); err != nil {
		return nil, err
	}
	res := &PhaseResult{Spec: spec, Host: HostInfo(ctx)}
	fmt.Fprintf(log, "host: %s\n", res.Host)
	warn := func(w string) {
		if !slices.Contains(res.Warnings, w) {
			res.Warnings = append(res.Warnings, w)
			fmt.Fprintf(log, "warning: %s\n", w)
		}
	}
	runs := spec.phaseRuns()
	for i, params := range runs {
		label := stagesLabel(params)
		if len(runs) > 1 {
			fmt.Fprintf(log, "run %d/%d: %s, a server of its own\n", i+1, len(runs), label)
		}
		tr, err := runPhases(ctx, spec, env, params, log, warn)
		if tr != nil {
			tr.Label = label
			if i == 0 {
				res.PhaseTrace = *tr
			} else {
				res.Against = append(res.Against, *tr)
				if st, known := tr.static(); known && !st {
					warn(fmt.Sprintf("%s: the server's metrics show a stage resized or under a controller: not a static configuration", label))
				} else if !known {
					warn(fmt.Sprintf("%s: the server's metrics did not show every stage's size: not confirmed static", label))
				}
			}
		}
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			if i == 0 && tr == nil {
				return nil, err
			}
			res.compare()
			return res, err
		}
	}
	res.compare()
	return res, nil
}

// runPhases runs spec's phases once against a server started with params
// (or the spec's url).
func runPhases(ctx context.Context, spec *Spec, env SweepEnv, params ServerParams, log io.Writer, warn func(string)) (*PhaseTrace, error) {
	asked := params
	params.Metrics = true
	srv, target, err := startTarget(ctx, spec, env, params)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	res := &PhaseTrace{Stages: asked, Target: target}
	if w := sharedCPUWarning(srv, sweepPIDHint); w != "" {
		warn(w)
	}
	if p, ok := serverParams(srv); ok {
		res.Used = &p
	}
	res.MetricsURL = spec.MetricsURL
	if res.MetricsURL == "" {
		res.MetricsURL = serverMetricsURL(srv)
	}
	var sc *scraper
	if res.MetricsURL == "" {
		warn(noMetricsWarning)
	} else if sc, err = newScraper(res.MetricsURL, spec.MetricsMatch, max(spec.Sample, scrapeTimeout)); err != nil {
		return nil, err
	}

	if spec.Warmup > 0 {
		// A fresh server's first seconds (heap growth, the first loops
		// and places, caches) are not any phase's: each run of a
		// comparison starts warm, with the first phase's load, unsampled.
		first := spec.Phases[0]
		mix := spec.mix(first)
		fmt.Fprintf(log, "warm-up: %v of phase %q's load, not sampled\n", spec.Warmup, first.Name)
		if _, err := Run(ctx, Config{URL: srv.URL() + mix[0].Path, Conns: first.Connections, Duration: spec.Warmup,
			Rate: first.Rate, Pipeline: first.Pipeline, Loops: spec.Loops, Timeout: spec.Timeout, Mix: mix,
			ServerInProcess: isInProcess(srv)}); err != nil && ctx.Err() == nil {
			fmt.Fprintf(log, "warm-up: %v\n", err)
		}
	}
	base := time.Now()
	res.Started = base.UTC()
	scrapes := newScrapeLog()
	scrapeCtx, stopScraping := context.WithCancel(ctx)
	var scraping sync.WaitGroup
	if sc != nil {
		scraping.Go(func() { scrapeLoop(scrapeCtx, sc, base, spec.Sample, scrapes) })
	}
	defer func() {
		stopScraping()
		scraping.Wait()
	}()

	client := map[int64]*IntervalSample{}
	var mu sync.Mutex
	live := liveLine(log, spec.Sample, base, scrapes)
	for i, ph := range spec.Phases {
		out := PhaseOutcome{Phase: ph, Start: time.Since(base).Seconds()}
		fmt.Fprintf(log, "phase %d/%d %q: %v, %d connections%s, %s\n", i+1, len(spec.Phases), ph.Name, ph.Duration,
			ph.Connections, rateString(ph.Rate), mixString(spec.mix(ph)))
		mix := spec.mix(ph)
		cfg := Config{URL: srv.URL() + mix[0].Path, Conns: ph.Connections, Duration: ph.Duration, Rate: ph.Rate,
			Pipeline: ph.Pipeline, Loops: spec.Loops, Timeout: spec.Timeout, Mix: mix,
			Interval: spec.Sample, IntervalBase: base,
			OnInterval: func(s IntervalSample) {
				mu.Lock()
				defer mu.Unlock()
				if c, ok := client[s.Index]; ok {
					c.merge(s)
				} else {
					client[s.Index] = &s
				}
				live(s.Index, ph.Name, client)
			}}
		if isInProcess(srv) {
			cfg.ServerInProcess = true
		} else if srv.PID() > 0 {
			cfg.ServerCPU = srv.CPU
		}
		r, err := Run(ctx, cfg)
		out.End, out.Result = time.Since(base).Seconds(), r
		if err != nil {
			out.Err = err.Error()
			fmt.Fprintf(log, "phase %q: %v\n", ph.Name, err)
		}
		res.Phases = append(res.Phases, out)
		if ctx.Err() != nil {
			break
		}
	}
	// The last interval's server side is the scrape at its end.
	last := int64(math.MinInt64)
	for idx := range client {
		last = max(last, idx)
	}
	if sc != nil && last > math.MinInt64 {
		scrapes.await(ctx, last+1, spec.Sample*2)
	}
	stopScraping()
	scraping.Wait()
	res.assemble(client, scrapes, sc, base, spec.Sample)
	res.Sizing = stageSizing(res.Samples)
	return res, ctx.Err()
}

// startTarget starts (or names) the server of a sweep point or phase run.
func startTarget(ctx context.Context, spec *Spec, env SweepEnv, p ServerParams) (Server, string, error) {
	switch {
	case spec.URL != "":
		return urlServer{url: strings.TrimRight(spec.URL, "/")}, spec.URL, nil
	case spec.Server == "process":
		if env.QuartetBinary == "" {
			return nil, "", errors.New("bench: server: process needs the quartet binary")
		}
		s, err := StartProcess(ctx, "quartet", quartetArgs(env.QuartetBinary, p))
		return s, "quartet serve (a process of its own)", err
	case env.Quartet != nil:
		s, err := env.Quartet(ctx, p)
		return s, "in-process Quartet", err
	}
	return nil, "", errors.New("bench: no in-process Quartet linked in; set url in the spec")
}

func rateString(r float64) string {
	if r > 0 {
		return fmt.Sprintf(", open loop at %.0f req/s", r)
	}
	return ", closed loop"
}

func mixString(mix []RequestSpec) string {
	var parts []string
	for _, m := range mix {
		s := m.Path
		if m.Method != "" && m.Method != "GET" {
			s = m.Method + " " + s
		}
		if m.Weight > 1 {
			s += fmt.Sprintf(" ×%d", m.Weight)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// scrapeLog holds the scrapes by index: scrape k is read at base + k
// samples, the end of interval k-1.
type scrapeLog struct {
	mu   sync.Mutex
	byK  map[int64]scrape
	cond chan struct{} // closed and replaced on every new scrape
}

func newScrapeLog() *scrapeLog {
	return &scrapeLog{byK: map[int64]scrape{}, cond: make(chan struct{})}
}

func (l *scrapeLog) put(k int64, s scrape) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byK[k] = s
	close(l.cond)
	l.cond = make(chan struct{})
}

func (l *scrapeLog) get(k int64) (scrape, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.byK[k]
	return s, ok
}

// await waits, at most for bound past the scrape's time, until scrape k
// has been taken.
func (l *scrapeLog) await(ctx context.Context, k int64, bound time.Duration) {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		l.mu.Lock()
		_, ok := l.byK[k]
		ch := l.cond
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// scrapeLoop reads the metrics at every sample boundary from base on.
func scrapeLoop(ctx context.Context, sc *scraper, base time.Time, every time.Duration, out *scrapeLog) {
	for k := int64(0); ; k++ {
		at := base.Add(time.Duration(k) * every)
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		} else if -d > every {
			// A read took longer than the interval: skip to now.
			k = int64(time.Since(base) / every)
			continue
		}
		s := sc.read(ctx)
		if ctx.Err() != nil {
			return
		}
		out.put(k, s)
	}
}

// liveLine prints one line per completed interval, a sample late (an
// interval is complete once a later one has been seen). Callers hold the
// lock that guards client.
func liveLine(w io.Writer, every time.Duration, base time.Time, scrapes *scrapeLog) func(idx int64, phase string, client map[int64]*IntervalSample) {
	printed := int64(math.MinInt64)
	return func(idx int64, phase string, client map[int64]*IntervalSample) {
		for i := max(printed+1, idx-8); i < idx; i++ {
			s, ok := client[i]
			if !ok {
				continue
			}
			line := fmt.Sprintf("%7.1fs %-10s %8.0f req/s", (time.Duration(i+1) * every).Seconds(), phase, s.RequestsPerSec)
			if s.Latency != nil {
				line += fmt.Sprintf("  p50 %-9v p99 %-9v", s.Latency.P50, s.Latency.P99)
			}
			line += fmt.Sprintf("  5xx %d (503 %d)  errors %d", s.Status[5], s.Status503, s.Errors.total())
			if sc, ok := scrapes.get(i + 1); ok && sc.err == nil {
				line += "  " + stageSizes(sc)
			}
			fmt.Fprintln(w, line)
		}
		printed = max(printed, idx-1)
	}
}

// stageSizes summarises a scrape's stage sizes for the live line: each
// stage's size (quartet_stage_size), and after a slash its loops or
// workers (quartet_stage_loops) when they differ, as while loops are
// being added or places retire.
func stageSizes(sc scrape) string {
	size, loops := map[string]float64{}, map[string]float64{}
	for k, v := range sc.values {
		for fam, into := range map[string]map[string]float64{"quartet_stage_size{": size, "quartet_stage_loops{": loops} {
			if strings.HasPrefix(k, fam) {
				into[strings.Trim(strings.TrimPrefix(strings.TrimPrefix(k, fam), "stage="), `"}`)] = v
			}
		}
	}
	var parts []string
	for stage, n := range size {
		part := fmt.Sprintf("%s=%.0f", stage, n)
		if l, ok := loops[stage]; ok && l != n {
			part += fmt.Sprintf("/%.0f", l)
		}
		parts = append(parts, part)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// assemble joins the client's intervals and the server's scrapes into
// samples, one per interval from the first to the last.
func (r *PhaseTrace) assemble(client map[int64]*IntervalSample, scrapes *scrapeLog, sc *scraper, base time.Time, every time.Duration) {
	var idxs []int64
	for idx := range client {
		idxs = append(idxs, idx)
	}
	slices.Sort(idxs)
	if sc != nil {
		for _, info := range sc.series {
			r.Series = append(r.Series, info)
		}
		sort.Slice(r.Series, func(i, j int) bool { return r.Series[i].Key < r.Series[j].Key })
		for _, s := range scrapes.byK {
			if s.err != nil {
				r.ScrapeErrors++
				r.ScrapeError = s.err.Error()
			}
		}
	}
	if len(idxs) == 0 {
		return
	}
	for idx := idxs[0]; idx <= idxs[len(idxs)-1]; idx++ {
		start := time.Duration(idx) * every
		s := PhaseSample{T: (start + every).Seconds(), Phase: r.phaseAt(start.Seconds(), (start + every).Seconds())}
		if c, ok := client[idx]; ok {
			s.Requests, s.RequestsPerSec = c.Requests, c.RequestsPerSec
			s.Errors, s.Status5xx, s.Status503 = c.Errors.total(), c.Status[5], c.Status503
			if c.Latency != nil {
				s.P50, s.P99 = c.Latency.P50, c.Latency.P99
			}
		}
		if sc != nil {
			a, aok := scrapes.get(idx)
			b, bok := scrapes.get(idx + 1)
			if bok {
				if !aok {
					a = scrape{err: errors.New("missing")}
				}
				s.Server = map[string]float64{}
				for _, info := range r.Series {
					if v := derive(info, a, b); !math.IsNaN(v) {
						s.Server[info.Key] = v
					}
				}
			}
		}
		r.Samples = append(r.Samples, s)
	}
}

// phaseAt names the phase that overlaps [from, to) the most.
func (r *PhaseTrace) phaseAt(from, to float64) string {
	best, most := "", 0.0
	for _, p := range r.Phases {
		if o := min(to, p.End) - max(from, p.Start); o > most {
			best, most = p.Name, o
		}
	}
	return best
}
