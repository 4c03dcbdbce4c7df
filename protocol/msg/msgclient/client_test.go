package msgclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/internal/msgtest"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// waitLong bounds every wait in these tests: generous, because the
// machine may be loaded; a test that needs it has failed anyway.
const waitLong = 30 * time.Second

func dial(t *testing.T, addr string, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxLong(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// TestEchoSizes: byte-exact echo over a real socket from 0 B to 64 MiB,
// across the buffer size's edges, where payloads stop being batched and
// go straight between socket and memory.
func TestEchoSizes(t *testing.T) {
	srv := msgtest.Start(t, msgtest.Config{})
	c := dial(t, srv.Addr(), Config{})
	sizes := []int{0, 1, 13, msg.MaxHeadSize, DefaultBufferSize - msg.HeaderSize, DefaultBufferSize - 1, DefaultBufferSize, DefaultBufferSize + 1, 1 << 20, 64 << 20}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			in := randomBytes(uint64(n), n)
			r, err := c.Do(ctxLong(t), &Request{Payload: in})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Payload, in) {
				t.Fatalf("echo of %d bytes came back as %d different bytes", n, len(r.Payload))
			}
			if r.TxID == 0 || r.Flags != 0 || r.ByRDMA() {
				t.Errorf("reply %d, flags %v", r.TxID, r.Flags)
			}
		})
	}
}

// reverser holds n messages, then answers them last first: replies come
// back in exactly the opposite order of the requests.
type reverser struct {
	mu   sync.Mutex
	n    int
	held []*msg.Message
}

func (d *reverser) Dispatch(m *msg.Message) {
	d.mu.Lock()
	d.held = append(d.held, m)
	if len(d.held) < d.n {
		d.mu.Unlock()
		return
	}
	held := d.held
	d.held = nil
	d.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		held[i].SendReply(msg.Reply{Payload: append([]byte("re:"), held[i].Payload...)})
	}
}

func TestOutOfOrder(t *testing.T) {
	tests := []struct {
		name  string
		cfg   msgtest.Config
		calls int
	}{
		{"reversed", msgtest.Config{Dispatcher: &reverser{n: 50}}, 50},
		{"random delays", msgtest.Config{MaxDelay: 5 * time.Millisecond, Seed: 3}, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := msgtest.Start(t, tt.cfg)
			c := dial(t, srv.Addr(), Config{})
			var wg sync.WaitGroup
			errs := make(chan error, tt.calls)
			for i := range tt.calls {
				wg.Go(func() {
					in := fmt.Appendf(nil, "request %d", i)
					out, err := c.Call(ctxLong(t), in)
					want := in
					if _, ok := tt.cfg.Dispatcher.(*reverser); ok {
						want = append([]byte("re:"), in...)
					}
					if err == nil && !bytes.Equal(out, want) {
						err = fmt.Errorf("call %d got %q", i, out)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if st := srv.Stats(); st.MaxInFlight < 2 {
				t.Errorf("the server never had two requests of the connection in flight: %+v", st)
			}
		})
	}
}

// TestReplyOrder reads replies off a raw socket, to see the order the
// server sends them in: ordered requests' replies never overtake an
// earlier request's, unordered ones may.
func TestReplyOrder(t *testing.T) {
	srv := msgtest.Start(t, msgtest.Config{MaxDelay: 3 * time.Millisecond, Seed: 11})
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const n = 200
	// Every third request is unordered.
	var out []byte
	for i := uint64(1); i <= n; i++ {
		h := msg.Header{Type: msg.TypeRequest, TxID: i}
		if i%3 == 0 {
			h.Flags = msg.FlagUnordered
		}
		var b [msg.MaxHeadSize]byte
		k, err := msg.PutHead(b[:], &h)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b[:k]...)
	}
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(waitLong))
	br := bufio.NewReader(nc)
	p := msg.NewParser(msg.RoleClient, msg.Limits{})
	seen := map[uint64]bool{}
	overtaken := 0
	for range n {
		var h msg.Header
		if err := p.ReadHead(br, &h); err != nil {
			t.Fatal(err)
		}
		if h.TxID%3 != 0 {
			for j := uint64(1); j < h.TxID; j++ {
				if !seen[j] {
					t.Fatalf("ordered reply %d before the reply to %d", h.TxID, j)
				}
			}
		} else {
			for j := h.TxID + 1; j <= n; j++ {
				if seen[j] {
					overtaken++
					break
				}
			}
		}
		seen[h.TxID] = true
	}
	if overtaken == 0 {
		t.Errorf("no unordered reply was overtaken in %d requests with random delays", n)
	}
}

// script is a misbehaving server's turn: it has read one request and
// writes what it likes.
type script func(t *testing.T, nc net.Conn, req *msg.Header)

// rawServer accepts one connection, reads requests with a server parser
// until it has want of them, then runs s.
func rawServer(t *testing.T, want int, s script) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br := bufio.NewReader(nc)
		p := msg.NewParser(msg.RoleServer, msg.Limits{})
		var h msg.Header
		for range want {
			if err := p.ReadHead(br, &h); err != nil {
				t.Errorf("raw server: %v", err)
				return
			}
			if err := p.SkipPayload(br); err != nil {
				t.Errorf("raw server: %v", err)
				return
			}
		}
		s(t, nc, &h)
		// Let the client hang up first.
		nc.SetReadDeadline(time.Now().Add(waitLong))
		io.Copy(io.Discard, nc)
	})
	return ln.Addr().String()
}

