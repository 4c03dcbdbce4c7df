package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/bench"
)

// These tests run the real binary, as an operator or systemd would: the
// signals, exit codes and logs are the process's, not a function's.

var built struct {
	once sync.Once
	path string
	err  error
}

// Stamped into the test binary, as a release build would be.
const testVersion, testCommit = "v0.0.0-test", "c0ffee123456"

func quartetBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "quartet-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "quartet")
		out, err := exec.Command("go", "build", "-o", built.path,
			"-ldflags", "-X main.version="+testVersion+" -X main.commit="+testCommit, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.path != "" {
		os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// proc is a running `quartet serve`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    *lockedWriter // stderr
	url    string        // from the startup line
	admin  string
	exited chan struct{}
	code   int
}

var startLine = regexp.MustCompile(`msg="quartet serving" url=(\S+) .*admin=(\S+)`)

// startQuartet runs the binary and waits for its startup line.
func startQuartet(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, log: &lockedWriter{w: &strings.Builder{}}, exited: make(chan struct{})}
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
	})
	m := p.waitLog(startLine)
	p.url, p.admin = m[1], m[2]
	return p
}

func serveCmd(t *testing.T, args ...string) *exec.Cmd {
	return exec.Command(quartetBinary(t), append([]string{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, args...)...)
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *proc) waitLog(re *regexp.Regexp) []string {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.log.String()); m != nil {
			return m
		}
		select {
		case <-p.exited:
			if m := re.FindStringSubmatch(p.log.String()); m != nil {
				return m
			}
			p.t.Fatalf("exited %d before logging %q:\n%s", p.code, re, p.log)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no log line %q:\n%s", re, p.log)
		}
	}
}

func (p *proc) signal(s os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(s); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(30 * time.Second):
		p.t.Fatalf("did not exit:\n%s", p.log)
		return -1
	}
}

// inFlight starts GET path and returns where its "STATUS BODY" (or the
// error) arrives.
func (p *proc) inFlight(path string) <-chan string {
	out := make(chan string, 1)
	go func() { out <- fetch(p.t, "GET", p.url+path) }()
	return out
}

// waitBusy waits until a request is in a handler, as the process's
// /metrics tells (the process must run with --metrics-addr). The count is
// the reader's census, up to a second old: the request must run longer.
func (p *proc) waitBusy() {
	p.t.Helper()
	busy := regexp.MustCompile(`(?m)^quartet_connections\{state="processing"\} [1-9]`)
	for deadline := time.Now().Add(20 * time.Second); !busy.MatchString(fetch(p.t, "GET", p.admin+"/metrics")); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("no request reached a handler:\n%s", p.log)
		}
	}
}

