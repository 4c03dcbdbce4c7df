//go:build linux

package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the Quartet checkout holding this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, _ := os.Getwd()
	dir, err := FindPeersDir(filepath.Dir(wd))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(dir))
}

// buildQuartet builds cmd/quartet into a temporary directory.
func buildQuartet(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "quartet")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/quartet")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building quartet: %v\n%s", err, out)
	}
	return bin
}

// buildPeers builds bench/peers into a temporary directory.
func buildPeers(t *testing.T) string {
	t.Helper()
	dir, err := BuildPeers(t.Context(), filepath.Join(repoRoot(t), "bench", "peers"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runCompare runs `quartet bench compare` with args and returns stdout.
func runCompare(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := Main(t.Context(), append([]string{"compare"}, args...), Env{Stdout: &out, Stderr: &errb}); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	t.Logf("stderr:\n%s", errb.String())
	return out.String()
}

// fields is a line with its runs of spaces folded.
func hasLine(out, prefix string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.Join(strings.Fields(l), " "), prefix) {
			return true
		}
	}
	return false
}

// checkRuns fails t if a run failed outright or a server answered
// anything but 2xx/3xx. Socket errors and timeouts are allowed: a pinned
// server starved of its one CPU by other work on a shared machine times
// requests out without anything being wrong with the tool.
func checkRuns(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "failed") || strings.Contains(out, "error:") {
		t.Errorf("a run failed:\n%s", out)
	}
	runs := false
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "| errors ") {
			runs = true
			if !strings.Contains(l, "non-2xx 0") {
				t.Errorf("answered outside 2xx/3xx: %s", l)
			}
		}
	}
	if !runs {
		t.Errorf("no runs listed:\n%s", out)
	}
}

// TestCompareEndToEnd is issue 15's table from one command, shrunk: the
// quartet binary twice (before/after) against bare gnet, pinned and on
// both cores, with wrk -t1, alternating rounds and syscall counts.
func TestCompareEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds quartet and the peers, runs load")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not installed (Debian package wrk; scripts/test.sh installs it)")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("taskset not installed (Debian package util-linux): the pinned mode needs it")
	}
	bin, peers := buildQuartet(t), buildPeers(t)
	out := runCompare(t, "--quartet", bin, "--quartet-b", bin, "--only", "gnet", "--peer-bin", peers,
		"--conns", "8", "--rounds", "2", "-d", "1s", "-w", "0s", "--syscall-window", "300ms", "--syscall-windows", "2")
	t.Logf("stdout:\n%s", out)
	for _, want := range []string{"server c=8 pinned c=8 both-cores", "quartet / gnet", "quartet-b / quartet", "quartet-b / gnet",
		"Mode pinned: server on CPU 0 with GOMAXPROCS=1"} {
		if !hasLine(out, want) {
			t.Errorf("no line %q", want)
		}
	}
	checkRuns(t, out)
	// Every server's CPU per request is known in both modes.
	for _, srv := range []string{"quartet", "quartet-b", "gnet"} {
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == srv && strings.HasSuffix(f[1], "µs") && strings.HasSuffix(f[2], "µs") {
				goto found
			}
		}
		t.Errorf("no CPU per request for %s", srv)
	found:
	}
	// Pinned, each run also knows how busy the server's CPU was.
	if !strings.Contains(out, "Server CPU busy per request, pinned modes") {
		t.Error("no table of the server CPU's busy time")
	}
	for _, l := range strings.Split(out, "\n") {
		// A run's line, not a warning about the cell ("Warning: pinned
		// c=8 /hello: the load generator was 98% busy ...").
		isRun := strings.Contains(l, " pinned c=8 /hello: ") && strings.Contains(l, " | ")
		if isRun && !strings.Contains(l, "| busy ") {
			t.Errorf("a pinned run without its CPU's busy time: %s", l)
		}
	}
	// And every run knows how busy wrk was: a share of its one thread's core.
	if !strings.Contains(out, "Load generator CPU per request") {
		t.Error("no table of the load generator's CPU")
	}
	for _, srv := range []string{"quartet", "quartet-b", "gnet"} {
		if !regexp.MustCompile(`(?m)^` + srv + ` +[0-9.]+µs \(\d+%\) +[0-9.]+µs \(\d+%\)$`).MatchString(out) {
			t.Errorf("no load generator CPU and share for %s in both modes", srv)
		}
	}
	switch {
	case SyscallMethodAvailable(t.Context(), SyscallsPerf) == nil:
		if !strings.Contains(out, "Syscalls per request: perf stat") {
			t.Error("perf works here but syscalls were not counted with it")
		}
		// Each server's count, with the least and the most of its two
		// windows.
		for _, srv := range []string{"quartet", "quartet-b", "gnet"} {
			re := regexp.MustCompile(`(?m)^` + srv + `( +([0-9.]+) \[([0-9.]+)-([0-9.]+)\] \([0-9.]+×\)){2}$`)
			m := re.FindStringSubmatch(out)
			if m == nil {
				t.Errorf("no syscall count with its spread for %s in both modes", srv)
				continue
			}
			all, lo, hi := atof(t, m[2]), atof(t, m[3]), atof(t, m[4])
			if lo > all || all > hi {
				t.Errorf("%s: %v syscalls a request in all, %v-%v in its windows", srv, all, lo, hi)
			}
		}
	case SyscallMethodAvailable(t.Context(), SyscallsStrace) == nil:
		if !strings.Contains(out, "Syscalls per request: strace") {
			t.Error("strace works here but syscalls were not counted with it")
		}
	default:
		t.Log("neither perf nor strace can count syscalls here")
	}
}