func frame(t *testing.T, h msg.Header, payload ...byte) []byte {
	var b [msg.MaxHeadSize]byte
	n, err := msg.PutHead(b[:], &h)
	if err != nil {
		t.Fatal(err)
	}
	return append(b[:n:n], payload...)
}

func write(t *testing.T, nc net.Conn, b []byte) {
	if _, err := nc.Write(b); err != nil {
		t.Errorf("raw server: %v", err)
	}
}

// TestBrokenServer: whatever the server does wrong, every call in flight
// fails with ErrConnection and the cause, and so does every later call;
// nothing hangs.
func TestBrokenServer(t *testing.T) {
	errFrame := func(txid uint64, code msg.Code, text string) []byte {
		b := make([]byte, msg.MaxErrorFrame)
		n, err := msg.PutErrorFrame(b, txid, code, text)
		if err != nil {
			t.Fatal(err)
		}
		return b[:n]
	}
	tests := []struct {
		name  string
		s     script
		cause error // errors.Is target, beside ErrConnection
		code  msg.Code
		// The call the server answers (the last sent, txid 3) gets this
		// instead of the connection error, when set.
		own msg.Code
	}{
		{"garbage", func(t *testing.T, nc net.Conn, _ *msg.Header) { write(t, nc, []byte("HTTP/1.1 200 OK\r\n\r\n")) }, msg.ErrVersion, 0, 0},
		{"unknown txid", func(t *testing.T, nc net.Conn, _ *msg.Header) {
			write(t, nc, frame(t, msg.Header{Type: msg.TypeReply, TxID: 99, Length: 1}, 'x'))
		}, ErrUnknownTxID, 0, 0},
		{"request sent to the client", func(t *testing.T, nc net.Conn, _ *msg.Header) {
			write(t, nc, frame(t, msg.Header{Type: msg.TypeRequest, TxID: 1}))
		}, msg.ErrDirection, 0, 0},
		{"undefined flag", func(t *testing.T, nc net.Conn, h *msg.Header) {
			b := frame(t, msg.Header{Type: msg.TypeReply, TxID: h.TxID})
			b[3] |= 0x80
			write(t, nc, b)
		}, msg.ErrFlags, 0, 0},
		{"reply over the client's limit", func(t *testing.T, nc net.Conn, h *msg.Header) {
			write(t, nc, frame(t, msg.Header{Type: msg.TypeReply, TxID: h.TxID, Length: 1 << 20}))
		}, msg.ErrPayloadTooLarge, 0, 0},
		{"closed mid-head", func(t *testing.T, nc net.Conn, h *msg.Header) {
			write(t, nc, frame(t, msg.Header{Type: msg.TypeReply, TxID: h.TxID})[:9])
			nc.(*net.TCPConn).CloseWrite()
		}, io.ErrUnexpectedEOF, 0, 0},
		{"closed mid-payload", func(t *testing.T, nc net.Conn, h *msg.Header) {
			write(t, nc, frame(t, msg.Header{Type: msg.TypeReply, TxID: h.TxID, Length: 10}, 'a', 'b'))
			nc.(*net.TCPConn).CloseWrite()
		}, io.ErrUnexpectedEOF, 0, 0},
		{"closed", func(t *testing.T, nc net.Conn, _ *msg.Header) { nc.(*net.TCPConn).CloseWrite() }, ErrServerClosed, 0, 0},
		{"connection error frame", func(t *testing.T, nc net.Conn, _ *msg.Header) {
			write(t, nc, errFrame(0, msg.CodeShutdown, "going away"))
		}, nil, msg.CodeShutdown, 0},
		{"fatal error for one request", func(t *testing.T, nc net.Conn, h *msg.Header) {
			write(t, nc, errFrame(h.TxID, msg.CodeTooLarge, "payload too large"))
		}, nil, msg.CodeTooLarge, msg.CodeTooLarge},
		{"error body with code 0", func(t *testing.T, nc net.Conn, h *msg.Header) {
			write(t, nc, frame(t, msg.Header{Type: msg.TypeReply, Flags: msg.FlagError, TxID: h.TxID, Length: 2}, 0, 0))
		}, msg.ErrErrorBody, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawServer(t, 3, tt.s)
			c := dial(t, addr, Config{Limits: msg.Limits{MaxPayload: 1 << 16}})
			type result struct {
				i   int
				err error
			}
			res := make(chan result, 3)
			for i := range 3 {
				go func() {
					_, err := c.Call(ctxLong(t), []byte{byte(i)})
					res <- result{i, err}
				}()
				// One at a time, so the third call is txid 3.
				waitPending(t, c, i+1)
			}
			for range 3 {
				r := <-res
				var e *msg.Error
				if tt.own != 0 && errors.As(r.err, &e) && !errors.Is(r.err, ErrConnection) {
					if e.Code != tt.own {
						t.Errorf("call %d: %v", r.i, r.err)
					}
					continue
				}
				if !errors.Is(r.err, ErrConnection) {
					t.Errorf("call %d: %v, want ErrConnection", r.i, r.err)
				}
				if tt.cause != nil && !errors.Is(r.err, tt.cause) {
					t.Errorf("call %d: %v, want cause %v", r.i, r.err, tt.cause)
				}
				if tt.code != 0 && (!errors.As(r.err, &e) || e.Code != tt.code) {
					t.Errorf("call %d: %v, want server code %v", r.i, r.err, tt.code)
				}
			}
			if _, err := c.Call(ctxLong(t), nil); !errors.Is(err, ErrConnection) {
				t.Errorf("a call after the failure: %v", err)
			}
			if err := c.Err(); !errors.Is(err, ErrConnection) {
				t.Errorf("Err() = %v", err)
			}
		})
	}
}

