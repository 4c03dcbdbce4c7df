// Package poll is the readiness poller under Quartet's event loops (the
// listener's accept loops, the reader and writer loops, the load
// generator's): one kernel poller per loop, each registration tagged with a
// Token instead of the fd.
//
// This file is the contract, after Go's runtime/netpoll.go: it holds what
// every platform shares (the interest and readiness flags, Event, Token,
// and Poller's methods with their semantics), and each backend file
// provides only the syscalls behind them:
//
//	openPoller() (fd int, err error)
//		a new, non-blocking, close-on-exec kernel poller.
//	closeFD(fd int) error
//	(*backend).ctl(pfd int, op ctlOp, fd int, in Interest, t Token) error
//		add, modify or delete one registration; the error names the
//		syscall (os.NewSyscallError) and wraps errNotRegistered when
//		fd is not registered.
//	(*backend).poll(pfd int) (n int, err error)
//		collect ready events into the backend's own fixed buffer (its
//		maxEventsPerWait at most) without blocking, retrying EINTR.
//	(*backend).block(pfd int, timeout time.Duration) (n int, err error)
//		the same, blocking the calling thread up to timeout (negative:
//		without limit) with nanosecond resolution where the kernel has
//		it; EINTR returns no events.
//	(*backend).collect(dst []Event, n int) []Event
//		append the n events the last poll or block collected, decoded
//		into Token and readiness.
//	(*backend).pending(pfd int) bool
//		whether the poller fd is readable (has events), taking none;
//		safe from any goroutine.
//	errBadFD, errNotRegistered
//		the errnos for a closed poller fd and an unregistered fd.
//
// io_linux.go adds Read, Write and Writev: the loops' reads and writes of
// non-blocking fds, as raw syscalls (it says why).
//
// poll_linux.go is the epoll backend. Every other platform gets
// poll_other.go, whose openPoller returns Unsupported("poll"): Quartet does
// not run there, and says so at New instead of failing later.
//
// Why no kqueue backend: a kqueue poller alone would not make Quartet run on
// macOS or the BSDs. The loop's waker is an eventfd, the listener uses
// accept4, the writer Linux's sendfile, the load generator epoll_pwait2 and
// /proc; each would need a second implementation, and nothing on the
// machines this project is built and measured on can run one of them.
// Untested code presented as working is worse than an honest error, so the
// other platforms build (go build and go vet for GOOS=darwin and
// GOOS=freebsd are part of the checks) and fail at the first constructor
// with an error that names the platform. A kqueue backend would implement
// the functions above (EVFILT_READ with EV_CLEAR for EdgeTriggered,
// EV_DISPATCH for OneShot, udata for the token) together with the other
// files that end in _other.go, and be tested on the platform it is for.
//
// Registrations and what they report:
//
//   - Readable reports data, the peer's FIN and hangups. With
//     EdgeTriggered it reports each change once, and the owner must read
//     until EAGAIN before it can expect another event; Quartet's loops use
//     it so that a connection handed to another stage needs no syscall to
//     be silenced. Without it (level-triggered) the fd is reported on every
//     Wait while it is readable; completion sources and wakers use that.
//   - Writable with OneShot reports writability once and then disables the
//     registration until Arm or Modify re-arms it: the writer wants it only
//     while a response is stuck on a full socket.
//   - Every event carries the Token registered with it, a 64-bit word the
//     loop packs with (kind, generation, slot); see Token.
//
// Wait parks the calling goroutine in Go's network poller, not its thread
// in the kernel (see New); a Poller made with NewBlocking blocks its thread
// instead, for loops locked to one (LockOSThread) that measure their own
// CPU time. Drive (drive.go) runs a whole loop on the poller, and parks
// a lightly loaded one with a poll fewer than Wait would: it is what
// stages.Loop uses.
//
// A Poller is used by one loop goroutine, except Add, Modify, Arm and
// Delete, which the kernel serialises and any goroutine may call, and
// Close (see there).
package poll

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Interest says what a registration reports. Combine with |.
type Interest uint8

const (
	// Readable: data to read, the peer's FIN (half-close), hangup, error.
	Readable Interest = 1 << iota
	// Writable: room in the send buffer, hangup, error.
	Writable
	// EdgeTriggered reports a readiness change once; the owner must then
	// read or write until EAGAIN. Without it registrations are
	// level-triggered.
	EdgeTriggered
	// OneShot disables the registration after one event until Modify or
	// Arm re-arms it.
	OneShot
)

// Event is one readiness report.
type Event struct {
	Token Token
	ready ready
}

// ready is an Event's readiness, decoded by the backend from the kernel's
// flags.
type ready uint8

const (
	readyRead ready = 1 << iota
	readyWrite
	readyHangup
	readyError
)

