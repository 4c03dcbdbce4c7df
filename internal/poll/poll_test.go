//go:build linux

package poll

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventfd returns a non-blocking eventfd closed when the test ends.
func eventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatalf("eventfd: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func signal(t *testing.T, fd int) {
	t.Helper()
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatalf("write eventfd: %v", err)
	}
}

func consume(t *testing.T, fd int) {
	t.Helper()
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		t.Fatalf("read eventfd: %v", err)
	}
}

// pollerWithEventfd returns a poller and an eventfd registered readable
// with it under the token it returns.
func pollerWithEventfd(t *testing.T) (*Poller, int, Token) {
	t.Helper()
	p := newPoller(t)
	fd := eventfd(t)
	tok := MakeToken(KindConn, 1, 0)
	if err := p.Add(fd, Readable, tok); err != nil {
		t.Fatal(err)
	}
	return p, fd, tok
}

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// waitOne waits up to a second for events and fails unless exactly the
// given tokens are reported.
func waitFor(t *testing.T, p *Poller, want ...Token) []Event {
	t.Helper()
	evs, err := p.Wait(nil, time.Second)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if len(evs) != len(want) {
		t.Fatalf("Wait returned %d events %+v, want tokens %#x", len(evs), evs, want)
	}
	for i := range want {
		if evs[i].Token != want[i] {
			t.Fatalf("event %d: token %#x, want %#x", i, evs[i].Token, want[i])
		}
	}
	return evs
}

// The token is the whole 64-bit epoll_data word: the loops keep their
// registration kind in the top bits and generations above bit 32.
func TestTokenRoundTrip(t *testing.T) {
	for _, tok := range []Token{
		0,
		1,
		0xffffffff,
		1 << 32,
		1 << 62,
		1 << 63,
		0xc000000000000000,
		0xdeadbeefcafef00d,
		^Token(0),
	} {
		p := newPoller(t)
		fd := eventfd(t)
		if err := p.Add(fd, Readable, tok); err != nil {
			t.Fatal(err)
		}
		signal(t, fd)
		ev := waitFor(t, p, tok)[0]
		if !ev.Readable() || ev.Writable() || ev.Hangup() || ev.Error() {
			t.Errorf("token %#x: %v, want readable only", tok, ev)
		}
		// Modify replaces the token.
		if err := p.Modify(fd, Readable, ^tok); err != nil {
			t.Fatal(err)
		}
		waitFor(t, p, ^tok)
	}
}

func TestOneShotArm(t *testing.T) {
	p := newPoller(t)
	a, b, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a)
	defer unix.Close(b)

	// Arm adds a registration it has not seen before.
	if err := p.Arm(a, Writable|OneShot, 7); err != nil {
		t.Fatalf("Arm (add): %v", err)
	}
	if ev := waitFor(t, p, 7)[0]; !ev.Writable() {
		t.Fatalf("%v, want writable", ev)
	}
	// One shot: the socket is still writable, but no second event comes
	// until the registration is re-armed.
	if evs, err := p.Wait(nil, 0); err != nil || len(evs) != 0 {
		t.Fatalf("after one shot: events %+v, err %v; want none", evs, err)
	}
	if err := p.Arm(a, Writable|OneShot, 8); err != nil {
		t.Fatalf("Arm (re-arm): %v", err)
	}
	waitFor(t, p, 8)

	// Delete removes it for good; Modify and Delete of an unregistered fd fail.
	if err := p.Arm(a, Writable|OneShot, 9); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(a); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if evs, err := p.Wait(nil, 0); err != nil || len(evs) != 0 {
		t.Fatalf("after Delete: events %+v, err %v; want none", evs, err)
	}
	if err := p.Delete(a); !errors.Is(err, unix.ENOENT) {
		t.Errorf("second Delete: %v, want ENOENT", err)
	}
	if err := p.Modify(a, Writable, 1); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Modify after Delete: %v, want ENOENT", err)
	}
	var se *os.SyscallError
	if err := p.Add(-1, Readable, 1); !errors.As(err, &se) || se.Syscall != "epoll_ctl add" {
		t.Errorf("Add(-1): %v, want an epoll_ctl add syscall error", err)
	}
}

func TestHangupAndError(t *testing.T) {
	p := newPoller(t)
	a, b, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a)
	if err := p.Add(a, Readable|EdgeTriggered, 3); err != nil {
		t.Fatal(err)
	}
	unix.Close(b)
	ev := waitFor(t, p, 3)[0]
	if !ev.Hangup() {
		t.Errorf("peer closed: %v, want hangup", ev)
	}
}

