package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/rdma/deliver"
)

// run is the state shared, read-only, by the loops of one Run (plus the stop
// flag they poll every tick).
type run struct {
	base       time.Time
	warmEnd    int64 // ns since base
	measureEnd int64 // ns since base; 0 in request-count mode
	timeout    int64 // ns; 0 disables
	family     int
	dst        netip.AddrPort
	reqs       []wireRequest
	sched      []uint16
	stop       atomic.Bool
	iv         *intervals // nil unless Config.Interval is set
}

// Run executes one load run and returns its result. It returns early, with
// the partial result, when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.checkSigns(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t, err := parseRunTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.ServerCPU == nil && cfg.ServerPID > 0 {
		// A pid that cannot be read at the start is a mistake in the
		// command line: once its failure was read as 0 s of CPU, and the
		// report said the server spent nothing per request.
		if _, err := ProcCPU(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("bench: server pid %d: cannot read its CPU time: %w", cfg.ServerPID, err)
		}
	}
	if cfg.MsgRDMA != deliver.ModeOff {
		return runMsgRDMA(ctx, cfg, t)
	}
	var reqs []wireRequest
	sched := []uint16{0} // the messenger's one request
	var payload []byte
	if t.msg {
		payload = msgPayload(cfg.Payload)
	} else if reqs, sched, err = buildMix(t, cfg.Mix); err != nil {
		return nil, err
	}
	if _, err := RaiseFDLimit(uint64(cfg.Conns) + 64); err != nil {
		return nil, err
	}
	r := &run{
		reqs: reqs, sched: sched,
		family: unix.AF_INET, dst: t.addr,
		warmEnd: int64(cfg.Warmup),
	}
	if t.addr.Addr().Is6() {
		r.family = unix.AF_INET6
	}
	for _, a := range cfg.SourceAddrs {
		if a.Is6() != t.addr.Addr().Is6() {
			return nil, fmt.Errorf("bench: source address %v and target %v differ in family", a, t.addr.Addr())
		}
	}
	if cfg.Requests <= 0 {
		r.measureEnd = int64(cfg.Warmup + cfg.Duration)
	}
	if cfg.Timeout > 0 {
		r.timeout = int64(cfg.Timeout)
	}

	pubs := make([]loopCounters, cfg.Loops)
	loops := make([]*loop, 0, cfg.Loops)
	defer func() {
		// For loops that never ran (an error path); those that ran have
		// closed theirs, and Close is idempotent.
		for _, l := range loops {
			l.core.Close()
		}
	}()
	for i := range cfg.Loops {
		l, err := newLoop(r, &pubs[i])
		if err != nil {
			return nil, err
		}
		loops = append(loops, l)
	}
	var interval int64
	if cfg.Rate > 0 {
		interval = int64(float64(cfg.Conns) * 1e9 / cfg.Rate)
		if interval <= 0 {
			interval = 1
		}
	}
	for i := range cfg.Conns {
		l := loops[i%len(loops)]
		c := &conn{idx: uint32(len(l.conns)), fd: -1, l: l, heapIdx: -1,
			ring: make([]inflight, cfg.Pipeline)}
		if t.msg {
			c.sp = newMsgSpeaker(payload, cfg.Pipeline)
		} else {
			c.sp = &httpSpeaker{}
		}
		if len(cfg.SourceAddrs) > 0 {
			c.src = cfg.SourceAddrs[i%len(cfg.SourceAddrs)]
		}
		if interval > 0 {
			// Stagger the connections over one interval so the aggregate
			// schedule is evenly spaced at 1/Rate.
			c.due = int64(float64(i) * 1e9 / cfg.Rate)
		}
		// Start each connection at a different point of the mix so that
		// the mix holds in aggregate from the first requests.
		c.next = i % len(sched)
		l.conns = append(l.conns, c)
	}
	for i, l := range loops {
		l.interval = interval
		if cfg.Requests > 0 {
			l.budget = cfg.Requests / int64(len(loops))
			if int64(i) < cfg.Requests%int64(len(loops)) {
				l.budget++
			}
		}
	}

	// Server and process CPU are sampled at the end of warm-up and at the
	// end of the run.
	serverCPU := cfg.ServerCPU
	var serverCPUErr error // the last reading's failure, if any
	if serverCPU == nil && cfg.ServerPID > 0 {
		pid := cfg.ServerPID
		serverCPU = func() time.Duration {
			d, err := ProcCPU(pid)
			if err != nil {
				serverCPUErr = fmt.Errorf("server pid %d: %w", pid, err)
			}
			return d
		}
	}
	var srv0, busy0, proc0 time.Duration
	sample := func() {
		proc0 = ProcessCPU()
		if serverCPU != nil {
			srv0 = serverCPU()
		}
		if cfg.ServerBusy != nil {
			busy0 = cfg.ServerBusy()
		}
	}

	r.base = time.Now()
	var ivOut chan intervalPart
	if cfg.Interval > 0 {
		r.iv = newIntervals(cfg, r.base, len(loops))
		ivOut = r.iv.out
	}
	for i, l := range loops {
		l.id = i
	}
	if cfg.Warmup <= 0 {
		sample()
	}
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Go(l.run)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	var warm <-chan time.Time
	if cfg.Warmup > 0 {
		tm := time.NewTimer(cfg.Warmup)
		defer tm.Stop()
		warm = tm.C
	}
	progress := time.NewTicker(cfg.ProgressEvery)
	defer progress.Stop()
	var lastN uint64
	lastT := time.Now()
	done := ctx.Done()
