//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestDefaultMetricsMatch(t *testing.T) {
	re := regexp.MustCompile(DefaultMetricsMatch)
	for name, want := range map[string]bool{
		"quartet_stage_size": true, "quartet_stage_queue_depth": true, "quartet_stage_loops": true,
		"quartet_stage_shed_total": true, "quartet_shed_total": true, "quartet_requests_shed_total": true,
		"quartet_admission_rejected_total": true, "quartet_connections": true, "quartet_responses_total": true,
		"quartet_rdma_live": false, "go_goroutines": false, "process_cpu_seconds_total": false,
		"quartet_connections_accepted_total": false, "quartet_sent_bytes_total": false,
	} {
		if re.MatchString(name) != want {
			t.Errorf("%s: match %v, want %v", name, !want, want)
		}
	}
}

const exposition = `# HELP quartet_stage_queue_depth Items waiting.
# TYPE quartet_stage_queue_depth gauge
quartet_stage_queue_depth{stage="processor"} 7
quartet_stage_queue_depth{stage="reader"} 0
# HELP quartet_stage_dequeued_total Items taken.
# TYPE quartet_stage_dequeued_total counter
quartet_stage_dequeued_total{stage="processor"} %d
# HELP quartet_stage_service_seconds Time per item.
# TYPE quartet_stage_service_seconds histogram
quartet_stage_service_seconds_bucket{stage="processor",le="0.001"} 3
quartet_stage_service_seconds_bucket{stage="processor",le="+Inf"} %[2]d
quartet_stage_service_seconds_sum{stage="processor"} %[3]g
quartet_stage_service_seconds_count{stage="processor"} %[2]d
# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
# TYPE quartet_stage_size untyped
quartet_stage_size{stage="processor",bound="max"} 64
`

