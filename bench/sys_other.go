//go:build !linux

package bench

import (
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

// ProcRSS reads /proc, which this platform does not have.
func ProcRSS(int) (uint64, error) { return 0, poll.Unsupported("bench: /proc/PID/status") }

// isTerminal: no live progress line here.
func isTerminal(io.Writer) bool { return false }