func TestSignals(t *testing.T) {
	t.Run("SIGTERM finishes the request in flight", func(t *testing.T) {
		p := startQuartet(t, serveCmd(t))
		resp := p.inFlight("/sleep?ms=1500")
		p.waitBusy()
		p.signal(syscall.SIGTERM)
		signalled := time.Now()
		if got := <-resp; got != "200 OK\n" {
			t.Errorf("in-flight request: %q", got)
		}
		answeredAfter := time.Since(signalled)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d:\n%s", code, p.log)
		}
		// The last line says it stopped cleanly, and what it served.
		lines := strings.Split(strings.TrimSpace(p.log.String()), "\n")
		last := regexp.MustCompile(`level=INFO msg="quartet stopped" uptime=\S+ shutdown_took=(\S+) connections=\d+ responses=([1-9]\d*)$`).FindStringSubmatch(lines[len(lines)-1])
		if last == nil {
			t.Errorf("last line %q, want quartet stopped with its counts", lines[len(lines)-1])
		} else if took, err := time.ParseDuration(last[1]); err != nil || took < answeredAfter-50*time.Millisecond {
			t.Errorf("shutdown_took=%s, but the request in flight was answered %v after SIGTERM", last[1], answeredAfter)
		}
	})
	t.Run("a second SIGINT stops at once", func(t *testing.T) {
		p := startQuartet(t, serveCmd(t))
		resp := p.inFlight("/sleep?ms=60000")
		p.waitBusy()
		p.signal(syscall.SIGINT)
		p.waitLog(regexp.MustCompile("shutting down"))
		time.Sleep(2 * sameSignal) // a second request to stop, not the first one twice
		p.signal(syscall.SIGINT)
		if code := p.wait(); code != 1 {
			t.Errorf("exit %d, want 1:\n%s", code, p.log)
		}
		if got := <-resp; !strings.HasPrefix(got, "error") {
			t.Errorf("cut-off request: %q", got)
		}
		if !strings.Contains(p.log.String(), "quartet serve: stopped by a second signal: cut off 1 open connection(s), 1 with a handler running") {
			t.Errorf("the exit does not say what was cut off:\n%s", p.log)
		}
	})
	// GNU timeout signals the child and then its process group: the
	// server gets two SIGTERMs at once, which are one request to stop.
	// Go's runtime merges a signal that arrives before the first is
	// taken, so the second here comes a little later, as on a busy
	// machine, where the server would otherwise see two.
	t.Run("two signals together are one", func(t *testing.T) {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
			p := startQuartet(t, serveCmd(t))
			resp := p.inFlight("/sleep?ms=1500")
			p.waitBusy()
			p.signal(sig)
			time.Sleep(sameSignal / 5)
			p.signal(sig)
			if got := <-resp; got != "200 OK\n" {
				t.Errorf("%v twice: the request in flight got %q", sig, got)
			}
			if code := p.wait(); code != 0 {
				t.Errorf("%v twice: exit %d, want 0:\n%s", sig, code, p.log)
			}
		}
	})
	t.Run("--shutdown-timeout bounds the grace", func(t *testing.T) {
		p := startQuartet(t, serveCmd(t, "--shutdown-timeout", "300ms"))
		resp := p.inFlight("/sleep?ms=2500")
		p.waitBusy()
		p.signal(syscall.SIGTERM)
		if got := <-resp; !strings.HasPrefix(got, "error") {
			t.Errorf("request past the grace: %q", got)
		}
		if code := p.wait(); code != 1 || !strings.Contains(p.log.String(), "grace over") {
			t.Errorf("exit %d, want 1 and the grace's end logged:\n%s", code, p.log)
		}
	})
	t.Run("--shutdown-timeout bounds the exit while a handler blocks", func(t *testing.T) {
		// A handler blocked on its own work (20 s) outlives its closed
		// connection; the process exits 2 s after the grace without it,
		// where it exited only when the handler returned.
		p := startQuartet(t, serveCmd(t, "--shutdown-timeout", "300ms"))
		resp := p.inFlight("/sleep?ms=20000")
		p.waitBusy()
		start := time.Now()
		p.signal(syscall.SIGTERM)
		code := p.wait()
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("exit after %v, with the grace 300ms", took)
		}
		if code != 1 || !strings.Contains(p.log.String(), "abandoning the handlers still running") {
			t.Errorf("exit %d, want 1 and the abandoned handler logged:\n%s", code, p.log)
		}
		<-resp
	})
	t.Run("SIGHUP without --config is not fatal", func(t *testing.T) {
		p := startQuartet(t, serveCmd(t))
		// Longer than the reader's census interval (1 s), so waitBusy sees it.
		resp := p.inFlight("/sleep?ms=2500")
		p.waitBusy()
		p.signal(syscall.SIGHUP)
		p.waitLog(regexp.MustCompile("SIGHUP: no --config file to reload"))
		if got := <-resp; got != "200 OK\n" {
			t.Errorf("request across SIGHUP: %q", got)
		}
		if got := fetch(t, "GET", p.url+"/hello"); got != "200 Hello, World!" {
			t.Errorf("after SIGHUP: %q", got)
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d", code)
		}
	})
	t.Run("SIGHUP reloads what can change live", func(t *testing.T) {
		dir := t.TempDir()
		a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
		os.Mkdir(a, 0o755)
		os.Mkdir(b, 0o755)
		os.WriteFile(filepath.Join(a, "page"), []byte("from a"), 0o644)
		os.WriteFile(filepath.Join(b, "page"), []byte("from b"), 0o644)
		cfg := filepath.Join(dir, "q.yaml")
		os.WriteFile(cfg, []byte("root: "+a+"\nreaders: 1\nprocessors: 4\nqueue: 1024\n"), 0o644)
		p := startQuartet(t, serveCmd(t, "--config", cfg))
		if got := fetch(t, "GET", p.url+"/page"); got != "200 from a" {
			t.Fatalf("before: %q", got)
		}
		os.WriteFile(cfg, []byte("root: "+b+"\nreaders: 2\nbench-endpoints: true\nprocessors-min: 2\nprocessors-max: 16\nqueue: 2048\n"), 0o644)
		p.signal(syscall.SIGHUP)
		p.waitLog(regexp.MustCompile(`SIGHUP: configuration reloaded`))
		// The pool pinned at 4 gets a controller between 2 and 16.
		p.waitLog(regexp.MustCompile(`stage bounds changed.*min=2 max=16 auto=true.*cause="config \(SIGHUP\)"`))
		// The reader stage pinned at 1 gets a second loop, live.
		p.waitLog(regexp.MustCompile(`stage resized" stage=reader from=1 to=2 cause="config \(SIGHUP\)"`))
		if !strings.Contains(p.log.String(), "queue: 1024 -> 2048") {
			t.Errorf("the setting that needs a restart is not named:\n%s", p.log)
		}
		if got := fetch(t, "GET", p.url+"/page"); got != "200 from b" {
			t.Errorf("after reload: %q", got)
		}
		if got := fetch(t, "GET", p.url+"/hello"); got != "200 Hello, World!" {
			t.Errorf("bench endpoints after reload: %q", got)
		}
		os.WriteFile(cfg, []byte("root: "+a+"\nreaderz: 2\n"), 0o644)
		p.signal(syscall.SIGHUP)
		p.waitLog(regexp.MustCompile(`reload failed; the running configuration stays.*unknown key \\"readerz\\"`))
		if got := fetch(t, "GET", p.url+"/page"); got != "200 from b" {
			t.Errorf("after a failed reload: %q", got)
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d:\n%s", code, p.log)
		}
	})
	t.Run("SIGHUP rebuilds the static cache with its new settings, and /metrics follows it", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "page"), []byte("a page"), 0o644)
		cfg := filepath.Join(dir, "q.yaml")
		// First the embedded site: no cache, no series.
		os.WriteFile(cfg, []byte("static-in-memory-budget: 1MiB\n"), 0o644)
		p := startQuartet(t, serveCmd(t, "--config", cfg))
		if got := staticSeries(t, p.admin+"/metrics"); len(got) != 0 {
			t.Errorf("static series for the embedded site: %v", got)
		}
		reloaded := regexp.MustCompile(`SIGHUP: configuration reloaded`)
		reload := func(yaml string) {
			t.Helper()
			before := len(reloaded.FindAllString(p.log.String(), -1))
			os.WriteFile(cfg, []byte(yaml), 0o644)
			p.signal(syscall.SIGHUP)
			for deadline := time.Now().Add(20 * time.Second); len(reloaded.FindAllString(p.log.String(), -1)) == before; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("reload not logged:\n%s", p.log)
				}
			}
		}
		for _, step := range []struct {
			yaml string
			want map[string]float64
		}{
			{"root: " + dir + "\nstatic-in-memory-budget: 1MiB\nstatic-in-memory: 64\n", map[string]float64{
				"quartet_static_files_opened_total": 1, "quartet_static_cache_hits_total": 1, "quartet_static_in_memory_files": 1,
				"quartet_static_in_memory_budget_bytes": 1 << 20, "quartet_static_in_memory_file_max_bytes": 64,
			}},
			// A new Dir with the new settings; the counters go on from
			// the replaced one's (no reset for Prometheus to see).
			{"root: " + dir + "\nstatic-in-memory-budget: 2MiB\nstatic-in-memory: 0\nstatic-cache-entries: 4\n", map[string]float64{
				"quartet_static_files_opened_total": 2, "quartet_static_cache_hits_total": 2, "quartet_static_in_memory_files": 0,
				"quartet_static_in_memory_budget_bytes": 2 << 20, "quartet_static_in_memory_file_max_bytes": 0,
				"quartet_static_cache_entries_max": 4,
			}},
			// Nothing the handler serves changed: the same Dir, still
			// warm, its counters going on.
			{"root: " + dir + "\nstatic-in-memory-budget: 2MiB\nstatic-in-memory: 0\nstatic-cache-entries: 4\nlog-level: debug\n", map[string]float64{
				"quartet_static_files_opened_total": 2, "quartet_static_cache_hits_total": 4,
			}},
		} {
			reload(step.yaml)
			for range 2 {
				if got := fetch(t, "GET", p.url+"/page"); got != "200 a page" {
					t.Fatalf("after reload: %q", got)
				}
			}
			got := staticSeries(t, p.admin+"/metrics")
			for name, want := range step.want {
				if got[name] != want {
					t.Errorf("%s = %v, want %v (config %q)", name, got[name], want, step.yaml)
				}
			}
		}
		// Another root: the replaced directory is closed (its root and
		// its cached file) soon after, while the new one serves.
		if n := fdsUnder(t, p.cmd.Process.Pid, dir); n == 0 {
			t.Fatalf("no fd under %s while it is served", dir)
		}
		dir2 := t.TempDir()
		os.WriteFile(filepath.Join(dir2, "page"), []byte("another page"), 0o644)
		reload("root: " + dir2 + "\n")
		if got := fetch(t, "GET", p.url+"/page"); got != "200 another page" {
			t.Fatalf("after the new root: %q", got)
		}
		for deadline := time.Now().Add(20 * time.Second); fdsUnder(t, p.cmd.Process.Pid, dir) > 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d fds still under the replaced root %s", fdsUnder(t, p.cmd.Process.Pid, dir), dir)
			}
		}
		if got := fetch(t, "GET", p.url+"/page"); got != "200 another page" {
			t.Fatalf("after the old root was closed: %q", got)
		}
		// The closed directories' counts stay in the totals.
		got := staticSeries(t, p.admin+"/metrics")
		for name, want := range map[string]float64{"quartet_static_files_opened_total": 3, "quartet_static_cache_hits_total": 5} {
			if got[name] != want {
				t.Errorf("%s = %v after the old roots closed, want %v", name, got[name], want)
			}
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d:\n%s", code, p.log)
		}
	})
	t.Run("--log-level filters, and SIGHUP changes it", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "q.yaml")
		os.WriteFile(cfg, []byte("log-level: info\nqueue: 1024\n"), 0o644)
		p := startQuartet(t, serveCmd(t, "--config", cfg))
		p.waitLog(regexp.MustCompile(`level=INFO msg="quartet: stage sized"`))
		os.WriteFile(cfg, []byte("log-level: warn\nqueue: 2048\n"), 0o644)
		restartOnly := regexp.MustCompile(`level=WARN msg="SIGHUP: these settings change only on a restart`)
		p.signal(syscall.SIGHUP)
		p.waitLog(restartOnly)
		// Nothing changes now: at warn the info line saying so is dropped,
		// the warning about the queue (a restart-only setting) still shows.
		p.signal(syscall.SIGHUP)
		deadline := time.Now().Add(20 * time.Second)
		for len(restartOnly.FindAllString(p.log.String(), -1)) < 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		log := p.log.String()
		if n := len(restartOnly.FindAllString(log, -1)); n != 2 {
			t.Fatalf("%d restart warnings, want 2:\n%s", n, log)
		}
		for _, info := range []string{"SIGHUP: configuration reloaded", "nothing that can change live changed"} {
			if strings.Contains(log, info) {
				t.Errorf("info line %q logged at --log-level warn:\n%s", info, log)
			}
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d:\n%s", code, p.log)
		}
	})
	t.Run("SIGUSR1 reopens the access log", func(t *testing.T) {
		dir := t.TempDir()
		logPath := filepath.Join(dir, "access.log")
		p := startQuartet(t, serveCmd(t, "--access-log", logPath))
		fetch(t, "GET", p.url+"/hello")
		waitLines(t, logPath, 1)
		os.Rename(logPath, logPath+".1") // logrotate
		p.signal(syscall.SIGUSR1)
		p.waitLog(regexp.MustCompile("SIGUSR1: access log reopened"))
		fetch(t, "GET", p.url+"/bytes?n=7")
		waitLines(t, logPath, 1)
		if lines := readLines(t, logPath+".1"); len(lines) != 1 || !strings.Contains(lines[0], "GET /hello") {
			t.Errorf("rotated file: %q", lines)
		}
		if lines := readLines(t, logPath); !strings.Contains(lines[0], `"GET /bytes?n=7 HTTP/1.1" 200 7 `) {
			t.Errorf("new file: %q", lines)
		}
		p.signal(syscall.SIGTERM)
		p.wait()
	})
	t.Run("SIGUSR1 without an access log file says so", func(t *testing.T) {
		for _, tt := range []struct {
			args []string
			want string
		}{
			{nil, "SIGUSR1: there is no access log to reopen (--access-log is not set)"},
			{[]string{"--access-log", "-"}, "SIGUSR1: the access log goes to stdout; there is no file to reopen"},
		} {
			p := startQuartet(t, serveCmd(t, tt.args...))
			p.signal(syscall.SIGUSR1)
			p.waitLog(regexp.MustCompile(regexp.QuoteMeta(tt.want)))
			if strings.Contains(p.log.String(), "access log reopened") {
				t.Errorf("%v: a reopen is claimed:\n%s", tt.args, p.log)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(); code != 0 {
				t.Errorf("%v: exit %d:\n%s", tt.args, code, p.log)
			}
		}
	})
	t.Run("the access log has every line once the server has stopped", func(t *testing.T) {
		logPath := filepath.Join(t.TempDir(), "access.log")
		p := startQuartet(t, serveCmd(t, "--access-log", logPath))
		const requests = 50
		for range requests {
			fetch(t, "GET", p.url+"/hello")
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d:\n%s", code, p.log)
		}
		// No waiting: the lines gathered for the flusher are written out
		// before the file is closed.
		if lines := readLines(t, logPath); len(lines) != requests || !strings.Contains(lines[requests-1], `"GET /hello HTTP/1.1" 200 13 `) {
			t.Errorf("%d lines after the stop, want %d; last %q", len(lines), requests, lines[len(lines)-1])
		}
	})
	t.Run("an access log that takes no lines says so", func(t *testing.T) {
		if _, err := os.Stat("/dev/full"); err != nil {
			t.Skipf("no /dev/full: %v", err)
		}
		p := startQuartet(t, serveCmd(t, "--access-log", "/dev/full")) // every write: ENOSPC
		for range 5 {
			fetch(t, "GET", p.url+"/hello") // served all the same
		}
		lost := regexp.MustCompile(`level=ERROR msg="quartet: access log: lines lost" output=/dev/full err=".*no space left on device" lines=[1-5]`)
		p.waitLog(lost)
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d:\n%s", code, p.log)
		}
		if n := len(regexp.MustCompile("access log: lines lost").FindAllString(p.log.String(), -1)); n != 1 {
			t.Errorf("%d lines about lost access log lines for 5 lost, want 1 (then one each 10 s):\n%s", n, p.log)
		}
	})
}