// Readable reports data, or the end of it, to read.
func (e Event) Readable() bool { return e.ready&readyRead != 0 }

// Writable reports room to write.
func (e Event) Writable() bool { return e.ready&readyWrite != 0 }

// Hangup reports that the peer has closed its sending side (or both).
func (e Event) Hangup() bool { return e.ready&readyHangup != 0 }

// Error reports a pending socket error; the next read or write returns it.
func (e Event) Error() bool { return e.ready&readyError != 0 }

// String is for test failures and logs: "token 0x... read|hangup".
func (e Event) String() string {
	s := ""
	for i, name := range [...]string{"read", "write", "hangup", "error"} {
		if e.ready&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += name
		}
	}
	if s == "" {
		s = "none"
	}
	return fmt.Sprintf("token %#x %s", uint64(e.Token), s)
}

// ErrClosed is returned by Wait, and by a second Close, after Close.
var ErrClosed = errors.New("quartet: poller closed")

// Unsupported is the error every Linux-only constructor in Quartet returns
// on the platforms it does not run on (see the package comment): what
// names the missing piece, and errors.Is(err, errors.ErrUnsupported) holds.
func Unsupported(what string) error {
	return fmt.Errorf("quartet: %s: %s/%s is not supported; Quartet's event loops run on Linux: %w",
		what, runtime.GOOS, runtime.GOARCH, errors.ErrUnsupported)
}

// ctlOp is a registration change.
type ctlOp uint8

const (
	ctlAdd ctlOp = iota
	ctlModify
	ctlDelete
)

// Poller is one kernel poller.
type Poller struct {
	// fd is -1 once closed, so that nothing reaches an fd number the
	// kernel may have given to someone else since. Atomic because Add,
	// Modify and Delete may run on other goroutines than Close.
	fd atomic.Int32

	// blocking: Wait blocks the thread (NewBlocking) instead of parking.
	blocking bool
	file     *os.File        // the poller fd in Go's network poller
	rc       syscall.RawConn // to park on it
	wait     func(uintptr) bool
	n        int   // events collected by the last poll
	err      error // ditto: its error
	polls    int   // polls in this Wait: more than one means it parked
	// drivePolls counts Drive's polls, for the tests that count them.
	drivePolls int
	// levels: see levelSet. Any goroutine.
	levels levelSet
	// expired is set by Expire: a Wait that ends on the deadline polls
	// once more, for the events it was ended for, instead of returning
	// none and costing its loop an empty turn.
	expired atomic.Bool
	// armed is the read deadline the runtime holds for the poller file
	// (0: none), while armedOK; it is kept from one park to the next
	// while it still serves (setDeadline).
	armed   time.Duration
	armedOK bool
	// epoch is what armed and Drive's park times count from: readings
	// of the monotonic clock alone, one vDSO call where time.Now makes
	// two.
	epoch time.Time

	// parked is the time Wait has spent parked (or blocked) since New:
	// what a loop subtracts from wall time to know how busy it is.
	parked time.Duration

	backend // per platform: the event buffer and what the last poll got
}

// New opens a poller whose Wait parks the calling goroutine.
//
// The poller fd is itself handed to Go's network poller (an epoll fd is
// readable while it has events), and Wait parks the loop goroutine there
// instead of blocking its thread in epoll_wait. A goroutine blocked in a
// raw epoll_wait keeps its P until sysmon notices, which on an idle
// two-CPU machine can take milliseconds: measured here, a sequential
// keep-alive round trip took 237 µs with blocking epoll_wait and 35 µs
// parked this way (runtime's BenchmarkKeepAliveHello). Busy loops never
// park: Wait first polls without blocking.
func New() (*Poller, error) {
	fd, err := openPoller()
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "poller")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &Poller{file: f, rc: rc, epoch: time.Now()}
	p.fd.Store(int32(fd))
	p.wait = p.waitOnce
	return p, nil
}

// NewBlocking opens a poller whose Wait blocks the calling thread in the
// kernel, with nanosecond timeouts where the kernel has them (epoll_pwait2).
// It is for a loop that has locked its goroutine to its thread and reads
// its thread's CPU time (the load generator): parked in Go's network
// poller, its waits would be done, and accounted, on another thread, and
// the runtime's timers would round its sub-millisecond timeouts. Close does
// not interrupt a blocked Wait.
func NewBlocking() (*Poller, error) {
	fd, err := openPoller()
	if err != nil {
		return nil, err
	}
	p := &Poller{blocking: true}
	p.fd.Store(int32(fd))
	return p, nil
}

// waitOnce is the callback for RawConn.Read: one non-blocking poll; false
// (nothing ready) asks Go's poller to park us until the poller fd is
// readable or the deadline passes.
func (p *Poller) waitOnce(fd uintptr) bool {
	p.polls++
	p.n, p.err = p.poll(int(fd))
	return p.err != nil || p.n > 0
}

