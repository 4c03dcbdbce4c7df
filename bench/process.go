package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process start-up and shut-down bounds.
const (
	// startTimeout bounds how long a server may take to print its address.
	startTimeout = 15 * time.Second
	// stopGrace is how long a server gets after SIGTERM before SIGKILL.
	stopGrace = 3 * time.Second
)

// addrPattern finds an address in a server's start-up output: a peer's
// "http://IP:PORT" line (gnetmsg's "msg://IP:PORT"), or quartet serve's
// log ("addr=IP:PORT" in text, "addr":"IP:PORT" in JSON). The same line
// names the admin endpoint, where the metrics are (see adminPattern), and
// the messenger's address (msgAddrPattern).
var addrPattern = regexp.MustCompile(`(?:^http://|^msg://|\baddr"?[=:]"?|\burl"?[=:]"?http://)(\d+\.\d+\.\d+\.\d+:\d+)`)

// msgAddrPattern finds the messenger's address in quartet serve's
// start-up line ("messenger=IP:PORT", or "messenger":"IP:PORT" in JSON)
// when it serves one (--msg-addr).
var msgAddrPattern = regexp.MustCompile(`\bmessenger"?[=:]"?(\d+\.\d+\.\d+\.\d+:\d+)`)

// adminPattern finds the admin (metrics) endpoint in quartet serve's
// start-up line ("admin=http://IP:PORT", or "admin":"http://IP:PORT" in
// JSON); "admin=off" has none.
var adminPattern = regexp.MustCompile(`\badmin"?[=:]"?http://(\d+\.\d+\.\d+\.\d+:\d+)`)

// paramPattern finds the stage sizes quartet serve logs when it starts
// ("readers=2 processors=8 ..."), so reports show the values used.
var paramPattern = regexp.MustCompile(`\b(readers|processors|writers|queue|max-conns)"?[=:]"?(\d+)`)

// ProcSpec is a server to run as a child process.
type ProcSpec struct {
	Name string
	Argv []string
	// Env is added to the inherited environment (e.g. GOMAXPROCS=1).
	Env []string
	// CPUs, if set, pins the server to these CPUs (taskset's list
	// syntax, e.g. "0" or "0-1").
	CPUs string
	// Msg: the server is measured on its messenger address, so its URL
	// is msg://IP:PORT (quartet serve's "messenger="); a server that
	// prints none fails to start. A peer whose first line is msg://IP:PORT
	// needs no Msg.
	Msg bool
}

// procServer is a server running as a child process.
type procServer struct {
	name    string
	cmd     *exec.Cmd
	url     string
	metrics string        // metrics endpoint's base URL, if it printed one
	params  ServerParams  // stage sizes it logged, if any
	done    chan struct{} // closed when the process has been waited for
	err     error         // Wait's result, valid after done
	paused  bool          // stopped by Pause, not yet resumed
}

var _ Server = (*procServer)(nil)

// StartProcess runs argv as a server on loopback and waits until it prints
// its address on stdout or stderr (see addrPattern). The process is killed
// if ctx ends.
func StartProcess(ctx context.Context, name string, argv []string) (Server, error) {
	return StartProc(ctx, ProcSpec{Name: name, Argv: argv})
}

