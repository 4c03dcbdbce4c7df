package msg

import (
	"errors"
	"testing"

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
