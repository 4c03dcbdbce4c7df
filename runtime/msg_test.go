package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	goruntime "runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// The messenger served on the pipeline (Config.MsgAddr): real sockets on
// 127.0.0.1, the same readers, processors and writers as HTTP.

// startMsgServer runs a server with the messenger on a second address.
func startMsgServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.MsgAddr == "" && cfg.MsgListener == nil {
		cfg.MsgAddr = "127.0.0.1:0"
	}
	return startServer(t, cfg)
}

// dialMsg opens a messenger client to s, closed at the test's end.
func dialMsg(t testing.TB, s *Server) *msgclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := msgclient.Dial(ctx, s.MsgAddr().String(), msgclient.Config{})
	if err != nil {
		t.Fatalf("msgclient.Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func pseudoRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Echo byte for byte, from nothing to the payload limit: payloads that fit
// the reader's 4 KiB buffer with their head, that just do not, that take
// many reads, and exactly the limit. One connection carries them all, so
// a large frame's own buffer gives way to the next frame cleanly.
func TestMsgEchoSizes(t *testing.T) {
	const limit = 8 << 20
	s := startMsgServer(t, Config{MsgMaxPayload: limit})
	c := dialMsg(t, s)
	sizes := []int{0, 1, 13, msg.MaxHeadSize, 4096 - msg.HeaderSize, 4096 - msg.HeaderSize + 1, 4096, 64 << 10, 1<<20 + 7, 5 << 20, limit, 3}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			in := pseudoRandom(uint64(n), n)
			r, err := c.Do(callCtx(t), &msgclient.Request{Payload: in})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Payload, in) {
				t.Fatalf("echo of %d bytes came back as %d different bytes", n, len(r.Payload))
			}
			if r.Flags != 0 {
				t.Errorf("reply flags %v", r.Flags)
			}
		})
	}
	st := s.Stats()
	if st.Reader.Dequeued == 0 {
		t.Errorf("reader stage saw nothing: %+v", st.Reader)
	}
}

// Over the limit: the request gets CodeTooLarge under its own TxID, and
// the connection closes (the stream cannot be resynchronised).
func TestMsgPayloadOverLimit(t *testing.T) {
	s := startMsgServer(t, Config{MsgMaxPayload: 1 << 10})
	c := dialMsg(t, s)
	if _, err := c.Call(callCtx(t), make([]byte, 1<<10)); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	_, err := c.Call(callCtx(t), make([]byte, 1<<10+1))
	var e *msg.Error
	if !errors.As(err, &e) || e.Code != msg.CodeTooLarge {
		t.Fatalf("over the limit: %v, want CodeTooLarge", err)
	}
	if _, err := c.Call(callCtx(t), []byte("after")); !errors.Is(err, msgclient.ErrConnection) {
		t.Fatalf("call after a connection error: %v", err)
	}
}