wait:
	for {
		select {
		case <-finished:
			break wait
		case <-done:
			r.stop.Store(true)
			done = nil
		case <-warm:
			sample()
		case p := <-ivOut:
			r.iv.collect(p)
		case now := <-progress.C:
			if cfg.Progress == nil {
				continue
			}
			p := Progress{Elapsed: now.Sub(r.base), Warmup: now.Sub(r.base) < cfg.Warmup}
			for i := range pubs {
				p.Requests += pubs[i].completed.Load()
				p.Errors += pubs[i].errors.Load()
			}
			p.Rate = float64(p.Requests-lastN) / now.Sub(lastT).Seconds()
			lastN, lastT = p.Requests, now
			cfg.Progress(p)
		}
	}
	if r.iv != nil {
		// The loops have ended: what they sent last is buffered.
		for {
			select {
			case p := <-ivOut:
				r.iv.collect(p)
				continue
			default:
			}
			break
		}
		r.iv.flush(math.MaxInt64)
	}
	res := newResult(cfg, loops, int64(time.Since(r.base)))
	res.ProcessCPU = ProcessCPU() - proc0
	if cfg.ServerBusy != nil {
		res.ServerBusy, res.ServerBusyKnown = cfg.ServerBusy()-busy0, true
	}
	switch {
	case serverCPU != nil:
		res.ServerCPU = serverCPU() - srv0
		res.ServerCPUKnown = serverCPUErr == nil
		if serverCPUErr != nil {
			// The server went away during the run, most likely.
			res.ServerCPU, res.ServerCPUUnavailable = 0, serverCPUErr.Error()
		}
	case cfg.ServerInProcess:
		res.ServerInProcess = true
		res.ServerCPU = max(0, res.ProcessCPU-res.ClientCPU)
		res.ServerCPUKnown = true
	}
	res.finish()
	var errs []error
	for _, l := range loops {
		if l.err != nil {
			errs = append(errs, l.err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	return res, ctx.Err()
}

// msgPayload is the messenger requests' payload: bytes that vary with
// their position, so that an echo shifted, cut or mixed up with another
// connection's shows as a mismatch where a run of one byte would not.
func msgPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// newResult sums the loops' figures; end is when the loops finished, in
// ns since the run's base.
func newResult(cfg Config, loops []*loop, end int64) *Result {
	res := &Result{URL: cfg.URL, Mode: "closed", Conns: cfg.Conns, Loops: len(loops),
		Pipeline: cfg.Pipeline, Protocol: protoHTTP, hist: newHist()}
	if IsMsgTarget(cfg.URL) {
		res.Protocol, res.Payload = protoMsg, cfg.Payload
	}
	if cfg.Rate > 0 {
		res.Mode, res.Rate = "open", cfg.Rate
	}
	raw, shed, answered := newHist(), newHist(), newHist()
	shedRaw, answeredRaw := newHist(), newHist()
	first, last := int64(-1), int64(0)
	for _, l := range loops {
		st, warm := l.stats, l.warm
		if !l.measured {
			warm = failures{st.Errors, st.Reconnects, st.Lost}
		}
		st.Errors.sub(warm.errors)
		st.Reconnects -= warm.reconnects
		st.Lost -= warm.lost
		res.Counts.add(st)
		res.WarmupErrors += warm.errors.total()
		res.hist.Merge(l.hist)
		raw.Merge(l.raw)
		shed.Merge(l.shed)
		answered.Merge(l.answered)
		shedRaw.Merge(l.shedRaw)
		answeredRaw.Merge(l.answeredRaw)
		res.ClientCPU += l.cpu
		if l.firstRec >= 0 && (first < 0 || l.firstRec < first) {
			first = l.firstRec
		}
		last = max(last, l.lastRec)
	}
	if cfg.Requests <= 0 {
		// The window asked for, whatever answered in it: cut at the last
		// response, it let a server that stopped answering look faster.
		res.Elapsed = time.Duration(max(0, min(end, int64(cfg.Warmup+cfg.Duration))-int64(cfg.Warmup)))
		// In closed loop a server that stops answering leaves only one
		// request per connection open: the silence itself is the sign.
		res.SilentAtEnd = time.Duration(max(0, int64(cfg.Warmup)+int64(res.Elapsed)-max(last, int64(cfg.Warmup))))
	} else if first >= 0 && last > first {
		res.Elapsed = time.Duration(last - first)
	}
	res.Latency = percentiles(res.hist)
	if shed.TotalCount() > 0 {
		// Refusals apart from the answered requests: how fast a shedding
		// server says no, and how long those it took in waited.
		s, a := percentiles(shed), percentiles(answered)
		res.Shed, res.Answered = &s, &a
	}
	if cfg.Rate > 0 {
		u := percentiles(raw)
		res.Uncorrected = &u
		if shed.TotalCount() > 0 {
			s, a := percentiles(shedRaw), percentiles(answeredRaw)
			res.ShedUncorrected, res.AnsweredUncorrected = &s, &a
		}
	}
	return res
}

func sockaddr(a netip.Addr, port uint16) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
}

// RaiseFDLimit raises RLIMIT_NOFILE's soft limit to at least want, up to the
// hard limit, and returns the resulting soft limit. It fails with a message
// naming the hard limit when want is above it.
func RaiseFDLimit(want uint64) (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, os.NewSyscallError("getrlimit", err)
	}
	cur, hard := uint64(lim.Cur), uint64(lim.Max) // int64 on the BSDs
	if cur >= want {
		return cur, nil
	}
	if want > hard {
		// Root may raise the hard limit too, up to fs.nr_open.
		up := lim
		setRlim(&up.Cur, want)
		setRlim(&up.Max, want)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &up); err == nil {
			return want, nil
		}
		return cur, fmt.Errorf("%w: need %d open files, hard limit is %d (raise it with ulimit -Hn, or run in a VM such as vm/)", ErrFDLimit, want, hard)
	}
	setRlim(&lim.Cur, want)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, os.NewSyscallError("setrlimit", err)
	}
	return want, nil
}

// setRlim sets a field of unix.Rlimit, uint64 on Linux and macOS and
// int64 on the BSDs.
func setRlim[T int64 | uint64](field *T, v uint64) { *field = T(v) }

// ErrFDLimit is returned (wrapped) when a run needs more file descriptors
// than RLIMIT_NOFILE's hard limit allows and it cannot be raised.
var ErrFDLimit = errors.New("bench: too few file descriptors")

// ProcessCPU is this process's user+system CPU time.
func ProcessCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