func TestWaitTimeout(t *testing.T) {
	p := newPoller(t)
	fd := eventfd(t)
	if err := p.Add(fd, Readable, 1); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{0, time.Microsecond, 30 * time.Millisecond} {
		start := time.Now()
		evs, err := p.Wait(make([]Event, 3, 8), d)
		took := time.Since(start)
		if err != nil || len(evs) != 0 {
			t.Fatalf("Wait(%v): events %+v, err %v; want none", d, evs, err)
		}
		// A sub-millisecond timeout rounds up, never down to a busy poll.
		if d > 0 && took < d {
			t.Errorf("Wait(%v) returned after %v", d, took)
		}
		if took > d+time.Second {
			t.Errorf("Wait(%v) took %v", d, took)
		}
	}
	// A negative timeout blocks until an event.
	go func() {
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], 1)
		unix.Write(fd, b[:])
	}()
	evs, err := p.Wait(nil, -1)
	if err != nil || len(evs) != 1 || evs[0].Token != 1 {
		t.Fatalf("Wait(-1): events %+v, err %v", evs, err)
	}
	consume(t, fd)
}

// After Close, Wait reports ErrClosed, even when the kernel has since given
// the poller's old fd number to something else.
func TestCloseThenWait(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Lowest free number first: this eventfd very likely reuses the epoll
	// fd's number. Wait must not poll it, and a second Close must not close it.
	other := eventfd(t)
	if _, err := p.Wait(nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close: %v, want ErrClosed", err)
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if _, err := unix.FcntlInt(uintptr(other), unix.F_GETFD, 0); err != nil {
		t.Errorf("second Close closed an unrelated fd: %v", err)
	}
	if err := p.Add(other, Readable, 1); err == nil {
		t.Errorf("Add after Close succeeded")
	}
}

func socketpair() (int, int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	return fds[0], fds[1], err
}

// Close from another goroutine ends a Wait that is parked with no timeout.
func TestCloseWakesParkedWait(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Wait(nil, -1)
		done <- err
	}()
	// Let the waiter park (it polls once without blocking first); if Close
	// comes before that, Wait reports ErrClosed all the same.
	time.Sleep(10 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("parked Wait after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a parked Wait")
	}
}

// A blocking poller reports events like a parking one, honours timeouts
// shorter than a millisecond without returning early, and counts its time
// blocked as parked.
func TestBlockingWait(t *testing.T) {
	p, err := NewBlocking()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fd := eventfd(t)
	if err := p.Add(fd, Readable, 4); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 20 * time.Millisecond} {
		before := p.Parked()
		start := time.Now()
		evs, err := p.Wait(nil, d)
		took := time.Since(start)
		if err != nil || len(evs) != 0 {
			t.Fatalf("Wait(%v): events %v, err %v; want none", d, evs, err)
		}
		if took < d {
			t.Errorf("Wait(%v) returned after %v", d, took)
		}
		if parked := p.Parked() - before; d > 0 && parked < d {
			t.Errorf("Wait(%v): %v counted as parked", d, parked)
		}
	}
	signal(t, fd)
	waitFor(t, p, 4)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(nil, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v, want ErrClosed", err)
	}
}

// Parked counts only the time a Wait was parked: a Wait that finds events
// at once adds nothing, one that parks adds at least its timeout.
func TestParkedTime(t *testing.T) {
	p := newPoller(t)
	fd := eventfd(t)
	if err := p.Add(fd, Readable, 1); err != nil {
		t.Fatal(err)
	}
	signal(t, fd)
	if _, err := p.Wait(nil, time.Second); err != nil {
		t.Fatal(err)
	}
	if got := p.Parked(); got != 0 {
		t.Errorf("a Wait that found an event counted %v as parked", got)
	}
	consume(t, fd)
	const d = 20 * time.Millisecond
	if _, err := p.Wait(nil, d); err != nil {
		t.Fatal(err)
	}
	if got := p.Parked(); got < d {
		t.Errorf("a Wait that timed out after %v counted %v as parked", d, got)
	}
}

// A Wait that may block polls the kernel once when events are ready, and
// once more only after a park: it used to poll, find events, and still
// poll a second time in Go's poller (two epoll_waits per sleep).
func TestWaitPollsOnceWhenReady(t *testing.T) {
	for _, timeout := range []time.Duration{-1, time.Second} {
		p := newPoller(t)
		fd := eventfd(t)
		if err := p.Add(fd, Readable, MakeToken(KindConn, 0, 1)); err != nil {
			t.Fatal(err)
		}
		signal(t, fd)
		evs, err := p.Wait(nil, timeout)
		if err != nil || len(evs) != 1 {
			t.Fatalf("timeout %v: Wait = %v, %v; want one event", timeout, evs, err)
		}
		if p.polls != 1 {
			t.Errorf("timeout %v: %d polls for a ready event, want 1", timeout, p.polls)
		}
		if p.Parked() != 0 {
			t.Errorf("timeout %v: counted %v parked without parking", timeout, p.Parked())
		}
	}
}

