package bench

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SweepRun is one measurement: a point and a repeat.
type SweepRun struct {
	Point Point `json:"point"`
	// Used are the stage sizes the server actually ran with (a point's
	// zero means the server's default); nil when the server does not say
	// (an external URL).
	Used   *ServerParams `json:"used,omitempty"`
	Repeat int           `json:"repeat"`
	Result *Result       `json:"result,omitempty"`
	Err    string        `json:"error,omitempty"`
}

// PointSummary aggregates a point's repeats.
type PointSummary struct {
	Point          Point         `json:"point"`
	Used           *ServerParams `json:"used,omitempty"`
	Runs           int           `json:"runs"`
	RequestsPerSec float64       `json:"requests_per_sec"` // mean
	RPSStddev      float64       `json:"requests_per_sec_stddev"`
	P50            time.Duration `json:"p50_ns"` // mean over repeats
	P99            time.Duration `json:"p99_ns"` // mean over repeats
	Errors         uint64        `json:"errors"` // total, failed runs included
	// Responses and Refused are the measured responses over the runs, and
	// those of them that were 5xx (mostly 503 from admission control).
	Responses      uint64        `json:"responses"`
	Refused        uint64        `json:"refused"`
	ServerCPUPerRq time.Duration `json:"server_cpu_per_request_ns,omitempty"`
}

// refusing reports whether more than maxFailedShare of the point's
// responses were 5xx: such a configuration answers the rest sooner (a
// refusal is quick, and frees the client for its next request), but does
// not serve the workload, so it cannot be the best one, whatever its
// throughput and p99 (the phase run's rule, phases_compare.go).
func (s PointSummary) refusing() bool {
	return float64(s.Refused) > maxFailedShare*float64(s.Responses)
}

// SweepResult is the whole experiment.
type SweepResult struct {
	Spec    *Spec          `json:"spec"`
	Started time.Time      `json:"started"`
	Runs    []SweepRun     `json:"runs"`
	Points  []PointSummary `json:"points"`
	// Best is, per workload, the best point for Spec.Objective, if any
	// point qualifies.
	Best map[string]PointSummary `json:"best"`
	// Nearest is, per workload where no point qualifies, the point that
	// came closest (see nearestCandidate).
	Nearest map[string]PointSummary `json:"nearest,omitempty"`
	// Host is the machine and build measured.
	Host Host `json:"host"`
	// Warnings are caveats on every figure, e.g. client and server sharing
	// CPUs.
	Warnings []string `json:"warnings,omitempty"`
}

// SweepEnv is what Sweep needs to start servers.
type SweepEnv struct {
	// Quartet starts an in-process server (Spec.Server "" or "inprocess").
	Quartet StartServer
	// QuartetBinary runs `quartet serve` (Spec.Server "process").
	QuartetBinary string
	// Log receives one line per run.
	Log io.Writer
}

// Sweep runs every point of spec Repeats times, one server per point.
func Sweep(ctx context.Context, spec *Spec, env SweepEnv) (*SweepResult, error) {
	log := env.Log
	if log == nil {
		log = io.Discard
	}
	start := func(p ServerParams) (Server, error) {
		srv, _, err := startTarget(ctx, spec, env, p)
		return srv, err
	}
	out := &SweepResult{Spec: spec, Started: time.Now().UTC(), Host: HostInfo(ctx)}
	fmt.Fprintf(log, "host: %s\n", out.Host)
	pts := spec.Points()
	for i, p := range pts {
		most := p.Conns
		if _, err := RaiseFDLimit(uint64(2*most) + 64); err != nil {
			// In-process, both ends of every connection are ours.
			return out, err
		}
		srv, err := start(p.ServerParams)
		if err != nil {
			return out, fmt.Errorf("bench: sweep point %v: %w", p, err)
		}
		if w := sharedCPUWarning(srv, sweepPIDHint); w != "" && !slices.Contains(out.Warnings, w) {
			out.Warnings = append(out.Warnings, w)
			fmt.Fprintf(log, "warning: %s\n", w)
		}
		var used *ServerParams
		if sp, ok := serverParams(srv); ok {
			used = &sp
		}
		mix, _ := spec.workload(p.Workload)
		for rep := range spec.Repeats {
			cfg := Config{URL: srv.URL() + mix[0].Path, Conns: p.Conns, Duration: spec.Duration,
				Warmup: spec.Warmup, Rate: spec.Rate, Pipeline: spec.Pipeline, Loops: spec.Loops,
				Timeout: spec.Timeout, Mix: mix}
			if isInProcess(srv) {
				cfg.ServerInProcess = true
			} else if srv.PID() > 0 {
				cfg.ServerCPU = srv.CPU
			}
			res, err := Run(ctx, cfg)
			run := SweepRun{Point: p, Used: used, Repeat: rep, Result: res}
			if err != nil {
				run.Err = err.Error()
			}
			out.Runs = append(out.Runs, run)
			if res != nil {
				fmt.Fprintf(log, "[%d/%d] %v #%d: %.0f req/s, p99 %v, errors %d, 5xx %d\n", i+1, len(pts), p, rep+1,
					res.RequestsPerSec, res.Latency.P99, res.ErrorTotal(), res.Status[5])
				// The table's figures would read as the server's; say
				// under the run's own line when they are mostly failures.
				for _, w := range []string{res.FailureWarning(), res.problems()} {
					if w != "" {
						fmt.Fprintf(log, "    %s\n", w)
					}
				}
			} else {
				fmt.Fprintf(log, "[%d/%d] %v #%d: %v\n", i+1, len(pts), p, rep+1, err)
			}
			if ctx.Err() != nil {
				_ = srv.Close()
				return out, ctx.Err()
			}
		}
		if err := srv.Close(); err != nil {
			fmt.Fprintf(log, "closing server for %v: %v\n", p, err)
		}
	}
	out.summarise()
	return out, nil
}