func TestScraperParseAndDerive(t *testing.T) {
	sc, err := newScraper("", "", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	read := func(deq, count int, sum float64, at time.Time) scrape {
		v, err := sc.parse(strings.NewReader(fmt.Sprintf(exposition, deq, count, sum)))
		if err != nil {
			t.Fatal(err)
		}
		return scrape{at: at, values: v}
	}
	t0 := time.Unix(100, 0)
	a := read(1000, 10, 0.5, t0)
	b := read(3000, 30, 1.5, t0.Add(2*time.Second))
	wantKinds := map[string]string{
		`quartet_stage_queue_depth{stage="processor"}`:      KindGauge,
		`quartet_stage_queue_depth{stage="reader"}`:         KindGauge,
		`quartet_stage_dequeued_total{stage="processor"}`:   KindRate,
		`quartet_stage_service_seconds{stage="processor"}`:  KindMean,
		`quartet_stage_size{bound="max",stage="processor"}`: KindGauge,
	}
	if len(sc.series) != len(wantKinds) {
		t.Errorf("series %v, want %v", sc.series, wantKinds)
	}
	for k, kind := range wantKinds {
		if sc.series[k].Kind != kind {
			t.Errorf("%s: kind %q, want %q", k, sc.series[k].Kind, kind)
		}
	}
	reset := read(5, 1, 0.1, t0.Add(4*time.Second))
	failed := scrape{at: t0.Add(4 * time.Second), err: errors.New("refused")}
	tests := []struct {
		key  string
		a, b scrape
		want float64 // NaN: no value
	}{
		{`quartet_stage_queue_depth{stage="processor"}`, a, b, 7},
		{`quartet_stage_queue_depth{stage="processor"}`, failed, b, 7},  // a gauge needs only the end
		{`quartet_stage_dequeued_total{stage="processor"}`, a, b, 1000}, // 2000 over 2 s
		{`quartet_stage_dequeued_total{stage="processor"}`, b, reset, math.NaN()},
		{`quartet_stage_dequeued_total{stage="processor"}`, failed, b, math.NaN()},
		{`quartet_stage_service_seconds{stage="processor"}`, a, b, 0.05}, // 1 s over 20 items
		{`quartet_stage_service_seconds{stage="processor"}`, b, b, math.NaN()},
		{`quartet_stage_queue_depth{stage="writer"}`, a, b, math.NaN()}, // not exported
	}
	for _, tt := range tests {
		info, ok := sc.series[tt.key]
		if !ok {
			info = SeriesInfo{Key: tt.key, Kind: KindGauge}
		}
		got := derive(info, tt.a, tt.b)
		if math.IsNaN(tt.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestParsePhaseSpec(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		check   func(*Spec) error
		wantErr bool
	}{
		{name: "defaults", yaml: "duration: 2s\nphases: [{name: a}, {workload: sleep50, connections: 300, rate: 500}]", check: func(s *Spec) error {
			p := s.Phases
			if s.Sample != time.Second || p[0].Duration != 2*time.Second || p[0].Workload != "hello" || p[0].Connections != DefaultConns ||
				p[1].Name != "phase 2" || s.mix(p[1])[0].Path != "/sleep?ms=50" || len(s.Matrix.Workloads) != 0 {
				return fmt.Errorf("%+v", s)
			}
			return nil
		}},
		{name: "inline requests", yaml: "phases: [{requests: [{path: /hello, weight: 3}, {path: \"/sleep?ms=5\"}]}]", check: func(s *Spec) error {
			if m := s.mix(s.Phases[0]); len(m) != 2 || m[0].Weight != 3 {
				return fmt.Errorf("mix %+v", m)
			}
			return nil
		}},
		{name: "matrix and phases", yaml: "matrix: {readers: [1, 2]}\nphases: [{name: a}]", wantErr: true},
		{name: "unknown workload", yaml: "phases: [{workload: nope}]", wantErr: true},
		{name: "workload and requests", yaml: "phases: [{workload: hello, requests: [{path: /x}]}]", wantErr: true},
		{name: "negative", yaml: "phases: [{connections: -1}]", wantErr: true},
		{name: "sample too short", yaml: "sample: 10ms\nphases: [{name: a}]", wantErr: true},
		{name: "stages with url", yaml: "url: http://127.0.0.1:1\nstages: {processors: 4}\nphases: [{name: a}]", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(tt.yaml))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrSpec) {
					t.Fatalf("%v does not wrap ErrSpec", err)
				}
				return
			}
			if err := tt.check(s); err != nil {
				t.Fatal(err)
			}
		})
	}
	s, err := LoadSpec("examples/phases.yaml")
	if err != nil || len(s.Phases) != 4 || s.Phases[3].Requests == nil {
		t.Fatalf("examples/phases.yaml: %v %+v", err, s)
	}
}

func TestPhaseAt(t *testing.T) {
	r := &PhaseTrace{Phases: []PhaseOutcome{{Phase: Phase{Name: "a"}, Start: 0, End: 3.02}, {Phase: Phase{Name: "b"}, Start: 3.05, End: 6}}}
	for _, tt := range []struct {
		from, to float64
		want     string
	}{{0, 1, "a"}, {2, 3, "a"}, {3, 4, "b"}, {2.9, 3.9, "b"}, {6, 7, ""}} {
		if got := r.phaseAt(tt.from, tt.to); got != tt.want {
			t.Errorf("phaseAt(%v, %v) = %q, want %q", tt.from, tt.to, got, tt.want)
		}
	}
}

