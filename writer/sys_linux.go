//go:build linux

package writer

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// Why raw syscalls: every call here but sendfile is on a non-blocking
// socket, so it never waits, and entered the ordinary way (entersyscall)
// one that spans sysmon's 20 µs tick (a write that runs loopback's
// receive path too) gets its P retaken when no other P is idle, and keeps
// sysmon waking every 20 µs: poll.Read says what that cost. The price:
// the P runs nothing else until the call returns, where a retake would
// have let a runnable processor goroutine have it; with GOMAXPROCS=1 a
// processor waits for the loop to park, or for the scheduler's 10 ms
// preemption. Not sendfile, which may block on its file (below).

// writev is unix.Writev without its per-call allocation, and raw. more
// says that the bytes are a response's head and a file region follows at
// once (sendfile): they go with MSG_MORE, which holds them in the socket
// until the file's last chunk pushes both out in one segment, as nginx's
// tcp_nopush (TCP_CORK around writev and sendfile) does with two
// setsockopt calls more. Without it a 4 KiB file left as two segments,
// and the head's own trip through loopback's transmit and receive path
// cost as much CPU as the file's (perf, bench-static-vs-nginx.sh).
func writev(fd int, iov []unix.Iovec, more bool) (int, error) {
	if more {
		return sendMore(fd, iov)
	}
	for {
		var n int
		var err error
		if len(iov) == 1 {
			// One buffer (most small responses: header and body in one
			// block) goes by write: writev first copies and checks the
			// iovec array, which costs the kernel more than the 150 bytes
			// of a /hello response.
			n, err = poll.Write(fd, unsafe.Slice(iov[0].Base, iov[0].Len))
		} else {
			n, err = poll.Writev(fd, iov)
		}
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// sendMore is writev with MSG_MORE: send(2) for one buffer, sendmsg(2)
// for more. A socket that refuses the flag (ENOTSOCK: not a socket, which
// only tests hand the writer) gets a plain write.
func sendMore(fd int, iov []unix.Iovec) (int, error) {
	for {
		var n uintptr
		var e unix.Errno
		if len(iov) == 1 {
			n, _, e = unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(iov[0].Base)), uintptr(iov[0].Len),
				unix.MSG_MORE, 0, 0)
		} else {
			msg := unix.Msghdr{Iov: &iov[0]}
			msg.SetIovlen(len(iov))
			n, _, e = unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_MORE)
		}
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.ENOTSOCK:
			return writev(fd, iov, false)
		}
		return -1, e
	}
}

// cork sets or clears TCP_CORK on fd (see corkFileMin), and reports
// whether it is set. Clearing it sends what it held. A socket that
// refuses it (not TCP: only tests hand the writer one) is sent uncorked.
// Raw (see above): clearing it transmits what it held, through loopback's
// receive path too, and so runs past sysmon's tick as a write does.
func cork(fd int, on bool) bool {
	var v int32
	if on {
		v = 1
	}
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_CORK,
		uintptr(unsafe.Pointer(&v)), 4, 0)
	return e == 0 && on
}

// sendfile is sendfile(2), raw when the caller found the region in the
// page cache (residentMemo, pageCached), entered the ordinary way
// otherwise. Its socket does not block, but its file may, on a page not
// in the page cache (a disk read of milliseconds), and a raw call would
// hold the P through it, every goroutine queued on that P stalled with
// the loop. But a long send of a cached region entered the ordinary way
// is what sysmon retakes Ps from: a 1 MiB file on loopback spends 100 µs
// or more in the call, and on two CPUs each retake hands the P to another
// thread and back (5-12% of the samples for 1 MiB files on one CPU, the
// static bench). So a region of rawSendfileMin or more is first looked up
// in the page cache: one short raw call, against a long send, and one a
// residentFor for a file sent again and again. A page evicted between the
// look-up and the send blocks the P for its read, as a page fault in the
// program's own memory would, and so may a network file system that
// revalidates a file before reading its cached pages (NFS): the loop
// waits either way, but a raw call also keeps the goroutines queued on
// its P waiting until another P steals them.
func sendfile(out, in int, off *int64, n int, raw bool) (int, error) {
	if raw {
		for {
			r, _, e := unix.RawSyscall6(unix.SYS_SENDFILE, uintptr(out), uintptr(in), uintptr(unsafe.Pointer(off)), uintptr(n), 0, 0)
			switch e {
			case 0:
				return int(r), nil
			case unix.EINTR:
				continue
			}
			return -1, e
		}
	}
	return unix.Sendfile(out, in, off, n)
}

// pageCached reports whether every page of fd's bytes [off, off+n) is in
// the page cache. Where cachestat(2) fails (ENOSYS before Linux 6.5, EPERM
// under a seccomp filter) it reports false each time: a failed call costs
// a fraction of a microsecond beside a send of 64 KiB or more.
func pageCached(fd int, off int64, n int) bool {
	rng := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	var st unix.Cachestat_t
	_, _, e := unix.RawSyscall6(unix.SYS_CACHESTAT, uintptr(fd), uintptr(unsafe.Pointer(&rng)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
	if e != 0 {
		return false
	}
	page := uint64(unix.Getpagesize())
	pages := (uint64(off)+uint64(n)+page-1)/page - uint64(off)/page
	return st.Cache >= pages
}