func (r *SweepResult) summarise() {
	byPoint := map[Point]*PointSummary{}
	var order []Point
	rps := map[Point][]float64{}
	for _, run := range r.Runs {
		s := byPoint[run.Point]
		if s == nil {
			s = &PointSummary{Point: run.Point, Used: run.Used}
			byPoint[run.Point] = s
			order = append(order, run.Point)
		}
		if run.Result == nil || run.Err != "" {
			s.Errors++
		}
		if run.Result == nil {
			continue
		}
		s.Runs++
		s.Errors += run.Result.ErrorTotal()
		s.Responses += run.Result.Requests
		s.Refused += run.Result.Status[5]
		rps[run.Point] = append(rps[run.Point], run.Result.RequestsPerSec)
		s.P50 += run.Result.Latency.P50
		s.P99 += run.Result.Latency.P99
		s.ServerCPUPerRq += run.Result.ServerCPUPerRequest()
	}
	r.Points = r.Points[:0]
	for _, p := range order {
		s := byPoint[p]
		if s.Runs > 0 {
			s.P50 /= time.Duration(s.Runs)
			s.P99 /= time.Duration(s.Runs)
			s.ServerCPUPerRq /= time.Duration(s.Runs)
			s.RequestsPerSec, s.RPSStddev = meanStddev(rps[p])
		}
		r.Points = append(r.Points, *s)
	}
	r.Best = map[string]PointSummary{}
	for _, s := range r.Points {
		if s.Runs == 0 || s.Errors > 0 || s.refusing() {
			continue
		}
		if bound := r.Spec.Objective.P99Max; bound > 0 && s.P99 > bound {
			continue
		}
		if b, ok := r.Best[s.Point.Workload]; !ok || s.RequestsPerSec > b.RequestsPerSec {
			r.Best[s.Point.Workload] = s
		}
	}
	r.Nearest = map[string]PointSummary{}
	for _, s := range r.Points {
		wl := s.Point.Workload
		if _, ok := r.Best[wl]; ok || s.Runs == 0 {
			continue
		}
		if n, ok := r.Nearest[wl]; !ok || nearer(s, n) {
			r.Nearest[wl] = s
		}
	}
}

// nearer orders the candidates when no point meets the objective: fewer
// errors first (a point that fails is further from usable than a slow
// one), then the lower p99, then the higher throughput.
func nearer(a, b PointSummary) bool {
	if a.Errors != b.Errors {
		return a.Errors < b.Errors
	}
	if a.refusing() != b.refusing() {
		return !a.refusing()
	}
	if a.P99 != b.P99 {
		return a.P99 < b.P99
	}
	return a.RequestsPerSec > b.RequestsPerSec
}

func meanStddev(xs []float64) (mean, sd float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	for _, x := range xs {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(len(xs)-1))
}

// WriteBest prints the best configuration per workload.
func (r *SweepResult) WriteBest(w io.Writer) error {
	ew := &errWriter{w: w}
	bound := "no p99 bound"
	if b := r.Spec.Objective.P99Max; b > 0 {
		bound = "p99 ≤ " + b.String()
	}
	for _, wl := range r.Spec.Matrix.Workloads {
		b, ok := r.Best[wl]
		if !ok {
			ew.printf("best for %s (max throughput, %s, no errors, 5xx ≤ 1%%): none qualifies", wl, bound)
			if n, ok := r.Nearest[wl]; ok {
				ew.printf("; nearest: %s: %.0f req/s, p99 %v, %d errors, %d 5xx", n.Describe(), n.RequestsPerSec, n.P99, n.Errors, n.Refused)
			}
			ew.printf("\n")
			continue
		}
		ew.printf("best for %s (max throughput, %s, no errors, 5xx ≤ 1%%): %s: %.0f req/s, p99 %v\n",
			wl, bound, b.Describe(), b.RequestsPerSec, b.P99)
	}
	return ew.err
}

