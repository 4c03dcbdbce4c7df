package processor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// This file is the test bench: a pool wired to a fake writer stage that
// plays the writer's side of the stages.Response protocol without sockets.

// writerOpts shape the fake writer's behaviour.
type writerOpts struct {
	delay   time.Duration // sleep before "writing" each heap bucket: a slow client
	stall   bool          // never report bytes sent: a client that stopped reading
	abortAt int64         // abort once this many bytes were sent (0: never)
	// Responses to requests for stallTarget are not reported sent until
	// unstall is closed: clients that stop reading and come back.
	stallTarget string
	unstall     chan struct{}
	// reuse: recycled response records are reused, as the runtime's pool
	// reuses them, and the fake writer forgets a response once it has
	// finished it (so a late kick would look like a new response).
	reuse bool
}

// result is one response as the fake writer saw it.
type result struct {
	raw         []byte
	status      int
	keepAlive   bool
	heapBuckets int // heap buckets carrying the response (1 means one write)
	fileBuckets int
	flushes     int
	aborted     bool
}

type fakeWriter struct {
	opts      writerOpts
	low       int64
	kicks     chan *stages.Response
	results   chan result
	stop      chan struct{}
	stopped   chan struct{}
	maxUnsent atomic.Int64
}

func (fw *fakeWriter) kick(r *stages.Response) {
	// Called right after every Append: the moment Unsent peaks.
	for u := r.Unsent(); ; {
		m := fw.maxUnsent.Load()
		if u <= m || fw.maxUnsent.CompareAndSwap(m, u) {
			break
		}
	}
	if r.MarkQueued() {
		fw.kicks <- r
	}
}

type respState struct {
	res     result
	pending []stages.Bucket
	sent    int64
	owed    int64 // sent but not yet reported (stallTarget)
	done    bool
	// diverted: a diverted hold replaced the rest; what arrives before
	// EOS is dropped, as the real writer does.
	diverted bool
}

func (fw *fakeWriter) run() {
	defer close(fw.stopped)
	states := map[*stages.Response]*respState{}
	unstall := fw.opts.unstall
	for {
		var r *stages.Response
		select {
		case r = <-fw.kicks:
		case <-unstall:
			unstall = nil
			for r, st := range states {
				if st.owed > 0 {
					r.Sent(st.owed, fw.low)
					st.owed = 0
				}
			}
			continue
		case <-fw.stop:
			return
		}
		st := states[r]
		if st == nil {
			st = &respState{}
			states[r] = st
		}
		if st.done {
			st.pending, _ = r.TakeOut(st.pending[:0]) // a late kick for a finished response: drop
			clear(st.pending)
			continue
		}
		from := len(st.pending)
		st.pending, _ = r.TakeOut(st.pending)
		if st.diverted {
			var dropped int64
			kept := st.pending[:from]
			for _, b := range st.pending[from:] {
				if b.Kind == stages.BucketEOS {
					kept = append(kept, b)
					st.diverted = false
					break
				}
				dropped += b.Size()
			}
			st.pending = kept
			r.Replaced(dropped, 0, fw.low)
		}
		i := 0
	buckets:
		for ; i < len(st.pending); i++ {
			b := &st.pending[i]
			switch b.Kind {
			case stages.BucketHeap, stages.BucketFile:
				if fw.opts.abortAt > 0 && st.sent >= fw.opts.abortAt {
					r.Abort(errors.New("fake writer: peer reset"))
					st.res.aborted = true
					fw.results <- st.res
					st.done = true
					r.Finish()
					break buckets
				}
				if fw.opts.delay > 0 {
					time.Sleep(fw.opts.delay)
				}
				var n int64
				if b.Kind == stages.BucketHeap {
					st.res.raw = append(st.res.raw, b.Data...)
					st.res.heapBuckets++
					n = int64(len(b.Data))
				} else {
					buf := make([]byte, b.Len)
					if _, err := b.File.ReadAt(buf, b.Off); err != nil {
						panic(err)
					}
					st.res.raw = append(st.res.raw, buf...)
					st.res.fileBuckets++
					n = b.Len
				}
				st.sent += n
				switch {
				case fw.opts.stall:
				case unstall != nil && r.Req != nil && string(r.Req.Target) == fw.opts.stallTarget:
					st.owed += n
				default:
					r.Sent(n, fw.low)
				}
			case stages.BucketFlush:
				st.res.flushes++
			case stages.BucketHold:
				if !b.Hold.Released() {
					break buckets // Release kicks us again
				}
				if alt, ok := b.Hold.Diverted(); ok {
					// The alternative replaces the rest, up to EOS.
					next := append(append([]stages.Bucket(nil), st.pending[:i+1]...), alt...)
					var dropped, added int64
					eos := false
					for _, x := range st.pending[i+1:] {
						if x.Kind == stages.BucketEOS {
							eos = true
							break
						}
						dropped += x.Size()
					}
					for _, x := range alt {
						added += x.Size()
					}
					if eos {
						next = append(next, stages.Bucket{Kind: stages.BucketEOS})
					} else {
						st.diverted = true
					}
					st.pending = next
					r.Replaced(dropped, added, fw.low)
				}
			case stages.BucketEOS:
				st.res.status, st.res.keepAlive = r.Status, r.KeepAlive
				fw.results <- st.res
				st.done = true
				if fw.opts.reuse {
					delete(states, r) // before Finish can recycle it for another
				}
				r.Finish()
				break buckets
			}
		}
		if st.done {
			// Keep the state: a late kick can still bring buckets the
			// worker appended before it saw the abort, and a fresh state
			// would send them and could finish the response twice, as the
			// real writer never does. (responses() makes a new response
			// per request, so pointers are never reused.)
			continue
		}
		st.pending = append(st.pending[:0], st.pending[i:]...)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	t        testing.TB
	pool     *Pool
	in       *stages.ClassQueue
	wake     *stages.WorkerWaker
	fw       *fakeWriter
	log      *syncBuffer
	counters stages.StageCounters
	recycled atomic.Int64
	// maxChunks is the most chunks a response still held when recycled:
	// the rest went back to the pool while it was being produced.
	maxChunks atomic.Int64
	// free holds the recycled records, which responses reuses as the
	// runtime's pool of them does (writerOpts.reuse).
	mu   sync.Mutex
	free []*stages.Response
}

func newHarness(t testing.TB, cfg Config, h Handler, opts writerOpts) *harness {
	t.Helper()
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	hs := &harness{
		t:    t,
		in:   stages.NewClassQueue(64, nil),
		wake: stages.NewWorkerWaker(cfg.Workers),
		log:  &syncBuffer{},
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(hs.log, nil))
	}
	hs.fw = &fakeWriter{
		opts:    opts,
		kicks:   make(chan *stages.Response, 1024),
		results: make(chan result, 16),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	recycle := func(r *stages.Response) {
		r.RunCleanups()
		if n := int64(len(r.Chunks)); n > hs.maxChunks.Load() {
			hs.maxChunks.Store(n) // recycles are serialized by the fake writer
		}
		hs.pool.Release(r)
		if opts.reuse {
			r.Conn, r.Req = nil, nil
			hs.mu.Lock()
			hs.free = append(hs.free, r)
			hs.mu.Unlock()
		}
		hs.recycled.Add(1)
	}
	responses := func() *stages.Response {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		if n := len(hs.free); n > 0 {
			r := hs.free[n-1]
			hs.free = hs.free[:n-1]
			return r
		}
		return stages.NewResponse(hs.fw.kick, recycle)
	}
	hs.pool = New(cfg, hs.in, hs.wake, h, responses, &hs.counters)
	hs.fw.low = hs.pool.LowWater()
	go hs.fw.run()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- hs.pool.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		close(hs.fw.stop)
		<-hs.fw.stopped
	})
	return hs
}

