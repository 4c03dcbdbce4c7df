//go:build linux

package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// server is one `quartet serve` process. Its stderr (the server's log) is
// kept for the test log; the process is stopped with SIGTERM at cleanup,
// and must exit 0.
type server struct {
	t       *testing.T
	cmd     *exec.Cmd
	addr    string // HTTP listener
	metrics string // admin listener (/metrics)
	scrape  *http.Client

	mu  sync.Mutex
	log []string // every line the server logged
	// expected are ERROR lines a trial provokes on purpose (a substring
	// of each): errorsLogged leaves them out.
	expected []string
	exited   chan struct{}
	err      error // Wait's result, once exited is closed
}

// serverStartTimeout bounds the wait for the server's first log lines.
const serverStartTimeout = 20 * time.Second

// stopTimeout bounds graceful shutdown: the server's own grace is 30 s.
const stopTimeout = 40 * time.Second

// servingRE finds the server's and the admin endpoint's addresses in quartet
// serve's start-up line.
var servingRE = regexp.MustCompile(`msg="quartet serving" .*\baddr=(\S+) .*\badmin=http://(\S+)`)

// startServer runs quartet serve on 127.0.0.1:0 with one reader, one
// writer and eight processors (the default on two CPUs, named so the
// trials do not depend on the machine) and RDMA off; flags override those
// and set the trial's timeouts.
func startServer(t *testing.T, flags ...string) *server {
	t.Helper()
	args := []string{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--rdma", "off",
		"--readers", "1", "--writers", "1", "--processors", "8",
		"--pprof"} // goroutines are counted from /debug/pprof/goroutine (see resources)
	if tier.benchEndpoints {
		args = append(args, "--bench-endpoints")
	}
	args = append(args, flags...) // a flag given twice: the last wins
	s := &server{t: t, cmd: exec.Command(tier.binary, args...), exited: make(chan struct{}),
		// No kept connections, so a scrape leaves nothing behind in the
		// server to count.
		scrape: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	// If this test process dies (a panic, go test's timeout), the server
	// must not outlive it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", tier.binary, err)
	}
	addrs := make(chan [2]string, 2)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log = append(s.log, line)
			s.mu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil {
				addrs <- [2]string{m[1], m[2]}
			}
		}
		io.Copy(io.Discard, stderr)
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.stop)
	deadline := time.After(serverStartTimeout)
	for s.addr == "" || s.metrics == "" {
		select {
		case a := <-addrs:
			s.addr, s.metrics = a[0], a[1]
		case <-s.exited:
			t.Fatalf("quartet serve exited at start: %v\n%s", s.err, s.logText())
		case <-deadline:
			t.Fatalf("quartet serve did not report its addresses in %v:\n%s", serverStartTimeout, s.logText())
		}
	}
	t.Logf("quartet serve %s: pid %d, http %s, metrics %s", strings.Join(args[1:], " "), s.cmd.Process.Pid, s.addr, s.metrics)
	return s
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tail := s.log
	if len(tail) > 40 {
		tail = tail[len(tail)-40:]
	}
	return strings.Join(tail, "\n")
}

// errorsLogged returns the server's log lines at level ERROR (handler
// panics) and any Go runtime crash.
func (s *server) errorsLogged() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var bad []string
	for _, l := range s.log {
		if strings.Contains(l, "level=ERROR") && !s.isExpected(l) || strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			bad = append(bad, l)
		}
	}
	return bad
}

// expectErrors declares ERROR lines the trial provokes: those containing
// any of substrings are not the server's failures.
func (s *server) expectErrors(substrings ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expected = append(s.expected, substrings...)
}

func (s *server) isExpected(line string) bool {
	for _, e := range s.expected {
		if strings.Contains(line, e) {
			return true
		}
	}
	return false
}

// logged returns the lines the server has logged that contain substring.
func (s *server) logged(substring string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.log {
		if strings.Contains(l, substring) {
			out = append(out, l)
		}
	}
	return out
}

// terminate sends SIGTERM and waits for the exit: graceful shutdown.
func (s *server) terminate() (exitCode int, took time.Duration, err error) {
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, 0, err
	}
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
		return -1, time.Since(start), fmt.Errorf("no exit %v after SIGTERM; killed", stopTimeout)
	}
	return s.cmd.ProcessState.ExitCode(), time.Since(start), nil
}

