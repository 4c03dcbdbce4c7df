package msg

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// The transport's parser leaves the payload to the reader (Skip keeps the
// count), and carries the last operation id over a Reset through the
// connection's protocol state, as the reader's idle periods need.
func TestTransportParser(t *testing.T) {
	tr := NewTransport(TransportConfig{Limits: Limits{MaxPayload: 100}})
	fp := tr.NewParser()
	c := &stages.Conn{}
	req := &stages.Request{Conn: c}
	sw := swReq // op 5
	steps := []struct {
		name    string
		frame   []byte
		reset   bool
		head    int
		body    int64
		wantErr error
	}{
		{"short head", raw(Header{Type: TypeRequest, TxID: 1, Length: 3})[:10], false, 0, 0, stages.ErrNeedMore},
		{"plain request", raw(Header{Type: TypeRequest, TxID: 1, Length: 3}, 'a', 'b', 'c'), false, HeaderSize, 3, nil},
		{"next frame without taking the payload", raw(Header{Type: TypeRequest, TxID: 2, Length: 0}), false, HeaderSize, 0, nil},
		{"rdma request, op 5", raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 3, RDMA: sw}), false, MaxHeadSize, 0, nil},
		{"op 5 again after the connection idled", raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 4, RDMA: sw}), true, 0, 0, ErrOpID},
	}
	for _, st := range steps {
		if st.reset {
			fp.Reset()
		}
		req.Frame = nil
		h, err := fp.Head(st.frame, req)
		n, body := h.Size, h.Body.Length
		if err == nil && h.Body.Kind != stages.BodyWhole {
			t.Fatalf("%s: body kind %d; a payload is read whole", st.name, h.Body.Kind)
		}
		if !errors.Is(err, st.wantErr) || n != st.head || body != st.body {
			t.Fatalf("%s: %d, %d, %v; want %d, %d, %v", st.name, n, body, err, st.head, st.body, st.wantErr)
		}
		if err == nil && req.Frame.(*Header).TxID == 0 {
			t.Fatalf("%s: no head in req.Frame", st.name)
		}
	}
	if got := c.ProtocolState(); got != 5 {
		t.Errorf("connection's last op %d, want 5", got)
	}
}

// Refusals: only overload keeps the connection, and names the request.
func TestTransportReject(t *testing.T) {
	tr := NewTransport(TransportConfig{})
	req := &stages.Request{Frame: &Header{Type: TypeRequest, TxID: 9}}
	tests := []struct {
		name string
		err  error
		code Code
		txid uint64
		keep bool
	}{
		{"overloaded", stages.ErrOverloaded, CodeBusy, 9, true},
		{"timeout", stages.ErrHeadTimeout, CodeTimeout, 0, false},
		{"too large", ErrPayloadTooLarge, CodeTooLarge, 9, false},
		{"malformed", ErrFlags, CodeMalformed, 0, false},
	}
	for _, tt := range tests {
		rej := tr.Reject(req, stages.Refusal{Err: tt.err})
		frame, keep := rej.Frame, rej.KeepAlive
		p := NewParser(RoleClient, Limits{})
		var h Header
		n, err := p.Next(frame, &h)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		e, err := ParseError(frame[n:])
		if err != nil || e.Code != tt.code || h.TxID != tt.txid || keep != tt.keep {
			t.Errorf("%s: code %v txid %d keep %v (%v); want %v %d %v", tt.name, e, h.TxID, keep, err, tt.code, tt.txid, tt.keep)
		}
	}
	if rej := tr.Reject(&stages.Request{Frame: &Header{Type: TypeCompletion}}, stages.Refusal{Err: stages.ErrOverloaded}); rej.Frame != nil || !rej.KeepAlive {
		t.Errorf("a shed completion: %q, keep %v; want nothing sent, kept", rej.Frame, rej.KeepAlive)
	}
}

// abandonRig serves requests on a Transport without the stages: each
// response is taken out as a writer would take it, and recycled.
type abandonRig struct {
	tr   *Transport
	held chan *Message // the dispatcher's: messages it has not replied to
	mu   sync.Mutex
	out  map[uint64][]byte // the bytes each request's response carried, by request
}

func newAbandonRig(t *testing.T) *abandonRig {
	rig := &abandonRig{held: make(chan *Message, 1000), out: map[uint64][]byte{}}
	rig.tr = NewTransport(TransportConfig{Dispatcher: DispatcherFunc(func(m *Message) { rig.held <- m })})
	return rig
}

