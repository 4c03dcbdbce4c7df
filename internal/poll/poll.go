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
	"syscall"
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

	file *os.File        // the epoll fd in Go's network poller
	rc   syscall.RawConn // to park on it
	wait func(uintptr) bool
	n    int   // result of the last waitOnce
	err  error // ditto
}

// ErrClosed is returned by Wait, and by a second Close, after Close.
var ErrClosed = errors.New("quartet: poller closed")

// New opens an epoll instance.
//
// The epoll fd is itself handed to Go's network poller (an epoll fd is
// readable while it has events), and Wait parks the loop goroutine there
// instead of blocking its thread in epoll_wait. A goroutine blocked in a
// raw epoll_wait keeps its P until sysmon notices, which on an idle
// two-CPU machine can take milliseconds: measured here, a sequential
// keep-alive round trip took 237 µs with blocking epoll_wait and far less
// parked this way (runtime's BenchmarkKeepAliveHello). Busy loops never
// park: Wait first polls without blocking.
func New() (*Poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &Poller{file: f, rc: rc}
	p.epfd.Store(int32(fd))
	p.wait = p.waitOnce
	return p, nil
}

// waitOnce is the callback for RawConn.Read: one non-blocking epoll_wait;
// false (nothing ready) asks Go's poller to park us until the epoll fd is
// readable or the deadline passes.
func (p *Poller) waitOnce(fd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(fd), p.events[:], 0)
		if err == unix.EINTR {
			continue
		}
		p.n, p.err = n, err
		return err != nil || n > 0
	}
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
	dst = dst[:0]
	fd := p.fd()
	if fd < 0 {
		return dst, ErrClosed
	}
	p.waitOnce(uintptr(fd))
	if p.err == nil && p.n == 0 && timeout != 0 {
		var deadline time.Time
		if timeout > 0 {
			deadline = time.Now().Add(timeout)
		}
		if err := p.file.SetReadDeadline(deadline); err != nil {
			return dst, ErrClosed
		}
		p.n, p.err = 0, nil
		if err := p.rc.Read(p.wait); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return dst, nil
			}
			return dst, ErrClosed
		}
	}
	if p.err != nil {
		if p.err == unix.EBADF {
			return dst, ErrClosed
		}
		return dst, os.NewSyscallError("epoll_wait", p.err)
	}
	for i := 0; i < p.n; i++ {
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
	return p.file.Close()
}