// Add registers fd with the given interest and token.
func (p *Poller) Add(fd int, in Interest, t Token) error {
	err := p.ctl(p.pollerFD(), ctlAdd, fd, in, t)
	if err == nil {
		p.levels.note(fd, in, t)
	}
	return err
}

// Modify changes fd's interest and token (and re-arms a OneShot registration).
func (p *Poller) Modify(fd int, in Interest, t Token) error {
	err := p.ctl(p.pollerFD(), ctlModify, fd, in, t)
	if err == nil {
		p.levels.note(fd, in, t)
	}
	return err
}

// Arm re-arms a OneShot registration, adding it if fd is not registered
// (the writer does not remember which sockets it has seen before).
func (p *Poller) Arm(fd int, in Interest, t Token) error {
	err := p.ctl(p.pollerFD(), ctlModify, fd, in, t)
	if errors.Is(err, errNotRegistered) {
		err = p.ctl(p.pollerFD(), ctlAdd, fd, in, t)
	}
	if err == nil {
		p.levels.note(fd, in, t)
	}
	return err
}

// Delete removes fd. Closing an fd removes it too; Delete is for fds that
// stay open but leave this loop.
func (p *Poller) Delete(fd int) error {
	p.levels.forget(fd)
	return p.ctl(p.pollerFD(), ctlDelete, fd, 0, 0)
}

// levelSet is the fds a poller holds level-triggered, but the waker's. A
// level-triggered fd that its owner leaves ready is reported at every
// poll, and only then: the kernel does not signal the poller fd again
// for it, so Drive must poll before it parks while there are any (see
// Drive). The waker's is left out because its owner drains it at every
// wake-up, and a write that comes later signals anew. A reader or
// listener loop never has one, and pays one atomic load a park.
type levelSet struct {
	n  atomic.Int32
	mu sync.Mutex
	m  map[int]struct{}
}

// note records fd's registration: level-triggered or not.
func (s *levelSet) note(fd int, in Interest, t Token) {
	if in&(EdgeTriggered|OneShot) == 0 && t.Kind() != KindWaker {
		s.mu.Lock()
		if s.m == nil {
			s.m = make(map[int]struct{})
		}
		s.m[fd] = struct{}{}
		s.n.Store(int32(len(s.m)))
		s.mu.Unlock()
		return
	}
	s.forget(fd)
}

// forget drops fd (deleted, or registered again edge-triggered or one-shot;
// an fd closed without Delete is forgotten when its number comes back).
func (s *levelSet) forget(fd int) {
	if s.n.Load() == 0 {
		return
	}
	s.mu.Lock()
	delete(s.m, fd)
	s.n.Store(int32(len(s.m)))
	s.mu.Unlock()
}

// any reports whether the poller holds a level-triggered fd.
func (s *levelSet) any() bool { return s.n.Load() > 0 }

// Wait waits until at least one event or the timeout (negative: forever,
// zero: poll) and appends the events to dst[:0]. Signals (EINTR) are not
// errors. A timeout is kept within a sixty-fourth (at most a millisecond)
// late, and may end up to a quarter sooner, with no events, when Wait
// keeps the deadline an earlier Wait armed (setDeadline): a bound on the
// wait, as a loop uses it, not a sleep.
func (p *Poller) Wait(dst []Event, timeout time.Duration) ([]Event, error) {
	dst = dst[:0]
	fd := p.pollerFD()
	if fd < 0 {
		return dst, ErrClosed
	}
	if p.blocking {
		return p.waitBlocking(dst, fd, timeout)
	}
	if timeout == 0 {
		p.waitOnce(uintptr(fd))
		return p.result(dst)
	}
	// RawConn.Read polls once (waitOnce) before it parks, so no poll of
	// our own goes first: that would be a second epoll_wait, 1.7 us on a
	// PVM guest, every time the loop goes to sleep. The deadline is set
	// (or the armed one kept) even when the poll finds events: no
	// syscall either way.
	start, err := p.setDeadline(timeout)
	if err != nil {
		return dst, ErrClosed
	}
	p.n, p.err, p.polls = 0, nil, 0
	err = p.rc.Read(p.wait)
	if p.polls > 1 || err != nil {
		// Parked: woken for a second poll, or by the deadline. The clock
		// is read again only then, where the park itself costs far more.
		p.parked += time.Since(p.epoch) - start
	}
	if err != nil {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return dst, ErrClosed
		}
		p.armedOK = false // it fired, or Expire moved it into the past
		if !p.expired.Swap(false) {
			return dst, nil
		}
		p.waitOnce(uintptr(fd))
	}
	return p.result(dst)
}

