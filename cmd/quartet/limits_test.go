//go:build linux

package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// --memory-limit puts Go's soft memory limit in force (the runtime's own
// report of it, go_gc_gomemlimit_bytes on /metrics, must agree), says
// which in the startup line, and yields to GOMEMLIMIT. auto reads the
// cgroup the server runs in: the test makes one with a 512 MiB limit
// where it may (root, a writable memory controller) and skips that row
// elsewhere.
func TestMemoryLimit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		env    string
		cgroup int64 // run in a cgroup with this memory limit; 0: where the test runs
		line   string
		limit  float64
	}{
		{"a size", []string{"--memory-limit", "300MiB"}, "", 0, `memory-limit=300MiB`, 300 << 20},
		{"GOMEMLIMIT wins", []string{"--memory-limit", "300MiB"}, "GOMEMLIMIT=1GiB", 0, `memory-limit="GOMEMLIMIT=1GiB"`, 1 << 30},
		{"off", []string{"--memory-limit", "off"}, "", 0, `memory-limit=off`, math.MaxInt64},
		{"auto, in a cgroup with a limit", nil, "", 512 << 20, `memory-limit="auto: 460.8MiB (from the cgroup's limit)"`, math.Floor(0.9 * (512 << 20))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := serveCmd(t, tt.args...)
			cmd.Env = os.Environ()
			if tt.env != "" {
				cmd.Env = append(cmd.Env, tt.env)
			}
			if tt.cgroup > 0 {
				cmd = inMemoryCgroup(t, cmd, tt.cgroup)
			}
			p := startQuartet(t, cmd)
			if !strings.Contains(p.log.String(), " "+tt.line+" ") {
				t.Errorf("startup line without %s:\n%s", tt.line, p.log)
			}
			m := regexp.MustCompile(`(?m)^go_gc_gomemlimit_bytes (\S+)$`).FindStringSubmatch(fetch(t, "GET", p.admin+"/metrics"))
			if m == nil {
				t.Fatal("no go_gc_gomemlimit_bytes in /metrics")
			}
			if got, _ := strconv.ParseFloat(m[1], 64); math.Abs(got-tt.limit) > 1 {
				t.Errorf("go_gc_gomemlimit_bytes %s, want %.0f", m[1], tt.limit)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(); code != 0 {
				t.Errorf("exit %d:\n%s", code, p.log)
			}
		})
	}
}

// inMemoryCgroup makes a memory cgroup with the given limit (v2's
// memory.max under the root, or v1's memory.limit_in_bytes) and returns
// cmd wrapped in a shell that moves itself into it before it execs cmd,
// so that the server reads the limit at its start. It skips the test
// where no such cgroup can be made; the cgroup is removed at the end.
func inMemoryCgroup(t *testing.T, cmd *exec.Cmd, limit int64) *exec.Cmd {
	t.Helper()
	var dir, limitFile string
	switch {
	case hasWord("/sys/fs/cgroup/cgroup.subtree_control", "memory"):
		dir, limitFile = filepath.Join("/sys/fs/cgroup", "quartet-test-"+strconv.Itoa(os.Getpid())), "memory.max"
	case fileExists("/sys/fs/cgroup/memory/cgroup.procs"):
		dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", "quartet-test-"+strconv.Itoa(os.Getpid())), "memory.limit_in_bytes"
	default:
		t.Skip("no memory cgroup controller to make a cgroup with")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup: %v", err)
	}
	t.Cleanup(func() {
		// After the server's exit (startQuartet's cleanup runs first):
		// an empty cgroup can be removed.
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing the test's cgroup: %v", err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Skipf("cannot set the cgroup's memory limit: %v", err)
	}
	wrapped := exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$CGROUP_PROCS" && exec "$@"`, "sh"}, cmd.Args...)...)
	wrapped.Path = "/bin/sh"
	wrapped.Env = append(cmd.Env, "CGROUP_PROCS="+filepath.Join(dir, "cgroup.procs"))
	return wrapped
}

func hasWord(path, word string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(" "+strings.TrimSpace(string(b))+" ", " "+word+" ")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// The startup line gives the open-file limit, and a limit that will bound
// the connections before --max-conns does (or, without it, one too low
// for a server of many connections) is warned of before it.
func TestOpenFilesLimit(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	own := strconv.FormatUint(lim.Max, 10) // Go raises the soft limit to the hard one
	if lim.Max == unix.RLIM_INFINITY {
		own = "unlimited"
	}
	const (
		aboveLimit = `level=WARN msg="--max-conns is at or above the open-file limit`
		lowLimit   = `level=WARN msg="the open-file limit is low for a server of many connections`
	)
	for _, tt := range []struct {
		name   string
		ulimit uint64 // 0: this process's
		args   []string
		line   string
		warn   string // "": no open-file warning
	}{
		{"this process's limit", 0, nil, "open-files=" + own, ""},
		{"--max-conns above the limit", 2048, []string{"--max-conns", "5000"}, "max-conns=5000 open-files=2048", aboveLimit},
		{"--max-conns below the limit", 2048, []string{"--max-conns", "1000"}, "max-conns=1000 open-files=2048", ""},
		{"a low limit", 1024, nil, "max-conns=0 open-files=1024", lowLimit},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ulimit > lim.Max {
				t.Skipf("the hard open-file limit is %d", lim.Max)
			}
			cmd := serveCmd(t, tt.args...)
			if tt.ulimit > 0 {
				cmd = exec.Command("/bin/sh", append([]string{"-c", `ulimit -n "$ULIMIT_N" && exec "$@"`, "sh"}, cmd.Args...)...)
				cmd.Env = append(os.Environ(), "ULIMIT_N="+strconv.FormatUint(tt.ulimit, 10))
			}
			p := startQuartet(t, cmd)
			log := p.log.String()
			if !strings.Contains(log, " "+tt.line+" ") {
				t.Errorf("startup line without %s:\n%s", tt.line, log)
			}
			for _, w := range []string{aboveLimit, lowLimit} {
				if strings.Contains(log, w) != (w == tt.warn) {
					t.Errorf("warning %q: logged %v, want %v:\n%s", w, !(w == tt.warn), w == tt.warn, log)
				}
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(); code != 0 {
				t.Errorf("exit %d:\n%s", code, log)
			}
		})
	}
}
