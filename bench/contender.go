package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// CompareMode is how the servers and the load generator share the CPUs
// during a comparison.
type CompareMode struct {
	Name string `json:"name"`
	// ServerCPUs and LoadCPUs pin the server and the generator (taskset's
	// list syntax); empty leaves them where the scheduler puts them.
	ServerCPUs string `json:"server_cpus,omitempty"`
	LoadCPUs   string `json:"load_cpus,omitempty"`
	// Procs is the server's parallelism: GOMAXPROCS for Go servers, the
	// worker processes for nginx; 0 leaves each its default.
	Procs int `json:"procs,omitempty"`
}

// Pinned is the mode of issue 15's first columns: the server on one CPU
// with GOMAXPROCS=1 (one nginx worker), the generator on another.
func Pinned(serverCPU, loadCPU int) CompareMode {
	return CompareMode{Name: "pinned", ServerCPUs: strconv.Itoa(serverCPU), LoadCPUs: strconv.Itoa(loadCPU), Procs: 1}
}

// BothCores leaves server and generator unpinned on all the machine's
// CPUs, each server with its default parallelism.
var BothCores = CompareMode{Name: "both-cores"}

// pinned reports whether m pins anything.
func (m CompareMode) pinned() bool { return m.ServerCPUs != "" || m.LoadCPUs != "" }

// Contender is one server of a comparison.
type Contender struct {
	Name string
	// Start starts the server for mode m. A contender that cannot honour
	// m's pinning returns an error rather than measure something else.
	Start func(ctx context.Context, m CompareMode) (Server, error)
	// StartIdle starts it for the idle-memory experiment, with keep-alive
	// timeouts longer than the experiment.
	StartIdle func(ctx context.Context) (Server, error)
	// Commit is the Quartet revision of the binary it runs, where that
	// binary carries a VCS stamp ("" otherwise, and for peers).
	Commit string
}

// procEnv is the environment a Go server gets in mode m.
func procEnv(m CompareMode) []string {
	if m.Procs > 0 {
		return []string{"GOMAXPROCS=" + strconv.Itoa(m.Procs)}
	}
	return nil
}

// GoProcess is a contender run from argv, a Go server that prints its
// address (a peer, or quartet serve).
func GoProcess(name string, argv, idleArgs []string) Contender {
	return goProcess(name, argv, idleArgs, false)
}

// goProcess is GoProcess, measured on its messenger address when msg is
// set.
func goProcess(name string, argv, idleArgs []string, msg bool) Contender {
	return Contender{
		Name: name,
		Start: func(ctx context.Context, m CompareMode) (Server, error) {
			return StartProc(ctx, ProcSpec{Name: name, Argv: argv, Env: procEnv(m), CPUs: m.ServerCPUs, Msg: msg})
		},
		StartIdle: func(ctx context.Context) (Server, error) {
			return StartProc(ctx, ProcSpec{Name: name, Argv: append(append([]string(nil), argv...), idleArgs...)})
		},
	}
}

// QuartetProcess is `bin serve` on a loopback port with extra flags.
func QuartetProcess(name, bin string, extra []string) Contender {
	argv := append(quartetArgs(bin, ServerParams{}), extra...)
	// Quartet closes keep-alive connections idle for 60 s by default;
	// opening 100k takes longer than that in a VM.
	c := GoProcess(name, argv, []string{"--idle-timeout", idleServerTimeout.String()})
	c.Commit = binaryCommit(bin)
	return c
}

// QuartetMsgProcess is `bin serve` with the messenger's echo on a
// loopback port (--msg-addr, with extra flags), measured there: its URL
// is msg://IP:PORT.
func QuartetMsgProcess(name, bin string, extra []string) Contender {
	argv := append(append(quartetArgs(bin, ServerParams{}), "--msg-addr", "127.0.0.1:0"), extra...)
	c := goProcess(name, argv, []string{"--idle-timeout", idleServerTimeout.String()}, true)
	c.Commit = binaryCommit(bin)
	return c
}

// PeerProcess is one of the peers built from bench/peers into dir.
func PeerProcess(name, dir string) Contender {
	return GoProcess(name, []string{filepath.Join(dir, name), "-addr", "127.0.0.1:0"}, nil)
}

// errCannotPin is returned by contenders the tool did not start as a
// process of their own.
var errCannotPin = errors.New("bench: this server cannot be pinned (it was not started by the tool as a process of its own)")

// URLContender is a server the tool did not start; pid, if known, gives
// its CPU time. It cannot be pinned.
func URLContender(name, url string, pid int) Contender {
	start := func(ctx context.Context) (Server, error) { return urlServer{url: url, pid: pid}, nil }
	return Contender{
		Name: name,
		Start: func(ctx context.Context, m CompareMode) (Server, error) {
			if m.pinned() {
				return nil, errCannotPin
			}
			return start(ctx)
		},
		StartIdle: start,
	}
}

