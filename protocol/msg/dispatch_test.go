package msg

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// recordingHook keeps the replies it is given.
type recordingHook struct {
	mu      sync.Mutex
	replies []Reply
	err     error // returned by SendReply
}

func (h *recordingHook) SendReply(m *Message, r Reply) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.replies = append(h.replies, r)
	return h.err
}

func TestEcho(t *testing.T) {
	in := raw(Header{Type: TypeRequest, TxID: 5, Length: 4}, 'p', 'i', 'n', 'g')
	p := NewParser(RoleServer, Limits{})
	var h Header
	n, err := p.Next(in, &h)
	if err != nil {
		t.Fatal(err)
	}
	hook := &recordingHook{}
	var m Message
	m.Reset(&h, p.Payload(in[n:]), hook)
	Echo{}.Dispatch(&m)
	if len(hook.replies) != 1 || string(hook.replies[0].Payload) != "ping" || hook.replies[0].Code != 0 {
		t.Fatalf("replies %+v", hook.replies)
	}
	if &hook.replies[0].Payload[0] != &in[n] {
		t.Error("the echo copied the payload")
	}
}

func TestSendReply(t *testing.T) {
	tests := []struct {
		name    string
		hook    bool
		replies []Reply
		want    []error // per SendReply
		sent    int     // replies the hook saw
	}{
		{"once", true, []Reply{{Payload: []byte("a")}}, []error{nil}, 1},
		{"twice", true, []Reply{{}, {}}, []error{nil, ErrReplied}, 1},
		{"error reply", true, []Reply{{Code: CodeBusy, Payload: []byte("later")}}, []error{nil}, 1},
		{"application code", true, []Reply{{Code: CodeApplication + 1}}, []error{nil}, 1},
		{"connection code refused, then a good reply", true, []Reply{{Code: CodeShutdown}, {}}, []error{ErrReplyCode, nil}, 1},
		{"no hook", false, []Reply{{}}, []error{ErrNoHook}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hook := &recordingHook{}
			var m Message
			if tt.hook {
				m.Reset(&Header{Type: TypeRequest, TxID: 1}, nil, hook)
			}
			for i, r := range tt.replies {
				if err := m.SendReply(r); !errors.Is(err, tt.want[i]) || (err == nil) != (tt.want[i] == nil) {
					t.Errorf("SendReply %d = %v, want %v", i, err, tt.want[i])
				}
			}
			if len(hook.replies) != tt.sent {
				t.Errorf("hook saw %d replies, want %d", len(hook.replies), tt.sent)
			}
		})
	}
}

// TestSendReplyRace: many goroutines reply to one message at once
// (a dispatcher's timeout racing its worker); exactly one wins.
func TestSendReplyRace(t *testing.T) {
	for range 100 {
		hook := &recordingHook{}
		var m Message
		m.Reset(&Header{Type: TypeRequest, TxID: 1}, nil, hook)
		var ok atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if m.SendReply(Reply{}) == nil {
					ok.Add(1)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || len(hook.replies) != 1 {
			t.Fatalf("%d replies accepted, hook saw %d", ok.Load(), len(hook.replies))
		}
	}
}

// TestResetRecycles: a recycled Message takes a new reply.
func TestResetRecycles(t *testing.T) {
	hook := &recordingHook{}
	var m Message
	for i := range 3 {
		m.Reset(&Header{Type: TypeRequest, TxID: uint64(i + 1)}, nil, hook)
		if err := m.SendReply(Reply{}); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if len(hook.replies) != 3 {
		t.Fatalf("hook saw %d replies", len(hook.replies))
	}
}

// TestSendReplyHookError: the hook's error (a closed connection) reaches
// the dispatcher, and the message still counts as replied.
func TestSendReplyHookError(t *testing.T) {
	gone := errors.New("connection closed")
	hook := &recordingHook{err: gone}
	var m Message
	m.Reset(&Header{Type: TypeRequest, TxID: 1}, nil, hook)
	if err := m.SendReply(Reply{}); err != gone {
		t.Fatalf("SendReply = %v", err)
	}
	if err := m.SendReply(Reply{}); !errors.Is(err, ErrReplied) {
		t.Fatalf("second SendReply = %v", err)
	}
}
