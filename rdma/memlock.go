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
// RLIMIT_MEMLOCK allows. CAP_IPC_LOCK lifts the limit for the drivers
// that use the kernel's ib_umem_get (rxe, hardware), not for siw, which
// counts its pages against the limit whatever the capability (Linux 6.1;
// TestRegisterOverMemlock shows both). The kernel says only ENOMEM; a
// *MemlockError says how much was pinned, asked for and allowed. Raise
// the limit (ulimit -l, systemd's LimitMEMLOCK=, a container's memlock
// ulimit), or grant the capability where the driver honours it.
var ErrMemlock = errors.New("rdma: memory registration over RLIMIT_MEMLOCK")

// MemlockError is a registration the locked-memory limit refused.
type MemlockError struct {
	Err    error  // the verb's (ibv_reg_mr: cannot allocate memory)
	Asked  uint64 // bytes the registration would pin, whole pages
	Pinned uint64 // bytes the process had pinned already (VmPin)
	Limit  uint64 // RLIMIT_MEMLOCK
	// CapIPCLock: the process has the capability, and the driver did not
	// let it lift the limit.
	CapIPCLock bool
}

func (e *MemlockError) Error() string {
	remedy := "raise it (ulimit -l, systemd's LimitMEMLOCK=) or grant CAP_IPC_LOCK (which siw does not honour)"
	if e.CapIPCLock {
		remedy = "raise it (ulimit -l, systemd's LimitMEMLOCK=): this process has CAP_IPC_LOCK, which this device's driver does not honour"
	}
	return fmt.Sprintf("%v: %d bytes to pin with %d pinned already, over RLIMIT_MEMLOCK (%d): %s",
		e.Err, e.Asked, e.Pinned, e.Limit, remedy)
}

func (e *MemlockError) Unwrap() error { return e.Err }

func (e *MemlockError) Is(target error) bool { return target == ErrMemlock }

// MemlockExplains returns err, a failed registration of size bytes, as a
// *MemlockError when the locked-memory limit is why: the error is ENOMEM,
// and what the process has pinned (VmPin in /proc/thread-self/status) and
// the registration's pages pass RLIMIT_MEMLOCK, as the drivers count.
// With CAP_IPC_LOCK that is still the likely cause (siw ignores the
// capability; for the drivers that honour it, a real shortage exactly
// where the limit would be is the unlikely other), and the error says
// the capability did not help. Otherwise (a real shortage, a device
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
	limit := uint64(lim.Cur) // int64 on the BSDs
	if !overMemlock(asked, pinned, limit) {
		return err
	}
	return &MemlockError{Err: err, Asked: asked, Pinned: pinned, Limit: limit, CapIPCLock: capIPCLock}
}

// overMemlock is the drivers' check: the pinned pages and the new ones
// must stay within the limit.
func overMemlock(asked, pinned, limit uint64) bool {
	return limit != unix.RLIM_INFINITY && pinned+asked > limit
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
