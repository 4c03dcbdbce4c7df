//go:build !linux

package bench

import (
	"context"
	"errors"
	"io"
	"time"
)

// errUnsupported is returned on systems without epoll and /proc: the
// generator is Linux-only, like the server's measurements it targets.
var errUnsupported = errors.New("bench: load generation needs Linux (epoll, /proc)")

// Run is only implemented on Linux.
func Run(ctx context.Context, cfg Config) (*Result, error) { return nil, errUnsupported }

// RaiseFDLimit is only implemented on Linux.
func RaiseFDLimit(want uint64) (uint64, error) { return 0, errUnsupported }

// ProcCPU is only implemented on Linux.
func ProcCPU(pid int) (time.Duration, error) { return 0, errUnsupported }

// ProcRSS is only implemented on Linux.
func ProcRSS(pid int) (uint64, error) { return 0, errUnsupported }

// ErrFDLimit matches the Linux declaration.
var ErrFDLimit = errors.New("bench: too few file descriptors")

// ProcessCPU is only implemented on Linux.
func ProcessCPU() time.Duration { return 0 }

func idleMain(ctx context.Context, args []string, env Env) error { return errUnsupported }

func isTerminal(w io.Writer) bool { return false }

func cpuModel() string      { return "unknown" }
func kernelRelease() string { return "unknown" }
func cpuSet(pid int) []int  { return nil }

// ProcTreeCPU is only implemented on Linux.
func ProcTreeCPU(pid int) (time.Duration, error) { return 0, errUnsupported }

func pinSelf(cpus []int) (func(), error) { return nil, errUnsupported }

// SyscallMethodAvailable is only implemented on Linux.
func SyscallMethodAvailable(ctx context.Context, method string) error { return errUnsupported }

func countSyscalls(ctx context.Context, method string, srv Server, load Config, window time.Duration, loadCPUs []int, work string) (*SyscallCount, error) {
	return nil, errUnsupported
}

// Idle is only implemented on Linux.
func Idle(ctx context.Context, cfg IdleConfig) ([]IdlePoint, error) { return nil, errUnsupported }

// ProcTreeRSS is only implemented on Linux.
func ProcTreeRSS(pid int) (uint64, error) { return 0, errUnsupported }
