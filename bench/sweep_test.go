//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		points  int
		wantErr bool
		key     string // the error names it
	}{
		{name: "defaults", yaml: "name: x", points: 1},
		{name: "matrix", yaml: "matrix: {readers: [1, 2], processors: [1, 2, 4], connections: [10, 100], workloads: [hello, sleep1]}", points: 24},
		{name: "custom workload", yaml: "workloads: {mine: [{method: POST, path: /echo, body_size: 10}]}\nmatrix: {workloads: [mine]}", points: 1},
		{name: "unknown workload", yaml: "matrix: {workloads: [nope]}", wantErr: true},
		{name: "stages with url", yaml: "url: http://127.0.0.1:1/\nmatrix: {readers: [1, 2]}", wantErr: true},
		{name: "bad server", yaml: "server: vm", wantErr: true},
		{name: "negative", yaml: "matrix: {writers: [-1]}", wantErr: true},
		{name: "not yaml", yaml: "matrix: [", wantErr: true},
		{name: "negative warmup", yaml: "duration: 1s\nwarmup: -1s", wantErr: true, key: "warmup"},
		{name: "negative duration", yaml: "duration: -1s", wantErr: true, key: "duration"},
		{name: "negative phase duration", yaml: "phases: [{duration: -1s}]", wantErr: true, key: "phases[0].duration"},
		{name: "zero duration", yaml: "duration: 0s", wantErr: true, key: "duration"},
		{name: "zero connections", yaml: "matrix: {connections: [0]}", wantErr: true, key: "matrix.connections"},
		{name: "zero processors", yaml: "matrix: {processors: [0]}", wantErr: true, key: "matrix.processors"},
		{name: "empty readers", yaml: "matrix: {readers: []}", wantErr: true, key: "matrix.readers"},
		{name: "negative repeats", yaml: "repeats: -1", wantErr: true, key: "repeats"},
		{name: "zero repeats", yaml: "repeats: 0", wantErr: true, key: "repeats"},
		{name: "zero timeout", yaml: "timeout: 0s", wantErr: true, key: "timeout"},
		{name: "no timeout", yaml: "timeout: -1s", points: 1},
		{name: "negative p99 bound", yaml: "objective: {p99_max: -5ms}", wantErr: true, key: "objective.p99_max"},
		{name: "negative rate", yaml: "rate: -1", wantErr: true, key: "rate"},
		{name: "negative sample", yaml: "sample: -1s\nphases: [{duration: 1s}]", wantErr: true, key: "sample"},
		{name: "empty file", yaml: "", wantErr: true, key: "empty"},
		{name: "only a comment", yaml: "# nothing\n", wantErr: true, key: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(tt.yaml))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrSpec) {
					t.Fatalf("err %v does not wrap ErrSpec", err)
				}
				if !strings.Contains(err.Error(), tt.key) {
					t.Fatalf("err %v does not name %s", err, tt.key)
				}
				return
			}
			if got := len(s.Points()); got != tt.points {
				t.Fatalf("%d points, want %d", got, tt.points)
			}
		})
	}
}

