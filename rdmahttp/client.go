package rdmahttp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// Defaults of ClientConfig.
const (
	DefaultBufferSize = 64 << 20
	DefaultOpTimeout  = 10 * time.Second
	DefaultRetries    = 2
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Provider opens the client's device; required.
	Provider rdma.Provider
	// Addr is the client's RDMA endpoint, "ip:port" (port 0 picks one).
	// The IP must be one the server can reach and, unless the server
	// allows foreign endpoints, the one its HTTP requests come from.
	Addr string
	// BufferSize is the registered receive buffer: the largest body the
	// client takes by RDMA.
	BufferSize int
	// OpTimeout bounds the wait for one RDMA operation (the written
	// message, a Read); then the operation counts as lost.
	OpTimeout time.Duration
	// Retries is how many times a lost operation is asked for again: 0
	// means DefaultRetries, a negative value none.
	Retries int
	// HTTP is the HTTP client; nil means one of the client's own.
	HTTP *http.Client
}

// ErrLost is returned when an RDMA operation was lost on every attempt.
var ErrLost = errors.New("rdmahttp: RDMA operation lost")

// ErrDigest is returned when a body does not match its Repr-Digest.
var ErrDigest = errors.New("rdmahttp: body does not match Repr-Digest")

// Client fetches bodies by RDMA from Quartet servers (the seed's wget).
// It listens on its RDMA endpoint; servers dial it. It owns a device, a
// PD, one CQ, a registered buffer and two goroutines (accept and
// completions); Close releases all of them. Gets run one at a time (one
// buffer); use several Clients for parallel fetches.
type Client struct {
	cfg  ClientConfig
	http *http.Client
	dev  rdma.Device
	pd   rdma.PD
	cq   rdma.CQ
	ln   rdma.Listener
	buf  *rdma.Memory
	mr   rdma.MR
	ep   netip.AddrPort

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	getMu  sync.Mutex
	nextOp atomic.Uint64

	mu      sync.Mutex
	chans   map[uint32]*clientChan
	byIdx   []*clientChan
	waits   map[uint64]chan rdma.Status
	changed chan struct{} // closed and replaced when a channel arrives

	// badKey, set by tests before a Get, makes the next attempt announce a
	// wrong rkey for its buffer: the server's Write is then refused and
	// lost, which the client must detect and retry.
	badKey atomic.Bool
}

// clientChan is one QP a server dialed to this client.
type clientChan struct {
	id   uint32
	idx  int
	qp   rdma.QP
	mem  *rdma.Memory
	mr   rdma.MR
	next int
	dead atomic.Bool
}

// Response describes a fetched body.
type Response struct {
	Status int
	Header http.Header
	Length int64
	Mode   Mode // how the body came: ModeOff means over TCP
	// Fallback is the server's X-RDMA-Fallback, if any: the body came
	// over TCP, and the first word says why (rdma-failed: the transfer
	// failed after it was posted, and the server sent the body in the
	// same response instead; no retry was needed).
	Fallback string
	Op       uint64 // the operation id of the attempt that succeeded
	Attempts int
	Verified bool // Repr-Digest was present and matched
}

