package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Idle opens idle keep-alive connections to cfg.URL, in steps up to each
// count, and reads the server's RSS at each step. When the open-file limit
// cannot cover a count it returns the points measured so far and an error
// wrapping ErrFDLimit.
func Idle(ctx context.Context, cfg IdleConfig) ([]IdlePoint, error) {
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.PID <= 0 {
		return nil, errors.New("bench: idle experiment needs the server's PID")
	}
	if err := checkAscending(cfg.Counts); err != nil {
		return nil, fmt.Errorf("bench: idle experiment: %w", err)
	}
	if cfg.Active < 0 || cfg.Settle < 0 || cfg.ActiveFor < 0 {
		return nil, fmt.Errorf("bench: idle experiment: negative Active %d, Settle %v or ActiveFor %v", cfg.Active, cfg.Settle, cfg.ActiveFor)
	}
	rss := cfg.RSS
	if rss == nil {
		rss = func() (uint64, error) { return ProcRSS(cfg.PID) }
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	src := cfg.SourceAddrs
	most := 0
	for _, n := range cfg.Counts {
		most = max(most, n)
	}
	if len(src) == 0 && t.addr.Addr().IsLoopback() && t.addr.Addr().Is4() && most > portsPerSource {
		a := netip.MustParseAddr("127.0.0.1")
		for range most/portsPerSource + 1 {
			src = append(src, a)
			a = a.Next()
		}
	}
	req := serialize(t, RequestSpec{Path: t.path}).raw
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	base, err := rss()
	if err != nil {
		return nil, err
	}
	var points []IdlePoint
	for _, n := range cfg.Counts {
		if _, err := RaiseFDLimit(uint64(n+cfg.Active) + 64); err != nil {
			return points, fmt.Errorf("%d idle connections: %w", n, err)
		}
		began := time.Now()
		opened, err := openIdle(ctx, t.addr, src, req, len(fds), n, cfg)
		took := time.Since(began)
		fds = append(fds, opened...)
		if err != nil {
			// What was reached is still a measurement: keep it, marked.
			if rss, rerr := rss(); rerr == nil && len(fds) > 0 && ctx.Err() == nil {
				p := newIdlePoint(len(fds), rss, base)
				p.Partial = true
				points = append(points, p)
			}
			return points, err
		}
		select {
		case <-time.After(cfg.Settle):
		case <-ctx.Done():
			return points, ctx.Err()
		}
		now, err := rss()
		if err != nil {
			return points, err
		}
		closed, err := countClosed(fds)
		if err != nil {
			return points, err
		}
		p := newIdlePoint(n-closed, now, base)
		p.Conns, p.Closed, p.OpenTime = n, closed, took
		if cfg.Active > 0 {
			a, err := activeProbe(ctx, cfg, src)
			if err != nil {
				points = append(points, p)
				return points, fmt.Errorf("%d active connections among %d idle: %w", cfg.Active, n, err)
			}
			p.ActiveP50, p.ActiveP99, p.ActiveRate, p.ActiveErrors = a.Latency.P50, a.Latency.P99, a.RequestsPerSec, a.ErrorTotal()
		}
		if cfg.Log != nil {
			// As it comes: a run of a million connections may not live to
			// print its table.
			fmt.Fprintf(cfg.Log, "step: %d connections, RSS %s (%s per connection), opened in %v, active p50 %v p99 %v at %.0f req/s\n",
				p.Conns, byteSize(float64(p.RSS)), byteSize(p.PerConn), took.Round(10*time.Millisecond), p.ActiveP50, p.ActiveP99, p.ActiveRate)
		}
		points = append(points, p)
	}
	return points, nil
}

// activeProbe runs cfg.Active keep-alive connections of GET requests
// against the server while the idle ones are held: what a few busy
// clients see from a server holding very many quiet ones.
func activeProbe(ctx context.Context, cfg IdleConfig, src []netip.Addr) (*Result, error) {
	d := cfg.ActiveFor
	if d <= 0 {
		d = DefaultActiveFor
	}
	return Run(ctx, Config{
		URL: cfg.URL, Conns: cfg.Active, Loops: 1, Duration: d, Warmup: time.Second,
		SourceAddrs: src, Timeout: idleIOTimeout,
	})
}

// openIdle opens connections have..want-1 with idleOpeners workers. Each
// connection is opened, used once and then only held, so blocking calls on
// a few goroutines are simplest; several at once let the server accept in
// batches, which matters most in a slow VM. The first failure stops it.
func openIdle(ctx context.Context, dst netip.AddrPort, src []netip.Addr, req []byte, have, want int, cfg IdleConfig) ([]int, error) {
	type result struct {
		fds []int
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opened atomic.Int64
	opened.Store(int64(have))
	next := make(chan int)
	results := make(chan result, idleOpeners)
	for range idleOpeners {
		go func() {
			var r result
			buf := make([]byte, 4096)
			for i := range next {
				var from netip.Addr
				if len(src) > 0 {
					from = src[i%len(src)]
				}
				fd, err := idleConn(dst, from, req, buf)
				if err != nil {
					r.err = fmt.Errorf("bench: idle connection %d: %w", i+1, err)
					cancel() // stops the feeder
					break
				}
				r.fds = append(r.fds, fd)
				if n := opened.Add(1); cfg.Log != nil && n%logEvery == 0 {
					fmt.Fprintf(cfg.Log, "%d connections open, server RSS %s\n", n, rssString(cfg.PID))
				}
			}
			results <- r
		}()
	}
	// The feeder runs here, so every worker has ended before we return.
feed:
	for i := have; i < want; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	var fds []int
	var errs []error
	for range idleOpeners {
		r := <-results
		fds = append(fds, r.fds...)
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return fds, errs[0]
	}
	return fds, ctx.Err()
}

func rssString(pid int) string {
	rss, err := ProcRSS(pid)
	if err != nil {
		return err.Error()
	}
	return byteSize(float64(rss))
}

// countClosed reports how many of fds the peer has closed (readable: EOF
// or RST, since an idle server sends nothing else).
func countClosed(fds []int) (int, error) {
	const chunk = 1024
	pfds := make([]unix.PollFd, 0, chunk)
	closed := 0
	for len(fds) > 0 {
		n := min(chunk, len(fds))
		pfds = pfds[:0]
		for _, fd := range fds[:n] {
			pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN | pollRDHUP})
		}
		if _, err := retryEINTR(func() (int, error) { return unix.Poll(pfds, 0) }); err != nil {
			return 0, os.NewSyscallError("poll", err)
		}
		for _, p := range pfds {
			if p.Revents != 0 {
				closed++
			}
		}
		fds = fds[n:]
	}
	return closed, nil
}

