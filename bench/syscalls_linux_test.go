package bench

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestTracerCountsChildProcesses: a server made of processes (nginx's
// master sleeping while its workers serve) has its syscalls counted in
// the workers. Here the parent shell only waits while its child writes
// without pause; counting the parent alone finds nothing (perf prints
// "<not counted>").
func TestTracerCountsChildProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and a tracer")
	}
	for _, method := range []string{SyscallsPerf, SyscallsStrace} {
		t.Run(method, func(t *testing.T) {
			ctx := context.Background()
			if err := SyscallMethodAvailable(ctx, method); err != nil {
				t.Skipf("%s cannot count here: %v", method, err)
			}
			cmd := exec.Command("sh", "-c", "yes > /dev/null & wait")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, pid := range procTree(cmd.Process.Pid)[1:] {
					_ = syscall.Kill(pid, syscall.SIGTERM)
				}
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}()
			deadline := time.Now().Add(5 * time.Second)
			for len(procTree(cmd.Process.Pid)) < 2 {
				if time.Now().After(deadline) {
					t.Fatal("the shell started no child")
				}
				time.Sleep(5 * time.Millisecond)
			}
			tr, err := startTracer(ctx, method, cmd.Process.Pid, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			n, _, err := tr.off()
			if err != nil {
				t.Fatalf("counting the shell and its child: %v", err)
			}
			// yes writes a pipe-sized buffer per syscall: even traced by
			// strace it makes thousands in 200 ms; the shell makes none.
			if n < 100 {
				t.Errorf("%d syscalls counted in 200 ms of a child that writes without pause", n)
			}
		})
	}
}
