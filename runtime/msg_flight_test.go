package runtime

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
)

// Several requests of a messenger connection in flight (stages.Pipelined):
// the reader reads on while earlier requests wait, replies leave as they
// are ready unless a request asks for order, the window bounds what one
// connection holds, and nothing is lost or leaked when the client goes.

// gate is a dispatcher that holds every request whose payload starts with
// "hold" until the test opens the gate, and echoes the others at once. It
// counts the requests it holds, and the most it held at once.
type gate struct {
	mu     sync.Mutex
	held   []*msg.Message
	most   int
	seen   atomic.Int64
	opened bool
}

func (g *gate) Dispatch(m *msg.Message) {
	g.seen.Add(1)
	if !bytes.HasPrefix(m.Payload, []byte("hold")) {
		m.SendReply(msg.Reply{Payload: m.Payload})
		return
	}
	g.mu.Lock()
	if g.opened {
		g.mu.Unlock()
		m.SendReply(msg.Reply{Payload: m.Payload})
		return
	}
	g.held = append(g.held, m)
	g.most = max(g.most, len(g.held))
	g.mu.Unlock()
}

// holding is how many requests the gate holds now.
func (g *gate) holding() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}

// open replies to the held requests, last held first (so replies that
// may overtake do), and lets every later one through.
func (g *gate) open() {
	g.mu.Lock()
	held := g.held
	g.held, g.opened = nil, true
	g.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		held[i].SendReply(msg.Reply{Payload: held[i].Payload})
	}
}

type callResult struct {
	payload []byte
	err     error
}

// doAsync sends req on c and delivers its result on the channel.
func doAsync(t *testing.T, c *msgclient.Client, req *msgclient.Request) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		r, err := c.Do(callCtx(t), req)
		ch <- callResult{r.Payload, err}
	}()
	return ch
}

// A request that may overtake is answered while an earlier one of its
// connection still waits; one that asks for order is not even dispatched
// until the earlier one is answered; with a window of one request, the
// connection is served one request at a time whatever the client asks.
func TestMsgRepliesOvertake(t *testing.T) {
	tests := []struct {
		name     string
		window   int
		order    msgclient.Order
		overtake bool // the quick request is answered before the held one
	}{
		{"unordered overtakes", 0, msgclient.Unordered, true},
		{"ordered waits", 0, msgclient.Ordered, false},
		{"window of one waits", 1, msgclient.Unordered, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &gate{}
			s := startMsgServer(t, Config{MsgDispatcher: g, MsgWindow: tt.window, Processors: 4})
			c := dialMsg(t, s)
			held := doAsync(t, c, &msgclient.Request{Payload: []byte("hold-1"), Order: msgclient.Unordered})
			if !eventually(5*time.Second, func() bool { return g.holding() == 1 }) {
				t.Fatal("the held request never reached the dispatcher")
			}
			quick := doAsync(t, c, &msgclient.Request{Payload: []byte("quick"), Order: tt.order})
			if tt.overtake {
				r := <-quick
				if r.err != nil || string(r.payload) != "quick" {
					t.Fatalf("quick: %q, %v", r.payload, r.err)
				}
				select {
				case r := <-held:
					t.Fatalf("the held request was answered before the gate opened: %q, %v", r.payload, r.err)
				default:
				}
				g.open()
			} else {
				// The quick request must not reach the dispatcher while
				// the held one waits; give it every chance to.
				time.Sleep(100 * time.Millisecond)
				if n := g.seen.Load(); n != 1 {
					t.Fatalf("the dispatcher saw %d requests while the first was held, want 1", n)
				}
				select {
				case r := <-quick:
					t.Fatalf("quick answered before the held request: %q, %v", r.payload, r.err)
				default:
				}
				g.open()
				if r := <-quick; r.err != nil || string(r.payload) != "quick" {
					t.Fatalf("quick: %q, %v", r.payload, r.err)
				}
			}
			if r := <-held; r.err != nil || string(r.payload) != "hold-1" {
				t.Fatalf("held: %q, %v", r.payload, r.err)
			}
		})
	}
}