// Describe names the point with the stage sizes the server used, where
// known, rather than zeros for "default".
func (s PointSummary) Describe() string {
	p := s.Point
	if s.Used != nil {
		p.ServerParams = *s.Used
	}
	return p.String()
}

// WriteCSV writes one row per run.
func (r *SweepResult) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(append([]string{"workload", "connections", "readers", "processors", "writers", "queue_capacity", "repeat", "error"}, CSVHeader()...))
	for _, run := range r.Runs {
		p := run.Point
		if run.Used != nil {
			p.ServerParams = *run.Used
		}
		row := []string{p.Workload, strconv.Itoa(p.Conns), strconv.Itoa(p.Readers), strconv.Itoa(p.Processors),
			strconv.Itoa(p.Writers), strconv.Itoa(p.QueueCapacity), strconv.Itoa(run.Repeat), run.Err}
		if run.Result != nil {
			row = append(row, run.Result.CSVRecord()...)
		}
		_ = cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}

// Plots returns the SVG charts: throughput and p99 against each swept
// dimension, keyed by file name. Each line is one workload (and connection
// count, when connections is not the x axis); at each x it shows the point
// with the highest throughput among the other dimensions' values, and the
// p99 chart shows the p99 of that same point.
func (r *SweepResult) Plots() []Plot {
	var out []Plot
	for _, d := range r.Spec.sweptDims() {
		type key struct {
			series string
			x      int
		}
		best := map[key]PointSummary{}
		var names []string
		seen := map[string]bool{}
		for _, s := range r.Points {
			if s.Runs == 0 {
				continue
			}
			p := s.Point
			name := p.Workload
			if d.name != "connections" && len(r.Spec.Matrix.Connections) > 1 {
				name += " c=" + strconv.Itoa(p.Conns)
			}
			if !seen[name] {
				seen[name] = true
				names = append(names, name)
			}
			k := key{name, *d.get(&p)}
			if b, ok := best[k]; !ok || s.RequestsPerSec > b.RequestsPerSec {
				best[k] = s
			}
		}
		xs := make([]string, len(d.values))
		for i, v := range d.values {
			xs[i] = strconv.Itoa(v)
		}
		thr := Chart{Title: "Throughput vs " + d.name, XLabel: d.name, YLabel: "requests/s", Categories: xs}
		lat := Chart{Title: "p99 latency vs " + d.name, XLabel: d.name, YLabel: "p99 (ms)", Categories: xs}
		if b := r.Spec.Objective.P99Max; b > 0 {
			lat.HLines = []Mark{{At: float64(b) / 1e6, Label: "p99 bound " + b.String()}}
		}
		for _, n := range names {
			ts, ls := Series{Name: n}, Series{Name: n}
			for i, v := range d.values {
				b, ok := best[key{n, v}]
				if !ok {
					continue
				}
				ts.X, ts.Y = append(ts.X, i), append(ts.Y, b.RequestsPerSec)
				ls.X, ls.Y = append(ls.X, i), append(ls.Y, float64(b.P99)/1e6)
			}
			thr.Series = append(thr.Series, ts)
			lat.Series = append(lat.Series, ls)
		}
		// Workloads 10× apart (/hello and /sleep) would leave the slower
		// ones flat along the bottom of a linear axis.
		thr.LogY = logScaleWanted(seriesMaxima(thr.Series))
		lat.LogY = logScaleWanted(seriesMaxima(lat.Series))
		out = append(out, Plot{"throughput_vs_" + d.name + ".svg", thr.SVG()},
			Plot{"p99_vs_" + d.name + ".svg", lat.SVG()})
	}
	return out
}

// seriesMaxima are each series' largest value.
func seriesMaxima(ss []Series) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		for _, y := range s.Y {
			out[i] = math.Max(out[i], y)
		}
	}
	return out
}

// phaseMain runs a phase spec and writes its files.
func phaseMain(ctx context.Context, spec *Spec, env SweepEnv, dir string, stdout io.Writer) error {
	res, err := PhaseRun(ctx, spec, env)
	if res == nil {
		return err
	}
	report, werr := res.WriteFiles(dir)
	if werr != nil {
		return errors.Join(err, werr)
	}
	if serr := res.WriteSummary(stdout); serr != nil {
		return errors.Join(err, serr)
	}
	fmt.Fprintf(stdout, "report: %s\n", report)
	return err
}

