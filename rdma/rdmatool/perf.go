package rdmatool

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// perftest's defaults: port 18515, 64 KiB messages and 5000 iterations for
// bandwidth, 2-byte messages and 1000 iterations for latency, 128 work
// requests in flight.
const (
	perfPort      = 18515
	perfBWSize    = 65536
	perfLatSize   = 2
	perfBWIters   = 5000
	perfLatIters  = 1000
	perfDepth     = 128
	perfMaxRecvWR = 8192    // the server pre-posts one receive per send
	perfMaxSize   = 1 << 30 // the server registers a buffer of the client's size
)

// A bandwidth run signals one work request in perfSignalEvery, as
// perftest's CQ moderation does, so completions do not dominate; the
// depth is rounded to a multiple so the send queue never fills. Like
// perftest (which turns moderation off above 8 KiB, MSG_SIZE_CQ_MOD_LIMIT),
// messages above perfSignalAllAbove are all signalled. That matters on
// siw: it sends an unsignalled request of a page or more zero-copy, one
// TCP send per 4 KiB page (about 18 per 64 KiB Write instead of 2), which
// on loopback measured at half the bandwidth of the copy it makes for a
// signalled one, so moderating 64 KiB Writes compared a different siw
// transmit path with perftest's.
const (
	perfSignalEvery    = 16
	perfSignalAllAbove = 8192
)

// signalEvery is how many requests of size bytes a bandwidth run posts
// per signalled one.
func signalEvery(size int) int {
	if size > perfSignalAllAbove {
		return 1
	}
	return perfSignalEvery
}

type perfFlags struct {
	server, client, events bool
	addr, test, mode       string
	port, size, iters      int
	depth, cpu             int
}

// perfParams travel in the connect request: {be32 test, be32 size, be32
// iters, be32 flags}; the server answers with {be64 addr, be32 rkey, be32
// len} of its buffer in the accept reply. A request without flags (12
// bytes, from an older client) means flags 0.
const (
	perfParamsLen = 16
	// perfBusyPoll: the client busy-polls, and the server busy-polls its
	// CQ too until the client leaves. That is what perftest -R does: its
	// server spins in ibv_poll_cq for the whole run, waiting for the
	// client's end-of-test message (rdma_read_keys). On a software device
	// the server's CPU does the device's work (siw answers a Read from a
	// kernel thread on the server QP's CPU), and a spinning CPU takes that
	// work at once where a sleeping one must first be woken, so a
	// comparison with perftest is only like for like with the same
	// waiting on both ends; with -e both ends wait on their CQ's fd.
	perfBusyPoll uint32 = 1 << 0
)
const (
	testWrite uint32 = iota
	testRead
	testSend
)

var testNames = map[string]uint32{"write": testWrite, "read": testRead, "send": testSend}