// The window bounds a connection's requests in flight, by count and by
// bytes (one request always goes, however large), and the connection is
// read on as answers come back: every request is answered.
func TestMsgWindowBounds(t *testing.T) {
	tests := []struct {
		name        string
		window      int
		windowBytes int64
		payload     int
		want        int // most requests held at once
	}{
		{"by count", 4, 0, 16, 4},
		{"by bytes", 0, 3 * (1 << 10), 1 << 10, 2}, // each frame is a little over 1 KiB
		{"one always goes", 0, 100, 1 << 10, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &gate{}
			s := startMsgServer(t, Config{MsgDispatcher: g, MsgWindow: tt.window, MsgWindowBytes: tt.windowBytes, Processors: 16})
			c := dialMsg(t, s)
			const sent = 10
			var results []<-chan callResult
			for k := range sent {
				p := append([]byte(fmt.Sprintf("hold-%02d-", k)), make([]byte, tt.payload)...)
				results = append(results, doAsync(t, c, &msgclient.Request{Payload: p, Order: msgclient.Unordered}))
			}
			if !eventually(5*time.Second, func() bool { return g.holding() == tt.want }) {
				t.Fatalf("held %d, want %d", g.holding(), tt.want)
			}
			time.Sleep(50 * time.Millisecond) // room for a window overrun to show
			if n := g.holding(); n != tt.want {
				t.Fatalf("held %d after a pause, want %d", n, tt.want)
			}
			g.open()
			for k, ch := range results {
				r := <-ch
				if r.err != nil || !strings.HasPrefix(string(r.payload), fmt.Sprintf("hold-%02d-", k)) {
					t.Fatalf("request %d: %.12q, %v", k, r.payload, r.err)
				}
			}
			g.mu.Lock()
			most := g.most
			g.mu.Unlock()
			if most != tt.want {
				t.Errorf("most held at once %d, want %d", most, tt.want)
			}
		})
	}
}

// jitter replies to each request after a pseudo-random pause of up to
// 2 ms, from a goroutine of its own, so replies come back in an order
// unrelated to the requests'.
type jitter struct{ wg sync.WaitGroup }

func (d *jitter) Dispatch(m *msg.Message) {
	pause := time.Duration(rand.Uint64N(uint64(2 * time.Millisecond)))
	d.wg.Go(func() {
		time.Sleep(pause)
		m.SendReply(msg.Reply{Payload: m.Payload})
	})
}

