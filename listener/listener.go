// Package listener is Quartet's first stage: accept loops that take new
// connections off listening sockets, enforce the server's connection limit,
// and hand each connection to a reader loop.
//
// Each accept loop owns one listening socket and sleeps in its own poller
// (a stages.Loop: its turn accepts until EAGAIN or the limit).
// With Config.Listeners > 1 the sockets share the address through
// SO_REUSEPORT, so the kernel spreads incoming connections over the loops
// without an accept mutex (the answer to Pane's "can we eliminate the
// listener thread?" that Linux gives today: keep it, but never serialise
// it).
//
// At the connection limit a loop stops accepting and leaves new
// connections in the kernel's backlog, as nginx does at worker_connections;
// the first close wakes it again. Connections are never accepted only to be
// dropped.
package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// DefaultBacklog is the listen(2) backlog; the kernel caps it at
// net.core.somaxconn.
const DefaultBacklog = 4096

// Config describes the listening sockets.
type Config struct {
	Addr string // host:port; port 0 picks one
	// Listener, when set, is used instead of binding Addr: a socket the
	// caller opened (a test's ":0", a systemd socket). It must be a TCP
	// listener; New takes it over (the listener keeps a duplicate of its
	// descriptor and closes it), and it has one accept loop.
	Listener  net.Listener
	Listeners int  // accept loops, each with its own socket; > 1 implies ReusePort
	ReusePort bool // set SO_REUSEPORT (lets other processes share the port too)
	Backlog   int
	MaxConns  int // open connections at most; 0 means no limit

	// Assign hands a new connection to a reader loop. It must not block
	// for long: the accept loop waits for it.
	Assign func(*stages.Conn)
	// Protocol is set on every connection accepted here: one listener
	// per protocol address (HTTP/1.1 by default).
	Protocol stages.ProtocolID
	// Nudge, if set, is the stages.LoopNudge the accept loops join, so
	// that CPU-bound workers hand them the CPU when connections wait.
	Nudge *stages.LoopNudge
	// Name is what New's errors call this listener ("listener" if
	// empty), so that a server with one per protocol says which failed.
	Name string
	// OnAcceptError, if set, is told each time accept fails, but for a
	// connection that died in the backlog (ECONNABORTED, EPROTO): in
	// practice for lack of resources (EMFILE and ENFILE, the fd table is
	// full; ENOBUFS, ENOMEM). The accept loop backs off and tries again,
	// clients wait in the backlog meanwhile, and the operator must hear
	// of it. It runs on the accept loop and must not block.
	OnAcceptError func(error)
}

// Counters are the listener's statistics.
type Counters struct {
	Accepted atomic.Uint64 // connections accepted
	Paused   atomic.Uint64 // times an accept loop stopped at the connection limit
	Errors   atomic.Uint64 // accept errors other than EAGAIN
}

// Listener is the listening sockets and their accept loops.
type Listener struct {
	cfg    Config
	addr   netip.AddrPort
	socks  []*acceptLoop
	open   atomic.Int64
	nextID *atomic.Uint64
	closed atomic.Bool
	Counters
}

type acceptLoop struct {
	l      *Listener
	fd     int
	loop   *stages.Loop
	paused atomic.Bool
	once   sync.Once
	peer   peerAddr // accept's address buffer
}

// tokenListen is the listening socket's registration; its events only end
// the loop's wait, and the next turn accepts.
var tokenListen = poll.MakeToken(poll.KindListener, 0, 0)