// idleConn opens one connection, makes one request, reads its response and
// returns the still open socket. Blocking I/O with timeouts: connections are
// opened one after another and then only held, so there is nothing for an
// event loop to multiplex.
func idleConn(dst netip.AddrPort, from netip.Addr, req, buf []byte) (int, error) {
	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := socket(family, false)
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval(int64(idleIOTimeout))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	fail := func(call string, err error) (int, error) {
		unix.Close(fd)
		return -1, os.NewSyscallError(call, err)
	}
	if from.IsValid() {
		bindAddressNoPort(fd)
		if err := unix.Bind(fd, sockaddr(from, 0)); err != nil {
			return fail("bind", err)
		}
	}
	if err := unix.Connect(fd, sockaddr(dst.Addr(), dst.Port())); err == unix.EINTR || err == unix.EINPROGRESS {
		// EINTR: the Go runtime's preemption signal interrupted the
		// connect; EINPROGRESS: SO_SNDTIMEO expired, typically because a
		// slow server's accept queue is full and SYNs are being retried.
		// Either way the connect goes on in the background: wait for it.
		if err := awaitConnect(fd); err != nil {
			return fail("connect", err)
		}
	} else if err != nil {
		return fail("connect", err)
	}
	if _, err := retryEINTR(func() (int, error) { return unix.Write(fd, req) }); err != nil {
		return fail("write", err)
	}
	var p respParser
	var s oneResponse
	for !s.got {
		n, err := retryEINTR(func() (int, error) { return unix.Read(fd, buf) })
		if err != nil {
			return fail("read", err)
		}
		if n == 0 {
			return fail("read", unix.ECONNRESET)
		}
		if err := p.feed(buf[:n], &s); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if s.close {
		unix.Close(fd)
		return -1, errors.New("bench: server closed the connection after its response")
	}
	return fd, nil
}

// retryEINTR repeats a blocking call the runtime's signals interrupted.
func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// awaitConnect waits for an interrupted connect to complete.
func awaitConnect(fd int) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	n, err := retryEINTR(func() (int, error) { return unix.Poll(pfd, int(idleConnectTimeout/time.Millisecond)) })
	if err != nil {
		return err
	}
	if n == 0 {
		return unix.ETIMEDOUT
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return unix.Errno(soerr)
	}
	return nil
}

