package rdmatest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Child is a benchmark's client running in a process of its own, so
// that the benchmark's process runs only the server and its CPU time is
// the server's: the same test binary, running only the test that plays
// the client. The two speak in lines: the benchmark writes commands to
// the child's stdin (Send), the child answers on its stdout (Expect).
type Child struct {
	tb    testing.TB
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines *bufio.Scanner
}

// childExit bounds the wait for a child to end once its stdin is
// closed: one that is stuck is killed rather than waited for.
const childExit = 30 * time.Second

// StartChild starts this test binary running only test, with env set to
// arg (the test skips without it: see ChildArgs). The child's stderr is
// this process's. At tb's cleanup its stdin closes, which ends it, and
// it is waited for (killed after childExit).
func StartChild(tb testing.TB, test, env, arg string) *Child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env+"="+arg)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		in.Close()
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(childExit):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return &Child{tb: tb, cmd: cmd, in: in, lines: bufio.NewScanner(out)}
}

// Expect reads the child's stdout up to the first line that starts with
// word and returns the rest of it, trimmed; if the child ends first, the
// benchmark fails.
func (c *Child) Expect(word string) string {
	c.tb.Helper()
	for c.lines.Scan() {
		if l := c.lines.Text(); strings.HasPrefix(l, word) {
			return strings.TrimSpace(strings.TrimPrefix(l, word))
		}
	}
	c.tb.Fatalf("the client ended before %q: %v", word, c.lines.Err())
	return ""
}

// Send writes one command line to the child's stdin.
func (c *Child) Send(format string, args ...any) {
	c.tb.Helper()
	if _, err := fmt.Fprintf(c.in, format+"\n", args...); err != nil {
		c.tb.Fatalf("the client: %v", err)
	}
}

// ChildArgs is, in a child StartChild started, env's value split at its
// commas into n fields; in any other run of the test (env unset) the
// test is skipped, so that the client does nothing unless a benchmark
// runs it. A value of another shape fails the test.
func ChildArgs(t *testing.T, env string, n int) []string {
	t.Helper()
	arg := os.Getenv(env)
	if arg == "" {
		t.Skipf("run by a benchmark (%s unset)", env)
	}
	f := strings.Split(arg, ",")
	if len(f) != n {
		t.Fatalf("%s=%q: want %d fields", env, arg, n)
	}
	return f
}

// Drive makes total calls of do from workers goroutines, each passing its
// own index (so each can use its own buffer and connection), and returns
// how many failed. The first failure is printed to stderr, the child's
// only way to say what went wrong without ending its run.
func Drive(workers, total int, do func(worker int) error) int64 {
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(total) {
				if err := do(w); err != nil && errs.Add(1) == 1 {
					fmt.Fprintf(os.Stderr, "bench client: %v\n", err)
				}
			}
		})
	}
	wg.Wait()
	return errs.Load()
}