func readLines(t *testing.T, path string) []string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func waitLines(t *testing.T, path string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(readLines(t, path)) < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d lines, want %d", path, len(readLines(t, path)), n)
		}
	}
}

// A systemd unit with Type=notify and socket activation, played by the
// test: the listening socket is passed as descriptor 3 with LISTEN_FDS,
// and the notifications are read from NOTIFY_SOCKET.
func TestSocketActivationAndNotify(t *testing.T) {
	bin := quartetBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	sock, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	notifyPath := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	states := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(states)
				return
			}
			states <- string(buf[:n])
		}
	}()
	expect := func(want string) string {
		t.Helper()
		select {
		case s := <-states:
			if !strings.Contains(s, want) {
				t.Fatalf("notification %q, want %q", s, want)
			}
			return s
		case <-time.After(20 * time.Second):
			t.Fatalf("no notification %q", want)
			return ""
		}
	}
	// systemd sets LISTEN_PID to the service's pid; the shell's $$ is the
	// pid that exec keeps.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" serve --addr 127.0.0.1:1`, bin)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=quartet.socket", "NOTIFY_SOCKET="+notifyPath)
	cmd.ExtraFiles = []*os.File{sock}
	p := startQuartet(t, cmd)
	if p.url != "http://"+addr {
		t.Errorf("serving %s, want the passed socket's %s (--addr is ignored)", p.url, addr)
	}
	if s := expect("READY=1"); !strings.Contains(s, "STATUS=serving http://"+addr) {
		t.Errorf("ready notification %q", s)
	}
	if got := fetch(t, "GET", "http://"+addr+"/hello"); got != "200 Hello, World!" {
		t.Errorf("on the passed socket: %q", got)
	}
	p.signal(syscall.SIGHUP)
	expect("RELOADING=1")
	expect("READY=1")
	p.signal(syscall.SIGTERM)
	expect("STOPPING=1")
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d:\n%s", code, p.log)
	}
}

