package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/rdma/rdmatool"
)

// RDMACounts are a messenger run's replies by the way their payload
// came, when the run asked for every payload by RDMA (Config.MsgRDMA):
// a server that cannot send one by RDMA sends it inline instead, with
// the reason, and the reply is as good as any, so only these counts show
// whether the figures are RDMA's. They count measured replies, as
// Requests does. In such a run BytesRead and BytesWritten count the
// payloads alone, however they came: a request's head grows with its
// descriptor, and the RDMA transfers are not the socket's.
type RDMACounts struct {
	Mode     string `json:"mode"`     // server-writes or client-reads
	Provider string `json:"provider"` // the client's RDMA provider (soft, verbs)
	// ByRDMA: replies whose payload came by RDMA.
	ByRDMA uint64 `json:"by_rdma"`
	// Fallbacks: replies whose payload came inline over TCP, by reason:
	// the server's (the protocol's names: no-rdma, connect-failed, ...),
	// or "lost" when the client, its RDMA operations lost RDMARetries
	// times, asked once more without RDMA.
	Fallbacks       uint64            `json:"fallbacks"`
	FallbackReasons map[string]uint64 `json:"fallback_reasons,omitempty"`
	// Retried: replies that took more than one attempt (an RDMA
	// operation lost and asked for again).
	Retried uint64 `json:"retried"`
}

// reasonLost names the client's own fallback in FallbackReasons.
const reasonLost = "lost"

func (c *RDMACounts) add(o *RDMACounts) {
	c.ByRDMA += o.ByRDMA
	c.Fallbacks += o.Fallbacks
	c.Retried += o.Retried
	for k, v := range o.FallbackReasons {
		if c.FallbackReasons == nil {
			c.FallbackReasons = map[string]uint64{}
		}
		c.FallbackReasons[k] += v
	}
}

