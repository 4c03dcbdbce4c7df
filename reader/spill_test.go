package reader

import (
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// send never waits: what the queue has no room for is spilled, and the
// loop takes the queue's messages, then the spilled ones, in the order
// sent; once something is spilled, what follows spills behind it even if
// the queue has room again, so no message overtakes an older one.
func TestSendSpillsInOrder(t *testing.T) {
	for _, tc := range []struct {
		name        string
		capacity    int
		sent        int
		popAfter    int // messages the loop takes after the first sends, before the rest
		more        int // sent after those pops
		wantSpilled int // after every send
	}{
		{"room for all", 16, 4, 0, 0, 0},
		{"one more than the queue", 4, 5, 0, 0, 1},
		{"far more than the queue (a loop returning to itself)", 4, 40, 0, 0, 36},
		{"room made while spilled: later sends still spill", 4, 6, 2, 3, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(0, Config{QueueCapacity: tc.capacity, Protocols: httpOnly(),
				Dispatch: func(*stages.Request) bool { return true },
				Reject:   func(*stages.Conn, *stages.Request, error) {}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.core.Close()
			if l.in.Cap() != tc.capacity {
				t.Fatalf("queue of %d for capacity %d: the table assumes it exact", l.in.Cap(), tc.capacity)
			}
			conns := make([]*stages.Conn, tc.sent+tc.more)
			for i := range conns {
				conns[i] = &stages.Conn{ID: uint64(i)}
			}
			var got []uint64
			take := func(n int) {
				for range n {
					m, ok := l.next()
					if !ok {
						return
					}
					got = append(got, m.c.ID)
				}
			}
			for _, c := range conns[:tc.sent] {
				l.send(msg{c: c, op: opReturn})
			}
			take(tc.popAfter)
			for _, c := range conns[tc.sent:] {
				l.send(msg{c: c, op: opReturn})
			}
			if n := int(l.spilled.Load()); n != tc.wantSpilled {
				t.Errorf("%d spilled, want %d", n, tc.wantSpilled)
			}
			if d := l.QueueDepth(); d != len(conns)-len(got) {
				t.Errorf("QueueDepth %d, want %d", d, len(conns)-len(got))
			}
			if !l.pending() {
				t.Error("pending() is false with messages queued")
			}
			take(len(conns) + 1)
			for i, id := range got {
				if id != uint64(i) {
					t.Fatalf("taken in the order %v", got)
				}
			}
			if len(got) != len(conns) || l.spilled.Load() != 0 || l.pending() {
				t.Errorf("took %d of %d; %d still spilled, pending %v", len(got), len(conns), l.spilled.Load(), l.pending())
			}
		})
	}
}