// The startup line and the logs an operator reads: JSON when asked, the
// URL actually bound, RDMA off unless asked for; the build on /metrics and
// health on the admin listener.
func TestStartupLogHealthAndBuildInfo(t *testing.T) {
	cmd := serveCmd(t, "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	var start map[string]any
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		if v, ok := m["queue_wait_target"]; ok && v != "500ms" {
			t.Errorf("queue_wait_target logged as %v (%T), want \"500ms\"", v, v)
		}
		if m["msg"] == "quartet serving" {
			start = m
			break
		}
	}
	if start == nil {
		t.Fatalf("no startup line in %q", lines)
	}
	go io.Copy(io.Discard, stderr)
	url, _ := start["url"].(string)
	if !regexp.MustCompile(`^http://127\.0\.0\.1:[1-9]\d*$`).MatchString(url) {
		t.Errorf("url %q: want the bound address", url)
	}
	if start["rdma"] != "off" || start["root"] != "(embedded sample site)" || start["version"] != testVersion {
		t.Errorf("startup line %v", start)
	}
	for _, l := range lines {
		if strings.Contains(l, "rdma") && !strings.Contains(l, "quartet serving") {
			t.Errorf("RDMA logged on a plain start: %s", l)
		}
	}
	admin, _ := start["admin"].(string)
	if got := fetch(t, "GET", admin+"/healthz"); got != "200 ok\n" {
		t.Errorf("/healthz: %q", got)
	}
	if got := fetch(t, "GET", admin+"/readyz"); got != "200 ready\n" {
		t.Errorf("/readyz: %q", got)
	}
	m := fetch(t, "GET", admin+"/metrics")
	want := fmt.Sprintf(`quartet_build_info{commit=%q,goversion=`, testCommit)
	if !strings.Contains(m, want) || !strings.Contains(m, fmt.Sprintf(`version=%q} 1`, testVersion)) {
		t.Errorf("no build info in /metrics")
	}
}

