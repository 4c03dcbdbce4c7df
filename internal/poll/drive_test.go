//go:build linux

package poll

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readCount takes an eventfd's counter (0 when it is not readable).
func readCount(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	n, err := unix.Read(fd, b[:])
	if err == unix.EAGAIN {
		return 0
	}
	if err != nil || n != 8 {
		t.Errorf("read eventfd: %d, %v", n, err)
		return 0
	}
	return binary.NativeEndian.Uint64(b[:])
}

// driveAsync runs Drive on its own goroutine and returns its result's
// channel.
func driveAsync(p *Poller, s Steps) <-chan error {
	done := make(chan error, 1)
	go func() { done <- p.Drive(nil, s) }()
	return done
}

func awaitDrive(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Drive did not return in 10s")
		return nil
	}
}

// A loop that sleeps between events polls about once for each: the poll
// that takes the events after the wake (edge-triggered registrations, as
// the reader's connections are), and a look before parking ever more
// seldom while the looks find nothing. Wait polls twice a sleep, once before
// it parks (RawConn.Read forgets the readiness Go's poller recorded) and
// once after; Drive stays inside one Read between its parks and needs
// only the first park's look.
func TestDrivePollsOnceASleep(t *testing.T) {
	p := newPoller(t)
	fd := eventfd(t)
	tok := MakeToken(KindConn, 1, 0)
	if err := p.Add(fd, Readable|EdgeTriggered, tok); err != nil {
		t.Fatal(err)
	}
	const rounds = 64
	turned := make(chan int, 1)
	got := 0
	done := driveAsync(p, Steps{Turn: func(evs []Event) (time.Duration, bool) {
		for _, ev := range evs {
			if ev.Token != tok || !ev.Readable() {
				t.Errorf("event %v, want %#x readable", ev, uint64(tok))
			}
			got += int(readCount(t, fd))
		}
		turned <- got
		return -1, got == rounds
	}})
	for i := 0; i < rounds; i++ {
		if n := <-turned; n != i {
			t.Fatalf("turn %d saw %d signals", i, n)
		}
		time.Sleep(time.Millisecond) // let the loop park
		signal(t, fd)
	}
	<-turned
	if err := awaitDrive(t, done); err != nil {
		t.Fatal(err)
	}
	// One poll a signal, the first park's look, and the looks that find
	// nothing ever more seldom (maxLookSkip): 7 in 64 parks. Wait polls
	// twice a sleep.
	if p.drivePolls > rounds+rounds/4 {
		t.Errorf("%d polls for %d sleeps, want about one a sleep", p.drivePolls, rounds)
	}
	if p.Parked() == 0 {
		t.Error("no time counted as parked")
	}
}

// A level-triggered fd that its owner leaves ready is reported again
// without a new edge (Drive looks before parking while it holds one), and
// a loop that holds none goes back to parking without a look once the
// last is deleted.
func TestDriveReportsLevelTriggeredAgain(t *testing.T) {
	p, fd, tok := pollerWithEventfd(t)
	if !p.levels.any() {
		t.Fatal("a level-triggered registration is not counted")
	}
	signal(t, fd)
	seen := 0
	done := driveAsync(p, Steps{Turn: func(evs []Event) (time.Duration, bool) {
		for _, ev := range evs {
			if ev.Token == tok {
				seen++
			}
		}
		if seen == 2 {
			readCount(t, fd)
			return 0, true
		}
		return -1, false // the first time, leave it ready
	}})
	if err := awaitDrive(t, done); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(fd); err != nil {
		t.Fatal(err)
	}
	if p.levels.any() {
		t.Error("a deleted registration is still counted")
	}
	if err := p.Add(fd, Readable|EdgeTriggered, tok); err != nil {
		t.Fatal(err)
	}
	if err := p.Modify(fd, Readable, tok); err != nil || !p.levels.any() {
		t.Errorf("Modify to level-triggered: %v, counted %v", err, p.levels.any())
	}
	if err := p.Arm(fd, Writable|OneShot, tok); err != nil || p.levels.any() {
		t.Errorf("Arm one-shot: %v, counted %v", err, p.levels.any())
	}
	if err := p.Add(eventfd(t), Readable, MakeToken(KindWaker, 0, 0)); err != nil || p.levels.any() {
		t.Errorf("the waker's registration: %v, counted %v", err, p.levels.any())
	}
}

// No wake-up is lost: producers signal at random moments, some with an
// Expire after, while the loop asks for random waits (none, short
// deadlines, no limit), so that it parks inside the Read, leaves it on
// deadlines and Expires, and enters it again. Each signal must be seen;
// a lost one hangs the loop.
func TestDriveLosesNoWakeUp(t *testing.T) {
	for _, in := range []Interest{Readable | EdgeTriggered, Readable} {
		t.Run(map[bool]string{true: "edge", false: "level"}[in&EdgeTriggered != 0], func(t *testing.T) {
			p := newPoller(t)
			fd := eventfd(t)
			if err := p.Add(fd, in, MakeToken(KindConn, 1, 0)); err != nil {
				t.Fatal(err)
			}
			driveUnderFire(t, p, fd)
		})
	}
}

