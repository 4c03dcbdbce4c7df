package msg

import (
	"bytes"
	"testing"
)

// The hot paths of a messenger connection: a reader loop parsing heads
// out of its read buffer and a writer building reply heads into a
// per-connection array. All must allocate nothing.

func BenchmarkNext(b *testing.B) {
	frame := raw(Header{Type: TypeRequest, Flags: FlagUnordered, TxID: 42, Length: 13}, []byte("Hello, world!")...)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	var h Header
	for b.Loop() {
		p := NewParser(RoleServer, Limits{})
		n, err := p.Next(frame, &h)
		if err != nil {
			b.Fatal(err)
		}
		p.Payload(frame[n:])
	}
}

func BenchmarkNextRDMA(b *testing.B) {
	frame := raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 42, RDMA: swReq})
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	var h Header
	for b.Loop() {
		p := NewParser(RoleServer, Limits{})
		if _, err := p.Next(frame, &h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNextStream parses a read buffer holding 64 pipelined 13-byte
// requests, as a reader loop does after one read; the figure is per
// frame.
func BenchmarkNextStream(b *testing.B) {
	const frames = 64
	var buf []byte
	for i := range frames {
		buf = append(buf, raw(Header{Type: TypeRequest, TxID: uint64(i + 1), Length: 13}, []byte("Hello, world!")...)...)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(buf) / frames))
	var h Header
	p := NewParser(RoleServer, Limits{})
	off := 0
	for b.Loop() {
		if off == len(buf) {
			off = 0
		}
		n, err := p.Next(buf[off:], &h)
		if err != nil {
			b.Fatal(err)
		}
		off += n
		off += len(p.Payload(buf[off:]))
	}
}

func BenchmarkPutHead(b *testing.B) {
	var dst [MaxHeadSize]byte
	b.ReportAllocs()
	for i := range uint64(b.N) {
		h := Header{Type: TypeReply, TxID: i + 1, Length: 13}
		if _, err := PutHead(dst[:], &h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutHeadRDMA(b *testing.B) {
	var dst [MaxHeadSize]byte
	b.ReportAllocs()
	for i := range uint64(b.N) {
		h := Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: i + 1, RDMA: crGrant}
		if _, err := PutHead(dst[:], &h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutErrorFrame(b *testing.B) {
	var dst [MaxErrorFrame]byte
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PutErrorFrame(dst[:], 7, CodeBusy, "server busy, retry later"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHotPathsAllocateNothing keeps the benchmarks' 0 allocs/op a test,
// so a change that allocates fails go test, not only a reader of
// benchmark output.
func TestHotPathsAllocateNothing(t *testing.T) {
	frame := raw(Header{Type: TypeRequest, Flags: FlagRDMA | FlagUnordered, TxID: 42, Length: 3, RDMA: swReq}, 'a', 'b', 'c')
	var h Header
	var dst [MaxErrorFrame]byte
	tests := map[string]func(){
		"Next+Payload": func() {
			p := NewParser(RoleServer, Limits{})
			n, _ := p.Next(frame, &h)
			p.Payload(frame[n:])
		},
		"PutHead": func() {
			r := Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 9, RDMA: crGrant}
			_, _ = PutHead(dst[:], &r)
		},
		"PutErrorFrame": func() { _, _ = PutErrorFrame(dst[:], 7, CodeBusy, "busy") },
	}
	for name, f := range tests {
		if a := testing.AllocsPerRun(100, f); a != 0 {
			t.Errorf("%s: %v allocs/op", name, a)
		}
	}
	if !bytes.Equal(frame[:1], []byte{Version}) {
		t.Fatal("frame changed")
	}
}