func atof(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCompareOwnGeneratorJSON compares an in-process net/http server, as
// the URL of a server the tool did not start, with the gnet peer, using
// the project's generator: a URL cannot be pinned, and says so per row.
func TestCompareOwnGeneratorJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the peers, runs load")
	}
	srv, served := countingServer(t)
	peers := buildPeers(t)
	var res CompareResult
	checkReleased(t, func() {
		out := runCompare(t, "--gen", "quartet", "--json", "--only", "gnet", "--peer-bin", peers, "--conns", "2,4",
			"--rounds", "2", "-d", "200ms", "-w", "0s", "--syscalls", "off", srv.URL+"/hello")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		srv.CloseClientConnections()
	})
	if served.Load() == 0 {
		t.Fatal("the URL server saw nothing")
	}
	if len(res.Rows) != 2*2*2 || res.Generator != GenQuartet || res.SyscallNote != "--syscalls off" {
		t.Fatalf("%d rows, generator %q, note %q", len(res.Rows), res.Generator, res.SyscallNote)
	}
	for _, row := range res.Rows {
		pinnedURL := row.Server == "quartet" && row.Mode == "pinned"
		switch {
		case pinnedURL:
			if len(row.Samples) != 0 || !strings.Contains(row.Err, "cannot be pinned") {
				t.Errorf("%s %s: samples %d, error %q", row.Server, row.Mode, len(row.Samples), row.Err)
			}
		case len(row.Samples) != 2 || row.Err != "" || row.RequestsPerSec <= 0:
			t.Errorf("%s %s c=%d: %d samples, error %q", row.Server, row.Mode, row.Conns, len(row.Samples), row.Err)
		case row.Server == "gnet" && (row.CPUPerRequest <= 0 || row.Mode == "both-cores" && row.RPSRatio["quartet"] <= 0):
			t.Errorf("gnet %s c=%d: CPU %v, ratios %v", row.Mode, row.Conns, row.CPUPerRequest, row.RPSRatio)
		case row.Server == "quartet" && row.CPUPerRequest != 0:
			t.Errorf("a URL without --server-pid has no known CPU, got %v", row.CPUPerRequest)
		case row.LoadCPUPerRequest <= 0 || row.LoadShare <= 0 || row.LoadShare > 1.5:
			// One loop (as wrk -t1): its thread's CPU over the window.
			t.Errorf("%s %s c=%d: load generator %v a request, %.2f of its core", row.Server, row.Mode, row.Conns, row.LoadCPUPerRequest, row.LoadShare)
		}
	}
}