// WriteFiles writes results.csv, results.json, the SVG plots and
// report.html into dir, and returns the report's path.
func (r *SweepResult) WriteFiles(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	write := func(name string, f func(io.Writer) error) error { return writeFile(filepath.Join(dir, name), f) }
	if err := write("results.csv", r.WriteCSV); err != nil {
		return "", err
	}
	if err := write("results.json", func(w io.Writer) error {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(r)
	}); err != nil {
		return "", err
	}
	plots := r.Plots()
	for _, p := range plots {
		if err := os.WriteFile(filepath.Join(dir, p.File), p.SVG, 0o644); err != nil {
			return "", err
		}
	}
	report := filepath.Join(dir, "report.html")
	return report, write("report.html", func(w io.Writer) error { return r.WriteHTML(w, plots) })
}

// Plot is one chart of a sweep and the file it is written to.
type Plot struct {
	File string
	SVG  []byte
}

// SweepMain is `quartet sweep SPEC.yaml`.
func SweepMain(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	outDir := fs.String("o", "", "output directory (default: sweep-<name>-<time>)")
	url := fs.String("url", "", "run against this server instead of the spec's (or an in-process Quartet)")
	metricsURL := fs.String("metrics", "", "phase runs: the server's Prometheus endpoint (with --url)")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, `usage: quartet sweep [flags] SPEC.yaml

Runs an experiment: a matrix of stage sizes and workloads (results.csv),
or a workload in phases sampled every second on the client and from the
server's /metrics (timeseries.csv), optionally once more per static stage
configuration (the spec's against list) with a per-phase comparison.
Writes results.json, SVG plots and a self-contained report.html.
Examples: bench/examples/stages.yaml, phases.yaml.`)
		fs.PrintDefaults()
		fmt.Fprintln(env.Stderr, `
Exit status: 0 when at least one run got a successful response (HTTP 2xx
or 3xx); 1 when the sweep failed or no run did (the files are still
written); 2 for a usage error or a bad spec.`)
	}
	path, err := parseOne(fs, args)
	if path == "" {
		return err
	}
	spec, err := LoadSpec(path)
	if err != nil {
		return specUsage(err)
	}
	if *url != "" {
		spec.URL = *url
		if err := spec.validate(); err != nil {
			return specUsage(err)
		}
	}
	if *metricsURL != "" {
		spec.MetricsURL = *metricsURL
	}
	dir := *outDir
	if dir == "" {
		dir = "sweep-" + strings.ReplaceAll(strings.ToLower(spec.Name), " ", "-") + "-" + time.Now().UTC().Format("20060102-150405")
	}
	senv := SweepEnv{Quartet: env.Quartet, QuartetBinary: env.QuartetBinary, Log: env.Stderr}
	if len(spec.Phases) > 0 {
		return phaseMain(ctx, spec, senv, dir, env.Stdout)
	}
	res, err := Sweep(ctx, spec, senv)
	if res == nil {
		return err
	}
	res.summarise()
	report, werr := res.WriteFiles(dir)
	if werr != nil {
		return errors.Join(err, werr)
	}
	if berr := res.WriteBest(env.Stdout); berr != nil {
		return berr
	}
	fmt.Fprintf(env.Stdout, "report: %s\n", report)
	if err == nil && !res.anySuccess() {
		// A table of zeros is a failed experiment, not a result.
		return fmt.Errorf("bench: sweep: %w in any run (every one failed: see the log above)", ErrNoSuccess)
	}
	return err
}

// specUsage makes an invalid spec a usage error (exit 2): like a bad flag,
// it is the command's input that is wrong, and nothing ran.
func specUsage(err error) error {
	if errors.Is(err, ErrSpec) {
		return usageErr{err}
	}
	return err
}

// sweepPIDHint is sharedCPUWarning's hint for a sweep, which has no
// --server-pid: it reads a url server's process nowhere.
const sweepPIDHint = "a sweep cannot know a url server's process: pin it apart with taskset, or leave url out to let the sweep start the server"

// noMetricsWarning is a phase run's note when it has no /metrics to
// sample: both ways of giving one, the flag and the spec key.
const noMetricsWarning = "no metrics URL (give --metrics, or metrics_url in the spec, for a url server): the server side is not sampled"

// anySuccess reports whether some run got a successful response.
func (r *SweepResult) anySuccess() bool {
	for _, run := range r.Runs {
		if run.Result != nil && run.Result.Good() > 0 {
			return true
		}
	}
	return false
}
