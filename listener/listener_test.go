//go:build linux

package listener

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/stages"
)

// waitLimit bounds every wait for something that must happen.
const waitLimit = 10 * time.Second

// quiet is how long a test watches for something that must not happen
// (a connection accepted over the limit). It cannot prove a negative; it
// is long enough that a broken limit shows up on every run.
const quiet = 200 * time.Millisecond

// accepted is one Assign call.
type accepted struct {
	c   *stages.Conn
	gid uint64 // the accept loop's goroutine
}

// server is a Listener running in a goroutine; Assign reports to conns.
type server struct {
	t      *testing.T
	l      *Listener
	conns  chan accepted
	runErr chan error
}

func start(t *testing.T, cfg Config, ids *atomic.Uint64) *server {
	t.Helper()
	s := &server{t: t, conns: make(chan accepted, 256), runErr: make(chan error, 1)}
	cfg.Assign = func(c *stages.Conn) { s.conns <- accepted{c, goid()} }
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if ids == nil {
		ids = new(atomic.Uint64)
	}
	l, err := New(cfg, ids)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.l = l
	go func() { s.runErr <- l.Run(context.Background()) }()
	t.Cleanup(func() {
		l.Close()
		select {
		case err := <-s.runErr:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of Close", waitLimit)
		}
		for {
			select {
			case a := <-s.conns:
				unix.Close(a.c.FD)
			default:
				return
			}
		}
	})
	return s
}