// The command line's manners: help on stdout when asked for, usage errors
// on stderr with exit 2 and one line without stutter, the version.
func TestCommandLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		args        []string
		code        int
		stdout      string // substring; "" for empty
		stderr      string // the whole first line, or a prefix ending in "*"
		stderrLines int
	}{
		{[]string{}, 2, "", "usage: quartet COMMAND*", 0},
		{[]string{"help"}, 0, "usage: quartet COMMAND", "", 0},
		{[]string{"--help"}, 0, "  serve    run the server: HTTP/1.1, and the messenger with --msg-addr", "", 0},
		{[]string{"nope"}, 2, "", `quartet: unknown command "nope"`, 0},
		{[]string{"version"}, 0, "quartet devel (commit unknown, go", "", 0},
		{[]string{"serve", "-h"}, 0, "usage: quartet serve [flags]", "", 0},
		{[]string{"serve", "--help"}, 0, "--max-header-bytes", "", 0},
		{[]string{"bench", "-h"}, 0, "usage: quartet bench", "", 0},
		{[]string{"serve", "--bogus"}, 2, "", "quartet serve: flag provided but not defined: -bogus", 2},
		{[]string{"serve", "--readers", "-1"}, 2, "", "quartet serve: --readers = -1: must be 0..1024", 2},
		{[]string{"serve", "--static-in-memory", "abc"}, 2, "", `quartet serve: invalid value "abc" for flag -static-in-memory: "abc" is not a size (like 65536, 64KiB, 64MiB, 1GiB)`, 2},
		{[]string{"serve", "--memory-limit", "0"}, 2, "", `quartet serve: invalid value "0" for flag -memory-limit: "0": want auto, off or a size above 0`, 2},
		{[]string{"serve", "extra"}, 2, "", `quartet serve: unexpected argument "extra"`, 2},
		{[]string{"serve", "--reuseport", "true"}, 2, "", `quartet serve: unexpected argument "true": --reuseport is a switch: alone it means true, and a value goes after "=" (--reuseport=false)`, 2},
		{[]string{"serve", "--bench-endpoints", "on"}, 2, "", `quartet serve: unexpected argument "on": --bench-endpoints is a switch: alone it means true, and a value goes after "=" (--bench-endpoints=false)`, 2},
		{[]string{"serve", "--addr", "127.0.0.1:0", "extra"}, 2, "", `quartet serve: unexpected argument "extra"`, 2},
		{[]string{"serve", "--reuseport=true", "extra"}, 2, "", `quartet serve: unexpected argument "extra"`, 2},
		{[]string{"serve", "--reuseport", "--", "extra"}, 2, "", `quartet serve: unexpected argument "extra"`, 2},
		{[]string{"serve", "--addr", busy.Addr().String()}, 1, "", "quartet serve: listener: " + busy.Addr().String() + ": bind: address already in use", 1},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--msg-addr", "nonsense"}, 2, "", `quartet serve: --msg-addr = nonsense: must be host:port, the port a number 0..65535 or a service name`, 2},
		// Every command's usage errors exit 2, not only serve's.
		{[]string{"get"}, 2, "", "usage: quartet get URL*", 0},
		{[]string{"get", "foo"}, 2, "", `quartet get: URL "foo": want http://host[:port]/path`, 2},
		{[]string{"get", "http://127.0.0.1:1/x", "--rdma", "nope"}, 2, "", `quartet get: deliver: unknown mode "nope" (server-writes, client-reads, off)`, 2},
		{[]string{"get", "http://127.0.0.1:1/x", "--provider", "nope"}, 2, "", `quartet get: --provider "nope": want verbs, soft or auto`, 2},
		{[]string{"msg"}, 2, "", "usage: quartet msg HOST:PORT*", 0},
		{[]string{"proxy"}, 2, "", `quartet proxy: --upstream "": want http://host:port`, 2},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "extra"}, 2, "", `quartet proxy: unexpected argument "extra"`, 2},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "-q"}, 2, "", "quartet proxy: flag provided but not defined: -q", 2}, // get's, not proxy's
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--clients", "0"}, 2, "", "quartet proxy: --clients must be at least 1", 2},
		{[]string{"rdma"}, 2, "", "usage: quartet rdma*", 0},
		{[]string{"rdma", "nope"}, 2, "", "usage: quartet rdma*", 0},
		{[]string{"rdma", "--provider", "nope", "devices"}, 2, "", `quartet rdma: --provider "nope": want verbs, soft or auto`, 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			code := run(ctx, tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr.String())
			}
			if tt.stdout == "" && stdout.Len() > 0 || !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.stdout)
			}
			first, _, _ := strings.Cut(stderr.String(), "\n")
			switch {
			case tt.stderr == "" && stderr.Len() > 0:
				t.Errorf("stderr %q, want none", stderr.String())
			case strings.HasSuffix(tt.stderr, "*") && !strings.HasPrefix(first, strings.TrimSuffix(tt.stderr, "*")),
				!strings.HasSuffix(tt.stderr, "*") && first != tt.stderr:
				t.Errorf("stderr %q, want %q", first, tt.stderr)
			}
			if tt.stderrLines > 0 && strings.Count(stderr.String(), "\n") != tt.stderrLines {
				t.Errorf("stderr %q: want %d lines", stderr.String(), tt.stderrLines)
			}
		})
	}
	out, err := exec.Command(quartetBinary(t), "--version").Output()
	if want := "quartet " + testVersion + " (commit " + testCommit + ", go"; err != nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("stamped binary --version: %q %v, want %q", out, err, want)
	}
}