// waitPending waits until the client has given n requests their
// transaction ids (in flight, or answered since).
func waitPending(t *testing.T, c *Client, n int) {
	deadline := time.Now().Add(waitLong)
	for {
		c.mu.Lock()
		got := int(c.nextTx)
		c.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in flight, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestServerRefusesBadFrames: the reference server answers a frame that
// breaks the format with an error frame, then closes; never a hang.
func TestServerRefusesBadFrames(t *testing.T) {
	good := frame(t, msg.Header{Type: msg.TypeRequest, TxID: 1, Length: 2}, 'o', 'k')
	tests := []struct {
		name string
		in   []byte
		code msg.Code
		txid uint64
	}{
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), msg.CodeVersion, 0},
		{"one wrong byte", []byte{9}, msg.CodeVersion, 0},
		{"reply sent to the server", frame(t, msg.Header{Type: msg.TypeReply, TxID: 1}), msg.CodeMalformed, 0},
		{"txid 0", append([]byte{msg.Version, byte(msg.TypeRequest)}, make([]byte, 14)...), msg.CodeMalformed, 0},
		{"too large", append(good, frame(t, msg.Header{Type: msg.TypeRequest, TxID: 2, Length: 1 << 20})...), msg.CodeTooLarge, 2},
		{"op id going back", append(
			frame(t, msg.Header{Type: msg.TypeRequest, Flags: msg.FlagRDMA, TxID: 1, RDMA: msg.Descriptor{Mode: deliver.ModeClientReads, Op: 5, Endpoint: netip.MustParseAddrPort("127.0.0.1:1")}}),
			frame(t, msg.Header{Type: msg.TypeRequest, Flags: msg.FlagRDMA, TxID: 2, RDMA: msg.Descriptor{Mode: deliver.ModeClientReads, Op: 4, Endpoint: netip.MustParseAddrPort("127.0.0.1:1")}})...), msg.CodeMalformed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			block := make(chan struct{})
			defer close(block)
			srv := msgtest.Start(t, msgtest.Config{Limits: msg.Limits{MaxPayload: 1 << 10}, Dispatcher: msg.DispatcherFunc(func(m *msg.Message) {
				<-block // no reply may come before the error
				m.SendReply(msg.Reply{})
			})})
			nc, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			nc.SetReadDeadline(time.Now().Add(waitLong))
			br := bufio.NewReader(nc)
			p := msg.NewParser(msg.RoleClient, msg.Limits{})
			var h msg.Header
			if err := p.ReadHead(br, &h); err != nil {
				t.Fatalf("no error frame: %v", err)
			}
			body, err := p.ReadPayload(br, nil)
			if err != nil || !h.Flags.Has(msg.FlagError) {
				t.Fatalf("frame %+v, %v", h, err)
			}
			e, err := msg.ParseError(body)
			if err != nil || e.Code != tt.code || h.TxID != tt.txid {
				t.Fatalf("error frame txid %d: %v, %v; want %v for txid %d", h.TxID, e, err, tt.code, tt.txid)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the error frame: %v, want EOF", err)
			}
		})
	}
}

