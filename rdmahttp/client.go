package rdmahttp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// Defaults of ClientConfig.
const (
	DefaultBufferSize = 64 << 20
	DefaultOpTimeout  = deliver.DefaultOpTimeout
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

// errOverBuffer: a client-reads exposure is larger than the client's
// buffer; Get fetches the body by TCP instead.
var errOverBuffer = errors.New("rdmahttp: the exposed body is larger than the client buffer")

// overBufferFallback is Response.Fallback for a body Get fetched by TCP
// because it was larger than the client's buffer.
const overBufferFallback = "buffer-too-small (client-reads: the body is larger than the client buffer)"

// ErrLost is returned when an RDMA operation was lost on every attempt
// (deliver.ErrLost).
var ErrLost = deliver.ErrLost

// ErrClientClosed is what a Get returns when the Client was closed
// before or during it; it matches rdma.ErrClosed.
var ErrClientClosed = fmt.Errorf("%w: rdmahttp client closed", rdma.ErrClosed)

// ErrDigest is returned when a body does not match its Repr-Digest.
var ErrDigest = errors.New("rdmahttp: body does not match Repr-Digest")

// Client fetches bodies by RDMA from Quartet servers (the seed's wget):
// HTTP requests with X-RDMA-* headers, on a deliver.Endpoint that the
// servers dial, into one registered buffer. Close releases the endpoint
// and the buffer. Gets run one at a time (one buffer); use several
// Clients for parallel fetches.
type Client struct {
	cfg  ClientConfig
	http *http.Client
	ep   *deliver.Endpoint
	buf  *deliver.Buffer
	// getMu runs one Get or ReadRaw at a time (one buffer), and Close
	// after the one under way: the buffer must outlive its reader. life
	// ends when Close begins, cutting that Get short.
	getMu  sync.Mutex
	closed bool // under getMu
	life   context.Context
	end    context.CancelFunc

	// badKey, set by tests before a Get, makes the next attempt announce a
	// wrong rkey for its buffer: the server's Write is then refused and
	// lost, which the client must detect and retry.
	badKey atomic.Bool
}

// Response describes a fetched body.
type Response struct {
	Status int
	Header http.Header
	Length int64
	Mode   deliver.Mode // how the body came: ModeOff means over TCP
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
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Provider == nil {
		return nil, errors.New("rdmahttp: ClientConfig.Provider is nil")
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	ep, err := deliver.NewEndpoint(deliver.EndpointConfig{Provider: cfg.Provider, Addr: cfg.Addr, OpTimeout: cfg.OpTimeout})
	if err != nil {
		return nil, err
	}
	buf, err := ep.NewBuffer(cfg.BufferSize)
	if err != nil {
		ep.Close()
		return nil, err
	}
	c := &Client{cfg: cfg, http: cfg.HTTP, ep: ep, buf: buf}
	c.life, c.end = context.WithCancel(context.Background())
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}}
	}
	return c, nil
}

// Endpoint is the RDMA endpoint the client announces.
func (c *Client) Endpoint() netip.AddrPort { return c.ep.Addr() }

// Close ends the Get under way (it returns ErrClientClosed), waits for
// it to return, and releases the endpoint and the buffer. Later Gets
// return ErrClientClosed; Close again does nothing.
func (c *Client) Close() error {
	c.end()
	c.getMu.Lock()
	defer c.getMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.ep.Close()
}

// begin starts a Get or ReadRaw: one at a time, on an open client, with
// a context that also ends when Close begins. Call the returned func
// when done.
func (c *Client) begin(ctx context.Context) (context.Context, func(), error) {
	c.getMu.Lock()
	if c.closed {
		c.getMu.Unlock()
		return nil, nil, ErrClientClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.life, cancel)
	return ctx, func() {
		stop()
		cancel()
		c.getMu.Unlock()
	}, nil
}

// closedErr is err, or ErrClientClosed when Close cut the call short.
func (c *Client) closedErr(err error) error {
	if err != nil && c.life.Err() != nil {
		return fmt.Errorf("%w (%w)", ErrClientClosed, err)
	}
	return err
}