// reasons lists FallbackReasons as "no-rdma 120, lost 2", most first.
func (c *RDMACounts) reasons() string {
	type kv struct {
		k string
		v uint64
	}
	var l []kv
	for k, v := range c.FallbackReasons {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	var s []string
	for _, e := range l {
		s = append(s, fmt.Sprintf("%s %d", e.k, e.v))
	}
	return strings.Join(s, ", ")
}

// checkMsgRDMA rejects what a run by RDMA does not do. The requests go
// through msgclient, which does the protocol's RDMA side (the endpoint,
// the operation ids, reads and completion frames, asking again for a
// lost operation), rather than through the loops' own frames: the loops'
// open-loop schedule, source addresses and intervals are not there.
func (c Config) checkMsgRDMA() error {
	if c.MsgRDMA == deliver.ModeOff {
		if c.MsgProvider != "" {
			return errors.New("bench: an RDMA provider without RDMA replies (--msg-provider needs --msg-rdma)")
		}
		return nil
	}
	switch {
	case !IsMsgTarget(c.URL):
		return fmt.Errorf("bench: %s: replies by RDMA are the messenger's (a msg:// target)", c.URL)
	case c.MsgRDMA != deliver.ModeServerWrites && c.MsgRDMA != deliver.ModeClientReads:
		return fmt.Errorf("bench: RDMA mode %s: want server-writes or client-reads", c.MsgRDMA)
	case c.Rate > 0:
		return errors.New("bench: replies by RDMA run closed loop; -R is not supported with them")
	case len(c.SourceAddrs) > 0:
		return errors.New("bench: replies by RDMA: -src is not supported with them")
	case c.Interval > 0:
		return errors.New("bench: replies by RDMA: intervals are not supported with them")
	case c.ServerInProcess:
		return errors.New("bench: replies by RDMA: an in-process server is not supported with them")
	}
	return nil
}

// rdmaWorker is one request in flight: its own buffer, a connection it
// shares with the connection's other workers, and figures of its own,
// merged at the end.
type rdmaWorker struct {
	c      *rdmaConn
	into   *deliver.Buffer
	counts Counts
	rdma   RDMACounts
	hist   *hdrhistogram.Histogram
	warm   failures // failures during the warm-up, set apart
	first  int64    // ns since base of the first measured reply, -1 for none
	last   int64
}

// rdmaConn is one messenger connection; a worker that finds it failed
// dials it again for all of them.
type rdmaConn struct {
	addr string
	cfg  msgclient.Config
	mu   sync.Mutex
	c    *msgclient.Client
	gen  int // bumped at each redial, so only the first to see a failure redials
}

func (rc *rdmaConn) client() (*msgclient.Client, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.c, rc.gen
}

// redial replaces the client of generation gen unless another worker
// has; first reports whether this call was the first to try.
func (rc *rdmaConn) redial(ctx context.Context, gen int, timeout time.Duration) (first bool, err error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.gen != gen {
		return false, nil
	}
	rc.c.Close()
	dctx, cancel := contextTimeout(ctx, timeout)
	defer cancel()
	c, err := msgclient.Dial(dctx, rc.addr, rc.cfg)
	if err != nil {
		return true, err
	}
	rc.c, rc.gen = c, rc.gen+1
	return true, nil
}

func contextTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// runMsgRDMA is Run for a messenger target with Config.MsgRDMA: Conns
// msgclient connections with Pipeline requests in flight on each, every
// reply's payload asked for by RDMA into a registered buffer of an
// endpoint on MsgProvider, checked byte for byte however it came.
func runMsgRDMA(ctx context.Context, cfg Config, t target) (*Result, error) {
	p, err := rdmatool.NewRegistry().Get(cfg.MsgProvider)
	if err != nil {
		return nil, fmt.Errorf("bench: RDMA provider %q: %w", cfg.MsgProvider, err)
	}
	addr := t.addr.String()
	ep, err := msgclient.NewEndpoint(p, addr, netip.Addr{}, 0)
	if err != nil {
		return nil, fmt.Errorf("bench: RDMA endpoint: %w", err)
	}
	// Closed last: the endpoint's Close fails on anything still
	// registered or connected.
	defer ep.Close()
	payload := msgPayload(cfg.Payload)
	ccfg := msgclient.Config{Endpoint: ep, MaxInFlight: cfg.Pipeline}
	conns := make([]*rdmaConn, cfg.Conns)
	defer func() {
		for _, rc := range conns {
			if rc != nil && rc.c != nil {
				rc.c.Close()
			}
		}
	}()
	for i := range conns {
		dctx, cancel := contextTimeout(ctx, cfg.Timeout)
		c, err := msgclient.Dial(dctx, addr, ccfg)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", cfg.URL, err)
		}
		conns[i] = &rdmaConn{addr: addr, cfg: ccfg, c: c}
	}
	workers := make([]*rdmaWorker, 0, cfg.Conns*cfg.Pipeline)
	defer func() {
		for _, w := range workers {
			w.into.Close()
		}
	}()
	for i := range cfg.Conns * cfg.Pipeline {
		// The echo is as long as the request; RDMA needs at least a byte.
		b, err := ep.NewBuffer(max(len(payload), 1))
		if err != nil {
			return nil, fmt.Errorf("bench: registering a %d-byte buffer: %w", len(payload), err)
		}
		workers = append(workers, &rdmaWorker{c: conns[i/cfg.Pipeline], into: b, hist: newHist(), first: -1})
	}

	serverCPU := cfg.ServerCPU
	if serverCPU == nil && cfg.ServerPID > 0 {
		pid := cfg.ServerPID
		serverCPU = func() time.Duration { d, _ := ProcCPU(pid); return d }
	}
	var srv0, proc0 time.Duration
	var sampleOnce sync.Once
	sample := func() {
		sampleOnce.Do(func() {
			proc0 = ProcessCPU()
			if serverCPU != nil {
				srv0 = serverCPU()
			}
		})
	}

	base := time.Now()
	warmEnd := int64(cfg.Warmup)
	measureEnd := int64(-1)
	if cfg.Requests <= 0 {
		measureEnd = int64(cfg.Warmup + cfg.Duration)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var budget, completed, failed atomic.Int64
	var stop atomic.Bool
	if cfg.Warmup <= 0 {
		sample()
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			for !stop.Load() && runCtx.Err() == nil {
				sent := int64(time.Since(base))
				if measureEnd >= 0 && sent >= measureEnd {
					return
				}
				measured := sent >= warmEnd
				if measured {
					sample() // the first measured request ends the warm-up
					if cfg.Requests > 0 && budget.Add(1) > cfg.Requests {
						stop.Store(true)
						return
					}
				}
				if w.once(runCtx, cfg, payload, base, measured) {
					completed.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	progress := time.NewTicker(cfg.ProgressEvery)
	defer progress.Stop()
	var lastN int64
	lastT := time.Now()
wait:
	for {
		select {
		case <-finished:
			break wait
		case now := <-progress.C:
			if cfg.Progress == nil {
				continue
			}
			n := completed.Load()
			cfg.Progress(Progress{Elapsed: now.Sub(base), Warmup: now.Sub(base) < cfg.Warmup,
				Requests: uint64(n), Errors: uint64(failed.Load()), Rate: float64(n-lastN) / now.Sub(lastT).Seconds()})
			lastN, lastT = n, now
		}
	}
	sample() // a run that never left its warm-up measured nothing

	res := &Result{URL: cfg.URL, Mode: "closed", Conns: cfg.Conns, Pipeline: cfg.Pipeline, Protocol: protoMsg,
		Payload: cfg.Payload, hist: newHist(), RDMA: &RDMACounts{Mode: cfg.MsgRDMA.String(), Provider: p.Name()}}
	first, last := int64(-1), int64(0)
	for _, w := range workers {
		res.Counts.add(w.counts)
		res.RDMA.add(&w.rdma)
		res.WarmupErrors += w.warm.errors.total()
		res.hist.Merge(w.hist)
		if w.first >= 0 && (first < 0 || w.first < first) {
			first = w.first
		}
		last = max(last, w.last)
	}
	if first >= 0 && last > first {
		res.Elapsed = time.Duration(last - first)
	}
	res.Latency = percentiles(res.hist)
	// No loop threads here: the generator's CPU is the process's.
	res.ProcessCPU = ProcessCPU() - proc0
	res.ClientCPU = res.ProcessCPU
	if serverCPU != nil {
		res.ServerCPU = serverCPU() - srv0
		res.ServerCPUKnown = true
	}
	res.finish()
	return res, ctx.Err()
}

// once sends one request and judges its reply; false for a failure.
func (w *rdmaWorker) once(ctx context.Context, cfg Config, payload []byte, base time.Time, measured bool) bool {
	c, gen := w.c.client()
	rctx, cancel := contextTimeout(ctx, cfg.Timeout)
	start := time.Now()
	r, err := c.Do(rctx, &msgclient.Request{Payload: payload, Deliver: cfg.MsgRDMA, Into: w.into})
	cancel()
	now := int64(time.Since(base))
	fail := &w.counts.Errors
	if !measured {
		fail = &w.warm.errors
	}
	var merr *msg.Error
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return true // the run was stopped: no verdict on this one
	case errors.As(err, &merr):
		fail.Reply++ // an error frame: the connection carries on
		return false
	case errors.Is(err, context.DeadlineExceeded):
		fail.Timeout++
		return false
	case errors.Is(err, msgclient.ErrConnection), errors.Is(err, msgclient.ErrClosed):
		// As the loops count it: the connection's failure once, by the
		// worker that dials it again, and every request it took along.
		first, derr := w.c.redial(ctx, gen, cfg.Timeout)
		lost, reconnects := &w.counts.Lost, &w.counts.Reconnects
		if !measured {
			lost, reconnects = &w.warm.lost, &w.warm.reconnects
		}
		*lost++
		if first {
			fail.Reset++
			*reconnects++
			if derr != nil && ctx.Err() == nil {
				fail.Connect++
			}
		}
		return false
	default:
		// The reply broke the protocol's RDMA rules (msgclient's
		// ErrReplyMismatch, ErrIntoTooSmall) or an operation failed
		// outright.
		fail.Mismatch++
		return false
	}
	if !bytes.Equal(r.Payload, payload) {
		fail.Mismatch++
		return false
	}
	if !measured {
		return true
	}
	w.counts.Requests++
	w.counts.BytesRead += uint64(len(r.Payload))
	w.counts.BytesWritten += uint64(len(payload))
	switch {
	case r.ByRDMA():
		w.rdma.ByRDMA++
	case r.Flags.Has(msg.FlagRDMA):
		w.fellBack(r.RDMA.Reason.String())
	default:
		w.fellBack(reasonLost)
	}
	if r.Attempts > 1 {
		w.rdma.Retried++
	}
	if w.first < 0 {
		w.first = int64(start.Sub(base))
	}
	w.last = now
	us := min(max(int64(time.Since(start)/time.Microsecond), 1), int64(histMax/time.Microsecond))
	_ = w.hist.RecordValue(us)
	return true
}

func (w *rdmaWorker) fellBack(reason string) {
	w.rdma.Fallbacks++
	if w.rdma.FallbackReasons == nil {
		w.rdma.FallbackReasons = map[string]uint64{}
	}
	w.rdma.FallbackReasons[reason]++
}