// TestRequestTooLargeForServer: the request over the server's limit gets
// the server's error; the other calls in flight fail with the connection,
// naming the same cause.
func TestRequestTooLargeForServer(t *testing.T) {
	release := make(chan struct{})
	srv := msgtest.Start(t, msgtest.Config{Limits: msg.Limits{MaxPayload: 1 << 10}, Dispatcher: msg.DispatcherFunc(func(m *msg.Message) {
		<-release
		m.SendReply(msg.Reply{Payload: m.Payload})
	})})
	defer close(release)
	c := dial(t, srv.Addr(), Config{})
	small := make(chan error, 1)
	go func() { _, err := c.Call(ctxLong(t), []byte("small")); small <- err }()
	waitPending(t, c, 1)
	_, err := c.Call(ctxLong(t), make([]byte, 1<<20))
	var e *msg.Error
	if !errors.As(err, &e) || e.Code != msg.CodeTooLarge || errors.Is(err, ErrConnection) {
		t.Fatalf("large call: %v", err)
	}
	if err := <-small; !errors.Is(err, ErrConnection) || !errors.As(err, &e) || e.Code != msg.CodeTooLarge {
		t.Fatalf("small call: %v", err)
	}
}

// gate is a dispatcher that holds every message until released.
type gate struct {
	mu   sync.Mutex
	held []*msg.Message
	in   chan struct{}
}