// Pending tells whether events are queued without taking them, and
// Expire ends a parked Wait without events, as a timeout would; the next
// Wait sets its own deadline and takes what came.
func TestPendingAndExpire(t *testing.T) {
	p, fd, tok := pollerWithEventfd(t)
	if p.Pending() {
		t.Fatal("Pending with nothing queued")
	}
	done := make(chan []Event, 1)
	go func() {
		evs, err := p.Wait(nil, -1)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		done <- evs
	}()
	// Let the waiter park; expired before it does, it returns all the same.
	time.Sleep(10 * time.Millisecond)
	p.Expire()
	select {
	case evs := <-done:
		if len(evs) != 0 {
			t.Fatalf("an expired Wait returned %+v, want no events", evs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Expire did not end a parked Wait")
	}
	signal(t, fd)
	for look := range 2 { // the first look must take nothing
		if !p.Pending() {
			t.Fatalf("look %d: not Pending with an event queued", look+1)
		}
	}
	waitFor(t, p, tok)
	consume(t, fd)
	if p.Pending() {
		t.Fatal("Pending after the event was consumed")
	}
	p.Close()
	if p.Pending() {
		t.Fatal("Pending on a closed poller")
	}
	p.Expire() // nothing to end; must not panic
}

func TestKeepDeadline(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name                      string
		armed, want, now, timeout time.Duration
		keep                      bool
	}{
		{"none armed, none wanted", 0, 0, 5 * ms, -1, true},
		{"none armed, one wanted", 0, 105 * ms, 5 * ms, 100 * ms, false},
		{"one armed, none wanted", 100 * ms, 0, 5 * ms, -1, false},
		{"the same", 100 * ms, 100 * ms, 5 * ms, 95 * ms, true},
		{"a quarter early", 100 * ms, 125 * ms, 25 * ms, 100 * ms, true},
		{"more than a quarter early", 100 * ms, 126 * ms, 26 * ms, 100 * ms, false},
		{"late beyond the millisecond cap", 100 * ms, 100*ms - 1562500, 0, 100*ms - 1562500, false},
		{"late within the cap", 100 * ms, 100*ms - 900*time.Microsecond, 0, 99 * ms, true},
		{"late beyond a short wait's sixty-fourth", 10 * ms, 10*ms - 200*time.Microsecond, 8 * ms, 1800 * time.Microsecond, false},
		{"due already", 100 * ms, 110 * ms, 100 * ms, 10 * ms, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keepDeadline(tt.armed, tt.want, tt.now, tt.timeout); got != tt.keep {
				t.Errorf("keepDeadline(armed %v, want %v, now %v, timeout %v) = %v, want %v",
					tt.armed, tt.want, tt.now, tt.timeout, got, tt.keep)
			}
		})
	}
}

// A Wait woken by an event leaves its deadline armed, and the next park
// that wants about the same keeps it instead of setting one (a timer
// update under the runtime's lock): the park still ends by it, Expire
// still ends it sooner, and a deadline that fired, or a park that wants
// none, gets its own.
func TestWaitKeepsArmedDeadline(t *testing.T) {
	p, fd, _ := pollerWithEventfd(t)
	const timeout = 2 * time.Second
	signal(t, fd)
	// waitN waits and fails unless it got n events.
	waitN := func(timeout time.Duration, n int) {
		t.Helper()
		evs, err := p.Wait(nil, timeout)
		if err != nil || len(evs) != n {
			t.Fatalf("Wait(%v): events %+v, err %v; want %d", timeout, evs, err, n)
		}
	}
	waitN(timeout, 1)
	consume(t, fd)
	armed := p.armed
	if !p.armedOK || armed == 0 {
		t.Fatalf("no deadline armed after Wait(%v)", timeout)
	}

	// Kept: Expire ends the park all the same.
	go func() {
		time.Sleep(20 * time.Millisecond)
		p.Expire()
	}()
	start := time.Now()
	waitN(timeout, 0)
	if took := time.Since(start); took > timeout/2 {
		t.Fatalf("an expired Wait on a kept deadline took %v", took)
	}
	if p.armed != armed {
		t.Errorf("the park after an event set a deadline (%v) instead of keeping %v", p.armed, armed)
	}
	if p.armedOK {
		t.Error("a deadline Expire moved into the past is still taken as armed")
	}

	// A deadline that fired is not kept: the next park waits its own.
	const short = 30 * time.Millisecond
	waitN(short, 0) // set anew after the Expire, and fired
	start = time.Now()
	waitN(short, 0)
	if took := time.Since(start); took < short-short/4 {
		t.Errorf("Wait(%v) after a fired deadline returned after %v", short, took)
	}

	// A park that wants none does not keep a finite one.
	signal(t, fd)
	waitN(timeout, 1)
	consume(t, fd)
	go func() {
		time.Sleep(50 * time.Millisecond)
		signal(t, fd)
	}()
	waitN(-1, 1)
	if p.armed != 0 || !p.armedOK {
		t.Errorf("after Wait(-1): armed %v (ok %v), want none", p.armed, p.armedOK)
	}
	consume(t, fd)
}
