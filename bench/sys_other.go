//go:build !linux

package bench

import (
	"context"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// The load generator measures Linux servers with Linux's tools (epoll,
// RUSAGE_THREAD, /proc): here Run and Idle fail at their first socket, or
// at the loop's poller, with an error naming the platform (see
// internal/poll for why there is no second implementation).

func socket(int, bool) (int, error) { return -1, poll.Unsupported("bench: socket") }

func bindAddressNoPort(int) {}

const pollRDHUP = 0

func rawRead(fd int, b []byte) (int, error)           { return unix.Read(fd, b) }
func rawWrite(fd int, b []byte) (int, error)          { return unix.Write(fd, b) }
func rawWritev(fd int, iov []unix.Iovec) (int, error) { return 0, poll.Unsupported("bench: writev") }

func threadCPU() time.Duration { return 0 }

// ProcCPU reads /proc, which this platform does not have.
func ProcCPU(int) (time.Duration, error) { return 0, poll.Unsupported("bench: /proc/PID/stat") }

// CoreBusy reads /proc, which this platform does not have.
func CoreBusy([]int) (time.Duration, error) { return 0, poll.Unsupported("bench: /proc/stat") }

// ProcRSS reads /proc, which this platform does not have.
func ProcRSS(int) (uint64, error) { return 0, poll.Unsupported("bench: /proc/PID/status") }

// isTerminal: no live progress line here.
func isTerminal(io.Writer) bool { return false }

// ProcTreeCPU reads /proc, which this platform does not have.
func ProcTreeCPU(int) (time.Duration, error) { return 0, poll.Unsupported("bench: /proc/PID/stat") }

// signalTree finds descendants in /proc, which this platform does not have.
func signalTree(int, unix.Signal) error { return poll.Unsupported("bench: /proc/PID/task") }

// ProcTreeRSS reads /proc, which this platform does not have.
func ProcTreeRSS(int) (uint64, error) { return 0, poll.Unsupported("bench: /proc/PID/status") }

// The host's description, for reports: unknown here.
func cpuModel() string          { return "unknown" }
func kernelRelease() string     { return "unknown" }
func congestionControl() string { return "unknown" }
func cpuSet(int) []int          { return nil }

func pinSelf([]int) (func(), error) { return nil, poll.Unsupported("bench: sched_setaffinity") }

// SyscallMethodAvailable: syscall counting uses Linux's strace or perf.
func SyscallMethodAvailable(context.Context, string) error {
	return poll.Unsupported("bench: syscall counting")
}

func countSyscalls(context.Context, string, Server, Config, time.Duration, []int, string) (*SyscallCount, error) {
	return nil, poll.Unsupported("bench: syscall counting")
}

// cpuAllowed cannot read the affinity here; taskset, where it exists,
// refuses a CPU of its own accord.
func cpuAllowed(cpu int) bool { return cpu >= 0 }