// push hands req to the pool as a reader loop would.
func (hs *harness) push(req *stages.Request) {
	hs.t.Helper()
	if !hs.in.Push(req) {
		hs.t.Fatal("ring full")
	}
	hs.counters.Enqueued.Add(1)
	hs.pool.Wake()
}

func (hs *harness) result() result {
	hs.t.Helper()
	select {
	case res := <-hs.fw.results:
		return res
	case <-time.After(10 * time.Second):
		hs.t.Fatal("no response from the processor")
	}
	return result{}
}

func (hs *harness) do(req *stages.Request) result {
	hs.t.Helper()
	hs.push(req)
	return hs.result()
}

// newRequest builds what the reader would: method, target, HTTP/1.minor,
// header pairs, and a body (Content-Length framed).
func newRequest(method, target string, minor int, body string, headers ...string) *stages.Request {
	r := &stages.Request{
		Conn: &stages.Conn{
			ID:     1,
			Remote: netip.MustParseAddrPort("192.0.2.7:40000"),
			Local:  netip.MustParseAddrPort("127.0.0.1:8080"),
		},
		Method:        []byte(method),
		Target:        []byte(target),
		Major:         1,
		Minor:         minor,
		ContentLength: -1,
		Body:          strings.NewReader(body),
		Received:      time.Now(),
		Seq:           1,
	}
	r.Path, r.Query, _ = bytes.Cut(r.Target, []byte("?"))
	for i := 0; i+1 < len(headers); i += 2 {
		r.Headers = append(r.Headers, stages.Header{Name: []byte(headers[i]), Value: []byte(headers[i+1])})
	}
	r.Host = r.Header("Host")
	if body != "" {
		r.ContentLength = int64(len(body))
	}
	r.Close = stages.ListHasToken(r.Header("Connection"), "close")
	r.Expect100 = stages.EqualFoldASCII(r.Header("Expect"), "100-continue")
	if r.Expect100 && minor >= 1 && r.HasBody() {
		r.Interim = []byte(http1.Continue) // as the reader hands on HTTP/1.1's plan
	}
	return r
}

// parsed is a result read back with net/http's client-side parser.
type parsed struct {
	interim []*http.Response // 1xx responses, in order
	resp    *http.Response
	body    []byte
	bodyErr error
	rest    []byte // bytes after the response: must be none
}

func parse(t testing.TB, res result, method string) parsed {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(res.raw))
	var p parsed
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("ReadResponse: %v\nraw:\n%q", err, res.raw)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != 101 {
			p.interim = append(p.interim, resp)
			continue
		}
		p.resp = resp
		break
	}
	p.body, p.bodyErr = io.ReadAll(p.resp.Body)
	p.rest, _ = io.ReadAll(br)
	return p
}
