//go:build linux

package poll

import (
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The epoll backend: only the syscalls behind the contract in poll.go.

// maxEventsPerWait bounds one Wait: large enough that a busy loop rarely
// needs a second call, small enough to keep the buffer a fixed array (Go's
// netpoll uses 128 as well).
const maxEventsPerWait = 128

type backend struct {
	events [maxEventsPerWait]unix.EpollEvent
	// noPwait2: the kernel lacks epoll_pwait2 (before 5.11); block falls
	// back to epoll_wait's millisecond timeout.
	noPwait2 bool
}

var (
	errBadFD         = unix.EBADF
	errNotRegistered = unix.ENOENT
)

func openPoller() (int, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking so that Go's network poller can take the fd.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return fd, nil
}

func closeFD(fd int) error { return os.NewSyscallError("close", unix.Close(fd)) }

// epollInterest maps an Interest to epoll's flags. Readable includes
// EPOLLRDHUP, so that a peer's half-close is reported as a hangup (a
// reader must not wait for a request the client will never send).
func epollInterest(in Interest) uint32 {
	var ev uint32
	if in&Readable != 0 {
		ev |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if in&Writable != 0 {
		ev |= unix.EPOLLOUT
	}
	if in&EdgeTriggered != 0 {
		ev |= unix.EPOLLET
	}
	if in&OneShot != 0 {
		ev |= unix.EPOLLONESHOT
	}
	return ev
}

var ctlOps = [...]struct {
	op   int
	name string
}{
	ctlAdd:    {unix.EPOLL_CTL_ADD, "epoll_ctl add"},
	ctlModify: {unix.EPOLL_CTL_MOD, "epoll_ctl mod"},
	ctlDelete: {unix.EPOLL_CTL_DEL, "epoll_ctl del"},
}

func (b *backend) ctl(pfd int, op ctlOp, fd int, in Interest, t Token) error {
	ev := unix.EpollEvent{Events: epollInterest(in)}
	putToken(&ev, t)
	return os.NewSyscallError(ctlOps[op].name, unix.EpollCtl(pfd, ctlOps[op].op, fd, &ev))
}

func (b *backend) poll(pfd int) (int, error) {
	for {
		// Raw, as Read is: with a zero timeout it never blocks.
		// epoll_pwait with no signal mask is epoll_wait, and exists on
		// every Linux architecture (arm64 has no epoll_wait).
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(pfd),
			uintptr(unsafe.Pointer(&b.events[0])), uintptr(len(b.events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, os.NewSyscallError("epoll_wait", e)
		}
		return int(n), nil
	}
}

func (b *backend) block(pfd int, timeout time.Duration) (int, error) {
	var n int
	var err error
	if b.noPwait2 {
		ms := -1
		if timeout >= 0 {
			// Round up: waking early only costs an extra turn.
			ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
		}
		n, err = unix.EpollWait(pfd, b.events[:], ms)
	} else if n, err = b.pwait2(pfd, timeout); err == unix.ENOSYS {
		b.noPwait2 = true
		return b.block(pfd, timeout)
	}
	if err == unix.EINTR {
		return 0, nil
	}
	if err != nil {
		return 0, os.NewSyscallError("epoll_wait", err)
	}
	return n, nil
}

// pwait2 is epoll_pwait2, which x/sys/unix does not wrap: epoll_wait with a
// nanosecond timeout.
func (b *backend) pwait2(pfd int, timeout time.Duration) (int, error) {
	var ts *unix.Timespec
	if timeout >= 0 {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	r, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(pfd),
		uintptr(unsafe.Pointer(&b.events[0])), uintptr(len(b.events)),
		uintptr(unsafe.Pointer(ts)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func (b *backend) collect(dst []Event, n int) []Event {
	for i := range n {
		ev := &b.events[i]
		var r ready
		if ev.Events&(unix.EPOLLIN|unix.EPOLLPRI) != 0 {
			r |= readyRead
		}
		if ev.Events&unix.EPOLLOUT != 0 {
			r |= readyWrite
		}
		if ev.Events&(unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
			r |= readyHangup
		}
		if ev.Events&unix.EPOLLERR != 0 {
			r |= readyError
		}
		dst = append(dst, Event{Token: getToken(ev), ready: r})
	}
	return dst
}

// x/sys/unix splits epoll_data into Fd and Pad on most Linux ports; the
// 64-bit union starts at Fd either way, so the token is stored over both.
func putToken(ev *unix.EpollEvent, t Token) {
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = uint64(t)
}

func getToken(ev *unix.EpollEvent) Token {
	return Token(*(*uint64)(unsafe.Pointer(&ev.Fd)))
}

// pending polls pfd itself (ppoll, zero timeout) for readability: whether
// the kernel poller has events queued, without taking any of them.
func (b *backend) pending(pfd int) bool {
	pf := unix.PollFd{Fd: int32(pfd), Events: unix.POLLIN}
	var zero unix.Timespec
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pf)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	return e == 0 && n > 0 && pf.Revents&unix.POLLIN != 0
}
