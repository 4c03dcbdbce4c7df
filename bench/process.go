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

// addrPattern finds a server's address in its start-up output: a peer's
// "http://IP:PORT" line, or quartet serve's slog "addr=IP:PORT".
var addrPattern = regexp.MustCompile(`(?:^http://|addr=)(\d+\.\d+\.\d+\.\d+:\d+)`)

// procServer is a server running as a child process.
type procServer struct {
	name string
	cmd  *exec.Cmd
	url  string
	done chan struct{} // closed when the process has been waited for
	err  error         // Wait's result, valid after done
}

var _ Server = (*procServer)(nil)

// StartProcess runs argv as a server on loopback and waits until it prints
// its address on stdout or stderr (see addrPattern). The process is killed
// if ctx ends.
func StartProcess(ctx context.Context, name string, argv []string) (Server, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
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
	found := make(chan string, 1)
	var tail tailBuffer
	go func() {
		// Drain the output for the life of the process so a chatty server
		// never blocks on a full pipe; remember the last lines for errors.
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			tail.add(line)
			if m := addrPattern.FindStringSubmatch(line); !sent && m != nil {
				found <- "http://" + m[1]
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case p.url = <-found:
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

func (p *procServer) URL() string { return p.url }
func (p *procServer) PID() int    { return p.cmd.Process.Pid }
func (p *procServer) CPU() time.Duration {
	d, _ := ProcCPU(p.PID())
	return d
}

// Close stops the process: SIGTERM, then SIGKILL after stopGrace.
func (p *procServer) Close() error {
	select {
	case <-p.done:
		return nil
	default:
	}
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

// Peer names, in report order.
var peerNames = []string{"nethttp", "gnet", "fasthttp"}

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
	return argv
}
