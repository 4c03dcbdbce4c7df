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

// TestCPUVersusWrk runs the generator and wrk alternately against the
// fasthttp peer (a separate process, so the process CPU is the client's
// alone) and logs client CPU per request for both. It fails only on a gross
// regression (more than twice wrk's): on a shared machine the ratio
// wanders by ±15% from run to run.
func TestCPUVersusWrk(t *testing.T) {
	if testing.Short() {
		t.Skip("load runs")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not installed (Debian package wrk); skipping the CPU comparison")
	}
	wd, _ := os.Getwd()
	dir, err := FindPeersDir(filepath.Dir(wd))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildPeers(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bin)
	srv, err := StartProcess(t.Context(), "fasthttp", []string{filepath.Join(bin, "fasthttp"), "-addr", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const conns, loops, d = 50, 2, 2 * time.Second
	// As `quartet bench` does (spareProcs), restored for the other tests.
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(max(goruntime.GOMAXPROCS(0), loops+2)))
	var ratios []float64
	for range 2 {
		ours, err := Run(t.Context(), Config{URL: srv.URL() + "/hello", Conns: conns, Loops: loops, Duration: d})
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := RunWrk(t.Context(), WrkConfig{URL: srv.URL() + "/hello", Conns: conns, Threads: loops, Duration: d})
		if err != nil {
			t.Fatal(err)
		}
		r := float64(ours.ClientCPUPerRequest()) / float64(theirs.CPUPerRequest())
		t.Logf("quartet bench %v/request (%.0f req/s), wrk %v/request (%.0f req/s): ratio %.2f",
			ours.ClientCPUPerRequest(), ours.RequestsPerSec, theirs.CPUPerRequest(), theirs.RequestsPerSec, r)
		ratios = append(ratios, r)
	}
	if best := min(ratios[0], ratios[1]); best > 2 {
		t.Fatalf("client CPU per request is %.2f times wrk's", best)
	}
}
