//go:build linux

package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"testing"
	"time"
)

// TestCPUVersusWrk checks that the generator and wrk can be measured side
// by side, as `quartet bench --vs-wrk` does: both load the fasthttp peer
// and report their client CPU per request, which it logs. How the two
// compare is for BenchmarkCPUVersusWrk to report, not for a test to judge:
// alone, with or without the race detector, the generator took 0.8-1.0
// times wrk's CPU a request here, but in CI, under the race detector and
// beside the other packages' tests (go test runs two at once on two
// cores), a bound of twice wrk's failed at 2.57 and 3.69 times (December
// 2026).
func TestCPUVersusWrk(t *testing.T) {
	ours, theirs := cpuVersusWrk(t)
	t.Logf("quartet bench %v/request (%.0f req/s), wrk %v/request (%.0f req/s): ratio %.2f",
		ours.ClientCPUPerRequest(), ours.RequestsPerSec, theirs.CPUPerRequest(), theirs.RequestsPerSec,
		float64(ours.ClientCPUPerRequest())/float64(theirs.CPUPerRequest()))
	if ours.Requests == 0 || ours.ClientCPUPerRequest() <= 0 {
		t.Errorf("quartet bench: %d requests, %v client CPU per request", ours.Requests, ours.ClientCPUPerRequest())
	}
	if theirs.Requests == 0 || theirs.CPUPerRequest() <= 0 {
		t.Errorf("wrk: %d requests, %v CPU per request", theirs.Requests, theirs.CPUPerRequest())
	}
}

// BenchmarkCPUVersusWrk reports the generator's client CPU per request
// (client-ns/req) and its ratio to wrk's in the same iteration (x-wrk),
// the median over iterations of one 2 s run each, alternating: the
// generator should stay well within twice wrk's (December 2026, two shared
// cores: 0.89x, 13.9 µs a request, over three iterations).
//
//	go test ./bench -run '^$' -bench CPUVersusWrk -benchtime 5x
func BenchmarkCPUVersusWrk(b *testing.B) {
	var ratios, client []float64
	for b.Loop() {
		ours, theirs := cpuVersusWrk(b)
		ratios = append(ratios, float64(ours.ClientCPUPerRequest())/float64(theirs.CPUPerRequest()))
		client = append(client, float64(ours.ClientCPUPerRequest()))
	}
	b.ReportMetric(median(ratios), "x-wrk")
	b.ReportMetric(median(client), "client-ns/req")
}

// cpuVersusWrk runs the generator, then wrk, for 2 s each with the same
// connections and threads against the fasthttp peer: a separate process,
// so each one's process CPU is the client's alone.
func cpuVersusWrk(tb testing.TB) (ours *Result, theirs WrkResult) {
	tb.Helper()
	ctx := tb.Context()
	if testing.Short() {
		tb.Skip("load runs")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		tb.Skip("wrk not installed (Debian package wrk); skipping the CPU comparison")
	}
	wd, _ := os.Getwd()
	dir, err := FindPeersDir(filepath.Dir(wd))
	if err != nil {
		tb.Fatal(err)
	}
	bin, err := BuildPeers(ctx, dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(bin)
	srv, err := StartProcess(ctx, "fasthttp", []string{filepath.Join(bin, "fasthttp"), "-addr", "127.0.0.1:0"})
	if err != nil {
		tb.Fatal(err)
	}
	defer srv.Close()
	const conns, loops, d = 50, 2, 2 * time.Second
	// As `quartet bench` does (spareProcs), restored for the other tests.
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(max(goruntime.GOMAXPROCS(0), loops+2)))
	if ours, err = Run(ctx, Config{URL: srv.URL() + "/hello", Conns: conns, Loops: loops, Duration: d}); err != nil {
		tb.Fatal(err)
	}
	if theirs, err = RunWrk(ctx, WrkConfig{URL: srv.URL() + "/hello", Conns: conns, Threads: loops, Duration: d}); err != nil {
		tb.Fatal(err)
	}
	return ours, theirs
}