func newGate() *gate { return &gate{in: make(chan struct{}, 1024)} }

func (g *gate) Dispatch(m *msg.Message) {
	g.mu.Lock()
	g.held = append(g.held, m)
	g.mu.Unlock()
	g.in <- struct{}{}
}

func (g *gate) release() {
	g.mu.Lock()
	held := g.held
	g.held = nil
	g.mu.Unlock()
	for _, m := range held {
		m.SendReply(msg.Reply{Payload: m.Payload})
	}
}

func TestCancel(t *testing.T) {
	t.Run("waiting for the reply", func(t *testing.T) {
		g := newGate()
		srv := msgtest.Start(t, msgtest.Config{Dispatcher: g})
		c := dial(t, srv.Addr(), Config{MaxInFlight: 1})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := c.Call(ctx, []byte("late")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Call = %v", err)
		}
		<-g.in
		// The abandoned request holds the only slot until its reply
		// comes: a second call waits, then goes through once the late
		// reply has been read and dropped.
		second := make(chan error, 1)
		go func() {
			out, err := c.Call(ctxLong(t), []byte("next"))
			if err == nil && string(out) != "next" {
				err = fmt.Errorf("got %q", out)
			}
			second <- err
		}()
		select {
		case err := <-second:
			t.Fatalf("second call ended before the first's reply: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		g.release()
		<-g.in
		g.release()
		if err := <-second; err != nil {
			t.Fatal(err)
		}
		if c.Err() != nil {
			t.Fatalf("connection failed: %v", c.Err())
		}
	})
	t.Run("before sending", func(t *testing.T) {
		srv := msgtest.Start(t, msgtest.Config{})
		c := dial(t, srv.Addr(), Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for range 100 {
			if _, err := c.Call(ctx, []byte("never")); !errors.Is(err, context.Canceled) {
				t.Fatalf("Call = %v", err)
			}
		}
		if out, err := c.Call(ctxLong(t), []byte("then")); err != nil || string(out) != "then" {
			t.Fatalf("next call: %q, %v", out, err)
		}
		if n := srv.Stats().Requests; n != 1 {
			t.Fatalf("server saw %d requests, want only the last", n)
		}
	})
}

// TestCancelMidFrame: a call whose context ends while its large frame is
// stuck in a full socket returns promptly; the connection is closed,
// because half a frame cannot be taken back, and the other calls say so.
func TestCancelMidFrame(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	addr := rawServer(t, 1, func(t *testing.T, nc net.Conn, _ *msg.Header) { <-stop })
	c := dial(t, addr, Config{})
	first := make(chan error, 1)
	go func() { _, err := c.Call(ctxLong(t), []byte("a")); first <- err }()
	waitPending(t, c, 1)

	// Cancel the large call once its frame is being written (64 MiB
	// cannot fit in the socket buffers of a peer that does not read).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	large := make(chan error, 1)
	go func() { _, err := c.Call(ctx, make([]byte, 64<<20)); large <- err }()
	waitPending(t, c, 2)
	deadline := time.Now().Add(waitLong)
	for {
		c.mu.Lock()
		cl := c.pending[2]
		c.mu.Unlock()
		if cl != nil && cl.state.Load() == stateWriting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the large frame never started")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-large; !errors.Is(err, context.Canceled) {
		t.Fatalf("large call: %v", err)
	}
	if err := <-first; !errors.Is(err, ErrCanceledMidFrame) || !errors.Is(err, ErrConnection) {
		t.Fatalf("other call: %v", err)
	}
}

func TestClose(t *testing.T) {
	g := newGate()
	srv := msgtest.Start(t, msgtest.Config{Dispatcher: g})
	c := dial(t, srv.Addr(), Config{})
	res := make(chan error, 10)
	for range 10 {
		go func() { _, err := c.Call(ctxLong(t), []byte("x")); res <- err }()
	}
	for range 10 {
		<-g.in
	}
	c.Close()
	for range 10 {
		if err := <-res; !errors.Is(err, ErrClosed) {
			t.Fatalf("call in flight at Close: %v", err)
		}
	}
	if _, err := c.Call(ctxLong(t), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	g.release() // the server's replies go nowhere
}

func TestErrorReply(t *testing.T) {
	srv := msgtest.Start(t, msgtest.Config{Dispatcher: msg.DispatcherFunc(func(m *msg.Message) {
		if string(m.Payload) == "busy" {
			m.SendReply(msg.Reply{Code: msg.CodeBusy, Payload: []byte("come back later")})
			return
		}
		m.SendReply(msg.Reply{Payload: m.Payload})
	})})
	c := dial(t, srv.Addr(), Config{})
	_, err := c.Call(ctxLong(t), []byte("busy"))
	var e *msg.Error
	if !errors.As(err, &e) || e.Code != msg.CodeBusy || e.Message != "come back later" || errors.Is(err, ErrConnection) {
		t.Fatalf("Call = %v", err)
	}
	if out, err := c.Call(ctxLong(t), []byte("fine")); err != nil || string(out) != "fine" {
		t.Fatalf("the connection did not survive a request error: %q, %v", out, err)
	}
}

// TestRDMAHooks: the client carries RDMA descriptors both ways and
// numbers operations; the reference server has no RDMA and says so.
func TestRDMAHooks(t *testing.T) {
	srv := msgtest.Start(t, msgtest.Config{MaxDelay: time.Millisecond})
	c := dial(t, srv.Addr(), Config{})
	ep := netip.AddrPortFrom(netip.Addr{}, 7471) // the connection's own address
	for i, d := range []msg.Descriptor{
		{Mode: deliver.ModeClientReads, Endpoint: ep},
		{Mode: deliver.ModeServerWrites, Endpoint: ep, Addr: 0x1000, RKey: 7, Len: 64},
		{Mode: deliver.ModeClientReads, Endpoint: ep},
	} {
		r, err := c.Do(ctxLong(t), &Request{Payload: []byte("by rdma?"), RDMA: &d})
		if err != nil {
			t.Fatal(err)
		}
		if r.ByRDMA() || !r.Flags.Has(msg.FlagRDMA) || r.RDMA.Reason != deliver.ReasonNoRDMA || r.RDMA.Op != uint64(i+1) || r.RDMA.Mode != d.Mode || string(r.Payload) != "by rdma?" {
			t.Fatalf("reply %d: %+v", i, r)
		}
	}
	if err := c.Complete(ctxLong(t), msg.Descriptor{Mode: deliver.ModeClientReads, Op: 3}, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Complete(ctxLong(t), msg.Descriptor{Mode: deliver.ModeClientReads, Op: 4}, false); !errors.Is(err, msg.ErrOpID) {
		t.Fatalf("completion of an op never requested: %v", err)
	}
	if _, err := c.Do(ctxLong(t), &Request{RDMA: &msg.Descriptor{Mode: deliver.ModeServerWrites, Endpoint: ep}}); !errors.Is(err, msg.ErrDescriptor) {
		t.Fatalf("server-writes without a buffer: %v", err)
	}
	// The connection is still good, and the server saw the completion.
	if _, err := c.Call(ctxLong(t), nil); err != nil {
		t.Fatal(err)
	}
	if st := srv.Stats(); st.Completions != 1 || st.ConnErrors != 0 {
		t.Fatalf("server stats %+v", st)
	}
}

// TestReplyMismatch: a reply whose RDMA descriptor does not fit its
// request breaks the connection, naming why.
func TestReplyMismatch(t *testing.T) {
	ep := netip.MustParseAddrPort("127.0.0.1:7471")
	written := func(op, n uint64) msg.Descriptor {
		return msg.Descriptor{Mode: deliver.ModeServerWrites, Op: op, Channel: 1, Len: n}
	}
	tests := []struct {
		name  string
		req   *msg.Descriptor
		reply msg.Header // TxID filled in
	}{
		{"descriptor on a plain reply", nil, msg.Header{Type: msg.TypeReply, Flags: msg.FlagRDMA | msg.FlagByRDMA, RDMA: written(1, 1)}},
		{"no descriptor on an RDMA reply", &msg.Descriptor{Mode: deliver.ModeClientReads, Endpoint: ep}, msg.Header{Type: msg.TypeReply}},
		{"another op", &msg.Descriptor{Mode: deliver.ModeServerWrites, Endpoint: ep, Len: 10}, msg.Header{Type: msg.TypeReply, Flags: msg.FlagRDMA | msg.FlagByRDMA, RDMA: written(2, 10)}},
		{"another mode", &msg.Descriptor{Mode: deliver.ModeClientReads, Endpoint: ep}, msg.Header{Type: msg.TypeReply, Flags: msg.FlagRDMA | msg.FlagByRDMA, RDMA: written(1, 10)}},
		{"written past the buffer", &msg.Descriptor{Mode: deliver.ModeServerWrites, Endpoint: ep, Len: 10}, msg.Header{Type: msg.TypeReply, Flags: msg.FlagRDMA | msg.FlagByRDMA, RDMA: written(1, 11)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawServer(t, 1, func(t *testing.T, nc net.Conn, h *msg.Header) {
				r := tt.reply
				r.TxID = h.TxID
				write(t, nc, frame(t, r))
			})
			c := dial(t, addr, Config{})
			_, err := c.Do(ctxLong(t), &Request{RDMA: tt.req})
			if !errors.Is(err, ErrReplyMismatch) || !errors.Is(err, ErrConnection) {
				t.Fatalf("Do = %v", err)
			}
		})
	}
}

// TestDeliveredByRDMA: a reply that says its payload went by RDMA
// reaches the caller with the descriptor and no payload.
func TestDeliveredByRDMA(t *testing.T) {
	grant := msg.Descriptor{Mode: deliver.ModeClientReads, Op: 1, Channel: 4, Addr: 0xfeed000, RKey: 0x42, Len: 1 << 20}
	addr := rawServer(t, 1, func(t *testing.T, nc net.Conn, h *msg.Header) {
		write(t, nc, frame(t, msg.Header{Type: msg.TypeReply, Flags: msg.FlagRDMA | msg.FlagByRDMA, TxID: h.TxID, RDMA: grant}))
	})
	c := dial(t, addr, Config{})
	r, err := c.Do(ctxLong(t), &Request{RDMA: &msg.Descriptor{Mode: deliver.ModeClientReads, Endpoint: netip.MustParseAddrPort("127.0.0.1:7471")}})
	if err != nil {
		t.Fatal(err)
	}
	if !r.ByRDMA() || r.RDMA != grant || len(r.Payload) != 0 {
		t.Fatalf("reply %+v", r)
	}
}

// TestNoLeaks: clients and servers started and closed leave no
// goroutines behind.
func TestNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 20 {
		srv := msgtest.Start(t, msgtest.Config{MaxDelay: time.Millisecond})
		c := dial(t, srv.Addr(), Config{})
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() { c.Call(ctxLong(t), []byte("x")) })
		}
		wg.Wait()
		c.Close()
		srv.Close()
	}
	deadline := time.Now().Add(waitLong)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkCall: 13-byte echoes over one connection from parallel
// callers, against the reference server: the client's cost per call
// (the server is a test helper, not Quartet's pipeline).
func BenchmarkCall(b *testing.B) {
	srv := msgtest.Start(b, msgtest.Config{})
	c, err := Dial(context.Background(), srv.Addr(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := []byte("Hello, world!")
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := c.Call(ctx, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
