//go:build linux

package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Syscall-count timing.
const (
	// syscallSettle runs the load before counting: connections open, the
	// server warm, and the untraced throughput measured over its second
	// half.
	syscallSettle = time.Second
	// tracerTimeout bounds a tracer's start and stop.
	tracerTimeout = 15 * time.Second
)

// tracer counts a process's system calls between its start and off.
type tracer interface {
	// off stops counting and returns the total and, where the method
	// names them, each syscall's count.
	off() (uint64, []SyscallStat, error)
}

// SyscallMethodAvailable reports whether method can count here, and why
// not: perf needs the raw_syscalls tracepoint (perf_event_paranoid, a
// kernel with tracepoints), strace needs ptrace.
func SyscallMethodAvailable(ctx context.Context, method string) error {
	switch method {
	case SyscallsPerf:
		if _, err := exec.LookPath("perf"); err != nil {
			return errors.New("perf not found in PATH (Debian package linux-perf)")
		}
		out, err := exec.CommandContext(ctx, "perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true").CombinedOutput()
		if err != nil {
			return fmt.Errorf("perf stat -e raw_syscalls:sys_enter failed: %v: %s", err, strings.TrimSpace(string(out)))
		}
		if _, err := parsePerfCount(out); err != nil {
			return err
		}
		return nil
	case SyscallsStrace:
		if _, err := exec.LookPath("strace"); err != nil {
			return errors.New("strace not found in PATH (Debian package strace)")
		}
		return nil
	}
	return fmt.Errorf("bench: unknown syscall counting method %q (want perf or strace)", method)
}

// startTracer starts counting the syscalls of pid and of its descendants
// with method; it returns once counting has begun. work holds its files.
// The descendants count because a server may be several processes:
// nginx's master sleeps while its workers serve, and perf stat on the
// master alone counts nothing.
func startTracer(ctx context.Context, method string, pid int, work string) (tracer, error) {
	switch method {
	case SyscallsPerf:
		return startPerf(ctx, pid, work)
	case SyscallsStrace:
		return startStrace(ctx, pid, work)
	}
	return nil, fmt.Errorf("bench: unknown syscall counting method %q", method)
}

// perfTracer is perf stat started with its events disabled and driven
// through its control FIFO, so that counting starts and stops when the
// tool says, not when perf happens to have attached.
type perfTracer struct {
	cmd      *exec.Cmd
	ctl      *os.File
	acks     chan string
	out, dir string
}

func startPerf(ctx context.Context, pid int, work string) (*perfTracer, error) {
	dir, err := os.MkdirTemp(work, "perf-")
	if err != nil {
		return nil, err
	}
	ctlPath, ackPath := filepath.Join(dir, "ctl"), filepath.Join(dir, "ack")
	for _, p := range []string{ctlPath, ackPath} {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, os.NewSyscallError("mkfifo", err)
		}
	}
	// O_RDWR: opening a FIFO so never blocks waiting for the other end.
	ctl, err1 := os.OpenFile(ctlPath, os.O_RDWR, 0)
	ack, err2 := os.OpenFile(ackPath, os.O_RDWR, 0)
	if err := errors.Join(err1, err2); err != nil {
		for _, f := range []*os.File{ctl, ack} {
			if f != nil {
				f.Close()
			}
		}
		os.RemoveAll(dir)
		return nil, err
	}
	t := &perfTracer{ctl: ctl, acks: make(chan string, 4), out: filepath.Join(dir, "out"), dir: dir}
	go func() {
		defer ack.Close()
		sc := bufio.NewScanner(ack)
		for sc.Scan() {
			t.acks <- sc.Text()
		}
	}()
	pids := make([]string, 0, 4)
	for _, p := range procTree(pid) {
		pids = append(pids, strconv.Itoa(p))
	}
	t.cmd = exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strings.Join(pids, ","),
		"-D", "-1", "--control", "fifo:"+ctlPath+","+ackPath, "-o", t.out)
	if err := t.cmd.Start(); err != nil {
		t.cleanup()
		return nil, fmt.Errorf("bench: perf: %w", err)
	}
	if err := t.command(ctx, "enable"); err != nil {
		_ = t.cmd.Process.Kill()
		_ = t.cmd.Wait()
		t.cleanup()
		return nil, err
	}
	return t, nil
}