// Get fetches url with mode and writes the body to the writer open
// returns; open is called once, with the response's status and header,
// when the body is ready (for RDMA, after it arrived and matched its
// digest; over TCP, before it streams). A lost RDMA operation is asked
// for again with a new operation id, up to Retries times.
func (c *Client) Get(ctx context.Context, url string, mode deliver.Mode, open func(*Response) (io.Writer, error)) (*Response, error) {
	ctx, done, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var lastErr error
	for attempt := 1; attempt <= c.cfg.Retries+1 && c.life.Err() == nil; attempt++ {
		r, err := c.try(ctx, url, mode, open)
		if errors.Is(err, errOverBuffer) {
			// client-reads exposed more than the buffer holds (the server
			// cannot know the buffer's size in that mode): fetch it by TCP,
			// as server-writes' server would have sent it. try declined
			// the exposure, so the server revokes it now.
			if r, err = c.try(ctx, url, deliver.ModeOff, open); r != nil {
				r.Fallback = overBufferFallback
			}
		}
		if r != nil {
			r.Attempts = attempt
		}
		if err == nil || !errors.Is(err, ErrLost) {
			return r, c.closedErr(err)
		}
		lastErr = err
	}
	if lastErr == nil { // Close began before the first attempt
		return nil, ErrClientClosed
	}
	return nil, c.closedErr(lastErr)
}

// try is one attempt with a fresh operation id.
func (c *Client) try(ctx context.Context, url string, mode deliver.Mode, open func(*Response) (io.Writer, error)) (*Response, error) {
	op := c.ep.NextOp()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	var written *deliver.Wait
	if mode != deliver.ModeOff {
		req.Header.Set(HeaderMode, mode.String())
		req.Header.Set(HeaderEndpoint, c.ep.Addr().String())
		req.Header.Set(HeaderOp, strconv.FormatUint(op, 10))
		if mode == deliver.ModeServerWrites {
			rg := c.buf.Region()
			if c.badKey.Swap(false) {
				rg.RKey ^= 0x5a5a00
			}
			req.Header.Set(HeaderBuffer, formatRegion(rg))
			// The written message may come before the response does.
			if written, err = c.ep.Expect(ctx); err != nil {
				return nil, err
			}
			written.For(op)
			defer written.Cancel()
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
	got, err := deliver.ParseMode(resp.Header.Get(HeaderMode))
	if err != nil || got == deliver.ModeOff || got != mode {
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
	var chanID uint32
	if v := resp.Header.Get(HeaderChannel); v != "" {
		id, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return r, fmt.Errorf("rdmahttp: bad %s %q", HeaderChannel, v)
		}
		chanID = uint32(id)
	}
	var body []byte
	switch got {
	case deliver.ModeServerWrites:
		n, err := strconv.ParseInt(resp.Header.Get(HeaderWritten), 10, 64)
		if err != nil || n < 0 || n > int64(c.cfg.BufferSize) {
			return r, fmt.Errorf("rdmahttp: bad %s %q", HeaderWritten, resp.Header.Get(HeaderWritten))
		}
		if n > 0 {
			// The written message follows the Writes on the same QP: once
			// it is here, so are the bytes (RC ordering).
			if err := written.Await(ctx, chanID); err != nil {
				return r, err
			}
		}
		body = c.buf.Bytes()[:n]
	case deliver.ModeClientReads:
		rg, err := parseRegion(resp.Header.Get(HeaderRead))
		if err != nil {
			return r, err
		}
		if rg.Len > int64(c.cfg.BufferSize) {
			// Tell the server at once that the exposure will not be read,
			// rather than leave it to its ExposureTimeout; if that fails,
			// the timeout still ends it.
			_ = c.ep.Decline(ctx, chanID, op)
			return r, fmt.Errorf("%w: body of %d bytes, client buffer %d", errOverBuffer, rg.Len, c.cfg.BufferSize)
		}
		if rg.Len > 0 {
			// The Read, then the read-done message so the server revokes
			// the exposure.
			if err := c.ep.Read(ctx, chanID, op, rg, c.buf, true); err != nil {
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

// ReadRaw posts one RDMA Read on the QP with channel id chanID and waits
// for it: what a hostile client would do with a key it kept or guessed.
// For tests and diagnostics; a failed Read moves the QP to ERROR (the
// server retires its side).
func (c *Client) ReadRaw(ctx context.Context, chanID uint32, addr uint64, rkey uint32, n int) ([]byte, error) {
	ctx, done, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	clear(c.buf.Bytes()[:n])
	rg := deliver.Region{Addr: addr, RKey: rkey, Len: int64(n)}
	if err := c.ep.Read(ctx, chanID, c.ep.NextOp(), rg, c.buf, false); err != nil {
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

// LocalAddrFor returns the local IP this host uses to reach host, for a
// client endpoint the server can dial back (deliver.LocalAddrFor, which
// the messenger's clients share).
func LocalAddrFor(host string) (netip.Addr, error) { return deliver.LocalAddrFor(host) }
