//go:build linux

package poll

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read is read(2) on a non-blocking fd (a connection's socket, an
// eventfd), made as a raw syscall: without the runtime's entersyscall and
// exitsyscall, which only pay off for a call that may block.
//
// They cost more than their own instructions. Go 1.26's sysmon takes the
// P of a goroutine that has kept its time slice for 10 ms at every tick
// that finds it inside a syscall, however short (runtime.retake), and
// each take resets sysmon's sleep to 20 µs. A busy event loop spends most
// of its time in read and write and rarely reschedules, so sysmon found
// it there tick after tick. Measured with the server pinned to one CPU
// (GOMAXPROCS 1) under wrk -t1 -c100, per-thread counts from /proc over
// 5 s: sysmon switched 19,000-22,000 times and used a tenth of the
// server's CPU, and the loop's goroutine moved between two threads as
// its P was handed off and back; with raw calls sysmon switched about
// 500 times, used almost none, and one thread ran the loop. A raw call is
// invisible to sysmon; the loop is still preempted at its next function
// call (which resets the slice), and sysmon sleeps deeper.
//
// Raw is safe only for a call that cannot block: sendfile, which may wait
// on the disk, keeps unix.Sendfile.
func Read(fd int, b []byte) (int, error) { return rawIO(unix.SYS_READ, fd, b) }

// Write is write(2) on a non-blocking fd, made as a raw syscall (see
// Read).
func Write(fd int, b []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, b) }

// Writev is writev(2) on a non-blocking fd, made as a raw syscall (see
// Read); iov must not be empty.
func Writev(fd int, iov []unix.Iovec) (int, error) {
	return rawResult(unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov))))
}

// rawIO is the raw read or write (nr) of b on fd.
func rawIO(nr uintptr, fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	return rawResult(unix.RawSyscall(nr, uintptr(fd), uintptr(p), uintptr(len(b))))
}

func rawResult(n, _ uintptr, e unix.Errno) (int, error) {
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