// serve runs one request, numbered id, through Serve, and finishes its
// response on another goroutine once it is done, as the writer would.
func (rig *abandonRig) serve(id uint64) {
	finished := make(chan *stages.Response, 1)
	resp := stages.NewResponse(func(*stages.Response) {}, func(r *stages.Response) { r.RunCleanups() })
	resp.Begin(&stages.Conn{}, nil, time.Now())
	req := &stages.Request{Frame: &Header{Type: TypeRequest, TxID: id}, BodyBytes: []byte("q")}
	go func() {
		r := <-finished
		var got []byte
		for {
			bs, eos := r.TakeOut(nil)
			for _, b := range bs {
				got = append(got, b.Data...)
			}
			if eos {
				break
			}
			time.Sleep(time.Millisecond)
		}
		rig.mu.Lock()
		rig.out[id] = got
		rig.mu.Unlock()
		r.Finish()
	}()
	finished <- resp
	rig.tr.Serve(resp, req)
}

// code reads the error code of the response to request id (0: a reply).
func (rig *abandonRig) code(t *testing.T, id uint64) Code {
	rig.mu.Lock()
	b := rig.out[id]
	rig.mu.Unlock()
	var h Header
	p := NewParser(RoleClient, Limits{})
	n, err := p.Next(b, &h)
	if err != nil {
		t.Fatalf("request %d: response %q: %v", id, b, err)
	}
	if !h.Flags.Has(FlagError) {
		return 0
	}
	e, err := ParseError(b[n:])
	if err != nil {
		t.Fatalf("request %d: %v", id, err)
	}
	return e.Code
}

// A shutdown whose grace is over gives up on replies still to come
// (Abandon): their requests get CodeShutdown, Wait returns, and the
// dispatcher's late SendReply is told. Replies sent before are kept, and
// a request dispatched after Abandon that its dispatcher leaves
// unanswered is abandoned as soon as Dispatch returns.
func TestTransportAbandon(t *testing.T) {
	rig := newAbandonRig(t)
	for id := uint64(1); id <= 3; id++ {
		rig.serve(id)
	}
	replied := <-rig.held // request 1: answered before the shutdown
	if err := replied.SendReply(Reply{Payload: []byte("a")}); err != nil {
		t.Fatalf("reply before Abandon: %v", err)
	}
	rig.tr.Abandon()
	rig.serve(4) // dispatched after Abandon, left unanswered
	waited := make(chan struct{})
	go func() { rig.tr.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait still waits for replies abandoned")
	}
	for range 3 { // requests 2, 3 and 4, whose dispatcher replies too late
		if err := (<-rig.held).SendReply(Reply{Payload: []byte("late")}); !errors.Is(err, ErrAbandoned) {
			t.Errorf("late SendReply: %v, want ErrAbandoned", err)
		}
	}
	ok := func() bool { rig.mu.Lock(); defer rig.mu.Unlock(); return len(rig.out) == 4 }
	for deadline := time.Now().Add(5 * time.Second); !ok() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	want := map[uint64]Code{1: 0, 2: CodeShutdown, 3: CodeShutdown, 4: CodeShutdown}
	for id, code := range want {
		if got := rig.code(t, id); got != code {
			t.Errorf("request %d: code %v, want %v", id, got, code)
		}
	}
	rig.tr.pendingMu.Lock()
	left := rig.tr.pending
	rig.tr.pendingMu.Unlock()
	if left != nil {
		t.Error("calls still listed after Abandon")
	}
}

// Replies racing Abandon: every request gets exactly one answer, its reply
// or CodeShutdown, and SendReply says which; nothing stays listed.
func TestTransportAbandonRacesReplies(t *testing.T) {
	const n = 200
	rig := newAbandonRig(t)
	for id := uint64(1); id <= n; id++ {
		rig.serve(id)
	}
	sent := make([]error, n+1)
	var wg sync.WaitGroup
	for range n {
		m := <-rig.held
		id := m.Header.TxID // m is the transport's again once replied to
		wg.Go(func() { sent[id] = m.SendReply(Reply{Payload: []byte("r")}) })
	}
	rig.tr.Abandon()
	wg.Wait()
	rig.tr.Wait()
	ok := func() bool { rig.mu.Lock(); defer rig.mu.Unlock(); return len(rig.out) == n }
	for deadline := time.Now().Add(5 * time.Second); !ok() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	for id := uint64(1); id <= n; id++ {
		code := rig.code(t, id)
		switch err := sent[id]; {
		case err == nil && code != 0:
			t.Errorf("request %d: reply taken, yet the client got code %v", id, code)
		case errors.Is(err, ErrAbandoned) && code != CodeShutdown:
			t.Errorf("request %d: abandoned, yet the client got code %v", id, code)
		case err != nil && !errors.Is(err, ErrAbandoned):
			t.Errorf("request %d: SendReply: %v", id, err)
		}
	}
	if rig.tr.pending != nil {
		t.Error("calls still listed")
	}
}
