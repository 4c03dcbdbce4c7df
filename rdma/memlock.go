package rdma

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrMemlock: registering memory would pin more than the process's
// RLIMIT_MEMLOCK allows, and the process lacks CAP_IPC_LOCK, which lifts
// the limit. The kernel says only ENOMEM; a *MemlockError says how much
// was pinned, asked for and allowed. Raise the limit (ulimit -l, systemd's
// LimitMEMLOCK=, a container's memlock ulimit) or grant the capability.
var ErrMemlock = errors.New("rdma: memory registration over RLIMIT_MEMLOCK")

// MemlockError is a registration the locked-memory limit refused.
type MemlockError struct {
	Err    error  // the verb's (ibv_reg_mr: cannot allocate memory)
	Asked  uint64 // bytes the registration would pin, whole pages
	Pinned uint64 // bytes the process had pinned already (VmPin)
	Limit  uint64 // RLIMIT_MEMLOCK
}

func (e *MemlockError) Error() string {
	return fmt.Sprintf("%v: %d bytes to pin with %d pinned already, over RLIMIT_MEMLOCK (%d): raise it (ulimit -l, systemd's LimitMEMLOCK=) or grant CAP_IPC_LOCK",
		e.Err, e.Asked, e.Pinned, e.Limit)
}

func (e *MemlockError) Unwrap() error { return e.Err }

func (e *MemlockError) Is(target error) bool { return target == ErrMemlock }

// MemlockExplains returns err, a failed registration of size bytes, as a
// *MemlockError when the locked-memory limit is why: the error is ENOMEM,
// the process lacks CAP_IPC_LOCK, and what it has pinned (VmPin in
// /proc/thread-self/status) and the registration's pages pass RLIMIT_MEMLOCK, as
// the kernel counts in ib_umem_get. Otherwise (a real shortage, a device
// table full, a platform without /proc) err is returned as it was.
// Providers that pin pages call it on their registration's failure.
func MemlockExplains(err error, size int) error {
	if !errors.Is(err, syscall.ENOMEM) {
		return err
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) != nil {
		return err
	}
	// The calling thread's: capabilities are per thread (the same in
	// every thread of a server, but not of a test that drops one).
	status, rerr := os.Open("/proc/thread-self/status")
	if rerr != nil {
		if status, rerr = os.Open("/proc/self/status"); rerr != nil {
			return err
		}
	}
	defer status.Close()
	pinned, capIPCLock, ok := pinnedAndCapability(status)
	if !ok {
		return err
	}
	page := uint64(os.Getpagesize())
	asked := (uint64(size) + page - 1) / page * page
	if !overMemlock(asked, pinned, lim.Cur, capIPCLock) {
		return err
	}
	return &MemlockError{Err: err, Asked: asked, Pinned: pinned, Limit: lim.Cur}
}

// overMemlock is the kernel's check: with CAP_IPC_LOCK there is no limit;
// without, the pinned pages and the new ones must stay within it.
func overMemlock(asked, pinned, limit uint64, capIPCLock bool) bool {
	return !capIPCLock && limit != unix.RLIM_INFINITY && pinned+asked > limit
}

// capIPCLock is CAP_IPC_LOCK's bit in /proc/self/status's CapEff.
const capIPCLock = 14

// pinnedAndCapability reads VmPin (kB) and whether CapEff holds
// CAP_IPC_LOCK from a /proc/PID/status.
func pinnedAndCapability(status io.Reader) (pinned uint64, ipcLock, ok bool) {
	var sawPin, sawCap bool
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), ":")
		value = strings.TrimSpace(value)
		switch key {
		case "VmPin":
			kb, err := strconv.ParseUint(strings.TrimSuffix(value, " kB"), 10, 64)
			if err != nil {
				return 0, false, false
			}
			pinned, sawPin = kb<<10, true
		case "CapEff":
			caps, err := strconv.ParseUint(value, 16, 64)
			if err != nil {
				return 0, false, false
			}
			ipcLock, sawCap = caps&(1<<capIPCLock) != 0, true
		}
	}
	return pinned, ipcLock, sawPin && sawCap
}
