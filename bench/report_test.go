package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	goruntime "runtime"
	"strings"
	"testing"
	"time"
)

func TestLogScaleWanted(t *testing.T) {
	tests := []struct {
		maxima []float64
		want   bool
	}{
		{nil, false},
		{[]float64{5000}, false},
		{[]float64{5000, 1000}, false},
		{[]float64{50000, 5000}, true},
		{[]float64{90000, 900, 0}, true}, // an empty series does not count
		{[]float64{0, 0}, false},
	}
	for _, tt := range tests {
		if got := logScaleWanted(tt.maxima); got != tt.want {
			t.Errorf("logScaleWanted(%v) = %v, want %v", tt.maxima, got, tt.want)
		}
	}
}

func TestChartAxesAndMarks(t *testing.T) {
	tests := []struct {
		name  string
		chart Chart
		want  []string
		not   []string
	}{
		{name: "linear", chart: Chart{YLabel: "req/s", Categories: []string{"1", "2"},
			Series: []Series{{Name: "a", X: []int{0, 1}, Y: []float64{100, 200}}}},
			want: []string{">req/s<", ">200<"}, not: []string{"log scale", "hline"}},
		{name: "log decades", chart: Chart{YLabel: "req/s", LogY: true, Categories: []string{"1", "2"},
			Series: []Series{{Name: "hello", X: []int{0, 1}, Y: []float64{40000, 60000}}, {Name: "sleep", X: []int{0, 1}, Y: []float64{300, 900}}}},
			want: []string{"req/s (log scale)", ">100<", ">1000<", ">10k<", ">100k<"}},
		{name: "bound line", chart: Chart{Categories: []string{"1"}, HLines: []Mark{{At: 20, Label: "p99 bound 20ms"}},
			Series: []Series{{Name: "a", X: []int{0}, Y: []float64{5}}}},
			want: []string{`class="hline"`, "p99 bound 20ms", markColour}},
		{name: "time series with phases", chart: Chart{XLabel: "s",
			Series: []Series{{Name: "a", XV: []float64{1, 2, 3, 4}, Y: []float64{1, 2, nan(), 4}}},
			VLines: []Mark{{At: 0, Label: "hello"}, {At: 2.5, Label: "sleep"}}},
			want: []string{`class="vline"`, ">sleep<", "<polyline"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svg := string(tt.chart.SVG())
			for _, w := range tt.want {
				if !strings.Contains(svg, w) {
					t.Errorf("SVG lacks %q:\n%s", w, svg)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(svg, w) {
					t.Errorf("SVG has %q:\n%s", w, svg)
				}
			}
		})
	}
	split := Chart{Series: []Series{{Name: "a", XV: []float64{1, 2, 3, 4, 5}, Y: []float64{1, 2, nan(), 4, 5}}}}
	if n := strings.Count(string(split.SVG()), "<polyline"); n != 2 {
		t.Errorf("a NaN should split the line in two, got %d polylines", n)
	}
}

// syntheticSweep is a summarised sweep over processors for two workloads
// ten times apart, without running anything.
func syntheticSweep(bound time.Duration, p99s map[string][2]time.Duration) *SweepResult {
	spec := &Spec{Name: "synthetic", Duration: time.Second, Repeats: 1,
		Matrix:    Matrix{Processors: []int{1, 8}, Connections: []int{100}, Workloads: []string{"hello", "sleep50"}},
		Objective: Objective{P99Max: bound}}
	rps := map[string][2]float64{"hello": {50000, 52000}, "sleep50": {150, 1900}}
	r := &SweepResult{Spec: spec}
	for _, wl := range spec.Matrix.Workloads {
		for i, procs := range spec.Matrix.Processors {
			p := Point{Workload: wl, Conns: 100, ServerParams: ServerParams{Processors: procs}}
			res := &Result{RequestsPerSec: rps[wl][i], Latency: Percentiles{P50: p99s[wl][i] / 2, P99: p99s[wl][i]}}
			r.Runs = append(r.Runs, SweepRun{Point: p, Used: &ServerParams{Readers: 1, Processors: procs, Writers: 1, QueueCapacity: 1024}, Result: res})
		}
	}
	r.summarise()
	return r
}

func TestSweepPlotsLogAxisAndBound(t *testing.T) {
	r := syntheticSweep(20*time.Millisecond, map[string][2]time.Duration{
		"hello": {time.Millisecond, time.Millisecond}, "sleep50": {600 * time.Millisecond, 55 * time.Millisecond}})
	plots := r.Plots()
	byName := map[string]string{}
	for _, p := range plots {
		byName[p.File] = string(p.SVG)
	}
	thr, lat := byName["throughput_vs_processors.svg"], byName["p99_vs_processors.svg"]
	if !strings.Contains(thr, "log scale") {
		t.Errorf("throughput of workloads 10x apart is on a linear axis:\n%s", thr)
	}
	if !strings.Contains(lat, "p99 bound 20ms") || !strings.Contains(lat, `class="hline"`) {
		t.Errorf("p99 plot lacks the bound:\n%s", lat)
	}
}

func TestSweepNearestCandidate(t *testing.T) {
	tests := []struct {
		name        string
		p99s        map[string][2]time.Duration
		wantBest    map[string]int // workload: processors of the best point
		wantNearest map[string]int
		refused     map[string][2]uint64 // 5xx of 1000 responses, by workload and point
	}{
		{name: "all qualify",
			p99s:     map[string][2]time.Duration{"hello": {time.Millisecond, time.Millisecond}, "sleep50": {5 * time.Millisecond, 10 * time.Millisecond}},
			wantBest: map[string]int{"hello": 8, "sleep50": 8}, wantNearest: map[string]int{}},
		{name: "none qualifies for sleep50",
			p99s:     map[string][2]time.Duration{"hello": {time.Millisecond, time.Millisecond}, "sleep50": {600 * time.Millisecond, 55 * time.Millisecond}},
			wantBest: map[string]int{"hello": 8}, wantNearest: map[string]int{"sleep50": 8}},
		// P=8's hello is faster, but it refused 2% of its requests: not
		// serving the workload. 1% is still within the rule.
		{name: "a point refusing more than 1% is not the best",
			p99s:     map[string][2]time.Duration{"hello": {time.Millisecond, time.Millisecond}, "sleep50": {5 * time.Millisecond, 10 * time.Millisecond}},
			refused:  map[string][2]uint64{"hello": {0, 20}, "sleep50": {0, 10}},
			wantBest: map[string]int{"hello": 1, "sleep50": 8}, wantNearest: map[string]int{}},
		{name: "nearest prefers a point that does not refuse",
			p99s:     map[string][2]time.Duration{"hello": {time.Millisecond, time.Millisecond}, "sleep50": {600 * time.Millisecond, 55 * time.Millisecond}},
			refused:  map[string][2]uint64{"sleep50": {0, 500}},
			wantBest: map[string]int{"hello": 8}, wantNearest: map[string]int{"sleep50": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := syntheticSweep(20*time.Millisecond, tt.p99s)
			if tt.refused != nil {
				for i := range r.Runs {
					run := &r.Runs[i]
					run.Result.Requests = 1000
					run.Result.Status[5] = tt.refused[run.Point.Workload][min(run.Point.Processors/8, 1)]
				}
				r.summarise()
			}
			got := func(m map[string]PointSummary) map[string]int {
				out := map[string]int{}
				for k, v := range m {
					out[k] = v.Point.Processors
				}
				return out
			}
			if g := got(r.Best); fmt.Sprint(g) != fmt.Sprint(tt.wantBest) {
				t.Errorf("best %v, want %v", g, tt.wantBest)
			}
			if g := got(r.Nearest); fmt.Sprint(g) != fmt.Sprint(tt.wantNearest) {
				t.Errorf("nearest %v, want %v", g, tt.wantNearest)
			}
			var b strings.Builder
			if err := r.WriteBest(&b); err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("nearest: sleep50 c=100 R=1 P=%d W=1 Q=1024", tt.wantNearest["sleep50"]); (len(tt.wantNearest) > 0) != strings.Contains(b.String(), want) {
				t.Errorf("WriteBest:\n%s", b.String())
			}
		})
	}
	t.Run("order", func(t *testing.T) {
		a := PointSummary{Errors: 0, P99: time.Second, RequestsPerSec: 1}
		b := PointSummary{Errors: 3, P99: time.Millisecond, RequestsPerSec: 100}
		c := PointSummary{Errors: 0, P99: time.Second, RequestsPerSec: 2}
		if !nearer(a, b) || nearer(b, a) || !nearer(c, a) {
			t.Error("nearer: fewer errors first, then lower p99, then higher throughput")
		}
	})
}

func TestSweepReportShowsHostSizesAndWarnings(t *testing.T) {
	r := syntheticSweep(20*time.Millisecond, map[string][2]time.Duration{
		"hello": {time.Millisecond, time.Millisecond}, "sleep50": {600 * time.Millisecond, 55 * time.Millisecond}})
	r.Host = HostInfo(context.Background())
	r.Warnings = []string{"client and server share CPUs 0-1"}
	var b bytes.Buffer
	if err := r.WriteHTML(&b, r.Plots()); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{goruntime.Version(), r.Host.Kernel, fmt.Sprintf("%d cores", r.Host.Cores), "commit " + strings.TrimSuffix(r.Host.Commit, "+dirty"),
		"Warning: client and server share CPUs 0-1", "<td>1024</td>", "sleep50 (nearest)", "<style>body { font-family: sans-serif;"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(html, "default") {
		t.Error(`report says "default" where the sizes used are known`)
	}
}

func TestHostInfo(t *testing.T) {
	h := HostInfo(context.Background())
	if h.Cores != goruntime.NumCPU() || h.Go != goruntime.Version() || h.Kernel == "" || h.CPU == "" || h.Commit == "" || h.Congestion == "" {
		t.Fatalf("host %+v", h)
	}
	if !strings.Contains(h.String(), h.Commit) || !strings.Contains(h.String(), "TCP "+h.Congestion) {
		t.Errorf("String() %q lacks the commit or the congestion control", h)
	}
}

func TestSharedCPUs(t *testing.T) {
	tests := []struct {
		client, server []int
		want           string
	}{
		{[]int{0, 1}, []int{0, 1}, "0-1"},
		{[]int{1}, []int{0}, "unknown"}, // none shared
		{[]int{0, 1, 2, 3, 6}, []int{0, 1, 2, 3, 5, 6}, "0-3,6"},
	}
	for _, tt := range tests {
		if got := cpuList(sharedCPUs(tt.client, tt.server)); got != tt.want {
			t.Errorf("shared(%v, %v) = %s, want %s", tt.client, tt.server, got, tt.want)
		}
	}
	if w := sharedCPUWarning(urlServer{url: "http://127.0.0.1:1"}, "give --server-pid"); !strings.Contains(w, "may share") {
		t.Errorf("loopback server of unknown pid: %q", w)
	}
	if w := sharedCPUWarning(urlServer{url: "http://10.1.2.3:80"}, ""); w != "" {
		t.Errorf("remote server: %q", w)
	}
	if cpuSet(0) != nil {
		if w := sharedCPUWarning(urlServer{url: "http://127.0.0.1:1", pid: pidSelf()}, ""); !strings.Contains(w, "share CPUs") {
			t.Errorf("same process: %q", w)
		}
	}
}

func TestParseParams(t *testing.T) {
	tests := []struct {
		line string
		want ServerParams
	}{
		{`time=2026-01-02T03:04:05Z level=INFO msg="quartet serving" addr=127.0.0.1:4000 readers=2 processors=8 writers=2 queue=1024`,
			ServerParams{Readers: 2, Processors: 8, Writers: 2, QueueCapacity: 1024}},
		{`{"level":"INFO","msg":"quartet serving","addr":"127.0.0.1:4000","readers":1,"processors":16}`,
			ServerParams{Readers: 1, Processors: 16}},
		{`http://127.0.0.1:4000`, ServerParams{}},
	}
	for _, tt := range tests {
		if got := parseParams(tt.line); got != tt.want {
			t.Errorf("parseParams(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
	for _, tt := range []struct {
		line, addr, admin string
	}{
		{`msg="quartet serving" url=http://127.0.0.1:4000 addr=127.0.0.1:4000 admin=http://127.0.0.1:9100 rdma=off`, "127.0.0.1:4000", "127.0.0.1:9100"},
		{`msg="quartet serving" addr=127.0.0.1:4000 admin=off`, "127.0.0.1:4000", ""},
		{`{"msg":"quartet serving","addr":"127.0.0.1:4001","admin":"http://127.0.0.1:9101"}`, "127.0.0.1:4001", "127.0.0.1:9101"},
		{`msg=listening url=http://127.0.0.1:4002/`, "127.0.0.1:4002", ""},
		{`http://127.0.0.1:4003`, "127.0.0.1:4003", ""},
	} {
		m := addrPattern.FindStringSubmatch(tt.line)
		var admin string
		if a := adminPattern.FindStringSubmatch(tt.line); a != nil {
			admin = a[1]
		}
		if m == nil || m[1] != tt.addr || admin != tt.admin {
			t.Errorf("%q: match %v, admin %q", tt.line, m, admin)
		}
	}
}

// The URL a server is measured on, from its start-up line: a messenger
// server's when the comparison asks for it (quartet serve's messenger=)
// or when the peer announces one (msg://).
func TestLineURL(t *testing.T) {
	serving := `msg="quartet serving" url=http://127.0.0.1:4000 addr=127.0.0.1:4000 messenger=127.0.0.1:9000 admin=off`
	tests := []struct {
		line string
		msg  bool
		want string
	}{
		{serving, false, "http://127.0.0.1:4000"},
		{serving, true, "msg://127.0.0.1:9000"},
		{`{"msg":"quartet serving","addr":"127.0.0.1:4001","messenger":"127.0.0.1:9001"}`, true, "msg://127.0.0.1:9001"},
		{`msg="quartet serving" addr=127.0.0.1:4000 admin=off`, true, "http://127.0.0.1:4000"}, // no --msg-addr: StartProc refuses it
		{`msg://127.0.0.1:4003`, false, "msg://127.0.0.1:4003"},
		{`http://127.0.0.1:4004`, true, "http://127.0.0.1:4004"},
		{`[gnet] INFO Launching gnet, listening on: tcp://127.0.0.1:0`, true, ""},
	}
	for _, tt := range tests {
		if got := lineURL(tt.line, tt.msg); got != tt.want {
			t.Errorf("lineURL(%q, %v) = %q, want %q", tt.line, tt.msg, got, tt.want)
		}
	}
}

func nan() float64 { return math.NaN() }

func pidSelf() int { return os.Getpid() }