// New opens and binds the listening sockets, so Addr is known before Run.
// ids numbers the connections (shared so IDs stay unique across restarts
// of the listener within one server).
func New(cfg Config, ids *atomic.Uint64) (*Listener, error) {
	if cfg.Listeners <= 0 {
		cfg.Listeners = 1
	}
	if cfg.Listeners > 1 {
		cfg.ReusePort = true
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = DefaultBacklog
	}
	name := cfg.Name
	if name == "" {
		name = "listener"
	}
	fail := func(err error) (*Listener, error) { return nil, fmt.Errorf("quartet: %s: %w", name, err) }
	if cfg.Assign == nil {
		return fail(errors.New("Config.Assign is required"))
	}
	var err error
	l := &Listener{cfg: cfg, nextID: ids}
	var ap netip.AddrPort
	if cfg.Listener != nil {
		if cfg.Listeners > 1 {
			return fail(errors.New("a given Listener has one accept loop; Listeners > 1 needs Addr"))
		}
	} else if ap, err = resolve(cfg.Addr); err != nil {
		return fail(err)
	}
	for i := 0; i < cfg.Listeners; i++ {
		var fd int
		var bound netip.AddrPort
		if cfg.Listener != nil {
			fd, bound, err = adopt(cfg.Listener)
		} else if fd, bound, err = listen(ap, cfg.ReusePort, cfg.Backlog); err != nil {
			err = fmt.Errorf("%s: %w", cfg.Addr, err)
		}
		if err != nil {
			l.closeSockets()
			return fail(err)
		}
		ap = bound // later sockets join the port the first one got
		al := &acceptLoop{l: l, fd: fd}
		l.socks = append(l.socks, al)
		al.loop, err = stages.NewLoop(stages.LoopHooks{Turn: al.turn, Pending: al.pending}, stages.LoopOptions{Nudge: cfg.Nudge})
		if err == nil {
			err = al.loop.Poller().Add(fd, poll.Readable|poll.EdgeTriggered, tokenListen)
		}
		if err != nil {
			l.closeSockets()
			return nil, err
		}
	}
	l.addr = ap
	return l, nil
}

func resolve(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	ta, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", addr, err)
	}
	// ResolveTCPAddr gives IPv4 addresses in their 16-byte form; unmapped,
	// they print as the user wrote them.
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func listen(ap netip.AddrPort, reusePort bool, backlog int) (int, netip.AddrPort, error) {
	family := unix.AF_INET
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := socket(family)
	if err != nil {
		return -1, ap, err
	}
	fail := func(call string, err error) (int, netip.AddrPort, error) {
		unix.Close(fd)
		return -1, ap, os.NewSyscallError(call, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt SO_REUSEADDR", err)
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("setsockopt SO_REUSEPORT", err)
		}
	}
	if err := unix.Bind(fd, toSockaddr(ap)); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	return fd, fromSockaddr(sa), nil
}

// adopt takes over a listening socket opened by someone else: it keeps a
// duplicate of the descriptor, made non-blocking, and closes ln, so that
// the socket has one owner from here on. It checks that the socket is a
// listening TCP socket, which the accept loop relies on.
func adopt(ln net.Listener) (int, netip.AddrPort, error) {
	fail := func(err error) (int, netip.AddrPort, error) {
		return -1, netip.AddrPort{}, fmt.Errorf("Config.Listener (%s %s): %w", ln.Addr().Network(), ln.Addr(), err)
	}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return fail(fmt.Errorf("a %T has no file descriptor; need a TCP listener", ln))
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fail(err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return fail(err)
	}
	if dupErr != nil {
		return fail(os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr))
	}
	check := func() error {
		if err := unix.SetNonblock(fd, true); err != nil {
			return os.NewSyscallError("fcntl O_NONBLOCK", err)
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			return errors.New("not a stream socket")
		}
		if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
			return errors.New("not listening")
		}
		return nil
	}
	if err := check(); err != nil {
		unix.Close(fd)
		return fail(err)
	}
	sa, err := unix.Getsockname(fd)
	bound := fromSockaddr(sa)
	if err != nil || !bound.IsValid() {
		unix.Close(fd)
		return fail(errors.New("not an IPv4 or IPv6 socket"))
	}
	ln.Close() // the duplicate keeps the socket open
	return fd, bound, nil
}

func toSockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.addr) }

// Open is the number of connections accepted and not yet released.
func (l *Listener) Open() int { return int(l.open.Load()) }

// AtLimit reports whether the open connections have reached MaxConns, so
// that the accept loops wait for one to close. Any goroutine.
func (l *Listener) AtLimit() bool { return l.atLimit() }

// Released tells the listener a connection has closed: below the limit
// again, a paused accept loop resumes. Any goroutine.
func (l *Listener) Released() {
	n := l.open.Add(-1)
	if l.cfg.MaxConns > 0 && n < int64(l.cfg.MaxConns) {
		for _, al := range l.socks {
			if al.paused.Load() {
				al.loop.Notify()
			}
		}
	}
}

