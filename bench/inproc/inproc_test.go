package inproc

import (
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
	// The report gives the sizes the server used, not "default".
	def := runtime.DefaultConfig()
	for _, p := range res.Points {
		if u := p.Used; u == nil || u.Readers != p.Point.Readers || u.Processors != def.Processors || u.Writers != def.Writers {
			t.Errorf("point %v: used %+v, want readers %d, processors %d, writers %d", p.Point, p.Used, p.Point.Readers, def.Processors, def.Writers)
		}
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "share") {
		t.Errorf("an in-process server shares the generator's CPUs; warnings %q", res.Warnings)
	}
}

func TestStartServesBuiltins(t *testing.T) {
	fds, gs := openFDs(t), goruntime.NumGoroutine()
	srv, err := Start(t.Context(), bench.ServerParams{Readers: 1, Processors: 1, Writers: 1})
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
