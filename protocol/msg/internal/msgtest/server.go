// Package msgtest is a reference messenger server for tests only: a
// goroutine per connection over net.Listener, speaking the wire format
// of docs/messenger.md with package msg's parser, Dispatcher and a
// ReplyHook of its own. It dispatches each request after a random delay,
// so replies to unordered requests come back out of order, and it holds
// replies to ordered requests back as the protocol says. Without
// Config.RDMA a request that asks for RDMA gets its payload inline with
// ReasonNoRDMA; with it, replies go through the messenger's RDMA binding
// (package msgrdma) on the caller's engine, whose loops the caller runs
// (deliver.GoSource), and completion frames reach the binding.
//
// It is not the production transport (that is msg.Transport on the
// reader/processor/writer pipeline, runtime.Config.MsgAddr, whose tests
// are runtime's TestMsg*); it stays for the client's and msgrdma's tests,
// which need no server stages and want replies out of order on every
// connection, not only when a dispatcher replies late. It is also a
// second, independent reading of the format.
package msgtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgrdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// Config sets up a Server; the zero value echoes with no delay.
type Config struct {
	// Addr is the TCP address to listen on; default 127.0.0.1:0.
	Addr string
	// Dispatcher answers requests; nil means msg.Echo.
	Dispatcher msg.Dispatcher
	// Limits bound what the server parses.
	Limits msg.Limits
	// MaxDelay: each request is dispatched after a random delay below it,
	// from its own goroutine, so replies leave in a random order.
	MaxDelay time.Duration
	// Seed seeds the delays.
	Seed uint64
	// LingerTimeout bounds how long the server reads and drops a client's
	// bytes after a connection error, so the client reads the error frame
	// before the close (a close with unread input resets the connection
	// and can destroy it). Default 2 s.
	LingerTimeout time.Duration
	// RDMA, when set, sends the replies of requests that ask for RDMA
	// through the binding; connection k uses the engine's loop k % Loops
	// (its loops 0..Loops-1 must be attached). Loops 0 means 1.
	RDMA  *msgrdma.Binding
	Loops int
}

// Stats are what the server saw, for tests to assert on.
type Stats struct {
	Requests    int64 // requests parsed
	Completions int64 // completion frames parsed
	Replies     int64 // replies written
	ConnErrors  int64 // connection error frames sent
	MaxInFlight int64 // most requests of one connection dispatched and not yet replied to at once
	ByRDMA      int64 // replies whose payload went by RDMA
	Confirmed   int64 // exposures the completion frames ended
	Cumulative  int64 // completion frames with FlagCumulative
	LastError   string
}

// Server is a running reference server.
type Server struct {
	cfg Config
	ln  net.Listener
	wg  sync.WaitGroup // accept loop, connections, dispatches

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	rng    *rand.Rand
	last   string
	nconns uint64

	requests, completions, replies, connErrors, maxInFlight atomic.Int64
	byRDMA, confirmed, cumulative                           atomic.Int64
}

// Start listens on cfg.Addr (default 127.0.0.1:0) and serves until t's
// cleanup (or Close).
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatalf("msgtest: listen: %v", err)
	}
	if cfg.Dispatcher == nil {
		cfg.Dispatcher = msg.Echo{}
	}
	if cfg.LingerTimeout == 0 {
		cfg.LingerTimeout = 2 * time.Second
	}
	if cfg.Loops <= 0 {
		cfg.Loops = 1
	}
	s := &Server{cfg: cfg, ln: ln, conns: map[*conn]struct{}{}, rng: rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))}
	s.wg.Go(s.accept)
	t.Cleanup(s.Close)
	return s
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	return Stats{
		Requests: s.requests.Load(), Completions: s.completions.Load(), Replies: s.replies.Load(),
		ConnErrors: s.connErrors.Load(), MaxInFlight: s.maxInFlight.Load(), LastError: last,
		ByRDMA: s.byRDMA.Load(), Confirmed: s.confirmed.Load(), Cumulative: s.cumulative.Load(),
	}
}

// Close stops accepting, closes every connection and waits for every
// goroutine the server started, dispatches included.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	s.ln.Close()
	for c := range conns {
		c.close()
	}
	s.wg.Wait()
}