// Close stops accepting: Run returns and the listening sockets close.
// Accepted connections are not affected.
func (l *Listener) Close() {
	if l.closed.CompareAndSwap(false, true) {
		for _, al := range l.socks {
			al.loop.Stop()
		}
	}
}

// Run runs the accept loops until Close or ctx's end, then closes the
// listening sockets.
func (l *Listener) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, l.Close)
	defer stop()
	var g errgroup.Group
	for _, al := range l.socks {
		g.Go(func() error {
			if err := al.loop.Run(ctx); err != nil {
				return fmt.Errorf("quartet: accept loop: %w", err)
			}
			return nil
		})
	}
	err := g.Wait()
	l.closeSockets()
	return err
}

func (l *Listener) closeSockets() {
	for _, al := range l.socks {
		al.once.Do(func() {
			if al.loop != nil {
				al.loop.Close()
			}
			unix.Close(al.fd)
		})
	}
}

// turn accepts what the backlog holds; the loop then sleeps until the
// listening socket's next edge, a Notify (below the limit again) or Stop.
func (al *acceptLoop) turn(_ time.Time, stopping bool) (time.Duration, bool) {
	if stopping || al.l.closed.Load() {
		return 0, true
	}
	if al.acceptAll() {
		// The listening socket is edge-triggered and the connections
		// that failed are still queued: no new edge may come for them.
		return acceptBackoff, false
	}
	return -1, false
}

// pending is the loop's re-check after it announced sleep: a Released
// that ran while the loop was still running found it awake and wrote no
// eventfd, so "below the limit again" must be seen here or never. (Close
// stops the loop, which re-checks that itself.)
func (al *acceptLoop) pending() bool {
	return al.paused.Load() && !al.l.atLimit()
}

// atLimit reports whether the open connections have reached MaxConns.
func (l *Listener) atLimit() bool {
	return l.cfg.MaxConns > 0 && l.open.Load() >= int64(l.cfg.MaxConns)
}

// acceptBackoff is how long an accept loop waits before trying again
// when the process or system is out of fds or buffers: long enough not to
// spin while nothing is released, short enough that waiting clients hardly
// notice once something is.
const acceptBackoff = 10 * time.Millisecond

// acceptAll accepts until the backlog is empty (edge-triggered) or the
// connection limit is reached. It reports starved when it stopped on a
// lack of resources with connections still queued.
func (al *acceptLoop) acceptAll() (starved bool) {
	l := al.l
	for !l.closed.Load() {
		if l.atLimit() {
			if !al.paused.Swap(true) {
				l.Paused.Add(1)
			}
			// Re-check after announcing the pause: a Released that ran
			// before it saw no paused loop to wake.
			if l.atLimit() {
				return false
			}
		}
		al.paused.Store(false)
		nfd, remote, err := accept(al.fd, &al.peer)
		if err != nil {
			switch err {
			case unix.EAGAIN:
				return false
			case unix.EINTR, unix.ECONNABORTED, unix.EPROTO:
				continue
			}
			// EMFILE, ENFILE, ENOBUFS, ENOMEM: out of resources. Count
			// and report it, and back off (in epoll_wait, so Close still
			// wakes the loop) instead of spinning on a readable socket.
			l.Errors.Add(1)
			if l.cfg.OnAcceptError != nil {
				l.cfg.OnAcceptError(os.NewSyscallError("accept4", err))
			}
			return true
		}
		// Responses go out in whole writevs; Nagle would only delay the
		// last segment of each.
		_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		l.open.Add(1)
		l.Accepted.Add(1)
		c := &stages.Conn{
			ID:       l.nextID.Add(1),
			FD:       nfd,
			Remote:   remote,
			Local:    l.addr,
			Accepted: time.Now(),
			Protocol: l.cfg.Protocol,
		}
		if l.addr.Addr().IsUnspecified() {
			// Bound to every address: which one the client reached is
			// known only per connection (one getsockname).
			if la, err := unix.Getsockname(nfd); err == nil {
				c.Local = fromSockaddr(la)
			}
		}
		l.cfg.Assign(c)
	}
	return false
}