// oneResponse is the respSink of idleConn.
type oneResponse struct {
	got   bool
	close bool
}

func (o *oneResponse) noBody() bool { return false }
func (o *oneResponse) done(status int, close bool, _ int64) {
	o.got, o.close = true, close
}

// idleMain is `quartet bench idle`.
func idleMain(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("bench idle", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	counts := fs.String("n", "10000,100000", "idle connection counts, ascending")
	pid := fs.Int("server-pid", 0, "PID of the server at URL")
	servers := fs.String("servers", "quartet,nethttp", "without URL: servers to start and measure, one after another (quartet, nethttp, gnet, fasthttp)")
	peersDir := fs.String("peers", "", "directory of the bench/peers module")
	peerBin := fs.String("peer-bin", "", "directory of already built peer binaries (skips building; e.g. inside a VM)")
	srcFlag := fs.String("src", "", "source addresses (default: 127.0.0.x as needed)")
	settle := fs.Duration("settle", DefaultSettle, "pause before reading RSS")
	path := fs.String("path", "/hello", "request path for each connection's one request")
	active := fs.Int("active", 0, "at each step, also run this many busy keep-alive connections (GET of the path) and report their latency")
	activeFor := fs.Duration("active-for", DefaultActiveFor, "how long the busy connections run at each step")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, `usage: quartet bench idle [flags] [URL]

Opens idle keep-alive connections (one request each) and reports the
server's RSS per connection. Both ends need an open file per connection:
beyond the host's per-process cap, run it in the project's VM, e.g.
  vm/run.sh -t 2700 -m 8192 -- /path/to/quartet bench idle -n 10000,100000 --peer-bin DIR
with DIR holding the peers built by: cd bench/peers && go build -o DIR/ ./...
(vm/million.sh does this up to a million connections, with --active.)`)
		fs.PrintDefaults()
		fmt.Fprintln(env.Stderr, `
Exit status: 0 when every server was measured at every count; 1 when one
stopped short (unreachable, closed, or never answered: the table shows
what was reached and why it stopped); 2 for a usage error.`)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	ns, err := parseInts(*counts)
	if err != nil {
		return err
	}
	if err := checkAscending(ns); err != nil {
		return usagef("bench idle: -n %s: %v", *counts, err)
	}
	switch {
	case *settle < 0:
		return usagef("bench idle: -settle %v: want 0 (the default pause) or more", *settle)
	case *active < 0:
		return usagef("bench idle: -active %d: want 0 (none) or more connections", *active)
	case *activeFor <= 0:
		return usagef("bench idle: -active-for %v: want a duration above 0", *activeFor)
	}
	for _, name := range strings.Split(*servers, ",") {
		if name = strings.TrimSpace(name); !slices.Contains(idleServers, name) {
			return usagef("bench idle: --servers %q: want some of %s", name, strings.Join(idleServers, ", "))
		}
	}
	var src []netip.Addr
	if *srcFlag != "" {
		if src, err = ParseSourceAddrs(*srcFlag); err != nil {
			return err
		}
	}
	type target struct {
		name string
		srv  Server
	}
	var targets []target
	switch len(pos) {
	case 1:
		if *pid <= 0 {
			return usagef("bench idle: --server-pid is required with a URL")
		}
		targets = append(targets, target{"server", urlServer{url: pos[0], pid: *pid}})
	case 0:
	default:
		fs.Usage()
		return errUsage
	}
	// Children inherit the raised limit, so servers started below can hold
	// as many connections as the generator opens.
	most := 0
	for _, n := range ns {
		most = max(most, n)
	}
	if _, err := RaiseFDLimit(uint64(most+*active) + 64); err != nil {
		fmt.Fprintf(env.Stderr, "warning: %v; larger counts will be skipped\n", err)
	}
	bin := *peerBin
	start := func(name string) (Server, error) {
		if name == "quartet" {
			if env.QuartetBinary == "" {
				return nil, errors.New("bench idle: no quartet binary; give a URL and --server-pid")
			}
			return QuartetProcess(name, env.QuartetBinary, nil).StartIdle(ctx)
		}
		if bin == "" {
			dir := *peersDir
			if dir == "" {
				wd, _ := os.Getwd()
				if dir, err = FindPeersDir(wd); err != nil {
					return nil, err
				}
			}
			if bin, err = BuildPeers(ctx, dir); err != nil {
				return nil, err
			}
		}
		return PeerProcess(name, bin).StartIdle(ctx)
	}
	defer func() {
		if bin != "" && bin != *peerBin {
			os.RemoveAll(bin)
		}
	}()
	names := []string{}
	if len(targets) == 0 {
		names = strings.Split(*servers, ",")
	}
	// failed names the servers whose experiment stopped short: the table
	// shows what was reached, and the command still fails.
	var failed []string
	ew := &errWriter{w: env.Stdout}
	ew.printf("%-10s %8s %12s %12s %14s %10s", "server", "conns", "RSS", "base RSS", "RSS/conn", "open")
	if *active > 0 {
		ew.printf(" %10s %10s %10s", "active p50", "active p99", "active r/s")
	}
	ew.printf("\n")
	report := func(name string, pts []IdlePoint, err error) {
		for _, p := range pts {
			note := ""
			if p.Partial {
				note = "  (partial: opening stopped here)"
			}
			if p.Closed > 0 {
				note += fmt.Sprintf("  (%d closed by the server; RSS/conn over the rest)", p.Closed)
			}
			ew.printf("%-10s %8d %12s %12s %14s %10s", name, p.Conns, byteSize(float64(p.RSS)), byteSize(float64(p.BaseRSS)), byteSize(p.PerConn), p.OpenTime.Round(10*time.Millisecond))
			if *active > 0 {
				ew.printf(" %10s %10s %10.0f", p.ActiveP50, p.ActiveP99, p.ActiveRate)
				if p.ActiveErrors > 0 {
					note += fmt.Sprintf("  (%d active requests failed)", p.ActiveErrors)
				}
			}
			ew.printf("%s\n", note)
		}
		if err != nil {
			ew.printf("%-10s stopped: %v\n", name, err)
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
		}
	}
	for _, tg := range targets {
		pts, err := Idle(ctx, IdleConfig{URL: strings.TrimRight(tg.srv.URL(), "/"), Counts: ns, PID: tg.srv.PID(), SourceAddrs: src, Settle: *settle, Log: env.Stderr, Active: *active, ActiveFor: *activeFor})
		report(tg.name, pts, err)
	}
	for _, name := range names {
		s, err := start(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		pts, err := Idle(ctx, IdleConfig{URL: s.URL() + *path, Counts: ns, PID: s.PID(), RSS: serverRSS(s), SourceAddrs: src, Settle: *settle, Log: env.Stderr, Active: *active, ActiveFor: *activeFor})
		_ = s.Close()
		report(name, pts, err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if ew.err != nil {
		return ew.err
	}
	if len(failed) > 0 {
		return fmt.Errorf("bench idle: stopped short: %s", strings.Join(failed, "; "))
	}
	return nil
}

// idleServers are the servers bench idle starts without a URL.
var idleServers = []string{"quartet", "nethttp", "gnet", "fasthttp"}

// checkAscending refuses counts that do not rise: connections are added
// from one count to the next, so a falling one has nothing to add and
// its row reported the previous step's connections under its own count.
func checkAscending(counts []int) error {
	for i := 1; i < len(counts); i++ {
		if counts[i] <= counts[i-1] {
			return fmt.Errorf("counts must rise: %d after %d", counts[i], counts[i-1])
		}
	}
	return nil
}