// stop ends the server if the test has not, and checks how it went: no
// errors logged, exit status 0 after SIGTERM.
func (s *server) stop() {
	select {
	case <-s.exited:
	default:
		code, took, err := s.terminate()
		switch {
		case err != nil:
			s.t.Errorf("stopping the server: %v\n%s", err, s.logText())
		case code != 0:
			s.t.Errorf("server exited %d after SIGTERM (%v)\n%s", code, took, s.logText())
		}
	}
	if bad := s.errorsLogged(); len(bad) > 0 {
		if len(bad) > 10 {
			bad = append(bad[:10], fmt.Sprintf("... and %d more", len(bad)-10))
		}
		s.t.Errorf("the server logged errors:\n%s", strings.Join(bad, "\n"))
	}
}

// resources is what the server holds at one moment.
type resources struct {
	fds        int // open file descriptors
	goroutines int // go_goroutines
	// The processor pool's goroutines (quartet_stage_goroutines) and
	// places (quartet_stage_size): a handler parked on its client keeps
	// its goroutine while another takes its place, and one left without
	// a place waits as a spare (at most one per place) until it retires.
	poolGoroutines, poolSize int
	conns                    int   // quartet_connections, all states (counted once a second)
	rss                      int64 // resident set, bytes
}

func (r resources) String() string {
	return fmt.Sprintf("fds %d, goroutines %d, connections %d, RSS %.1f MiB", r.fds, r.goroutines, r.conns, float64(r.rss)/(1<<20))
}

// resources reads /proc for fds and RSS, /debug/pprof/goroutine for the
// goroutines, and /metrics for connections and the processor pool.
//
// go_goroutines on /metrics cannot be the count: Prometheus's Gather
// collects in parallel, a goroutine per collector while they keep up,
// and the Go collector reads the count while those run, so it wanders
// by as many as there are collectors from one scrape to the next (a soak
// failed on 27 against a baseline of 24 with nothing leaked). The
// goroutine profile's total counts one goroutine of the scrape, the one
// writing the profile, which is taken off. It is read first, so that the
// last /metrics scrape's connection (not kept) has had its interval to
// end.
func (s *server) resources() (resources, error) {
	var r resources
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid()))
	if err != nil {
		return r, err
	}
	r.fds = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid()))
	if err != nil {
		return r, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			r.rss = kb << 10
		}
	}
	if r.goroutines, err = s.goroutines(); err != nil {
		return r, err
	}
	metrics, err := s.adminGet("/metrics")
	if err != nil {
		return r, err
	}
	sawPool := false
	for _, l := range strings.Split(metrics, "\n") {
		switch {
		case strings.HasPrefix(l, `quartet_stage_goroutines{stage="processor"} `):
			r.poolGoroutines, err = metricInt(l)
			sawPool = true
		case strings.HasPrefix(l, `quartet_stage_size{stage="processor"} `):
			r.poolSize, err = metricInt(l)
		case strings.HasPrefix(l, "quartet_connections{"):
			var n int
			n, err = metricInt(l)
			r.conns += n
		}
		if err != nil {
			return r, err
		}
	}
	if !sawPool {
		return r, errors.New(`no quartet_stage_goroutines{stage="processor"} in /metrics`)
	}
	return r, nil
}

// adminGet fetches one path of the admin listener, whole.
func (s *server) adminGet(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.metrics+path, nil)
	resp, err := s.scrape.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), err
}

// goroutines reads the total of the server's goroutine profile, less the
// goroutine that writes it.
func (s *server) goroutines() (int, error) {
	profile, err := s.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(profile, "\n")
	total, ok := strings.CutPrefix(strings.TrimSpace(first), "goroutine profile: total ")
	n, err := strconv.Atoi(total)
	if !ok || err != nil {
		return 0, fmt.Errorf("goroutine profile begins %q, not with its total", first)
	}
	return n - 1, nil
}

// metric scrapes /metrics for one series, named with its labels as the
// exposition writes them (quartet_stage_size{stage="processor"}).
func (s *server) metric(series string) (int, error) {
	metrics, err := s.adminGet("/metrics")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, series+" ") {
			return metricInt(l)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", series)
}

func metricInt(line string) (int, error) {
	f := strings.Fields(line)
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		return 0, fmt.Errorf("metric line %q: %v", line, err)
	}
	return int(v), nil
}