// NewClient opens the device that owns cfg.Addr's IP, registers the
// buffer and starts listening.
func NewClient(cfg ClientConfig) (_ *Client, err error) {
	if cfg.Provider == nil {
		return nil, errors.New("rdmahttp: ClientConfig.Provider is nil")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	ap, err := netip.ParseAddrPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("rdmahttp: client address: %w", err)
	}
	c := &Client{cfg: cfg, http: cfg.HTTP, chans: map[uint32]*clientChan{},
		waits: map[uint64]chan rdma.Status{}, changed: make(chan struct{})}
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}}
	}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	if c.dev, err = cfg.Provider.OpenByAddr(ap.Addr()); err != nil {
		return nil, fmt.Errorf("rdmahttp: opening device for %s: %w", ap.Addr(), err)
	}
	if c.pd, err = c.dev.AllocPD(); err != nil {
		return nil, fmt.Errorf("rdmahttp: ibv_alloc_pd: %w", err)
	}
	if c.cq, err = c.dev.CreateCQ(4096); err != nil {
		return nil, fmt.Errorf("rdmahttp: ibv_create_cq: %w", err)
	}
	if c.buf, err = rdma.Alloc(cfg.BufferSize); err != nil {
		return nil, err
	}
	if c.mr, err = c.pd.Register(c.buf.Bytes(), rdma.AccessLocalWrite|rdma.AccessRemoteWrite); err != nil {
		return nil, fmt.Errorf("rdmahttp: ibv_reg_mr: %w", err)
	}
	if c.ln, err = c.dev.Listen(cfg.Addr, 64); err != nil {
		return nil, fmt.Errorf("rdmahttp: rdma_listen %s: %w", cfg.Addr, err)
	}
	if c.ep, err = netip.ParseAddrPort(c.ln.Addr().String()); err != nil {
		return nil, err
	}
	waiter, err := rdma.NewWaiter(c.cq)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(2)
	go c.acceptLoop()
	go c.completionLoop(waiter)
	return c, nil
}

// Endpoint is the RDMA endpoint the client announces.
func (c *Client) Endpoint() netip.AddrPort { return c.ep }

// Close stops the goroutines and releases every RDMA object.
func (c *Client) Close() error {
	if c.cancel != nil {
		c.cancel()
	}
	err := c.ln.Close()
	c.wg.Wait()
	return errors.Join(err, c.release())
}

// release frees what NewClient built, in reverse.
func (c *Client) release() error {
	var errs []error
	for _, ch := range c.byIdx {
		errs = append(errs, ch.qp.Close(), ch.mr.Close(), ch.mem.Free())
	}
	c.byIdx = nil
	if c.ln != nil {
		errs = append(errs, c.ln.Close())
	}
	if c.mr != nil {
		errs = append(errs, c.mr.Close())
	}
	if c.buf != nil {
		errs = append(errs, c.buf.Free())
	}
	if c.cq != nil {
		errs = append(errs, c.cq.Close())
	}
	if c.pd != nil {
		errs = append(errs, c.pd.Close())
	}
	if c.dev != nil {
		errs = append(errs, c.dev.Close())
	}
	return errors.Join(errs...)
}