// sweepTwoPoints runs a two-point sweep against a net/http test server and
// writes its files into a temporary directory.
func sweepTwoPoints(t *testing.T) (dir, report string) {
	t.Helper()
	srv, _ := countingServer(t)
	spec, err := ParseSpec([]byte(`
name: two points
url: ` + srv.URL + `
duration: 300ms
warmup: 50ms
repeats: 2
matrix:
  connections: [2, 4]
  workloads: [hello]
objective:
  p99_max: 1s
`))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := Sweep(t.Context(), spec, SweepEnv{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 4 || len(res.Points) != 2 {
		t.Fatalf("%d runs over %d points, want 4 over 2:\n%s", len(res.Runs), len(res.Points), log.String())
	}
	if _, ok := res.Best["hello"]; !ok {
		t.Fatalf("no best point: %+v", res.Points)
	}
	dir = t.TempDir()
	report, err = res.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, report
}

func TestSweepWritesFiles(t *testing.T) {
	dir, report := sweepTwoPoints(t)
	for _, f := range []string{"results.csv", "results.json", "throughput_vs_connections.svg", "p99_vs_connections.svg", "report.html"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: %v (%d bytes)", f, err, len(b))
		}
	}
	csvf, _ := os.Open(filepath.Join(dir, "results.csv"))
	defer csvf.Close()
	recs, err := csv.NewReader(csvf).ReadAll()
	if err != nil || len(recs) != 5 {
		t.Fatalf("results.csv: %v, %d records, want header + 4 runs", err, len(recs))
	}
	// The runs had a warm-up: requests and 2xx must still agree.
	col := func(name string) int { return slices.Index(recs[0], name) }
	for _, r := range recs[1:] {
		if r[col("requests")] != r[col("status_2xx")] {
			t.Errorf("results.csv: %s requests but %s 2xx", r[col("requests")], r[col("status_2xx")])
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "throughput_vs_connections.svg"))
	if !bytes.Contains(svg, []byte("<polyline")) || bytes.Count(svg, []byte("<circle")) != 2 {
		t.Errorf("throughput plot lacks its line or its two points:\n%s", svg)
	}
	html, _ := os.ReadFile(report)
	if n := bytes.Count(html, []byte("<svg")); n != 2 {
		t.Errorf("report inlines %d SVGs, want 2", n)
	}
}

// TestSweepReportInChromium opens the report in headless Chromium and
// checks that the plots are in the rendered DOM.
func TestSweepReportInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (Debian package chromium); skipping the browser check of the sweep report")
	}
	_, report := sweepTwoPoints(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--dump-dom", "file://"+report)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	if n := bytes.Count(dom, []byte("<svg")); n != 2 {
		t.Fatalf("rendered DOM has %d <svg> elements, want 2:\n%s", n, dom)
	}
	for _, want := range []string{"<polyline", "<circle", "Throughput vs connections", "p99 latency vs connections", "best for hello"} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
}

func TestNiceScale(t *testing.T) {
	tests := []struct{ max, step, top float64 }{
		{0, 1, 1}, {7, 2, 8}, {100, 20, 100}, {123456, 50000, 150000}, {0.3, 0.1, 0.30000000000000004},
	}
	for _, tt := range tests {
		step, top := niceScale(tt.max)
		if step != tt.step || top != tt.top {
			t.Errorf("niceScale(%v) = %v, %v; want %v, %v", tt.max, step, top, tt.step, tt.top)
		}
	}
}

// TestExampleFiles keeps the shipped example spec and mix valid.
func TestExampleFiles(t *testing.T) {
	s, err := LoadSpec("examples/stages.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.Points()); n != 24 {
		t.Errorf("stages.yaml: %d points, want 24", n)
	}
	var f loadFlags
	f.mixFile = "examples/mix.yaml"
	if err := f.finish("http://127.0.0.1:1/"); err != nil || len(f.cfg.Mix) != 3 || f.cfg.Mix[2].BodySize != 1024 {
		t.Fatalf("mix.yaml: %v %+v", err, f.cfg.Mix)
	}
}

// A sweep in which no run got a successful response fails (exit 1), and
// an invalid spec is a usage error (exit 2): against a dead port, a table
// of zeros once came out with exit 0.
func TestSweepMainExitStatus(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	srv, _ := countingServer(t)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer failing.Close()
	tests := []struct {
		name    string
		spec    string
		url     string
		want    error // nil: success
		warning bool  // in the log, under the run's line
	}{
		{name: "answers", spec: "duration: 200ms", url: srv.URL},
		{name: "dead port", spec: "duration: 200ms", url: dead, want: ErrNoSuccess, warning: true},
		{name: "5xx", spec: "duration: 200ms", url: failing.URL, want: ErrNoSuccess, warning: true},
		{name: "silent", spec: "duration: 200ms\ntimeout: -1s", url: silentServer(t), want: ErrNoSuccess, warning: true},
		{name: "bad spec", spec: "duration: -1s", url: srv.URL, want: ErrUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			spec := filepath.Join(dir, "spec.yaml")
			if err := os.WriteFile(spec, []byte(tt.spec+"\nmatrix: {connections: [1]}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := SweepMain(t.Context(), []string{"-o", filepath.Join(dir, "out"), "--url", tt.url, spec}, Env{Stdout: &stdout, Stderr: &stderr})
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v\n%s", err, tt.want, stderr.String())
			}
			if tt.want == ErrNoSuccess && errors.Is(err, ErrUsage) {
				t.Fatalf("error %v would exit 2", err)
			}
			if got := strings.Contains(stderr.String(), "    warning: "); got != tt.warning {
				t.Fatalf("warning in the log %v, want %v:\n%s", got, tt.warning, stderr.String())
			}
		})
	}
}
