package msg

import (
	"bytes"
	"errors"
	"github.com/quartet-server/quartet/rdma/deliver"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPutHead(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		want error
		size int
	}{
		{"reply", Header{Type: TypeReply, TxID: 3, Length: 13}, nil, HeaderSize},
		{"request with descriptor", Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 3, RDMA: swReq}, nil, MaxHeadSize},
		{"descriptor ignored without FlagRDMA", Header{Type: TypeReply, TxID: 3, RDMA: Descriptor{Mode: 9}}, nil, HeaderSize},
		{"reply txid 0", Header{Type: TypeReply}, ErrTxID, 0},
		{"unknown type", Header{Type: 7, TxID: 1}, ErrType, 0},
		{"bad descriptor", Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads}}, ErrDescriptor, 0},
		{"zoned endpoint", Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Endpoint: netip.MustParseAddrPort("[fe80::1%eth0]:5")}}, ErrDescriptor, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b [MaxHeadSize]byte
			n, err := PutHead(b[:], &tt.h)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) || n != tt.size {
				t.Fatalf("PutHead = %d, %v; want %d, %v", n, err, tt.size, tt.want)
			}
		})
	}
	var b [HeaderSize]byte
	h := Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 3, RDMA: swReq}
	if _, err := PutHead(b[:], &h); !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("PutHead into 16 bytes of a 68-byte head: %v", err)
	}
}