// acceptLoop accepts the servers' connections, each with its receives
// posted before the connection is up.
func (c *Client) acceptLoop() {
	defer c.wg.Done()
	for {
		req, err := c.ln.Accept(c.ctx)
		if err != nil {
			return
		}
		id, ok := parsePriv(req.PrivateData())
		if !ok {
			_ = req.Reject(nil)
			continue
		}
		ch := &clientChan{id: id}
		if err := c.accept(req, ch); err != nil {
			continue
		}
		c.mu.Lock()
		if old := c.chans[id]; old != nil {
			old.dead.Store(true)
		}
		c.chans[id] = ch
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

func (c *Client) accept(req rdma.ConnRequest, ch *clientChan) (err error) {
	if ch.mem, err = rdma.Alloc(msgArea); err != nil {
		_ = req.Reject(nil)
		return err
	}
	if ch.mr, err = c.pd.Register(ch.mem.Bytes(), rdma.AccessLocalWrite); err != nil {
		ch.mem.Free()
		_ = req.Reject(nil)
		return err
	}
	c.mu.Lock()
	ch.idx = len(c.byIdx)
	c.byIdx = append(c.byIdx, ch) // owned from here: released by Close
	c.mu.Unlock()
	var sgl [1]rdma.SGE
	qp, err := req.Accept(rdma.QPConfig{
		PD: c.pd, SendCQ: c.cq, RecvCQ: c.cq,
		MaxSendWR: 256, MaxRecvWR: recvSlots, MaxInline: msgLen,
		InitiatorDepth: 16,
		Prepare: func(qp rdma.QP) error {
			// The server may send the moment the connection is up, before
			// Accept returns: route must find the QP already.
			c.mu.Lock()
			ch.qp = qp
			c.mu.Unlock()
			for i := 0; i < recvSlots; i++ {
				sgl[0] = rdma.SGEOf(ch.mr, i*msgLen, msgLen)
				if err := qp.PostRecv(recvID(uint32(ch.idx), i), sgl[:]); err != nil {
					return err
				}
			}
			return nil
		},
	}, nil)
	if err != nil {
		c.mu.Lock()
		c.byIdx = c.byIdx[:ch.idx]
		c.mu.Unlock()
		ch.mr.Close()
		ch.mem.Free()
		return err
	}
	c.mu.Lock()
	ch.qp = qp
	c.mu.Unlock()
	return nil
}

// completionLoop routes completions: written messages and Read
// completions to the Get waiting for their op id.
func (c *Client) completionLoop(w *rdma.Waiter) {
	defer c.wg.Done()
	defer w.Close()
	wcs := make([]rdma.Completion, 32)
	for {
		n, err := w.Wait(c.ctx, wcs)
		if err != nil {
			return
		}
		for i := range wcs[:n] {
			c.route(&wcs[i])
		}
	}
}

// Work-request ids of the client: Reads carry tagRead|op, read-done
// Sends tagSend|op.
const (
	tagRead uint64 = 1 << 62
	tagSend uint64 = 1 << 61
	opMask         = tagSend - 1
)

func (c *Client) route(wc *rdma.Completion) {
	switch {
	case wc.WRID&tagRecv != 0:
		idx, slot := splitRecvID(wc.WRID)
		c.mu.Lock()
		var ch *clientChan
		var qp rdma.QP
		if int(idx) < len(c.byIdx) {
			ch = c.byIdx[idx]
			qp = ch.qp
		}
		c.mu.Unlock()
		if ch == nil || qp == nil {
			return
		}
		if wc.Status != rdma.StatusSuccess {
			ch.dead.Store(true)
			return
		}
		if kind, op, ok := parseMsg(ch.mem.Bytes()[slot*msgLen:]); ok && kind == msgWritten {
			c.deliver(op, rdma.StatusSuccess)
		}
		sgl := [1]rdma.SGE{rdma.SGEOf(ch.mr, slot*msgLen, msgLen)}
		if qp.PostRecv(wc.WRID, sgl[:]) != nil {
			ch.dead.Store(true)
		}
	case wc.WRID&tagRead != 0:
		c.deliver(wc.WRID&opMask, wc.Status)
	}
}

func (c *Client) deliver(op uint64, st rdma.Status) {
	c.mu.Lock()
	w := c.waits[op]
	c.mu.Unlock()
	if w != nil {
		select {
		case w <- st:
		default:
		}
	}
}

func (c *Client) expect(op uint64) chan rdma.Status {
	ch := make(chan rdma.Status, 1)
	c.mu.Lock()
	c.waits[op] = ch
	c.mu.Unlock()
	return ch
}

func (c *Client) forget(op uint64) {
	c.mu.Lock()
	delete(c.waits, op)
	c.mu.Unlock()
}

// await waits for op's completion for at most the op timeout.
func (c *Client) await(ctx context.Context, w chan rdma.Status) error {
	t := time.NewTimer(c.cfg.OpTimeout)
	defer t.Stop()
	select {
	case st := <-w:
		if st != rdma.StatusSuccess {
			return fmt.Errorf("%w: %s", ErrLost, st)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%w: no completion in %v", ErrLost, c.cfg.OpTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// channel waits (bounded) for the QP the server names: its connection
// may be accepted a moment after the HTTP response arrives.
func (c *Client) channel(ctx context.Context, id uint32) (*clientChan, error) {
	t := time.NewTimer(c.cfg.OpTimeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		ch, changed := c.chans[id], c.changed
		c.mu.Unlock()
		if ch != nil {
			return ch, nil
		}
		select {
		case <-changed:
		case <-t.C:
			return nil, fmt.Errorf("%w: no RDMA connection with channel id %d", ErrLost, id)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Get fetches url with mode and writes the body to the writer open
// returns; open is called once, with the response's status and header,
// when the body is ready (for RDMA, after it arrived and matched its
// digest; over TCP, before it streams). A lost RDMA operation is asked
// for again with a new operation id, up to Retries times.
func (c *Client) Get(ctx context.Context, url string, mode Mode, open func(*Response) (io.Writer, error)) (*Response, error) {
	c.getMu.Lock()
	defer c.getMu.Unlock()
	var lastErr error
	for attempt := 1; attempt <= c.cfg.Retries+1; attempt++ {
		r, err := c.try(ctx, url, mode, open)
		if r != nil {
			r.Attempts = attempt
		}
		if err == nil || !errors.Is(err, ErrLost) {
			return r, err
		}
		lastErr = err
	}
	return nil, lastErr
}

// try is one attempt with a fresh operation id.
func (c *Client) try(ctx context.Context, url string, mode Mode, open func(*Response) (io.Writer, error)) (*Response, error) {
	op := c.nextOp.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	var written chan rdma.Status
	if mode != ModeOff {
		req.Header.Set(HeaderMode, mode.String())
		req.Header.Set(HeaderEndpoint, c.ep.String())
		req.Header.Set(HeaderOp, strconv.FormatUint(op, 10))
		if mode == ModeServerWrites {
			rkey := c.mr.RKey()
			if c.badKey.Swap(false) {
				rkey ^= 0x5a5a00
			}
			req.Header.Set(HeaderBuffer, region{Addr: c.mr.Addr(), RKey: rkey, Len: int64(c.cfg.BufferSize)}.String())
			written = c.expect(op)
			defer c.forget(op)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Length: resp.ContentLength,
		Fallback: resp.Header.Get(HeaderFallback), Op: op}
	want, hasDigest, err := parseDigest(resp.Header.Get(HeaderDigest))
	if err != nil {
		return r, err
	}
	got, err := ParseMode(resp.Header.Get(HeaderMode))
	if err != nil || got == ModeOff || got != mode {
		// Over TCP: stream it, hashing on the way.
		w, err := open(r)
		if err != nil {
			return r, err
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(w, h), resp.Body); err != nil {
			return r, err
		}
		return r, checkDigest(r, h, want, hasDigest, resp.StatusCode)
	}
	io.Copy(io.Discard, resp.Body) // a delivered body has none over TCP; keep the connection reusable
	if o, _ := strconv.ParseUint(resp.Header.Get(HeaderOp), 10, 64); o != op {
		return r, fmt.Errorf("rdmahttp: response names op %d, asked %d", o, op)
	}
	r.Mode = got
	var body []byte
	switch got {
	case ModeServerWrites:
		n, err := strconv.ParseInt(resp.Header.Get(HeaderWritten), 10, 64)
		if err != nil || n < 0 || n > int64(c.cfg.BufferSize) {
			return r, fmt.Errorf("rdmahttp: bad %s %q", HeaderWritten, resp.Header.Get(HeaderWritten))
		}
		if n > 0 {
			// The written message follows the Writes on the same QP: once
			// it is here, so are the bytes (RC ordering).
			if err := c.await(ctx, written); err != nil {
				return r, err
			}
		}
		body = c.buf.Bytes()[:n]
	case ModeClientReads:
		rg, err := parseRegion(resp.Header.Get(HeaderRead))
		if err != nil {
			return r, err
		}
		if rg.Len > int64(c.cfg.BufferSize) {
			return r, fmt.Errorf("rdmahttp: body of %d bytes exceeds the client buffer (%d)", rg.Len, c.cfg.BufferSize)
		}
		if rg.Len > 0 {
			if err := c.read(ctx, resp.Header.Get(HeaderChannel), op, rg); err != nil {
				return r, err
			}
		}
		body = c.buf.Bytes()[:rg.Len]
	}
	r.Length = int64(len(body))
	h := sha256.New()
	h.Write(body)
	if err := checkDigest(r, h, want, hasDigest, resp.StatusCode); err != nil {
		return r, fmt.Errorf("%w (treated as lost)", errors.Join(err, ErrLost))
	}
	w, err := open(r)
	if err != nil {
		return r, err
	}
	_, err = w.Write(body)
	return r, err
}

// read is client-reads: RDMA Read into the buffer over the named QP,
// then the read-done message so the server revokes the exposure.
func (c *Client) read(ctx context.Context, chanHdr string, op uint64, rg region) error {
	id, err := strconv.ParseUint(chanHdr, 10, 32)
	if err != nil {
		return fmt.Errorf("rdmahttp: bad %s %q", HeaderChannel, chanHdr)
	}
	ch, err := c.channel(ctx, uint32(id))
	if err != nil {
		return err
	}
	w := c.expect(op)
	defer c.forget(op)
	sgl := [1]rdma.SGE{rdma.SGEOf(c.mr, 0, int(rg.Len))}
	if err := ch.qp.PostRead(tagRead|op, sgl[:], rg.Addr, rg.RKey, rdma.SendSignaled); err != nil {
		return fmt.Errorf("%w: ibv_post_send (read): %w", ErrLost, err)
	}
	if err := c.await(ctx, w); err != nil {
		return err
	}
	c.mu.Lock()
	slot := recvSlots + ch.next
	ch.next = (ch.next + 1) % sendSlots
	c.mu.Unlock()
	putMsg(ch.mem.Bytes()[slot*msgLen:], msgReadDone, op)
	sgl[0] = rdma.SGEOf(ch.mr, slot*msgLen, msgLen)
	if err := ch.qp.PostSend(tagSend|op, sgl[:], rdma.SendInline); err != nil {
		// The bytes are here; the server's timer revokes the exposure.
		return nil
	}
	return nil
}

// ReadRaw posts one RDMA Read of rg on the QP with channel id chanID and
// waits for it: what a hostile client would do with a key it kept or
// guessed. For tests and diagnostics; a failed Read moves the QP to
// ERROR (the server retires its side).
func (c *Client) ReadRaw(ctx context.Context, chanID uint32, addr uint64, rkey uint32, n int) ([]byte, error) {
	ch, err := c.channel(ctx, chanID)
	if err != nil {
		return nil, err
	}
	op := c.nextOp.Add(1)
	w := c.expect(op)
	defer c.forget(op)
	clear(c.buf.Bytes()[:n])
	sgl := [1]rdma.SGE{rdma.SGEOf(c.mr, 0, n)}
	if err := ch.qp.PostRead(tagRead|op, sgl[:], addr, rkey, rdma.SendSignaled); err != nil {
		return nil, err
	}
	if err := c.await(ctx, w); err != nil {
		return nil, err
	}
	return bytes.Clone(c.buf.Bytes()[:n]), nil
}

func checkDigest(r *Response, h hash.Hash, want []byte, has bool, status int) error {
	if !has || status != http.StatusOK {
		return nil
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return ErrDigest
	}
	r.Verified = true
	return nil
}

// LocalAddrFor returns the local IP this host uses to reach host (no
// packet is sent: a UDP socket is only connected), for a client endpoint
// the server can dial back.
func LocalAddrFor(host string) (netip.Addr, error) {
	conn, err := net.Dial("udp", net.JoinHostPort(host, "9"))
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, err
	}
	return ap.Addr().Unmap(), nil
}