// setDeadline sets the poller file's read deadline timeout from now
// (negative: none) and returns now. A deadline armed by an earlier park
// that has not fired is kept when it is due no more than a quarter of
// timeout early, or lateTolerance late. Why: a loop that sleeps between
// requests is woken by its fds' events, not by its deadline, and asks
// for much the same one at each park (its next timer, or none), while
// setting one costs three clock reads and a timer update under the
// runtime's timer lock, about 500 instructions: 6% of a keep-alive
// /hello that parks every time (scripts/bench-instructions.sh -c 1). A
// deadline kept early costs a park that ends with nothing to do, after
// which the loop asks again and gets its own. (A park that Expire ends
// loses its deadline, so the next one sets it anew.)
func (p *Poller) setDeadline(timeout time.Duration) (now time.Duration, err error) {
	now = time.Since(p.epoch)
	var want time.Duration // 0: none
	if timeout > 0 {
		want = now + timeout
		if want < now {
			want = 0 // beyond what the clock counts: none
		}
	}
	if p.armedOK && !p.expired.Load() && keepDeadline(p.armed, want, now, timeout) {
		return now, nil
	}
	var at time.Time
	if want != 0 {
		at = p.epoch.Add(want)
	}
	err = p.file.SetReadDeadline(at)
	p.armed, p.armedOK = want, err == nil
	return now, err
}

// lateTolerance bounds how much later than asked a kept deadline may be:
// what separates two parks' readings of the same timer (the turn's work
// between the loop's clock read and its park), and never more than a
// sixty-fourth of the wait.
const lateTolerance = time.Millisecond

// keepDeadline reports whether armed, a deadline that has not fired,
// serves a park at now that wants one at want (0: none); all three count
// from the same epoch.
func keepDeadline(armed, want, now, timeout time.Duration) bool {
	if want == 0 || armed == 0 {
		return want == armed
	}
	early := want - armed
	return armed > now && early <= timeout/4 && -early <= min(timeout/64, lateTolerance)
}

func (p *Poller) waitBlocking(dst []Event, fd int, timeout time.Duration) ([]Event, error) {
	if timeout == 0 {
		p.n, p.err = p.poll(fd)
	} else {
		start := time.Now()
		p.n, p.err = p.block(fd, timeout)
		p.parked += time.Since(start)
	}
	return p.result(dst)
}

func (p *Poller) result(dst []Event) ([]Event, error) {
	if p.err != nil {
		if errors.Is(p.err, errBadFD) {
			return dst, ErrClosed
		}
		return dst, p.err
	}
	return p.collect(dst, p.n), nil
}

// Parked is the time Wait has spent parked or blocked since New: wall time
// less this is the time the loop was busy. Loop goroutine only.
func (p *Poller) Parked() time.Duration { return p.parked }

// Pending reports whether the poller has events waiting, without taking
// them (one ppoll of the poller fd; false on a closed poller and where
// there is no backend). Any goroutine: it is how a worker tells that a
// loop parked in Go's network poller has work the runtime has not yet
// seen (stages.LoopNudge).
func (p *Poller) Pending() bool {
	fd := p.pollerFD()
	return fd >= 0 && p.backend.pending(fd)
}

// Expire ends a Wait parked in Go's network poller now, with what a poll
// then finds (none, if nothing was queued), and makes the runtime ready
// the waiting goroutine on the caller's P, next to run. It costs no
// syscall. Any goroutine; a Wait that was not parked (or that starts
// before the loop sets its next deadline) returns at once, which a loop
// takes as an empty turn. Nothing on a blocking poller, whose Wait is in
// the kernel.
//
// Why: the scheduler polls the network only when it finds nothing else
// to run (or sysmon every 10 ms), so a loop parked there behind workers
// that always find another request waits that long for events already
// queued (BenchmarkLoopBehindBusyWorkers in processor).
func (p *Poller) Expire() {
	if p.file != nil {
		p.expired.Store(true)
		// Any deadline in the past; only a closed poller fails, and
		// then there is no Wait to end.
		p.file.SetReadDeadline(time.Unix(1, 0))
	}
}

// pollerFD is the poller's fd, or -1 after Close (every syscall then fails
// with EBADF).
func (p *Poller) pollerFD() int { return int(p.fd.Load()) }

// Close releases the poller. A Wait parked in Go's poller returns
// ErrClosed; one blocked in the kernel (NewBlocking) is not interrupted,
// so close such a poller from its loop.
func (p *Poller) Close() error {
	fd := p.fd.Swap(-1)
	if fd < 0 {
		return ErrClosed
	}
	if p.file != nil {
		return p.file.Close()
	}
	return closeFD(int(fd))
}