func driveUnderFire(t *testing.T, p *Poller, fd int) {
	const producers, each = 4, 500
	var seen atomic.Uint64
	rng := rand.New(rand.NewPCG(1, 2))
	done := driveAsync(p, Steps{Turn: func(evs []Event) (time.Duration, bool) {
		if len(evs) > 0 {
			seen.Add(readCount(t, fd))
		}
		if seen.Load() == producers*each {
			return 0, true
		}
		switch rng.IntN(4) {
		case 0:
			return 0, false
		case 1:
			return time.Duration(rng.IntN(200)) * time.Microsecond, false
		default:
			return -1, false
		}
	}})
	var wg sync.WaitGroup
	for i := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for range each {
				if r.IntN(8) == 0 {
					time.Sleep(time.Duration(r.IntN(100)) * time.Microsecond)
				}
				signal(t, fd)
				if r.IntN(4) == 0 {
					p.Expire()
				}
			}
		}()
	}
	wg.Wait()
	if err := awaitDrive(t, done); err != nil {
		t.Fatal(err)
	}
	if n := seen.Load(); n != producers*each {
		t.Fatalf("saw %d signals, want %d", n, producers*each)
	}
}

// The sleep protocol: Sleep is called before each park that a wait
// allows, after the deadline is set; its false turns the park into a
// poll; Awake follows every Sleep once, before the next Turn; a Sleep
// error ends Drive with it.
func TestDriveSleepProtocol(t *testing.T) {
	p, _, _ := pollerWithEventfd(t)
	errStop := errors.New("stop")
	var log []string
	turns := 0
	err := p.Drive(nil, Steps{
		Turn: func([]Event) (time.Duration, bool) {
			turns++
			log = append(log, "turn")
			switch turns {
			case 1:
				return 0, false // poll: no Sleep
			case 2, 3:
				return -1, false // Sleep refuses: a poll, no park
			default:
				return time.Hour, false
			}
		},
		Sleep: func() (bool, error) {
			log = append(log, "sleep")
			if turns >= 4 {
				return false, errStop
			}
			return false, nil
		},
		Awake: func() { log = append(log, "awake") },
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Drive = %v, want the Sleep error", err)
	}
	want := "turn turn sleep awake turn sleep awake turn sleep"
	if got := strings.Join(log, " "); got != want {
		t.Errorf("steps: %s\nwant:  %s", got, want)
	}
	if p.Parked() != 0 {
		t.Errorf("parked %v without parking", p.Parked())
	}
}

// A park ends on its deadline with a turn that has no events, and on
// Expire with the events then queued; both leave the Read, and the next
// park enters it again.
func TestDriveDeadlineAndExpire(t *testing.T) {
	p, fd, _ := pollerWithEventfd(t)
	type turn struct {
		events int
		at     time.Time
	}
	turns := make(chan turn, 8)
	var n int
	start := time.Now()
	done := driveAsync(p, Steps{Turn: func(evs []Event) (time.Duration, bool) {
		n++
		if len(evs) > 0 {
			readCount(t, fd)
		}
		turns <- turn{len(evs), time.Now()}
		switch n {
		case 1:
			return 20 * time.Millisecond, false // ends on the deadline
		case 2, 3:
			return -1, false // ended by Expire: first with nothing queued, then with a signal
		}
		return 0, true
	}})
	<-turns
	tr := <-turns
	if tr.events != 0 || tr.at.Sub(start) < 20*time.Millisecond {
		t.Errorf("deadline turn: %d events after %v, want none after 20ms", tr.events, tr.at.Sub(start))
	}
	time.Sleep(5 * time.Millisecond)
	p.Expire()
	if tr = <-turns; tr.events != 0 {
		t.Errorf("Expire with nothing queued: %d events", tr.events)
	}
	time.Sleep(5 * time.Millisecond)
	signal(t, fd)
	p.Expire()
	if tr = <-turns; tr.events != 1 {
		t.Errorf("Expire after a signal: %d events, want 1", tr.events)
	}
	if err := awaitDrive(t, done); err != nil {
		t.Fatal(err)
	}
}

// Close ends a parked Drive with ErrClosed.
func TestDriveClose(t *testing.T) {
	p, _, _ := pollerWithEventfd(t)
	parked := make(chan struct{})
	done := driveAsync(p, Steps{Turn: func([]Event) (time.Duration, bool) {
		close(parked)
		return -1, false
	}})
	<-parked
	time.Sleep(5 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := awaitDrive(t, done); !errors.Is(err, ErrClosed) {
		t.Fatalf("Drive = %v, want ErrClosed", err)
	}
}

// On a blocking poller Drive waits in the kernel, with the same steps.
func TestDriveBlocking(t *testing.T) {
	p, err := NewBlocking()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	fd := eventfd(t)
	if err := p.Add(fd, Readable, MakeToken(KindConn, 0, 3)); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(5 * time.Millisecond)
		signal(t, fd)
	}()
	var log []string
	err = p.Drive(nil, Steps{
		Turn: func(evs []Event) (time.Duration, bool) {
			log = append(log, "turn")
			if len(evs) > 0 {
				readCount(t, fd)
				return 0, true
			}
			return time.Second, false
		},
		Sleep: func() (bool, error) { log = append(log, "sleep"); return true, nil },
		Awake: func() { log = append(log, "awake") },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(log, " "), "turn sleep awake turn"; got != want {
		t.Errorf("steps: %s, want %s", got, want)
	}
	if p.Parked() < 4*time.Millisecond {
		t.Errorf("parked %v, want about 5ms", p.Parked())
	}
}
