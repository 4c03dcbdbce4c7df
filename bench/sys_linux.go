//go:build linux

package bench

import (
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The load generator's Linux-only syscalls. Everything else in the package
// builds everywhere; sys_other.go says why the rest fails there.

// socket opens a close-on-exec TCP socket, non-blocking if asked, in one
// call.
func socket(family int, nonblocking bool) (int, error) {
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblocking {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, typ, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

// bindAddressNoPort lets connect pick the port per 4-tuple after a bind to
// a source address, so each source address adds a whole ephemeral range
// towards the same server port.
func bindAddressNoPort(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
}

// pollRDHUP makes poll(2) report a peer's half-close.
const pollRDHUP = unix.POLLRDHUP

func rawRead(fd int, b []byte) (int, error) {
	// Raw: the socket is non-blocking, so the scheduler hand-off that
	// unix.Read pays for a possibly blocking call is wasted work.
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWritev(fd int, iov []unix.Iovec) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// threadCPU is the calling thread's user+system CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuAllowed reports whether this process may run on CPU cpu, so that a
// pinned comparison refuses a CPU taskset would refuse, before it builds
// and starts anything.
func cpuAllowed(cpu int) bool {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return true // taskset will say
	}
	return cpu >= 0 && set.IsSet(cpu)
}