// The load tools start `quartet serve --addr 127.0.0.1:0` and learn its
// port from the startup line.
func TestLoadToolsFindTheBoundAddress(t *testing.T) {
	srv, err := bench.StartProcess(context.Background(), "quartet", []string{quartetBinary(t), "serve", "--addr", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if got := fetch(t, "GET", srv.URL()+"/hello"); got != "200 Hello, World!" {
		t.Fatalf("%s/hello: %q", srv.URL(), got)
	}
}

// fdsUnder counts the fds of process pid open on dir or on a file under it.
func fdsUnder(t *testing.T, pid int, dir string) int {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatalf("reading %s: %v", fdDir, err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && (target == dir || strings.HasPrefix(target, dir+"/")) {
			n++
		}
	}
	return n
}

// A JSON log stays JSON to its last line: the error a server stops with is
// logged in it, not printed plain after it. (TestStartupLogHealthAndBuildInfo
// checks that durations are written as Go writes them, "500ms", not as
// integers of nanoseconds.)
func TestJSONLogToTheEnd(t *testing.T) {
	cmd := serveCmd(t, "--log-format", "json", "--root", filepath.Join(t.TempDir(), "missing"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want 1\n%s", err, stderr.String())
	}
	var last map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		last = nil
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
	}
	if msg, _ := last["msg"].(string); last["level"] != "ERROR" || !strings.Contains(msg, "missing") {
		t.Fatalf("last line %v: want the error that stopped it", last)
	}
}
