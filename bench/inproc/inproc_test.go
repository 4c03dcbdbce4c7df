package inproc

import (
	"fmt"
	"io"
	"net/http"
	"os"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/bench"
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
			fds, gs := openFDs(t), goruntime.NumGoroutine()
			srv, err := Start(t.Context(), bench.ServerParams{Readers: 1, Processors: 1, Writers: 1, Metrics: withMetrics})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := srv.Close(); err != nil {
					t.Error(err)
				}
				deadline := time.Now().Add(3 * time.Second)
				for openFDs(t) > fds || goruntime.NumGoroutine() > gs {
					if time.Now().After(deadline) {
						t.Errorf("leak after Close: fds %d -> %d, goroutines %d -> %d", fds, openFDs(t), gs, goruntime.NumGoroutine())
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
	spec, err := bench.ParseSpec([]byte(`
name: two phases
sample: 250ms
stages: {processors: 2}
phases:
  - {name: hello, duration: 1s, connections: 4, workload: hello}
  - {name: sleep, duration: 1s, connections: 8, workload: sleep50}
`))
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	res, err := bench.PhaseRun(t.Context(), spec, bench.SweepEnv{Quartet: Start, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
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
	if sized < 4 || working < 4 {
		t.Fatalf("%d samples with the processor's size, %d with its throughput:\n%s", sized, working, log.String())
	}
	// /sleep?ms=50 on 2 processors cannot pass 40 req/s; /hello can.
	if byPhase["sleep"] > 80 || byPhase["hello"] < 100 {
		t.Errorf("processor throughput by phase %v", byPhase)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
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