// TestPhaseRunAgainstURL runs two phases against a net/http server, with
// a stand-in metrics endpoint whose counter grows by 100 per read, and
// checks the time series and the files.
func TestPhaseRunAgainstURL(t *testing.T) {
	srv, _ := countingServer(t)
	var reads atomic.Int64
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := reads.Add(1)
		fmt.Fprintf(w, exposition, 100*n, 10*n, 0.01*float64(n))
	}))
	defer metrics.Close()
	spec, err := ParseSpec([]byte(`
name: two phases
url: ` + srv.URL + `
metrics_url: ` + metrics.URL + `/metrics
sample: 200ms
objective: {p99_max: 50ms}
phases:
  - {name: first, duration: 700ms, connections: 2, workload: hello}
  - {name: second, duration: 700ms, connections: 4, rate: 400, requests: [{path: "/bytes?n=100"}, {path: /hello}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	res, err := PhaseRun(t.Context(), spec, SweepEnv{Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(res.Phases) != 2 || res.Phases[0].Err != "" || res.Phases[1].Err != "" {
		t.Fatalf("phases %+v", res.Phases)
	}
	var total uint64
	phases := map[string]int{}
	rated := 0
	for i, s := range res.Samples {
		total += s.Requests
		phases[s.Phase]++
		if i > 0 && s.T <= res.Samples[i-1].T {
			t.Errorf("sample %d at %v after %v", i, s.T, res.Samples[i-1].T)
		}
		if v, ok := s.Server[`quartet_stage_dequeued_total{stage="processor"}`]; ok && v > 0 {
			rated++
		}
		if v, ok := s.Server[`quartet_stage_queue_depth{stage="processor"}`]; ok && v != 7 {
			t.Errorf("gauge %v, want 7", v)
		}
	}
	if want := res.Phases[0].Result.Requests + res.Phases[1].Result.Requests; total != want {
		t.Errorf("samples hold %d responses, the phases %d", total, want)
	}
	if phases["first"] < 2 || phases["second"] < 2 || rated < 4 {
		t.Errorf("samples by phase %v, %d with a counter rate:\n%s", phases, rated, log.String())
	}
	if !strings.Contains(log.String(), "req/s") {
		t.Errorf("no live lines:\n%s", log.String())
	}

	dir := t.TempDir()
	report, err := res.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(report)
	for _, want := range []string{"throughput.svg", "latency.svg", "failures.svg", "server_quartet_stage_queue_depth.svg",
		"server_quartet_stage_dequeued_total.svg", "server_quartet_stage_service_seconds.svg", "server_quartet_stage_size.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, want))
		if err != nil {
			t.Errorf("%s: %v", want, err)
			continue
		}
		// Every chart marks both phase starts.
		if n := strings.Count(string(b), `class="vline"`); n != 2 {
			t.Errorf("%s marks %d phase boundaries, want 2", want, n)
		}
		if !strings.Contains(string(html), `id="`+want+`"`) {
			t.Errorf("report lacks %s", want)
		}
	}
	lat, _ := os.ReadFile(filepath.Join(dir, "latency.svg"))
	if !strings.Contains(string(lat), "p99 bound 50ms") {
		t.Error("latency plot lacks the p99 bound")
	}
	csvb, _ := os.ReadFile(filepath.Join(dir, "timeseries.csv"))
	if lines := strings.Count(string(csvb), "\n"); lines != len(res.Samples)+1 {
		t.Errorf("timeseries.csv has %d lines for %d samples", lines, len(res.Samples))
	}
	var sum strings.Builder
	if err := res.WriteSummary(&sum); err != nil || !strings.Contains(sum.String(), "second") {
		t.Errorf("summary %v:\n%s", err, sum.String())
	}
}

// TestPhaseRunCancel: cancelling stops the run between or within phases
// and still returns what was measured.
func TestPhaseRunCancel(t *testing.T) {
	srv, _ := countingServer(t)
	spec, err := ParseSpec([]byte("url: " + srv.URL + "\nsample: 100ms\nphases: [{duration: 1h, connections: 2}, {duration: 1h}]"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	res, err := PhaseRun(ctx, spec, SweepEnv{})
	if !errors.Is(err, context.DeadlineExceeded) || res == nil || len(res.Phases) != 1 || len(res.Samples) == 0 {
		t.Fatalf("err %v, result %+v", err, res)
	}
	if len(res.Warnings) == 0 || !strings.Contains(strings.Join(res.Warnings, " "), "no metrics URL") {
		t.Errorf("warnings %q", res.Warnings)
	}
}

// The live line names each stage once: its size, and its loops after a
// slash only when they differ (before, size and loops were printed alike,
// "processor=2 processor=2 reader=2 reader=2").
func TestStageSizesLine(t *testing.T) {
	sc := scrape{values: map[string]float64{
		`quartet_stage_size{stage="processor"}`: 8, `quartet_stage_loops{stage="processor"}`: 8,
		`quartet_stage_size{stage="reader"}`: 2, `quartet_stage_loops{stage="reader"}`: 1,
		`quartet_stage_size{stage="writer"}`: 1,
	}}
	if got, want := stageSizes(sc), "processor=8 reader=2/1 writer=1"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