// StartProc is StartProcess with an environment and CPU pinning.
func StartProc(ctx context.Context, spec ProcSpec) (Server, error) {
	name, argv := spec.Name, spec.Argv
	if spec.CPUs != "" {
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return nil, fmt.Errorf("bench: pinning %s: taskset not found (Debian package util-linux)", name)
		}
		argv = append([]string{ts, "-c", spec.CPUs}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if len(spec.Env) > 0 {
		cmd.Env = append(os.Environ(), spec.Env...)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	p := &procServer{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	type found struct {
		url, metrics string
		params       ServerParams
	}
	got := make(chan found, 1)
	var tail tailBuffer
	go func() {
		// Drain the output for the life of the process so a chatty server
		// never blocks on a full pipe; remember the last lines for errors.
		sc := bufio.NewScanner(pr)
		sent := false
		var f found
		for sc.Scan() {
			line := sc.Text()
			tail.add(line)
			url := lineURL(line, spec.Msg)
			if sent || url == "" {
				continue
			}
			if a := adminPattern.FindStringSubmatch(line); a != nil {
				f.metrics = "http://" + a[1] + "/metrics"
			}
			f.url, f.params = url, parseParams(line)
			got <- f
			sent = true
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case f := <-got:
		p.url, p.metrics, p.params = f.url, f.metrics, f.params
		if spec.Msg && !IsMsgTarget(p.url) {
			_ = p.Close()
			return nil, fmt.Errorf("bench: %s: printed %s, not the messenger's address", name, p.url)
		}
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("bench: %s exited before listening (%v): %s", name, p.err, tail.String())
	case <-timer.C:
		err := fmt.Errorf("bench: %s printed no address within %v: %s", name, startTimeout, tail.String())
		_ = p.Close()
		return nil, err
	case <-ctx.Done():
		_ = p.Close()
		return nil, ctx.Err()
	}
}

// lineURL is the server's URL a start-up line announces, "" if it names
// none: http://IP:PORT, or msg://IP:PORT for a peer's msg:// line and,
// with msg, for quartet serve's messenger address.
func lineURL(line string, msg bool) string {
	m := addrPattern.FindStringSubmatch(line)
	switch {
	case m == nil:
		return ""
	case strings.HasPrefix(line, msgScheme):
		return msgScheme + m[1]
	}
	if a := msgAddrPattern.FindStringSubmatch(line); a != nil && msg {
		return msgScheme + a[1]
	}
	return "http://" + m[1]
}

// parseParams reads the stage sizes from a start-up line.
func parseParams(line string) ServerParams {
	var p ServerParams
	for _, m := range paramPattern.FindAllStringSubmatch(line, -1) {
		v, _ := strconv.Atoi(m[2])
		switch m[1] {
		case "readers":
			p.Readers = v
		case "processors":
			p.Processors = v
		case "writers":
			p.Writers = v
		case "queue":
			p.QueueCapacity = v
		case "max-conns":
			p.MaxConns = v
		}
	}
	return p
}

func (p *procServer) URL() string { return p.url }

// MetricsURL is the server's Prometheus endpoint, "" if it printed none.
func (p *procServer) MetricsURL() string { return p.metrics }

// Params are the stage sizes the server logged, ok false if none.
func (p *procServer) Params() (ServerParams, bool) { return p.params, p.params != ServerParams{} }

func (p *procServer) PID() int { return p.cmd.Process.Pid }
func (p *procServer) CPU() time.Duration {
	d, _ := ProcCPU(p.PID())
	return d
}

// Pause stops the process and its children (SIGSTOP) until Resume: a
// comparison leaves only the server it measures running (pausable).
func (p *procServer) Pause() error { return p.setPaused(true) }

// Resume continues what Pause stopped (SIGCONT).
func (p *procServer) Resume() error { return p.setPaused(false) }

func (p *procServer) setPaused(pause bool) error {
	select {
	case <-p.done:
		return nil // reaped: its pid may be another process's by now
	default:
	}
	if p.paused == pause {
		return nil
	}
	sig, doing := syscall.SIGCONT, "resuming"
	if pause {
		sig, doing = syscall.SIGSTOP, "pausing"
	}
	if err := signalTree(p.PID(), sig); err != nil {
		return fmt.Errorf("bench: %s %s: %w", doing, p.name, err)
	}
	p.paused = pause
	return nil
}

// Close stops the process: SIGTERM, then SIGKILL after stopGrace. A paused
// process is resumed first, or it would see the SIGTERM only when killed.
func (p *procServer) Close() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.Resume()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// tailBuffer keeps the last few lines of a child's output.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 8 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, s)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, " | ")
}

// ErrNoPeers is returned when the peers module cannot be found.
var ErrNoPeers = errors.New("bench: bench/peers module not found (run from the Quartet checkout or pass --peers DIR)")

// FindPeersDir looks for bench/peers/go.mod from dir upwards.
func FindPeersDir(dir string) (string, error) {
	for {
		p := filepath.Join(dir, "bench", "peers")
		if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
			return p, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", ErrNoPeers
		}
		dir = up
	}
}

// BuildPeers builds the peer commands of the module in dir into a new
// temporary directory and returns it; the caller removes it.
func BuildPeers(ctx context.Context, dir string) (string, error) {
	out, err := os.MkdirTemp("", "quartet-peers-")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out+string(filepath.Separator), "./...")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(out)
		return "", fmt.Errorf("bench: building peers in %s: %w: %s", dir, err, b)
	}
	return out, nil
}

// quartetArgs is `quartet serve` with p's stage sizes on a loopback port.
func quartetArgs(bin string, p ServerParams) []string {
	argv := []string{bin, "serve", "--addr", "127.0.0.1:0"}
	add := func(flag string, v int) {
		if v > 0 {
			argv = append(argv, flag, strconv.Itoa(v))
		}
	}
	add("--readers", p.Readers)
	add("--processors", p.Processors)
	add("--writers", p.Writers)
	add("--queue", p.QueueCapacity)
	add("--max-conns", p.MaxConns)
	if p.Metrics {
		argv = append(argv, "--metrics-addr", "127.0.0.1:0")
	}
	return argv
}