// Many clients at once, each with many calls in flight on its one
// connection, so frames arrive pipelined: every reply is its own
// request's payload. One request per connection is in the stages at a
// time, so replies come back in request order.
func TestMsgConcurrentPipelined(t *testing.T) {
	s := startMsgServer(t, Config{Readers: 2, Writers: 2, Processors: 4})
	const clients, callers, calls = 8, 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients*callers)
	for ci := range clients {
		c := dialMsg(t, s)
		for g := range callers {
			wg.Go(func() {
				for k := range calls {
					n := (ci*7 + g*13 + k*101) % 9000 // some cross the reader's buffer
					in := pseudoRandom(uint64(ci<<20|g<<10|k), n)
					out, err := c.Call(callCtx(t), in)
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(out, in) {
						errs <- fmt.Errorf("client %d caller %d call %d: %d bytes back for %d", ci, g, k, len(out), n)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Frames broken in each way the parser knows get an error frame with
// their code and then the close; a frame left incomplete gets one when
// the header timeout ends. No case may hang: every read has a deadline.
func TestMsgMalformedFrames(t *testing.T) {
	head := func(h msg.Header) []byte { return msgHead(t, h) }
	raw := func(version, typ byte, flags uint16, length uint32, txid uint64) []byte {
		b := make([]byte, msg.HeaderSize)
		b[0], b[1] = version, typ
		binary.BigEndian.PutUint16(b[2:], flags)
		binary.BigEndian.PutUint32(b[4:], length)
		binary.BigEndian.PutUint64(b[8:], txid)
		return b
	}
	tests := []struct {
		name string
		send []byte
		code msg.Code
		txid uint64
	}{
		{"HTTP on the messenger port", []byte("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), msg.CodeVersion, 0},
		{"version 2", raw(2, 1, 0, 0, 1), msg.CodeVersion, 0},
		{"unknown type", raw(msg.Version, 9, 0, 0, 1), msg.CodeMalformed, 0},
		{"reply sent to the server", raw(msg.Version, byte(msg.TypeReply), 0, 0, 1), msg.CodeMalformed, 0},
		{"request txid 0", raw(msg.Version, byte(msg.TypeRequest), 0, 0, 0), msg.CodeMalformed, 0},
		{"undefined flag", raw(msg.Version, byte(msg.TypeRequest), 1<<9, 0, 5), msg.CodeMalformed, 0},
		{"payload over the limit", head(msg.Header{Type: msg.TypeRequest, TxID: 77, Length: 4097}), msg.CodeTooLarge, 77},
		{"after a good request", append(head(msg.Header{Type: msg.TypeRequest, TxID: 1, Length: 2}), 'h', 'i', 2), msg.CodeVersion, 0},
		// Both arrive together, so the first is still in flight when the
		// second is parsed: its txid cannot name two requests.
		{"duplicate txid in flight", append(append(head(msg.Header{Type: msg.TypeRequest, Flags: msg.FlagUnordered, TxID: 9, Length: 1}), 'a'),
			append(head(msg.Header{Type: msg.TypeRequest, Flags: msg.FlagUnordered, TxID: 9, Length: 1}), 'b')...), msg.CodeMalformed, 0},
		{"incomplete head", raw(msg.Version, byte(msg.TypeRequest), 0, 0, 1)[:9], msg.CodeTimeout, 0},
		{"incomplete payload", head(msg.Header{Type: msg.TypeRequest, TxID: 3, Length: 100}), msg.CodeTimeout, 0},
	}
	// NoInline: the echo served inline answers a request before the
	// reader reads the next, so the duplicate would never be in flight
	// beside the first.
	s := startMsgServer(t, Config{MsgMaxPayload: 4096, HeaderTimeout: 300 * time.Millisecond, NoInline: true})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := sendRaw(t, s, tt.send)
			p := msg.NewParser(msg.RoleClient, msg.Limits{})
			var h msg.Header
			for {
				if err := p.ReadHead(br, &h); err != nil {
					t.Fatalf("no error frame: %v", err)
				}
				if h.Flags.Has(msg.FlagError) {
					break
				}
				if _, err := p.ReadPayload(br, nil); err != nil { // the good request's reply
					t.Fatal(err)
				}
			}
			body, err := p.ReadPayload(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			e, err := msg.ParseError(body)
			if err != nil {
				t.Fatal(err)
			}
			if e.Code != tt.code || h.TxID != tt.txid {
				t.Fatalf("error frame %v (txid %d), want %v (txid %d)", e, h.TxID, tt.code, tt.txid)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Fatal("bytes after the error frame")
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("connection not closed after the error frame")
			}
		})
	}
}

// stall is a dispatcher whose replies come later, from goroutines of its
// own: the stages must not lose the reply sent after Dispatch returned.
type stall struct{ wg sync.WaitGroup }

func (d *stall) Dispatch(m *msg.Message) {
	d.wg.Go(func() {
		time.Sleep(time.Millisecond)
		m.SendReply(msg.Reply{Payload: append([]byte("late:"), m.Payload...)})
	})
}

// Dispatchers that reply late, fail a request, or panic: each request
// gets exactly its answer, and the connection carries on.
func TestMsgDispatchers(t *testing.T) {
	late := &stall{}
	t.Cleanup(late.wg.Wait)
	tests := []struct {
		name string
		d    msg.Dispatcher
		want string
		code msg.Code
	}{
		{"late reply", late, "late:ping", 0},
		{"error reply", msg.DispatcherFunc(func(m *msg.Message) {
			m.SendReply(msg.Reply{Code: msg.CodeApplication + 1, Payload: []byte("no such key")})
		}), "", msg.CodeApplication + 1},
		{"panic", msg.DispatcherFunc(func(*msg.Message) { panic("dispatcher bug") }), "", msg.CodeInternal},
		{"done called once written", msg.DispatcherFunc(func(m *msg.Message) {
			out := []byte("pong")
			m.SendReply(msg.Reply{Payload: out, Done: func(err error) {
				if err != nil {
					panic(err)
				}
			}})
		}), "pong", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startMsgServer(t, Config{MsgDispatcher: tt.d})
			c := dialMsg(t, s)
			for range 3 {
				out, err := c.Call(callCtx(t), []byte("ping"))
				var e *msg.Error
				switch {
				case tt.code != 0 && (!errors.As(err, &e) || e.Code != tt.code):
					t.Fatalf("got %q, %v; want code %v", out, err, tt.code)
				case tt.code == 0 && (err != nil || string(out) != tt.want):
					t.Fatalf("got %q, %v; want %q", out, err, tt.want)
				}
			}
		})
	}
}

// A request that asks for RDMA gets its payload inline with the reason
// (no RDMA on the stages' writers yet), and a completion frame is taken
// without an answer: the connection goes on serving.
func TestMsgRDMAFallsBackInline(t *testing.T) {
	s := startMsgServer(t, Config{})
	c := dialMsg(t, s)
	for _, mode := range []deliver.Mode{deliver.ModeClientReads, deliver.ModeServerWrites} {
		d := &msg.Descriptor{Mode: mode, Endpoint: netip.MustParseAddrPort("127.0.0.1:9")}
		if mode == deliver.ModeServerWrites {
			d.Addr, d.RKey, d.Len = 4096, 7, 1<<20
		}
		r, err := c.Do(callCtx(t), &msgclient.Request{Payload: []byte("by rdma?"), RDMA: d})
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		if string(r.Payload) != "by rdma?" || !r.Flags.Has(msg.FlagRDMA) || r.ByRDMA() || r.RDMA.Reason != deliver.ReasonNoRDMA {
			t.Fatalf("%v: reply %q flags %v reason %v", mode, r.Payload, r.Flags, r.RDMA.Reason)
		}
		if mode == deliver.ModeClientReads {
			if err := c.Complete(callCtx(t), msg.Descriptor{Mode: mode, Op: r.RDMA.Op}, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out, err := c.Call(callCtx(t), []byte("still here")); err != nil || string(out) != "still here" {
		t.Fatalf("after the completion: %q, %v", out, err)
	}
}

// HTTP on Addr and the messenger on MsgAddr, from one server at once.
func TestMsgBesideHTTP(t *testing.T) {
	s := startMsgServer(t, Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for range 50 {
				resp, err := client.Get("http://" + s.Addr().String() + "/hello")
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || len(body) == 0 {
					errs <- fmt.Errorf("GET /hello: %d %q", resp.StatusCode, body)
					return
				}
			}
		})
		c := dialMsg(t, s)
		wg.Go(func() {
			for k := range 50 {
				in := fmt.Appendf(nil, "msg %d", k)
				out, err := c.Call(callCtx(t), in)
				if err != nil || !bytes.Equal(out, in) {
					errs <- fmt.Errorf("echo %q: %q, %v", in, out, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Every fd and goroutine the messenger's listener, connections and calls
// took is released once the server has shut down, with connections still
// open at shutdown, on a bound address and on an embedder's listener.
func TestMsgReleasesResources(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(t *testing.T) Config
	}{
		{"MsgAddr", func(*testing.T) Config { return Config{MsgAddr: "127.0.0.1:0"} }},
		{"MsgListener", func(t *testing.T) Config {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return Config{MsgListener: ln}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fds, gs := fdtest.Count(t), goruntime.NumGoroutine()
			cfg := tt.cfg(t)
			cfg.Addr, cfg.Handler, cfg.ShutdownTimeout = "127.0.0.1:0", Builtin(nil), 2*time.Second
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- s.Serve(context.Background()) }()
			var clients []*msgclient.Client
			for k := range 4 {
				c, err := msgclient.Dial(callCtx(t), s.MsgAddr().String(), msgclient.Config{})
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
				if _, err := c.Call(callCtx(t), make([]byte, k<<16)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			for _, c := range clients {
				if _, err := c.Call(callCtx(t), []byte("x")); err == nil {
					t.Error("a call after shutdown succeeded")
				}
				c.Close()
			}
			if !eventually(5*time.Second, func() bool { return fdtest.Count(t) <= fds }) {
				t.Errorf("fds: %d before, %d after", fds, fdtest.Count(t))
			}
			if !goroutinesSettle(gs) {
				t.Errorf("goroutines: %d before, %d after", gs, goruntime.NumGoroutine())
			}
		})
	}
}

// Without MsgAddr there is no messenger, and MsgMaxPayload is checked.
func TestMsgConfig(t *testing.T) {
	s := newServer(t, Config{})
	if s.MsgAddr() != nil {
		t.Errorf("MsgAddr %v without Config.MsgAddr", s.MsgAddr())
	}
	s.Close()
	if _, err := New(Config{Addr: "127.0.0.1:0", MsgAddr: "127.0.0.1:0", MsgMaxPayload: -1}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("MsgMaxPayload -1: %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", MsgAddr: "no-port"}); err == nil {
		t.Error("a bad MsgAddr was accepted")
	}
}

// A reply that comes after Dispatch returned, and after shutdown began,
// still reaches its client within the grace: the writers stay until every
// reply the processors started is with them (Protocol.Wait). One that
// comes after the grace is abandoned (its connection is closed by then),
// and its SendReply says so. Either way everything is released.
func TestMsgLateReplyAtShutdown(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
	}{
		{"within the grace", 5 * time.Second},
		{"after the grace", 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fds, gs := fdtest.Count(t), goruntime.NumGoroutine()
			dispatched := make(chan struct{}, 1)
			var late sync.WaitGroup
			var lateErr error
			d := msg.DispatcherFunc(func(m *msg.Message) {
				dispatched <- struct{}{}
				late.Go(func() {
					time.Sleep(300 * time.Millisecond)
					lateErr = m.SendReply(msg.Reply{Payload: m.Payload})
				})
			})
			s, err := New(Config{Addr: "127.0.0.1:0", MsgAddr: "127.0.0.1:0", MsgDispatcher: d, ShutdownTimeout: tt.grace, Handler: Builtin(nil)})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- s.Serve(context.Background()) }()
			c, err := msgclient.Dial(callCtx(t), s.MsgAddr().String(), msgclient.Config{})
			if err != nil {
				t.Fatal(err)
			}
			reply := make(chan error, 1)
			go func() {
				out, err := c.Call(callCtx(t), []byte("late"))
				if err == nil && string(out) != "late" {
					err = fmt.Errorf("reply %q", out)
				}
				reply <- err
			}()
			<-dispatched
			shut := make(chan error, 1)
			go func() { shut <- s.Shutdown(context.Background()) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return")
			}
			<-shut
			late.Wait()
			err = <-reply
			if tt.grace > time.Second && (err != nil || lateErr != nil) {
				t.Errorf("reply within the grace: %v (SendReply: %v)", err, lateErr)
			}
			if tt.grace < time.Second && !errors.Is(lateErr, msg.ErrAbandoned) {
				t.Errorf("reply after the grace: SendReply %v, want ErrAbandoned", lateErr)
			}
			c.Close()
			if !eventually(5*time.Second, func() bool { return fdtest.Count(t) <= fds }) {
				t.Errorf("fds: %d before, %d after", fds, fdtest.Count(t))
			}
			if !goroutinesSettle(gs) {
				t.Errorf("goroutines: %d before, %d after", gs, goruntime.NumGoroutine())
			}
		})
	}
}

// A reply that never comes (a dispatcher that lost it) holds a shutdown
// only until its grace is over, whichever way the grace ends: the
// request is abandoned, its client told, and the dispatcher's SendReply,
// if it ever comes, returns ErrAbandoned. Everything is released.
// Before, Shutdown and Serve waited for the reply forever.
func TestMsgLostReplyDoesNotHoldShutdown(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		stop  func(s *Server) error
	}{
		{"grace over", 200 * time.Millisecond, func(s *Server) error { return s.Shutdown(context.Background()) }},
		{"deadline", 30 * time.Second, func(s *Server) error {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			return s.Shutdown(ctx)
		}},
		{"close", 30 * time.Second, func(s *Server) error { return s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fds, gs := fdtest.Count(t), goruntime.NumGoroutine()
			lost := make(chan *msg.Message, 1)
			d := msg.DispatcherFunc(func(m *msg.Message) { lost <- m })
			s, err := New(Config{Addr: "127.0.0.1:0", MsgAddr: "127.0.0.1:0", MsgDispatcher: d, ShutdownTimeout: tt.grace, Handler: Builtin(nil)})
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(context.Background()) }()
			c, err := msgclient.Dial(callCtx(t), s.MsgAddr().String(), msgclient.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			called := make(chan error, 1)
			go func() {
				_, err := c.Call(callCtx(t), []byte("never answered"))
				called <- err
			}()
			m := <-lost
			stopped := make(chan error, 1)
			go func() { stopped <- tt.stop(s) }()
			for name, ch := range map[string]chan error{"Shutdown or Close": stopped, "Serve": served} {
				select {
				case <-ch:
				case <-time.After(10 * time.Second):
					t.Fatalf("%s still waits for the lost reply", name)
				}
			}
			var me *msg.Error
			if err := <-called; err == nil {
				t.Error("Call answered, though no reply was sent")
			} else if errors.As(err, &me) && me.Code != msg.CodeShutdown {
				t.Errorf("Call: %v, want CodeShutdown or a closed connection", err)
			}
			if err := m.SendReply(msg.Reply{Payload: []byte("too late")}); !errors.Is(err, msg.ErrAbandoned) {
				t.Errorf("late SendReply: %v, want ErrAbandoned", err)
			}
			c.Close()
			if !eventually(5*time.Second, func() bool { return fdtest.Count(t) <= fds }) {
				t.Errorf("fds: %d before, %d after", fds, fdtest.Count(t))
			}
			if !goroutinesSettle(gs) {
				t.Errorf("goroutines: %d before, %d after", gs, goruntime.NumGoroutine())
			}
		})
	}
}

// A messenger request that admission control refuses gets busy under its
// own txid, with its payload read and dropped, and the connection carries
// the next request. (The echo is served inline, which admission control
// never sees, as for HTTP's never-blocking handlers: NoInline sends it
// through the processors' queue.)
func TestMsgShedIsBusyAndKeepsTheConnection(t *testing.T) {
	s := startUntuned(t, Config{Addr: "127.0.0.1:0", MsgAddr: "127.0.0.1:0", Processors: 1, Handler: Builtin(nil), NoInline: true})
	limit := func(n, retry int64) {
		for c := range s.requests.Classes() {
			s.requests.SetLimit(c, n, retry)
		}
	}
	c := dialMsg(t, s)
	for _, n := range []int{0, 13, 100 << 10} {
		limit(0, 3) // every class refuses everything
		_, err := c.Call(callCtx(t), make([]byte, n))
		var e *msg.Error
		if !errors.As(err, &e) || e.Code != msg.CodeBusy || errors.Is(err, msgclient.ErrConnection) {
			t.Fatalf("%d bytes refused: %v, want busy and the connection kept", n, err)
		}
		limit(-1, 0)
		if out, err := c.Call(callCtx(t), []byte("next")); err != nil || string(out) != "next" {
			t.Fatalf("next request after a refused one of %d bytes: %q, %v", n, out, err)
		}
	}
	var shed uint64
	for _, c := range s.Stats().Control.Classes {
		shed += c.Shed
	}
	if shed != 3 {
		t.Errorf("Stats count %d shed requests, want 3", shed)
	}
}

// A payload far over the limit: the client is still writing it when the
// too-large frame goes out. The reader reads 64 KiB more, then stops and
// closes at the linger timeout (or the client's FIN), so the frame reaches
// the client instead of a reset that could destroy it (messenger.md said
// it could be lost).
func TestMsgFarOverTheLimitIsTold(t *testing.T) {
	s := startMsgServer(t, Config{MsgMaxPayload: 1 << 10, LingerTimeout: time.Second})
	for range 5 {
		c := dialMsg(t, s)
		_, err := c.Call(callCtx(t), make([]byte, 32<<20))
		var e *msg.Error
		if !errors.As(err, &e) || e.Code != msg.CodeTooLarge {
			t.Fatalf("32 MiB over a 1 KiB limit: %v, want CodeTooLarge", err)
		}
		c.Close()
	}
}

// A frame refused while requests of its connection are in flight (a
// duplicate txid, a bad version after a good request) is answered after
// them: their replies first, then the error frame, then the close.
// Refused at once, the error frame and the shutdown of the sending side
// behind it cut off the replies still to come (messenger.md: a duplicate
// is refused "once they are answered").
func TestMsgRefusalWaitsForTheAnswersInFlight(t *testing.T) {
	head := func(h msg.Header) []byte { return msgHead(t, h) }
	req := func(txid uint64, payload string) []byte {
		return append(head(msg.Header{Type: msg.TypeRequest, Flags: msg.FlagUnordered, TxID: txid, Length: uint32(len(payload))}), payload...)
	}
	tests := []struct {
		name    string
		send    []byte
		replies []string
		code    msg.Code
	}{
		{"duplicate txid", append(req(9, "a"), req(9, "b")...), []string{"a"}, msg.CodeMalformed},
		{"bad version after two", append(append(req(1, "x"), req(2, "y")...), 2, 1, 0, 0), []string{"x", "y"}, msg.CodeVersion},
	}
	s := startMsgServer(t, Config{MsgDispatcher: slowEcho{}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := sendRaw(t, s, tt.send)
			p := msg.NewParser(msg.RoleClient, msg.Limits{})
			var got []string
			var h msg.Header
			for {
				if err := p.ReadHead(br, &h); err != nil {
					t.Fatalf("after replies %q: no error frame: %v", got, err)
				}
				body, err := p.ReadPayload(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if h.Flags.Has(msg.FlagError) {
					if e, err := msg.ParseError(body); err != nil || e.Code != tt.code {
						t.Fatalf("error frame %v (%v), want %v", e, err, tt.code)
					}
					break
				}
				got = append(got, string(body))
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.replies) {
				t.Fatalf("replies before the error frame %q, want %q", got, tt.replies)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Fatal("bytes after the error frame")
			}
		})
	}
}

// msgHead encodes a messenger frame head.
func msgHead(t testing.TB, h msg.Header) []byte {
	b := make([]byte, msg.MaxHeadSize)
	n, err := msg.PutHead(b, &h)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// sendRaw writes b on a new connection to s's messenger, with a deadline
// for the whole test step, and returns the reader of the answers.
func sendRaw(t *testing.T, s *Server, b []byte) *bufio.Reader {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.MsgAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	return bufio.NewReader(nc)
}
