// Package poll is the readiness poller under Quartet's reader and writer
// loops: one epoll instance per loop, each registration tagged with a
// caller-chosen 64-bit token instead of the fd.
//
// The token is the point. Loops pack (slot, generation) into it, so an event
// that was already collected for a connection the loop has since retired is
// recognised as stale and dropped, even if the kernel has given the same fd
// number to a new connection (Go's runtime netpoll does the same with
// fdseq; nginx with the instance bit in its event pointer).
//
// The loop itself is written once, in the packages that own connections;
// this package only makes the syscalls.
package poll

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Interest flags for Add and Modify.
const (
	Readable = unix.EPOLLIN | unix.EPOLLRDHUP
	Writable = unix.EPOLLOUT
	// EdgeTriggered reports a readiness change once; the owner must then
	// read or write until EAGAIN. Quartet's loops use it so a connection
	// handed to another stage needs no epoll_ctl to be silenced.
	EdgeTriggered = unix.EPOLLET
	// OneShot disables the registration after one event until Modify re-arms
	// it: the writer uses it for EPOLLOUT, which it wants only while a
	// response is stuck on a full socket.
	OneShot = unix.EPOLLONESHOT
)

// Event is one readiness report.
type Event struct {
	Token uint64
	Flags uint32
}

// Readable, Writable, Hangup and Error decode Flags.
func (e Event) Readable() bool { return e.Flags&(unix.EPOLLIN|unix.EPOLLPRI) != 0 }
func (e Event) Writable() bool { return e.Flags&unix.EPOLLOUT != 0 }
func (e Event) Hangup() bool   { return e.Flags&(unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 }
func (e Event) Error() bool    { return e.Flags&unix.EPOLLERR != 0 }

// maxEventsPerWait bounds one epoll_wait: large enough that a busy loop
// rarely needs a second call, small enough to stay on the stack of Wait's
// caller-provided buffer (Go's netpoll uses 128 as well).
const maxEventsPerWait = 128

// Poller is one epoll instance. It is used by a single loop goroutine,
// except Add, Modify and Delete, which the kernel serialises.
type Poller struct {
	// epfd is -1 once closed, so that nothing reaches an fd number the
	// kernel may have given to someone else since. Atomic because Add,
	// Modify and Delete may run on other goroutines than Close.
	epfd   atomic.Int32
	events [maxEventsPerWait]unix.EpollEvent
}

// ErrClosed is returned by Wait, and by a second Close, after Close.
var ErrClosed = errors.New("quartet: poller closed")

// New opens an epoll instance.
func New() (*Poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	p := &Poller{}
	p.epfd.Store(int32(fd))
	return p, nil
}

// Add registers fd with the given interest and token.
func (p *Poller) Add(fd int, interest uint32, token uint64) error {
	ev := unix.EpollEvent{Events: interest}
	putToken(&ev, token)
	return os.NewSyscallError("epoll_ctl add", unix.EpollCtl(p.fd(), unix.EPOLL_CTL_ADD, fd, &ev))
}

// Modify changes fd's interest and token (and re-arms a OneShot registration).
func (p *Poller) Modify(fd int, interest uint32, token uint64) error {
	ev := unix.EpollEvent{Events: interest}
	putToken(&ev, token)
	return os.NewSyscallError("epoll_ctl mod", unix.EpollCtl(p.fd(), unix.EPOLL_CTL_MOD, fd, &ev))
}

// Arm re-arms a OneShot registration, adding it if fd is not registered
// (the writer does not remember which sockets it has seen before).
func (p *Poller) Arm(fd int, interest uint32, token uint64) error {
	ev := unix.EpollEvent{Events: interest}
	putToken(&ev, token)
	err := unix.EpollCtl(p.fd(), unix.EPOLL_CTL_MOD, fd, &ev)
	if err == unix.ENOENT {
		return os.NewSyscallError("epoll_ctl add", unix.EpollCtl(p.fd(), unix.EPOLL_CTL_ADD, fd, &ev))
	}
	return os.NewSyscallError("epoll_ctl mod", err)
}

// Delete removes fd. Closing an fd removes it too; Delete is for fds that
// stay open but leave this loop.
func (p *Poller) Delete(fd int) error {
	return os.NewSyscallError("epoll_ctl del", unix.EpollCtl(p.fd(), unix.EPOLL_CTL_DEL, fd, nil))
}

// Wait blocks until at least one event or the timeout (negative: forever,
// zero: poll) and appends the events to dst[:0]. EINTR is not an error.
func (p *Poller) Wait(dst []Event, timeout time.Duration) ([]Event, error) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	n, err := unix.EpollWait(p.fd(), p.events[:], ms)
	dst = dst[:0]
	if err != nil {
		if err == unix.EINTR {
			return dst, nil
		}
		if err == unix.EBADF {
			return dst, ErrClosed
		}
		return dst, os.NewSyscallError("epoll_wait", err)
	}
	for i := 0; i < n; i++ {
		dst = append(dst, Event{Token: getToken(&p.events[i]), Flags: p.events[i].Events})
	}
	return dst, nil
}

// fd is the epoll fd, or -1 after Close (every syscall then fails with
// EBADF).
func (p *Poller) fd() int { return int(p.epfd.Load()) }

// Close releases the epoll instance. Call it once no Wait is in progress.
func (p *Poller) Close() error {
	fd := p.epfd.Swap(-1)
	if fd < 0 {
		return ErrClosed
	}
	return os.NewSyscallError("close", unix.Close(int(fd)))
}