// command sends perf a control command and waits for its ack.
func (t *perfTracer) command(ctx context.Context, c string) error {
	if _, err := t.ctl.WriteString(c + "\n"); err != nil {
		return fmt.Errorf("bench: perf control: %w", err)
	}
	timer := time.NewTimer(tracerTimeout)
	defer timer.Stop()
	select {
	case <-t.acks:
		return nil
	case <-timer.C:
		return fmt.Errorf("bench: perf did not acknowledge %q within %v", c, tracerTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *perfTracer) off() (uint64, []SyscallStat, error) {
	defer t.cleanup()
	err := t.command(context.Background(), "disable")
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	_ = t.cmd.Wait() // perf may exit non-zero after SIGINT: its output decides
	if err != nil {
		return 0, nil, err
	}
	out, err := os.ReadFile(t.out)
	if err != nil {
		return 0, nil, err
	}
	n, err := parsePerfCount(out)
	return n, nil, err
}

func (t *perfTracer) cleanup() {
	t.ctl.Close() // the ack reader ends when perf closes its end
	os.RemoveAll(t.dir)
}

// straceTracer is strace -c -f attached to every thread of the server.
type straceTracer struct {
	cmd      *exec.Cmd
	out, dir string
}

func startStrace(ctx context.Context, pid int, work string) (*straceTracer, error) {
	dir, err := os.MkdirTemp(work, "strace-")
	if err != nil {
		return nil, err
	}
	t := &straceTracer{out: filepath.Join(dir, "out"), dir: dir}
	pids := procTree(pid)
	args := []string{"-c", "-f", "-q", "-o", t.out}
	for _, p := range pids {
		args = append(args, "-p", strconv.Itoa(p))
	}
	t.cmd = exec.Command("strace", args...)
	if err := t.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: strace: %w", err)
	}
	// Counting has begun once every thread has a tracer.
	deadline := time.Now().Add(tracerTimeout)
	for !allTraced(pids) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = t.cmd.Process.Kill()
			_ = t.cmd.Wait()
			os.RemoveAll(dir)
			return nil, fmt.Errorf("bench: strace did not attach to every thread of %d within %v", pid, tracerTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return t, nil
}

// allTraced reports whether every thread of pids has a tracer.
func allTraced(pids []int) bool {
	for _, pid := range pids {
		if !threadsTraced(pid) {
			return false
		}
	}
	return true
}

func threadsTraced(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "TracerPid:"); ok && strings.TrimSpace(v) == "0" {
				return false
			}
		}
	}
	return true
}

func (t *straceTracer) off() (uint64, []SyscallStat, error) {
	defer os.RemoveAll(t.dir)
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	_ = t.cmd.Wait() // strace exits non-zero when detached by a signal
	out, err := os.ReadFile(t.out)
	if err != nil {
		return 0, nil, err
	}
	return parseStraceSummary(out)
}

// countSyscalls loads srv with the project's generator (load: connections,
// path; one loop, as wrk -t1), lets it settle, and counts the server's
// syscalls with method over one window of the given length. The
// responses in the window come from the generator's live counter, so the
// connections are open before and after: connection set-up is not
// charged to the requests. Several windows are several calls
// (syscallsInTurn), so that other servers' windows can come between.
func countSyscalls(ctx context.Context, method string, srv Server, load Config, window time.Duration, loadCPUs []int, work string) (*SyscallCount, error) {
	if srv.PID() <= 0 || isInProcess(srv) {
		return nil, errors.New("bench: counting syscalls needs a server process of its own")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var answered atomic.Uint64
	cfg := load
	cfg.Warmup, cfg.Duration, cfg.Requests = 0, 24*time.Hour, 0
	cfg.ServerCPU, cfg.ServerPID, cfg.ServerInProcess = nil, 0, false
	cfg.Progress = func(p Progress) { answered.Store(p.Requests) }
	cfg.ProgressEvery = 10 * time.Millisecond
	if loadCPUs != nil {
		restore, err := pinSelf(loadCPUs)
		if err != nil {
			return nil, err
		}
		defer restore()
	}
	runDone := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg)
		runDone <- err
	}()
	ended := false // runDone has been received from
	finished := func() error {
		if ended {
			return nil
		}
		ended = true
		if err := <-runDone; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case err := <-runDone:
			ended = true
			return fmt.Errorf("bench: load for the syscall count stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := sleep(syscallSettle / 2); err != nil {
		cancel()
		return nil, errors.Join(err, finished())
	}
	u0, ut0 := answered.Load(), time.Now()
	if err := sleep(syscallSettle / 2); err != nil {
		cancel()
		return nil, errors.Join(err, finished())
	}
	u1, ut1 := answered.Load(), time.Now()
	sc := &SyscallCount{Method: method, UntracedRPS: float64(u1-u0) / ut1.Sub(ut0).Seconds()}
	tr, err := startTracer(ctx, method, srv.PID(), work)
	if err != nil {
		cancel()
		return nil, errors.Join(err, finished())
	}
	n1, t1 := answered.Load(), time.Now()
	serr := sleep(window)
	n2, t2 := answered.Load(), time.Now()
	total, stats, terr := tr.off()
	if err := errors.Join(serr, terr); err != nil {
		cancel()
		return nil, errors.Join(err, finished())
	}
	if n2 == n1 {
		cancel()
		return sc, errors.Join(errors.New("bench: no responses while counting syscalls"), finished())
	}
	cancel()
	if err := finished(); err != nil {
		return nil, err
	}
	sc.Window, sc.Requests, sc.Syscalls = t2.Sub(t1), n2-n1, total
	sc.TracedRPS = float64(sc.Requests) / sc.Window.Seconds()
	sc.PerRequest = float64(sc.Syscalls) / float64(sc.Requests)
	sc.Windows = []float64{sc.PerRequest}
	for _, st := range stats {
		sc.Top = append(sc.Top, SyscallStat{Name: st.Name, Calls: st.Calls, PerRequest: float64(st.Calls) / float64(sc.Requests)})
	}
	sortSyscallStats(sc.Top)
	return sc, nil
}