func (s *server) dial() net.Conn {
	s.t.Helper()
	c, err := net.Dial("tcp", s.l.Addr().String())
	if err != nil {
		s.t.Fatalf("dial: %v", err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

func (s *server) next() accepted {
	s.t.Helper()
	select {
	case a := <-s.conns:
		return a
	case <-time.After(waitLimit):
		s.t.Fatalf("no connection accepted within %v (open %d, accepted %d, paused %d)",
			waitLimit, s.l.Open(), s.l.Accepted.Load(), s.l.Paused.Load())
	}
	return accepted{}
}

// release closes an accepted connection as its reader would, and tells
// the listener.
func (s *server) release(a accepted) {
	unix.Close(a.c.FD)
	s.l.Released()
}

func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

func TestAcceptAssignsUniqueIncreasingIDs(t *testing.T) {
	var ids atomic.Uint64
	ids.Store(100) // shared with earlier listeners of the same server
	s := start(t, Config{}, &ids)
	port := s.l.Addr().(*net.TCPAddr).Port
	if port == 0 {
		t.Fatal("Addr has port 0 after New")
	}
	var prev uint64 = 100
	var got []accepted
	for i := 0; i < 20; i++ {
		c := s.dial()
		a := s.next()
		got = append(got, a)
		if a.c.ID <= prev {
			t.Errorf("connection %d: ID %d after %d", i, a.c.ID, prev)
		}
		prev = a.c.ID
		if a.c.Remote.String() != c.LocalAddr().String() {
			t.Errorf("Remote %v, want the client's %v", a.c.Remote, c.LocalAddr())
		}
		if int(a.c.Local.Port()) != port {
			t.Errorf("Local %v, want port %d", a.c.Local, port)
		}
		if a.c.Accepted.IsZero() {
			t.Error("Accepted time not set")
		}
		fl, err := unix.FcntlInt(uintptr(a.c.FD), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("fd %d: flags %#x, %v; want non-blocking", a.c.FD, fl, err)
		}
		if fd, err := unix.FcntlInt(uintptr(a.c.FD), unix.F_GETFD, 0); err != nil || fd&unix.FD_CLOEXEC == 0 {
			t.Errorf("fd %d not close-on-exec", a.c.FD)
		}
		if v, err := unix.GetsockoptInt(a.c.FD, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
			t.Errorf("fd %d: TCP_NODELAY %d, %v", a.c.FD, v, err)
		}
		// The fd really is that client's connection.
		msg := []byte("conn " + strconv.Itoa(i))
		if _, err := unix.Write(a.c.FD, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := c.Read(buf); err != nil || !bytes.Equal(buf, msg) {
			t.Fatalf("client %d read %q, %v", i, buf, err)
		}
	}
	if n := s.l.Open(); n != 20 {
		t.Errorf("Open() = %d, want 20", n)
	}
	if n := s.l.Accepted.Load(); n != 20 {
		t.Errorf("Accepted = %d, want 20", n)
	}
	for _, a := range got {
		s.release(a)
	}
	if n := s.l.Open(); n != 0 {
		t.Errorf("Open() = %d after releasing all, want 0", n)
	}
}

// At MaxConns the listener leaves new connections in the backlog (the
// client is neither accepted nor reset) until a connection is released.
func TestMaxConnsWaitsInBacklog(t *testing.T) {
	s := start(t, Config{MaxConns: 2}, nil)
	s.dial()
	s.dial()
	a1, a2 := s.next(), s.next()
	c3 := s.dial() // completes in the kernel's backlog
	select {
	case a := <-s.conns:
		t.Fatalf("connection %d accepted over the limit of 2", a.c.ID)
	case <-time.After(quiet):
	}
	if s.l.Open() != 2 || s.l.Paused.Load() == 0 {
		t.Errorf("open %d, paused %d; want 2, > 0", s.l.Open(), s.l.Paused.Load())
	}
	// Not reset: a read times out rather than failing.
	c3.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := c3.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("waiting client: read %v, want a timeout", err)
	}
	s.release(a1)
	a3 := s.next()
	if a3.c.Remote.String() != c3.LocalAddr().String() {
		t.Fatalf("accepted %v, want the waiting client %v", a3.c.Remote, c3.LocalAddr())
	}
	if _, err := unix.Write(a3.c.FD, []byte("late")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	c3.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := c3.Read(buf); err != nil || string(buf) != "late" {
		t.Fatalf("waiting client read %q, %v", buf, err)
	}
	s.release(a2)
	s.release(a3)
}

// Released racing with the accept loop's return to epoll_wait must not
// be lost: the connection waiting in the backlog is accepted every time.
func TestMaxConnsReleaseRace(t *testing.T) {
	s := start(t, Config{MaxConns: 1}, nil)
	s.dial()
	prev := s.next()
	for i := 0; i < 300; i++ {
		c := s.dial()
		// The new connection's readiness and the release arrive together.
		s.release(prev)
		prev = s.next()
		if prev.c.Remote.String() != c.LocalAddr().String() {
			t.Fatalf("round %d: accepted %v, want %v", i, prev.c.Remote, c.LocalAddr())
		}
		c.Close()
	}
	s.release(prev)
}

// With Listeners: 2 both accept loops take connections (SO_REUSEPORT
// spreads them by hash of the 4-tuple).
func TestReusePortBothAccept(t *testing.T) {
	s := start(t, Config{Listeners: 2}, nil)
	loops := map[uint64]int{}
	for i := 0; i < 200 && len(loops) < 2; i++ {
		c := s.dial()
		a := s.next()
		loops[a.gid]++
		s.release(a)
		c.Close()
	}
	if len(loops) != 2 {
		t.Fatalf("connections accepted by %d accept loops, want 2: %v", len(loops), loops)
	}
	for _, al := range s.l.socks {
		if v, err := unix.GetsockoptInt(al.fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil || v == 0 {
			t.Errorf("listening fd %d: SO_REUSEPORT %d, %v", al.fd, v, err)
		}
	}
}

// Close (or the context's end) stops Run and closes every fd New opened;
// the port then refuses connections. Connections already accepted stay.
func TestCloseStopsRunAndClosesFds(t *testing.T) {
	for _, tt := range []struct {
		name      string
		listeners int
		cancel    bool
		early     bool // Close before Run
	}{
		{"Close", 1, false, false},
		{"Close two loops", 2, false, false},
		{"cancel", 2, true, false},
		{"Close before Run", 2, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fds := fdtest.Count(t)
			goroutines := runtime.NumGoroutine()
			conns := make(chan *stages.Conn, 4)
			l, err := New(Config{Addr: "127.0.0.1:0", Listeners: tt.listeners,
				Assign: func(c *stages.Conn) { conns <- c }}, new(atomic.Uint64))
			if err != nil {
				t.Fatal(err)
			}
			if got := fdtest.Count(t) - fds; got != 3*tt.listeners {
				t.Errorf("New opened %d fds, want 3 per accept loop (socket, epoll, eventfd)", got)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.early {
				l.Close()
			}
			runErr := make(chan error, 1)
			go func() { runErr <- l.Run(ctx) }()
			var kept *stages.Conn
			if !tt.early {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				select {
				case kept = <-conns:
				case <-time.After(waitLimit):
					t.Fatal("not accepted")
				}
				defer unix.Close(kept.FD)
			}
			if tt.cancel {
				cancel()
			} else {
				l.Close()
			}
			select {
			case err := <-runErr:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(waitLimit):
				t.Fatal("Run did not return")
			}
			want := fds
			if kept != nil {
				want += 2 // the accepted conn and the client: not the listener's to close
				if _, err := unix.Write(kept.FD, []byte("x")); err != nil {
					t.Errorf("accepted connection broken by Close: %v", err)
				}
			}
			if got := fdtest.Count(t); got != want {
				t.Errorf("%d fds open after Run returned, want %d", got, want)
			}
			if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
				c.Close()
				t.Error("dial succeeded after Close")
			} else if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial after Close: %v, want connection refused", err)
			}
			l.Close() // idempotent
			cancel()
			deadline := time.Now().Add(waitLimit)
			for runtime.NumGoroutine() > goroutines {
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines after Run returned, %d before", runtime.NumGoroutine(), goroutines)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestBadAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	assign := func(*stages.Conn) {}
	for _, tt := range []struct {
		addr string
		want string // in the error, besides the address
	}{
		{"nonsense", "missing port"},
		{"127.0.0.1", "missing port"},
		{"127.0.0.1:http-nope", "unknown port"},
		{"127.0.0.1:70000", "invalid port"},
		{"[::1:80", "missing ']'"},
		{busy.Addr().String(), "address already in use"},
		{"192.0.2.1:0", "cannot assign requested address"}, // TEST-NET-1: not ours
	} {
		t.Run(tt.addr, func(t *testing.T) {
			fds := fdtest.Count(t)
			l, err := New(Config{Addr: tt.addr, Assign: assign}, new(atomic.Uint64))
			if err == nil {
				l.Close()
				l.Run(context.Background())
				t.Fatalf("New(%q) succeeded", tt.addr)
			}
			if !strings.Contains(err.Error(), tt.addr) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%q): %q; want the address and %q", tt.addr, err, tt.want)
			}
			if got := fdtest.Count(t); got != fds {
				t.Errorf("failed New left %d fds open", got-fds)
			}
		})
	}
	if _, err := New(Config{Addr: "127.0.0.1:0"}, new(atomic.Uint64)); err == nil || err.Error() != "quartet: listener: Config.Assign is required" {
		t.Errorf("New without Assign: %v, want an error naming Assign", err)
	}
	// A named listener (the runtime's messenger listener) says which it is,
	// once, whichever step failed.
	for _, cfg := range []Config{{Addr: "nonsense", Assign: assign}, {Addr: busy.Addr().String(), Assign: assign}, {Addr: "127.0.0.1:0"}} {
		cfg.Name = "messenger listener"
		_, err := New(cfg, new(atomic.Uint64))
		if err == nil || !strings.HasPrefix(err.Error(), "quartet: messenger listener: ") || strings.Count(err.Error(), "quartet:") != 1 {
			t.Errorf("New(%q) named: %v, want one \"quartet: messenger listener: \" in front", cfg.Addr, err)
		}
	}
}

// Out of fds (EMFILE), the accept loop backs off; once fds are free again
// it must accept the connection that waited, although no new connection
// arrives to make the edge-triggered listening socket ready again.
func TestAcceptRetriesAfterEMFILE(t *testing.T) {
	reported := make(chan error, 1000)
	s := start(t, Config{OnAcceptError: func(err error) {
		select {
		case reported <- err:
		default:
		}
	}}, nil)
	sa := &unix.SockaddrInet4{Port: s.l.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}
	client, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(client)

	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(fdtest.Count(t) + 8)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	var fillers []int
	restore := func() {
		for _, fd := range fillers {
			unix.Close(fd)
		}
		fillers = nil
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	defer restore()
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			if err != unix.EMFILE {
				t.Fatalf("filling the fd table: %v", err)
			}
			break
		}
		fillers = append(fillers, fd)
	}
	errs := s.l.Errors.Load()
	if err := unix.Connect(client, sa); err != nil {
		t.Fatalf("connect: %v", err)
	}
	deadline := time.Now().Add(waitLimit)
	for s.l.Errors.Load() == errs {
		if time.Now().After(deadline) {
			restore()
			t.Fatal("accept never failed with the fd table full")
		}
		time.Sleep(time.Millisecond)
	}
	restore()
	a := s.next()
	s.release(a)
	select {
	case err := <-reported:
		var se *os.SyscallError
		if !errors.Is(err, unix.EMFILE) || !errors.As(err, &se) || se.Syscall != "accept4" {
			t.Errorf("OnAcceptError got %v, want accept4's EMFILE", err)
		}
	default:
		t.Error("accept failed with EMFILE and OnAcceptError was not told")
	}
}

// An IPv6 address gets an AF_INET6 socket and IPv6 connection records.
func TestIPv6(t *testing.T) {
	probe, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	s := start(t, Config{Addr: "[::1]:0"}, nil)
	if a := s.l.Addr().(*net.TCPAddr); !a.IP.Equal(net.IPv6loopback) || a.Port == 0 {
		t.Fatalf("Addr %v, want [::1]:port", a)
	}
	c := s.dial()
	a := s.next()
	if !a.c.Remote.Addr().Is6() || a.c.Remote.String() != c.LocalAddr().String() {
		t.Errorf("Remote %v, want the client's %v", a.c.Remote, c.LocalAddr())
	}
	s.release(a)
}

// Listening on the wildcard address, a connection's Local is the address
// the client reached, not 0.0.0.0.
func TestWildcardLocalAddr(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0"} {
		t.Run(addr, func(t *testing.T) {
			s := start(t, Config{Addr: addr}, nil)
			port := s.l.Addr().(*net.TCPAddr).Port
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			a := s.next()
			if a.c.Local.String() != c.RemoteAddr().String() {
				t.Errorf("Local %v, want %v (what the client dialled)", a.c.Local, c.RemoteAddr())
			}
			s.release(a)
		})
	}
}