// Perf measures RDMA write, read or send bandwidth (-m bw) or latency
// (-m lat) between a server (-s) and a client (-c); the client measures
// and prints.
func Perf(ctx context.Context, provider string, args []string, stdout, stderr io.Writer) error {
	var f perfFlags
	fs := flag.NewFlagSet("quartet rdma perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&f.server, "s", false, "server side")
	fs.BoolVar(&f.client, "c", false, "client side (measures)")
	fs.StringVar(&f.addr, "a", "", "address (server: bind address; client: server address)")
	fs.IntVar(&f.port, "p", perfPort, "port")
	fs.StringVar(&f.test, "t", "write", "operation: write, read or send")
	fs.StringVar(&f.mode, "m", "bw", "measure bandwidth (bw) or latency (lat)")
	fs.IntVar(&f.size, "S", 0, "message size in bytes (default 65536 for bw, 2 for lat)")
	fs.IntVar(&f.iters, "n", 0, "iterations (default 5000 for bw, 1000 for lat)")
	fs.IntVar(&f.depth, "D", perfDepth, "work requests in flight (bw)")
	fs.BoolVar(&f.events, "e", false, "wait for completions on the CQ fd instead of busy polling")
	fs.IntVar(&f.cpu, "cpu", -1, "run the thread that waits for completions on this CPU (-1: where the scheduler puts it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	test, ok := testNames[f.test]
	switch {
	case f.server == f.client:
		return errors.New("exactly one of -s and -c is required")
	case f.client && f.addr == "":
		return errors.New("-c needs -a ADDR")
	case !ok:
		return fmt.Errorf("unknown test %q (write, read, send)", f.test)
	case f.mode != "bw" && f.mode != "lat":
		return fmt.Errorf("unknown mode %q (bw, lat)", f.mode)
	}
	if f.size == 0 {
		f.size = map[bool]int{true: perfBWSize, false: perfLatSize}[f.mode == "bw"]
	}
	if f.iters == 0 {
		f.iters = map[bool]int{true: perfBWIters, false: perfLatIters}[f.mode == "bw"]
	}
	if f.size < 0 || f.size > perfMaxSize || f.iters < 0 {
		return fmt.Errorf("-S %d / -n %d: want 1 B to 1 GiB and at least one iteration", f.size, f.iters)
	}
	every := signalEvery(f.size)
	f.depth = max(every, f.depth/every*every)
	if test == testSend {
		f.iters = min(f.iters, perfMaxRecvWR)
	}
	p, err := NewRegistry().Get(provider)
	if err != nil {
		return err
	}
	if f.server {
		return perfServer(ctx, p, f, stderr)
	}
	return perfClient(ctx, p, f, test, stdout)
}

func perfServer(ctx context.Context, p rdma.Provider, f perfFlags, stderr io.Writer) (err error) {
	e := &endpoint{}
	defer func() {
		if cerr := e.close(); err == nil {
			err = cerr
		}
	}()
	if e.dev, err = openDevice(p, f.addr); err != nil {
		return err
	}
	host := f.addr
	if host == "" {
		host = "0.0.0.0"
	}
	l, err := e.dev.Listen(net.JoinHostPort(host, strconv.Itoa(f.port)), 1)
	if err != nil {
		return err
	}
	defer l.Close()
	req, err := l.Accept(ctx)
	if err != nil {
		return err
	}
	test, size, iters, flags, err := parsePerfParams(req.PrivateData())
	if err != nil {
		req.Reject(nil)
		return err
	}
	if flags&perfBusyPoll != 0 {
		e.startSpinning()
	}
	unpin, err := pinPoller(e.spin, f.cpu)
	if err != nil {
		req.Reject(nil)
		return err
	}
	defer unpin()
	recvs := 0
	if test == testSend {
		recvs = min(iters, perfMaxRecvWR)
	}
	if err := e.setup(2*max(recvs, perfDepth)+16, size); err != nil {
		req.Reject(nil)
		return err
	}
	// Every receive lands in the same buffer: the data is not checked,
	// only the receive must exist when the Send arrives (iWARP has no
	// RNR retry), so all of them are posted before the connection opens.
	cfg := rdma.QPConfig{
		PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq,
		MaxSendWR: 16, MaxRecvWR: max(recvs, 1),
		Prepare: func(qp rdma.QP) error {
			for i := 0; i < recvs; i++ {
				if err := qp.PostRecv(wrRecv, []rdma.SGE{rdma.SGEOf(e.mr, 0, size)}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	reply := make([]byte, rpingInfoLen)
	binary.BigEndian.PutUint64(reply, e.mr.Addr())
	binary.BigEndian.PutUint32(reply[8:], e.mr.RKey())
	binary.BigEndian.PutUint32(reply[12:], uint32(size))
	if e.qp, err = req.Accept(ctx, cfg, reply); err != nil {
		return err
	}
	l.Close()
	// Serve until the client disconnects, reposting receives for sends.
	for {
		c, err := e.next(ctx)
		if errors.Is(err, errDisconnected) {
			return nil
		}
		if err != nil {
			return err
		}
		if c.Op == rdma.OpRecv {
			err := e.qp.PostRecv(wrRecv, []rdma.SGE{rdma.SGEOf(e.mr, 0, size)})
			if errors.Is(err, rdma.ErrQPState) {
				return nil // the client finished and left between two receives
			}
			if err != nil {
				return err
			}
		}
	}
}

// parsePerfParams reads the client's connect request: test, message size,
// iterations and flags (absent, from an older client: 0).
func parsePerfParams(pd []byte) (test uint32, size, iters int, flags uint32, err error) {
	if len(pd) < 12 {
		return 0, 0, 0, 0, fmt.Errorf("connect request without perf parameters (%d bytes of private data)", len(pd))
	}
	test, size, iters = binary.BigEndian.Uint32(pd), int(binary.BigEndian.Uint32(pd[4:])), int(binary.BigEndian.Uint32(pd[8:]))
	if len(pd) >= perfParamsLen {
		flags = binary.BigEndian.Uint32(pd[12:])
	}
	if test > testSend || size <= 0 || size > perfMaxSize || iters <= 0 {
		return 0, 0, 0, 0, fmt.Errorf("bad perf parameters: test %d, size %d, iterations %d", test, size, iters)
	}
	return test, size, iters, flags, nil
}

// pinPoller locks the calling goroutine to its OS thread when it will
// busy-poll (see endpoint.spin) or is to run on one CPU, and with cpu >= 0
// binds that thread, and only it, to cpu: the runtime's other threads
// stay free, where taskset on a Go process would put them all, sysmon
// included, on the poller's CPU. unpin restores the thread's CPU set and
// releases the lock.
func pinPoller(spin bool, cpu int) (unpin func(), err error) {
	if !spin && cpu < 0 {
		return func() {}, nil
	}
	runtime.LockOSThread()
	if cpu < 0 {
		return runtime.UnlockOSThread, nil
	}
	restore, err := bindThread(cpu)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return func() {
		// A thread that cannot get its CPU set back must not return to
		// the runtime's pool: exit it (a locked goroutine that returns
		// without unlocking takes its thread with it) by staying locked.
		if restore() {
			runtime.UnlockOSThread()
		}
	}, nil
}

func perfClient(ctx context.Context, p rdma.Provider, f perfFlags, test uint32, stdout io.Writer) (err error) {
	e, err := newEndpoint(p, f.addr, 2*f.depth+16, f.size)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := e.close(); err == nil {
			err = cerr
		}
	}()
	params := make([]byte, perfParamsLen)
	binary.BigEndian.PutUint32(params, test)
	binary.BigEndian.PutUint32(params[4:], uint32(f.size))
	binary.BigEndian.PutUint32(params[8:], uint32(f.iters))
	if !f.events {
		binary.BigEndian.PutUint32(params[12:], perfBusyPoll)
	}
	cfg := rdma.QPConfig{PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq, MaxSendWR: f.depth + signalEvery(f.size), MaxRecvWR: 1}
	if e.qp, err = e.dev.Dial(ctx, net.JoinHostPort(f.addr, strconv.Itoa(f.port)), cfg, params); err != nil {
		return err
	}
	reply := e.qp.PrivateData()
	if len(reply) < rpingInfoLen {
		return fmt.Errorf("server sent %d bytes of buffer info, want %d", len(reply), rpingInfoLen)
	}
	raddr, rkey := binary.BigEndian.Uint64(reply), binary.BigEndian.Uint32(reply[8:])
	sgl := []rdma.SGE{rdma.SGEOf(e.mr, 0, f.size)}
	post := func(id uint64, flags rdma.SendFlags) error {
		switch test {
		case testWrite:
			return e.qp.PostWrite(id, sgl, raddr, rkey, flags)
		case testRead:
			return e.qp.PostRead(id, sgl, raddr, rkey, flags)
		}
		return e.qp.PostSend(id, sgl, flags)
	}
	if !f.events {
		e.startSpinning()
	}
	unpin, err := pinPoller(e.spin, f.cpu)
	if err != nil {
		return err
	}
	defer unpin()
	var line string
	if f.mode == "bw" {
		line, err = perfBW(ctx, e, post, f)
	} else {
		line, err = perfLat(ctx, e, post, f)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s %s: %s\n", e.dev.Info().Name, f.test, f.mode, line)
	return e.qp.Disconnect()
}

func checkAll(cs []rdma.Completion) error {
	for _, c := range cs {
		if c.Status != rdma.StatusSuccess {
			return fmt.Errorf("work request %d failed: %s", c.WRID, c.Status)
		}
	}
	return nil
}

// perfBW keeps depth requests in flight, signalling one in
// signalEvery(size); each completion retires its batch.
func perfBW(ctx context.Context, e *endpoint, post func(uint64, rdma.SendFlags) error, f perfFlags) (string, error) {
	buf := make([]rdma.Completion, 64)
	every := signalEvery(f.size)
	posted, done := 0, 0
	begin := time.Now()
	for done < f.iters {
		for posted < f.iters && posted-done < f.depth {
			var flags rdma.SendFlags
			if (posted+1)%every == 0 || posted+1 == f.iters {
				flags = rdma.SendSignaled
			}
			if err := post(uint64(posted+1), flags); err != nil {
				return "", err
			}
			e.posted()
			posted++
		}
		n, err := e.wait(ctx, buf)
		if err != nil {
			return "", err
		}
		if err := checkAll(buf[:n]); err != nil {
			return "", err
		}
		// The id of a signalled request is its count: everything up to it
		// has completed (a send queue completes in order).
		done = int(buf[n-1].WRID)
	}
	elapsed := time.Since(begin)
	bytes := float64(f.size) * float64(f.iters)
	mibps := bytes / elapsed.Seconds() / (1 << 20)
	return fmt.Sprintf("size %d iters %d depth %d: %.2f MiB/s (%.3f Gb/s) in %v",
		f.size, f.iters, f.depth, mibps, bytes*8/elapsed.Seconds()/1e9, elapsed.Round(time.Millisecond)), nil
}

// perfLat runs one request at a time and reports the time from one post
// to the next (post, completion, loop): average, typical (median) and
// 99th percentile, in µs. Like perftest's ib_*_lat, it reads the clock
// once per request, before each post, not around it: where the clock is
// slow to read (an HPET clocksource, a TCG guest's default, costs about
// 1 µs a read), a second read would be counted in every sample. That read is
// time.Since, the monotonic clock alone: time.Now reads the wall clock
// as well, two clock reads on Linux.
func perfLat(ctx context.Context, e *endpoint, post func(uint64, rdma.SendFlags) error, f perfFlags) (string, error) {
	buf := make([]rdma.Completion, 1)
	posted := make([]time.Duration, f.iters+1)
	begin := time.Now()
	for i := 0; i < f.iters; i++ {
		posted[i] = time.Since(begin)
		if err := post(uint64(i+1), rdma.SendSignaled); err != nil {
			return "", err
		}
		e.posted()
		n, err := e.wait(ctx, buf)
		if err != nil {
			return "", err
		}
		if err := checkAll(buf[:n]); err != nil {
			return "", err
		}
	}
	posted[f.iters] = time.Since(begin)
	samples := make([]time.Duration, f.iters)
	for i := range samples {
		samples[i] = posted[i+1] - posted[i]
	}
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	slices.Sort(samples)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return fmt.Sprintf("size %d iters %d: t_avg %.2f us t_typical %.2f us t_99 %.2f us",
		f.size, f.iters, us(sum/time.Duration(len(samples))), us(samples[len(samples)/2]), us(samples[len(samples)*99/100])), nil
}
