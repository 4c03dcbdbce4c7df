//go:build linux

package writer

import (
	"bytes"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// A pipelined protocol's connection gets several responses at once, from
// different producers: the loop writes each whole, in the order they
// reached it, whether the one ahead waits on its producer or on the
// client's window; and it keeps no line once they are done.
func TestLineWritesOneResponseAtATime(t *testing.T) {
	big := pattern(7, 1<<20)
	tests := []struct {
		name      string
		sndbuf    int
		first     [][]byte // the first response's pieces, appended apart
		followers [][]byte // later responses, each whole, kicked while the first is unfinished
	}{
		{"first waits on its producer", 0, [][]byte{[]byte("first-part-one|"), []byte("first-part-two")}, [][]byte{[]byte("second"), []byte("third")}},
		{"first waits on the client", 4096, [][]byte{big}, [][]byte{[]byte("second"), []byte("third")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg Config
			cfg.Serialize[3] = true
			h := startLoop(t, cfg)
			fd, client := tcpPair(t, tt.sndbuf, tt.sndbuf)
			c := &stages.Conn{ID: 1, FD: fd, Protocol: 3}
			begin := func() *stages.Response {
				r := stages.NewResponse(h.l.Kick, func(r *stages.Response) { h.recycled <- r })
				r.Begin(c, nil, time.Now())
				r.KeepAlive = true
				return r
			}
			first := begin()
			if err := first.Append(heap(tt.first[0])); err != nil {
				t.Fatal(err)
			}
			var want []byte
			want = append(want, bytes.Join(tt.first, nil)...)
			var rs []*stages.Response
			for _, b := range tt.followers {
				r := begin()
				if err := r.Append(heap(b), eos); err != nil {
					t.Fatal(err)
				}
				r.Done()
				rs = append(rs, r)
				want = append(want, b...)
			}
			time.Sleep(20 * time.Millisecond) // the followers reach the loop before the first ends
			for _, b := range tt.first[1:] {
				if err := first.Append(heap(b)); err != nil {
					t.Fatal(err)
				}
			}
			if err := first.Append(eos); err != nil {
				t.Fatal(err)
			}
			first.Done()
			if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
				n := 0
				for n < len(got) && got[n] == want[n] {
					n++
				}
				t.Fatalf("responses interleaved or out of order: the wire differs from byte %d of %d", n, len(want))
			}
			for range 1 + len(rs) {
				select {
				case <-h.recycled:
				case <-time.After(waitLimit):
					t.Fatal("a response was never recycled")
				}
			}
			h.inLoop(func() {
				if len(h.l.lines) != 0 || len(h.l.turns) != 0 {
					t.Errorf("%d lines and %d turns left after every response ended", len(h.l.lines), len(h.l.turns))
				}
			})
		})
	}
}
