package writer

import (
	"bytes"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// Direct ends a response it wrote whole even when that took the whole
// turn's budget (a body about the budget's size): handing it to the loop
// would wake the loop only to conclude it. With bytes still to write past
// the budget, the loop takes over and finishes them.
func TestDirectEndsWhatItWroteWhole(t *testing.T) {
	const budget = 1024
	for _, tc := range []struct {
		name       string
		file       bool // a file bucket after the heap ones: bytes ahead once the budget is spent
		wantDirect uint64
	}{
		{"written whole past the budget", false, 1},
		{"bytes ahead past the budget", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startLoopWith(t, Config{}, func(l *Loop) { l.writeBudget = budget })
			fd, client := tcpPair(t, 0, 0)
			head, body := pattern(1, 100), pattern(2, 3*budget)
			want := append(append([]byte(nil), head...), body...)
			bs := []stages.Bucket{heap(head), heap(body)}
			if tc.file {
				tail := pattern(3, 2*budget)
				f := tempFile(t, tail)
				bs = append(bs, stages.Bucket{Kind: stages.BucketFile, File: f, Len: int64(len(tail))})
				want = append(want, tail...)
			}
			r := h.response(fd)
			r.HoldKicks() // as an inline server leaves it
			if err := r.Append(append(bs, stages.Bucket{Kind: stages.BucketEOS})...); err != nil {
				t.Fatal(err)
			}
			r.Done()
			var d Direct
			if d.Write(h.l, r) {
				r.ResumeKicks()
			}
			if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
				t.Fatalf("client got %d bytes, not the %d written", len(got), len(want))
			}
			if e := h.log(); e.err != nil || e.sent != int64(len(want)) {
				t.Errorf("logged %d bytes sent, err %v; want %d", e.sent, e.err, len(want))
			}
			h.waitRecycled(r)
			if got := d.Ended(); got != tc.wantDirect {
				t.Errorf("Direct ended %d responses, want %d", got, tc.wantDirect)
			}
			if got := h.l.counters.Dequeued.Load(); got != 1-tc.wantDirect {
				t.Errorf("the loop dequeued %d responses, want %d", got, 1-tc.wantDirect)
			}
		})
	}
}