// TestCompareStatic is the static-file comparison against nginx and the
// floor of a Go static-file server, with the idle-memory summary.
func TestCompareStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds quartet, runs load")
	}
	for _, tool := range []string{"wrk", "nginx", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: the static comparison needs wrk, nginx and taskset", tool)
		}
	}
	bin, peers := buildQuartet(t), buildPeers(t)
	out := runCompare(t, "--static", "--quartet", bin, "--only", "nginx,"+sendfilePeer, "--peer-bin", peers,
		"--rounds", "1", "-d", "1s", "-w", "0s", "--conns", "4", "--syscalls", "off", "--idle", "50")
	t.Logf("stdout:\n%s", out)
	for _, want := range []string{"GET /4k.bin, /1m.bin keep-alive", "server c=4 pinned /4k.bin c=4 pinned /1m.bin c=4 both-cores /4k.bin c=4 both-cores /1m.bin",
		"quartet / nginx", "quartet / sendfile", "Idle memory per keep-alive connection", "server 50 conns"} {
		if !hasLine(out, want) && !strings.Contains(out, want) {
			t.Errorf("no %q", want)
		}
	}
	checkRuns(t, out)
	if strings.Contains(out, "stopped:") {
		t.Error("the idle experiment stopped")
	}
}

// TestCompareMsg is issue 17's messenger figures from one command,
// shrunk: Quartet's echo against the bare gnet messenger peer's and
// against Quartet's own GET /hello, with ratios from the same rounds.
func TestCompareMsg(t *testing.T) {
	if testing.Short() {
		t.Skip("builds quartet and the peers, runs load")
	}
	bin, peers := buildQuartet(t), buildPeers(t)
	var res CompareResult
	checkReleased(t, func() {
		out := runCompare(t, "--msg", "--quartet", bin, "--peer-bin", peers, "--modes", "both-cores", "--conns", "4",
			"--rounds", "2", "-d", "300ms", "-w", "0s", "--syscalls", "off", "--json")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
	})
	if got := strings.Join(res.Servers, " "); got != "quartet-msg gnetmsg quartet-http" ||
		strings.Join(res.MsgServers, " ") != "quartet-msg gnetmsg" || res.MsgPayload != DefaultMsgPayload || res.Generator != GenQuartet {
		t.Fatalf("servers %q, messenger %q, payload %d, generator %q", got, res.MsgServers, res.MsgPayload, res.Generator)
	}
	for _, row := range res.Rows {
		if len(row.Samples) != 2 || row.Err != "" || row.Errors != 0 || row.RequestsPerSec <= 0 || row.CPUPerRequest <= 0 {
			t.Errorf("%s: %d samples, error %q, %d errors, %.0f/s, CPU %v", row.Server, len(row.Samples), row.Err, row.Errors, row.RequestsPerSec, row.CPUPerRequest)
		}
		if row.Server == "quartet-msg" && (row.CPURatio["gnetmsg"] <= 0 || row.CPURatio["quartet-http"] <= 0 || row.RPSRatio["gnetmsg"] <= 0) {
			t.Errorf("quartet-msg ratios: CPU %v, rate %v", row.CPURatio, row.RPSRatio)
		}
	}
	var text bytes.Buffer
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Messenger echo of 13 bytes on quartet-msg, gnetmsg", "quartet-msg / gnetmsg", "quartet-msg / quartet-http",
		"quartet-msg both-cores c=4 echo of 13 bytes:"} {
		if !strings.Contains(strings.Join(strings.Fields(text.String()), " "), want) {
			t.Errorf("no %q in:\n%s", want, text.String())
		}
	}
}