func (s *Server) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &conn{s: s, nc: nc, br: bufio.NewReaderSize(nc, 64<<10), p: msg.NewParser(msg.RoleServer, s.cfg.Limits),
			inFlight: map[uint64]bool{}, parked: map[uint64]parkedReply{}}
		c.drained = sync.NewCond(&c.mu)
		if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
			c.rdma.Remote = ap.Addr().Unmap()
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.nconns++
		c.rdma.ID = s.nconns
		c.rdma.Writer = int((s.nconns - 1) % uint64(s.cfg.Loops))
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

func (s *Server) delay() time.Duration {
	if s.cfg.MaxDelay <= 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Duration(s.rng.Int64N(int64(s.cfg.MaxDelay)))
}

// conn is one client connection: its reader goroutine parses and
// dispatches; replies are written by whichever goroutine sends them,
// under mu, which also keeps the ordering state.
type conn struct {
	s    *Server
	nc   net.Conn
	br   *bufio.Reader
	p    msg.Parser // reader goroutine only
	rdma msgrdma.Conn

	mu       sync.Mutex
	closed   bool
	seq      uint64                 // requests read; request k has seq k
	low      uint64                 // every seq below low has been replied to
	out      map[uint64]bool        // seqs at or above low already replied (out of order)
	inFlight map[uint64]bool        // txids dispatched and not replied to
	parked   map[uint64]parkedReply // ordered replies waiting for their turn, by seq
	drained  *sync.Cond             // signalled as replies go out
	head     [msg.MaxErrorFrame]byte
}

type parkedReply struct {
	r    *request
	head *msg.Header // the RDMA binding's, or nil: framed here
	rep  msg.Reply
}

// request is one dispatched message and its reply hook: per message, as
// Ceph's XioReplyHook was, so the hook knows the request's place.
type request struct {
	msg.Message
	c       *conn
	seq     uint64
	ordered bool
}

func (r *request) SendReply(_ *msg.Message, rep msg.Reply) error {
	if b := r.c.s.cfg.RDMA; b != nil && r.Header.Flags.Has(msg.FlagRDMA) && rep.Code == 0 {
		// The binding sends the frame through reply, now or from the
		// engine's completion; a closed connection reaches rep.Done.
		b.SendReply(r.c.rdma, &r.Message, rep, func(h *msg.Header, out msg.Reply) {
			if err := r.c.reply(r, h, out); err != nil && out.Done != nil {
				out.Done(err)
			}
		})
		return nil
	}
	return r.c.reply(r, nil, rep)
}

func (c *conn) serve() {
	defer c.s.wg.Done()
	defer c.close()
	for {
		var h msg.Header
		err := c.p.ReadHead(c.br, &h)
		if err == nil && h.Type == msg.TypeCompletion {
			c.s.completions.Add(1)
			if h.Flags.Has(msg.FlagCumulative) {
				c.s.cumulative.Add(1)
			}
			if b := c.s.cfg.RDMA; b != nil {
				c.s.confirmed.Add(int64(b.Complete(c.rdma, &h)))
			}
			continue
		}
		var payload []byte
		if err == nil {
			payload, err = c.p.ReadPayload(c.br, nil)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.finish() // the client is done sending: answer what it sent
			} else if code := msg.CodeOf(err); code != msg.CodeInternal {
				txid := uint64(0)
				if code == msg.CodeTooLarge {
					txid = h.TxID
				}
				c.fail(txid, code, err.Error())
			}
			return
		}
		if err := c.dispatch(&h, payload); err != nil {
			c.fail(0, msg.CodeMalformed, err.Error())
			return
		}
	}
}

func (c *conn) dispatch(h *msg.Header, payload []byte) error {
	c.mu.Lock()
	if c.inFlight[h.TxID] {
		c.mu.Unlock()
		return fmt.Errorf("quartet: msg: transaction id %d already in flight", h.TxID)
	}
	c.inFlight[h.TxID] = true
	n := int64(len(c.inFlight))
	c.seq++
	r := &request{c: c, seq: c.seq, ordered: !h.Flags.Has(msg.FlagUnordered)}
	c.mu.Unlock()
	storeMax(&c.s.maxInFlight, n)
	c.s.requests.Add(1)
	r.Reset(h, payload, r)
	d := c.s.delay()
	c.s.wg.Go(func() {
		if d > 0 {
			time.Sleep(d)
		}
		c.s.cfg.Dispatcher.Dispatch(&r.Message)
	})
	return nil
}