func TestErrorFrame(t *testing.T) {
	long := strings.Repeat("é", MaxErrorMessage) // 2 bytes a rune: cut mid-rune
	tests := []struct {
		name string
		txid uint64
		code Code
		msg  string
		want string // message as received
	}{
		{"request error", 9, CodeBusy, "try later", "try later"},
		{"connection error", 0, CodeMalformed, "bad flags", "bad flags"},
		{"empty message", 1, CodeApplication + 5, "", ""},
		{"cut at a rune boundary", 0, CodeShutdown, long, long[:MaxErrorMessage]},
		{"cut inside a rune", 0, CodeShutdown, "x" + long, "x" + long[:MaxErrorMessage-2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b [MaxErrorFrame]byte
			n, err := PutErrorFrame(b[:], tt.txid, tt.code, tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			p := NewParser(RoleClient, Limits{MaxPayload: 1})
			var h Header
			m, err := p.Next(b[:n], &h)
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			e, err := ParseError(p.Payload(b[m:n]))
			if err != nil {
				t.Fatal(err)
			}
			if h.TxID != tt.txid || e.Code != tt.code || e.Message != tt.want || !utf8.ValidString(e.Message) {
				t.Fatalf("txid %d, %+v", h.TxID, e)
			}
			if e.Code.Fatal() != (tt.code < 256) {
				t.Errorf("Fatal() = %v for %v", e.Code.Fatal(), e.Code)
			}
		})
	}
	if _, err := PutErrorFrame(make([]byte, MaxErrorFrame), 1, 0, "x"); !errors.Is(err, ErrErrorBody) {
		t.Errorf("code 0: %v", err)
	}
	if _, err := PutErrorFrame(make([]byte, HeaderSize+3), 1, CodeBusy, "four"); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("short buffer: %v", err)
	}
	if _, err := ParseError([]byte{0, 0, 'x'}); !errors.Is(err, ErrErrorBody) {
		t.Errorf("ParseError of code 0: %v", err)
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		err  error
		want Code
	}{
		{nil, 0},
		{ErrNeedMore, 0},
		{ErrVersion, CodeVersion},
		{ErrPayloadTooLarge, CodeTooLarge},
		{ErrFlags, CodeMalformed},
		{ErrOpID, CodeMalformed},
		{ErrDirection, CodeMalformed},
		{&Error{Code: CodeBusy}, CodeBusy},
		{io.ErrUnexpectedEOF, CodeInternal},
	}
	for _, tt := range tests {
		if got := CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestRoundTrip is the property that PutHead and Next are inverse: any
// head the encoder accepts, the parser (of the side it is sent to)
// decodes to the same Header, and the encoding is canonical.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 2026))
	for i := range 200_000 {
		h := randomHead(rng)
		var b [MaxHeadSize]byte
		n, err := PutHead(b[:], &h)
		if err != nil {
			t.Fatalf("case %d: PutHead(%+v): %v", i, h, err)
		}
		role := RoleServer
		if h.Type == TypeReply {
			role = RoleClient
		}
		p := NewParser(role, Limits{MaxPayload: 1 << 32})
		p.lastOp = h.RDMA.Op // a completion's op was requested earlier
		if h.Type == TypeRequest {
			p.lastOp = 0
		}
		var got Header
		m, err := p.Next(b[:n], &got)
		if err != nil || m != n {
			t.Fatalf("case %d: Next(PutHead(%+v)) = %d, %v", i, h, m, err)
		}
		if normal(h) != got {
			t.Fatalf("case %d:\n sent %+v\n got  %+v", i, normal(h), got)
		}
		var again [MaxHeadSize]byte
		if k, _ := PutHead(again[:], &got); !bytes.Equal(again[:k], b[:n]) {
			t.Fatalf("case %d: two encodings % x and % x", i, b[:n], again[:k])
		}
	}
}

// normal is h as the parser returns it: no descriptor without FlagRDMA,
// and an IPv4-mapped IPv6 endpoint as plain IPv4.
func normal(h Header) Header {
	if h.Flags&FlagRDMA == 0 {
		h.RDMA = Descriptor{}
	}
	ep := h.RDMA.Endpoint
	h.RDMA.Endpoint = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
	return h
}

// randomHead draws a valid head of any type, flags and descriptor use,
// with field values from the edges (0, 1, max) as often as from the
// middle.
func randomHead(rng *rand.Rand) Header {
	u64 := func() uint64 {
		switch rng.IntN(4) {
		case 0:
			return 1
		case 1:
			return ^uint64(0)
		}
		return rng.Uint64()
	}
	nz32 := func() uint32 { return uint32(max(1, u64()&0xffffffff)) }
	var h Header
	h.Type = Type(1 + rng.IntN(3))
	switch h.Type {
	case TypeRequest:
		h.TxID = u64()
		h.Length = uint32(u64())
		if rng.IntN(2) == 0 {
			h.Flags |= FlagUnordered
		}
		if rng.IntN(2) == 0 {
			h.Flags |= FlagRDMA
			h.RDMA = Descriptor{Mode: deliver.Mode(1 + rng.IntN(2)), Op: u64(), Endpoint: randomEndpoint(rng)}
			if h.RDMA.Mode == deliver.ModeServerWrites {
				h.RDMA.Addr, h.RDMA.RKey, h.RDMA.Len = u64(), uint32(u64()), max(1, u64())
			}
		}
	case TypeReply:
		h.TxID = u64()
		h.Length = uint32(u64())
		switch rng.IntN(4) {
		case 0: // error, maybe a connection error
			h.Flags = FlagError
			h.Length = uint32(2 + rng.IntN(MaxErrorMessage+1))
			if rng.IntN(2) == 0 {
				h.TxID = 0
			}
		case 1: // delivered by RDMA
			h.Flags = FlagRDMA | FlagByRDMA
			h.Length = 0
			h.RDMA = Descriptor{Mode: deliver.Mode(1 + rng.IntN(2)), Op: u64(), Channel: uint32(u64()), Len: u64()}
			if h.RDMA.Mode == deliver.ModeClientReads {
				h.RDMA.Addr, h.RDMA.RKey = u64(), uint32(u64())
			}
		case 2: // fallback
			h.Flags = FlagRDMA
			h.RDMA = Descriptor{Mode: deliver.Mode(1 + rng.IntN(2)), Op: u64(), Reason: deliver.Reason(max(1, u64()&0xff))}
		}
		// Fields the flags do not use are ignored by the encoder, so a
		// stray descriptor must not change the bytes.
		if h.Flags&FlagRDMA == 0 && rng.IntN(2) == 0 {
			h.RDMA.Op, h.RDMA.RKey = u64(), nz32()
		}
	case TypeCompletion:
		h.Flags = FlagRDMA
		if rng.IntN(2) == 0 {
			h.Flags |= FlagCumulative
		}
		h.RDMA = Descriptor{Mode: deliver.ModeClientReads, Op: u64(), Channel: uint32(u64())}
	}
	return h
}

func randomEndpoint(rng *rand.Rand) netip.AddrPort {
	port := uint16(1 + rng.IntN(65535))
	var a [16]byte
	switch rng.IntN(4) {
	case 0:
		return netip.AddrPortFrom(netip.Addr{}, port) // the connection's peer
	case 1:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(1 + rng.IntN(255)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}), port)
	case 2: // IPv4-mapped IPv6: decoded as IPv4
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(1 + rng.IntN(255))}), port)
	}
	for i := range a {
		a[i] = byte(rng.Uint32())
	}
	a[0] = 0x20 // never ::, never v4-mapped
	return netip.AddrPortFrom(netip.AddrFrom16(a), port)
}
