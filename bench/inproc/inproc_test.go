package inproc

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/bench"
	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/runtime"
)

// TestSweepInProcess runs a two-point sweep over reader counts against
// in-process Quartet servers built from each point.
func TestSweepInProcess(t *testing.T) {
	spec, err := bench.ParseSpec([]byte(`
name: inproc
duration: 300ms
matrix:
  readers: [1, 2]
  connections: [4]
  workloads: [hello]
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := bench.Sweep(t.Context(), spec, bench.SweepEnv{Quartet: Start})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 2 {
		t.Fatalf("%d points, want 2", len(res.Points))
	}
	for _, p := range res.Points {
		if p.Runs != 1 || p.RequestsPerSec <= 0 || p.Errors != 0 {
			t.Errorf("point %v: %+v", p.Point, p)
		}
	}
	for _, run := range res.Runs {
		if r := run.Result; r == nil || !r.ServerCPUKnown || !r.ServerInProcess {
			t.Errorf("%v: in-process server CPU not accounted: %+v", run.Point, r)
		}
	}
	// The report gives the sizes the server used, not "default" (for a
	// pool its controller sizes, the size it started at).
	def := runtime.DefaultConfig()
	procs, writers := def.ProcessorSizing().Size, def.LoopSizing(runtime.StageWriter).Size
	for _, p := range res.Points {
		if u := p.Used; u == nil || u.Readers != p.Point.Readers || u.Processors != procs || u.Writers != writers {
			t.Errorf("point %v: used %+v, want readers %d, processors %d, writers %d", p.Point, p.Used, p.Point.Readers, procs, writers)
		}
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "share") {
		t.Errorf("an in-process server shares the generator's CPUs; warnings %q", res.Warnings)
	}
}

func TestStartServesBuiltins(t *testing.T) {
	for _, withMetrics := range []bool{false, true} {
		t.Run(fmt.Sprintf("metrics=%v", withMetrics), func(t *testing.T) {
			fds, gs := fdtest.Count(t), goruntime.NumGoroutine()
			srv, err := Start(t.Context(), bench.ServerParams{Readers: 1, Processors: 1, Writers: 1, Metrics: withMetrics})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := srv.Close(); err != nil {
					t.Error(err)
				}
				deadline := time.Now().Add(3 * time.Second)
				for fdtest.Count(t) > fds || goruntime.NumGoroutine() > gs {
					if time.Now().After(deadline) {
						t.Errorf("leak after Close: fds %d -> %d, goroutines %d -> %d", fds, fdtest.Count(t), gs, goruntime.NumGoroutine())
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			for _, path := range []string{"/hello", "/bytes?n=100", "/sleep?ms=1"} {
				res, err := bench.Run(t.Context(), bench.Config{URL: srv.URL() + path, Conns: 2, Requests: 50, Timeout: 5 * time.Second})
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				if res.Status[2] != 50 {
					t.Errorf("%s: %d 2xx of 50", path, res.Status[2])
				}
			}
			murl := srv.(interface{ MetricsURL() string }).MetricsURL()
			if !withMetrics {
				if murl != "" {
					t.Errorf("metrics at %s without asking", murl)
				}
				return
			}
			resp, err := http.Get(murl)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			http.DefaultClient.CloseIdleConnections()
			if !strings.Contains(string(body), `quartet_stage_dequeued_total{stage="processor"} 150`) {
				t.Errorf("metrics lack the 150 requests:\n%s", body)
			}
		})
	}
}

// TestPhaseRunInProcess is a two-phase run against an in-process Quartet
// whose /metrics the run reads every interval: the server side of the
// time series must show the stages' sizes and the processor's work.
func TestPhaseRunInProcess(t *testing.T) {
	spec, res, log := runPhases(t, `
name: two phases
sample: 250ms
stages: {processors: 2}
phases:
  - {name: hello, duration: 1s, connections: 4, workload: hello}
  - {name: sleep, duration: 1s, connections: 8, workload: sleep50}
`)
	if res.MetricsURL == "" || res.ScrapeErrors > len(res.Samples)/2 || res.Used == nil || res.Used.Processors != 2 {
		t.Fatalf("metrics %q, %d failed reads (%s), used %+v", res.MetricsURL, res.ScrapeErrors, res.ScrapeError, res.Used)
	}
	size := `quartet_stage_loops{stage="processor"}`
	done := `quartet_stage_dequeued_total{stage="processor"}`
	var sized, working int
	byPhase := map[string]float64{}
	inside := func(s bench.PhaseSample) string {
		for _, p := range res.Phases {
			if s.T-spec.Sample.Seconds() >= p.Start && s.T <= p.End {
				return p.Name
			}
		}
		return "" // straddles a boundary
	}
	for _, s := range res.Samples {
		if v, ok := s.Server[size]; ok && v == 2 {
			sized++
		}
		if v := s.Server[done]; v > 0 {
			working++
			if ph := inside(s); ph != "" {
				byPhase[ph] = max(byPhase[ph], v)
			}
		}
	}
	// /hello is served inline (no processor dequeues): only the sleep
	// phase's four samples can show throughput, and on a loaded machine a
	// scrape or two of them comes late.
	if sized < 4 || working < 2 {
		t.Fatalf("%d samples with the processor's size, %d with its throughput:\n%s", sized, working, log.String())
	}
	// /sleep?ms=50 on 2 processors cannot pass 40 req/s; /hello can.
	if byPhase["sleep"] > 80 || byPhase["hello"] < 100 {
		t.Errorf("processor throughput by phase %v", byPhase)
	}
}

// TestPhaseRunAgainst runs two short phases with the default
// (self-sizing) stages, then once more against one static configuration,
// and checks that the static run was confirmed static, the comparison
// covers both phases, and the summary and files show it.
func TestPhaseRunAgainst(t *testing.T) {
	_, res, log := runPhases(t, `
name: against
sample: 100ms
objective: {p99_max: 500ms}
against: [{readers: 1, processors: 2, writers: 1}]
phases:
  - {name: hello, duration: 600ms, connections: 4, workload: hello}
  - {name: sleep, duration: 600ms, connections: 8, workload: sleep1}
`)
	if len(res.Against) != 1 || res.Label != "self-sizing" || res.Against[0].Label != "static R1 P2 W1" {
		t.Fatalf("runs %q and %d against:\n%s", res.Label, len(res.Against), log.String())
	}
	st := res.Against[0]
	if u := st.Used; u == nil || u.Readers != 1 || u.Processors != 2 || u.Writers != 1 {
		t.Errorf("static run used %+v", st.Used)
	}
	if s := st.SizingString(); !strings.HasPrefix(s, "static (controllers off") || !strings.Contains(s, "processor 2") {
		t.Errorf("static run's sizing: %s", s)
	}
	// The default processor pool has a controller (GOMAXPROCS..1024×).
	if s := res.SizingString(); !strings.Contains(s, "(controller)") {
		t.Errorf("self-sizing run's sizing: %s", s)
	}
	if len(res.Comparison) != 2 {
		t.Fatalf("comparison %+v", res.Comparison)
	}
	for _, c := range res.Comparison {
		if len(c.Static) != 1 || c.Own.Intervals == 0 || c.Static[0].Intervals == 0 || c.P99Max != 500*time.Millisecond {
			t.Errorf("phase %s: %+v", c.Phase, c)
		}
		if c.Best == 0 && (c.Ratio <= 0 || c.Own.Throughput <= 0) {
			t.Errorf("phase %s: ratio %v of %v", c.Phase, c.Ratio, c.Own.Throughput)
		}
	}
	var sum strings.Builder
	if err := res.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Comparison per phase: self-sizing vs the static configuration", "static R1 P2 W1", "reached in", "phases pass", "p99 ≤ 500ms"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
	dir := t.TempDir()
	report, err := res.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(report)
	for _, want := range []string{"Against static configurations", `id="throughput_by_config.svg"`, `id="latency_by_config.svg"`, "static (controllers off"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "timeseries-against1-static-R1-P2-W1.csv")); err != nil {
		t.Error(err)
	}
	js, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if !strings.Contains(string(js), `"comparison"`) || !strings.Contains(string(js), `"reached_in_s"`) {
		t.Error("results.json lacks the comparison")
	}
}

// TestBenchInProcessURL runs `quartet bench inproc:/hello` through
// bench.Main, as the command does.
func TestBenchInProcessURL(t *testing.T) {
	var out, errb strings.Builder
	err := bench.Main(t.Context(), []string{"-n", "200", "-c", "2", "--readers", "1", "inproc:/hello"},
		bench.Env{Stdout: &out, Stderr: &errb, Quartet: Start})
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	for _, want := range []string{"200 requests", "2xx 200", "server CPU"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// runPhases runs the phase run spec (YAML) against in-process servers and
// returns the parsed spec, the result and the run's log.
func runPhases(t *testing.T, spec string) (*bench.Spec, *bench.PhaseResult, *strings.Builder) {
	t.Helper()
	sp, err := bench.ParseSpec([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	log := &strings.Builder{}
	res, err := bench.PhaseRun(t.Context(), sp, bench.SweepEnv{Quartet: Start, Log: log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	return sp, res, log
}