func storeMax(v *atomic.Int64, n int64) {
	for {
		m := v.Load()
		if n <= m || v.CompareAndSwap(m, n) {
			return
		}
	}
}

var errClosed = errors.New("msgtest: connection closed")

// reply writes rep now, or parks it while it is an ordered reply with
// earlier replies still to go. head is the RDMA binding's head, or nil
// to frame the reply here.
func (c *conn) reply(r *request, head *msg.Header, rep msg.Reply) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	if r.ordered && r.seq != c.low+1 {
		c.parked[r.seq] = parkedReply{r, head, rep}
		return nil
	}
	c.write(r, head, rep)
	for p, ok := c.parked[c.low+1]; ok; p, ok = c.parked[c.low+1] {
		delete(c.parked, c.low+1)
		c.write(p.r, p.head, p.rep)
	}
	return nil
}

// write frames one reply; c.mu held. A failed write closes the
// connection, and the reply's Done hears why.
func (c *conn) write(r *request, head *msg.Header, rep msg.Reply) {
	err := errClosed
	if !c.closed {
		err = c.writeFrame(r, head, rep)
	}
	delete(c.inFlight, r.Header.TxID)
	if r.seq == c.low+1 {
		c.low++
		for c.out[c.low+1] {
			delete(c.out, c.low+1)
			c.low++
		}
	} else {
		if c.out == nil {
			c.out = map[uint64]bool{}
		}
		c.out[r.seq] = true
	}
	c.drained.Broadcast()
	if err != nil && !c.closed {
		c.closed = true
		c.nc.Close()
	}
	if rep.Done != nil {
		rep.Done(err)
	}
}

func (c *conn) writeFrame(r *request, head *msg.Header, rep msg.Reply) error {
	txid := r.Header.TxID
	if rep.Code != 0 {
		n, err := msg.PutErrorFrame(c.head[:], txid, rep.Code, string(rep.Payload))
		if err == nil {
			_, err = c.nc.Write(c.head[:n])
		}
		return err
	}
	h := msg.Header{Type: msg.TypeReply, TxID: txid, Length: uint32(len(rep.Payload))}
	switch {
	case head != nil:
		h = *head
		if h.Flags.Has(msg.FlagByRDMA) {
			c.s.byRDMA.Add(1)
		}
	case r.Header.Flags.Has(msg.FlagRDMA):
		h.Flags = msg.FlagRDMA
		h.RDMA = msg.Descriptor{Mode: r.Header.RDMA.Mode, Op: r.Header.RDMA.Op, Reason: deliver.ReasonNoRDMA}
	}
	n, err := msg.PutHead(c.head[:], &h)
	if err != nil {
		return err
	}
	bufs := net.Buffers{c.head[:n], rep.Payload}
	if _, err := bufs.WriteTo(c.nc); err != nil {
		return err
	}
	c.s.replies.Add(1)
	return nil
}

// finish waits, after the client's EOF, until every request read has
// its reply (or the server closes).
func (c *conn) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && c.low < c.seq {
		c.drained.Wait()
	}
}

// fail sends a connection error frame and closes, reading and dropping
// the client's bytes for a while first, so the frame is read before the
// close resets the connection.
func (c *conn) fail(txid uint64, code msg.Code, text string) {
	c.s.connErrors.Add(1)
	c.s.mu.Lock()
	c.s.last = text
	c.s.mu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.drained.Broadcast()
	n, err := msg.PutErrorFrame(c.head[:], txid, code, text)
	if err == nil {
		_, err = c.nc.Write(c.head[:n])
	}
	c.mu.Unlock()
	if err != nil {
		return
	}
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		_ = tc.SetReadDeadline(time.Now().Add(c.s.cfg.LingerTimeout))
		_, _ = io.Copy(io.Discard, tc)
	}
}

// close closes the connection; replies parked or sent later hear
// errClosed.
func (c *conn) close() {
	c.mu.Lock()
	c.closed = true
	c.drained.Broadcast()
	for seq, p := range c.parked {
		delete(c.parked, seq)
		if p.rep.Done != nil {
			p.rep.Done(errClosed)
		}
	}
	c.mu.Unlock()
	c.nc.Close()
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
}