// InProcessContender is Quartet in the generator's own process; it cannot
// be pinned apart from the generator, and its CPU time is an estimate.
func InProcessContender(name string, start StartServer) Contender {
	return Contender{
		Name: name,
		Start: func(ctx context.Context, m CompareMode) (Server, error) {
			if m.pinned() {
				return nil, errCannotPin
			}
			return start(ctx, ServerParams{})
		},
		StartIdle: func(ctx context.Context) (Server, error) { return start(ctx, ServerParams{}) },
	}
}

// Static files of the static comparison: sizes where the header path and
// the open-file cache dominate (4 KiB), and where sendfile does (1 MiB).
var staticFiles = []struct {
	Name string
	Size int
}{{"4k.bin", 4 << 10}, {"1m.bin", 1 << 20}}

// writeStaticFiles fills dir with staticFiles' random contents.
func writeStaticFiles(dir string) error {
	for _, f := range staticFiles {
		b := make([]byte, f.Size)
		_, _ = rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, f.Name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// NginxContender is Debian's nginx serving root, started by the tool with
// a configuration of its own (sendfile, open-file cache, no access log,
// keep-alive without limits), in the foreground. Its workers are
// mode.Procs, or workers when that is 0.
func NginxContender(root, work string, workers int) Contender {
	start := func(ctx context.Context, m CompareMode, idle bool) (Server, error) {
		n := workers
		if m.Procs > 0 {
			n = m.Procs
		}
		return startNginx(ctx, root, work, n, m.ServerCPUs, idle)
	}
	return Contender{
		Name:      "nginx",
		Start:     func(ctx context.Context, m CompareMode) (Server, error) { return start(ctx, m, false) },
		StartIdle: func(ctx context.Context) (Server, error) { return start(ctx, BothCores, true) },
	}
}

// ErrNoNginx is returned when the static comparison finds no nginx.
var ErrNoNginx = errors.New("bench: nginx not found in PATH (Debian package nginx-light)")

// nginxServer is a running nginx: the master is the tool's child, and the
// server's CPU is the master's and its workers'.
type nginxServer struct {
	*procServer
	dir string
}

func (n *nginxServer) CPU() time.Duration {
	d, _ := ProcTreeCPU(n.PID())
	return d
}

// RSS is the master's and its workers' resident memory.
func (n *nginxServer) RSS() (uint64, error) { return ProcTreeRSS(n.PID()) }

func (n *nginxServer) Close() error {
	err := n.procServer.Close()
	return errors.Join(err, os.RemoveAll(n.dir))
}

func startNginx(ctx context.Context, root, work string, workers int, cpus string, idle bool) (Server, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, ErrNoNginx
	}
	dir, err := os.MkdirTemp(work, "nginx-")
	if err != nil {
		return nil, err
	}
	// Started as root, nginx's workers run as nobody: they must be able
	// to reach the files it serves and writes.
	for _, d := range []string{work, root, dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	keepalive := "75s"
	if idle {
		keepalive = "24h"
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 20000; }
worker_rlimit_nofile 40000;
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000000;
  keepalive_timeout %[3]s;
  open_file_cache max=1024;
  types { application/octet-stream bin; }
  client_body_temp_path %[2]s; proxy_temp_path %[2]s; fastcgi_temp_path %[2]s; uwsgi_temp_path %[2]s; scgi_temp_path %[2]s;
  server { listen 127.0.0.1:%[4]d; root %[5]s; location = /hello { return 200 "Hello, World!"; } }
}
`, workers, dir, keepalive, port, root)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// nginx prints nothing when it starts: a wrapper line gives
	// StartProc the address once the port accepts.
	s, err := startAndProbe(ctx, ProcSpec{Name: "nginx", Argv: []string{bin, "-c", confPath, "-e", filepath.Join(dir, "error.log")}, CPUs: cpus},
		"127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &nginxServer{procServer: s, dir: dir}, nil
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the server binds it; the server then fails to start,
// with a clear error.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startAndProbe starts a server that prints no address and waits until
// addr accepts connections.
func startAndProbe(ctx context.Context, spec ProcSpec, addr string) (*procServer, error) {
	argv := spec.Argv
	if spec.CPUs != "" {
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return nil, fmt.Errorf("bench: pinning %s: taskset not found (Debian package util-linux)", spec.Name)
		}
		argv = append([]string{ts, "-c", spec.CPUs}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), spec.Env...)
	var tail tailBuffer
	cmd.Stdout, cmd.Stderr = tailWriter{&tail}, tailWriter{&tail}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", spec.Name, err)
	}
	p := &procServer{name: spec.Name, cmd: cmd, url: "http://" + addr, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("bench: %s exited before listening (%v): %s", spec.Name, p.err, tail.String())
		case <-ctx.Done():
			_ = p.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = p.Close()
			return nil, fmt.Errorf("bench: %s did not accept on %s within %v: %s", spec.Name, addr, startTimeout, tail.String())
		}
	}
}

// tailWriter keeps the last lines written to it.
type tailWriter struct{ t *tailBuffer }

func (w tailWriter) Write(b []byte) (int, error) {
	for _, line := range splitLines(b) {
		w.t.add(line)
	}
	return len(b), nil
}

func splitLines(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == '\n' {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, string(b[start:]))
	}
	return out
}