// Many callers on few connections, replies out of order, payloads that
// cross the reader's buffer: every reply is its own request's payload,
// whatever order they come in, with the connections' writer and reader
// loops changing under them.
func TestMsgOutOfOrderUnderLoad(t *testing.T) {
	d := &jitter{}
	t.Cleanup(d.wg.Wait)
	s := startMsgServer(t, Config{MsgDispatcher: d, ReadersMax: 3, WritersMax: 3, Processors: 8})
	const clients, callers, calls = 4, 16, 30
	var wg sync.WaitGroup
	errs := make(chan error, clients*callers+1)
	for ci := range clients {
		c := dialMsg(t, s)
		for g := range callers {
			wg.Go(func() {
				for k := range calls {
					n := (ci*7 + g*13 + k*101) % 9000
					in := pseudoRandom(uint64(ci<<20|g<<10|k), n)
					order := msgclient.Unordered
					if k%5 == 0 {
						order = msgclient.Ordered
					}
					r, err := c.Do(callCtx(t), &msgclient.Request{Payload: in, Order: order})
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(r.Payload, in) {
						errs <- fmt.Errorf("client %d caller %d call %d: %d bytes back for %d", ci, g, k, len(r.Payload), n)
						return
					}
				}
			})
		}
	}
	// Resize the I/O stages while the calls run: a connection with
	// requests in flight must keep its writer and its reader until they
	// are answered.
	stop := make(chan struct{})
	resized := make(chan int)
	go func() {
		changes := 0
		defer func() { resized <- changes }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			n := 1 + i%3
			if err := s.SetStageSize(StageReader, n); err != nil {
				errs <- err
				return
			}
			if err := s.SetStageSize(StageWriter, 4-n); err != nil {
				errs <- err
				return
			}
			changes++
		}
	}()
	wg.Wait()
	close(stop)
	if n := <-resized; n < 3 {
		t.Errorf("the stages were resized %d times while the calls ran; the test needs a few", n)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A client that goes with requests in flight: those not yet answered are
// answered into the void, and only then is the connection's fd closed;
// nothing of the server's is left behind.
func TestMsgClientGoesWithRequestsInFlight(t *testing.T) {
	fds, gs := fdtest.Count(t), goruntime.NumGoroutine()
	g := &gate{}
	s, err := New(Config{Addr: "127.0.0.1:0", MsgAddr: "127.0.0.1:0", Handler: Builtin(nil), MsgDispatcher: g, ShutdownTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()

	conn, err := net.Dial("tcp", s.MsgAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := msgclient.New(conn, msgclient.Config{})
	var results []<-chan callResult
	for k := range 6 {
		results = append(results, doAsync(t, c, &msgclient.Request{Payload: []byte(fmt.Sprintf("hold-%d", k))}))
	}
	if !eventually(5*time.Second, func() bool { return g.holding() == 6 }) {
		t.Fatalf("held %d of 6", g.holding())
	}
	c.Close()
	for _, ch := range results {
		if r := <-ch; r.err == nil {
			t.Errorf("a call on a closed client succeeded: %q", r.payload)
		}
	}
	// The server holds the connection open while its requests are out.
	time.Sleep(50 * time.Millisecond)
	if open := s.Stats().Open; open != 1 {
		t.Errorf("open connections with requests in flight: %d, want 1", open)
	}
	g.open()
	if !eventually(5*time.Second, func() bool { return s.Stats().Open == 0 }) {
		t.Errorf("the connection was not closed once its requests were answered: %d open", s.Stats().Open)
	}
	// And the server goes on serving.
	c2 := dialMsg(t, s)
	if out, err := c2.Call(callCtx(t), []byte("after")); err != nil || string(out) != "after" {
		t.Fatalf("after: %q, %v", out, err)
	}
	c2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !eventually(5*time.Second, func() bool { return fdtest.Count(t) <= fds }) {
		t.Errorf("fds: %d before, %d after", fds, fdtest.Count(t))
	}
	if !goroutinesSettle(gs) {
		t.Errorf("goroutines: %d before, %d after", gs, goruntime.NumGoroutine())
	}
}

// An Immediate dispatcher's requests are served on the reader loop that
// read them, reply written there (stage fusion, as HTTP handlers that
// never block are): none reaches the processors' queue. A dispatcher
// that does not promise it, or NoInline, keeps the hand-offs.
func TestMsgImmediateServedInline(t *testing.T) {
	tests := []struct {
		name     string
		d        msg.Dispatcher
		noInline bool
		inline   bool
	}{
		{"echo", nil, false, true},
		{"echo with NoInline", nil, true, false},
		{"dispatcher that may block", msg.DispatcherFunc(func(m *msg.Message) { m.SendReply(msg.Reply{Payload: m.Payload}) }), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startMsgServer(t, Config{MsgDispatcher: tt.d, NoInline: tt.noInline})
			c := dialMsg(t, s)
			const calls = 20
			for k := range calls {
				in := pseudoRandom(uint64(k), 100*k)
				out, err := c.Call(callCtx(t), in)
				if err != nil || !bytes.Equal(out, in) {
					t.Fatalf("call %d: %d bytes back for %d, %v", k, len(out), len(in), err)
				}
			}
			st := s.Stats()
			queued := st.Processor.Enqueued - st.Inline
			switch {
			case tt.inline && (st.Inline < calls || queued != 0):
				t.Errorf("%d served inline, %d through the processors; want all %d inline", st.Inline, queued, calls)
			case !tt.inline && (st.Inline != 0 || queued < calls):
				t.Errorf("%d served inline, %d through the processors; want all %d through the processors", st.Inline, queued, calls)
			}
		})
	}
}

// slowEcho echoes each request after a short sleep, on the processors
// (it does not promise msg.Immediate), so that a request can still be
// waiting for a processor when the client's FIN is read.
type slowEcho struct{}

func (slowEcho) Dispatch(m *msg.Message) {
	time.Sleep(20 * time.Millisecond)
	m.SendReply(msg.Reply{Payload: m.Payload})
}

// messenger.md: "A client that has sent its requests may shut down its
// sending side; the server answers every request it read, then closes."
// The reader took the FIN that followed them for a client gone, and the
// requests not yet started were never answered (2 of 4 with the window,
// none for a lone request), unless the dispatcher ran them on the reader
// loop before the FIN was read.
func TestMsgHalfCloseIsAnswered(t *testing.T) {
	for _, window := range []int{0, 1} {
		t.Run(fmt.Sprintf("window %d", window), func(t *testing.T) {
			s := startServer(t, Config{MsgAddr: "127.0.0.1:0", MsgDispatcher: slowEcho{}, MsgWindow: window, Processors: 1})
			for _, n := range []int{1, 4} {
				conn, err := net.Dial("tcp", s.MsgAddr().String())
				if err != nil {
					t.Fatal(err)
				}
				c := msgclient.New(conn, msgclient.Config{})
				var results []<-chan callResult
				for k := range n {
					results = append(results, doAsync(t, c, &msgclient.Request{Payload: []byte(fmt.Sprintf("r%d", k))}))
				}
				time.Sleep(10 * time.Millisecond) // the requests are on the wire
				conn.(*net.TCPConn).CloseWrite()
				for k, ch := range results {
					if r := <-ch; r.err != nil || string(r.payload) != fmt.Sprintf("r%d", k) {
						t.Errorf("%d requests, then a FIN: request %d got %q, %v", n, k, r.payload, r.err)
					}
				}
				c.Close()
			}
		})
	}
}
