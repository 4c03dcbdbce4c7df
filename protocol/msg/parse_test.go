package msg

import (
	"bufio"
	"bytes"
	"errors"
	"github.com/quartet-server/quartet/rdma/deliver"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// raw encodes h without checking it, so tests can build frames that
// break the rules; the payload is length zero bytes unless given.
func raw(h Header, payload ...byte) []byte {
	b := make([]byte, h.HeadSize(), h.HeadSize()+len(payload))
	putHeader(b, &h)
	if h.Flags&FlagRDMA != 0 {
		putDescriptor(b[HeaderSize:], &h.RDMA)
	}
	return append(b, payload...)
}

// withVersion returns b with its first byte replaced.
func withVersion(b []byte, v byte) []byte { b[0] = v; return b }

var (
	clientEP = netip.MustParseAddrPort("192.0.2.7:7471")
	swReq    = Descriptor{Mode: deliver.ModeServerWrites, Op: 5, Addr: 0x7f0000001000, RKey: 0xabcd, Len: 4096, Endpoint: clientEP}
	crReq    = Descriptor{Mode: deliver.ModeClientReads, Op: 5, Endpoint: clientEP}
	swDone   = Descriptor{Mode: deliver.ModeServerWrites, Op: 5, Channel: 3, Len: 4000}
	crGrant  = Descriptor{Mode: deliver.ModeClientReads, Op: 5, Channel: 3, Addr: 0x10000, RKey: 0x99, Len: 4000}
	fallback = Descriptor{Mode: deliver.ModeServerWrites, Op: 5, Reason: deliver.ReasonNoRDMA}
	crDone   = Descriptor{Mode: deliver.ModeClientReads, Op: 5, Channel: 3}
)

func TestNext(t *testing.T) {
	peerEP := netip.AddrPortFrom(netip.Addr{}, 7471)
	tests := []struct {
		name string
		role Role
		in   []byte
		lim  Limits
		want error // nil: accepted
	}{
		// Accepted frames, one per use.
		{"request", RoleServer, raw(Header{Type: TypeRequest, TxID: 1, Length: 3}, 'a', 'b', 'c'), Limits{}, nil},
		{"empty request", RoleServer, raw(Header{Type: TypeRequest, TxID: 1}), Limits{}, nil},
		{"unordered request", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagUnordered, TxID: 9}), Limits{}, nil},
		{"server-writes request", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: swReq}), Limits{}, nil},
		{"client-reads request", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA | FlagUnordered, TxID: 1, RDMA: crReq}), Limits{}, nil},
		{"request, endpoint at the peer's address", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Endpoint: peerEP}}), Limits{}, nil},
		{"request, IPv6 endpoint", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Endpoint: netip.MustParseAddrPort("[2001:db8::1]:9")}}), Limits{}, nil},
		{"reply", RoleClient, raw(Header{Type: TypeReply, TxID: 1, Length: 1}, 'x'), Limits{}, nil},
		{"error reply", RoleClient, raw(Header{Type: TypeReply, Flags: FlagError, TxID: 1, Length: 2}, 1, 0), Limits{}, nil},
		{"connection error", RoleClient, raw(Header{Type: TypeReply, Flags: FlagError, Length: 2}, 0, 1), Limits{}, nil},
		{"written reply", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 1, RDMA: swDone}), Limits{}, nil},
		{"exposure reply", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 1, RDMA: crGrant}), Limits{}, nil},
		{"fallback reply", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA, TxID: 1, Length: 2, RDMA: fallback}, 'h', 'i'), Limits{}, nil},
		{"payload at the limit", RoleServer, raw(Header{Type: TypeRequest, TxID: 1, Length: 10}, make([]byte, 10)...), Limits{MaxPayload: 10}, nil},

		// Version and type.
		{"version 0", RoleServer, withVersion(raw(Header{Type: TypeRequest, TxID: 1}), 0), Limits{}, ErrVersion},
		{"version 2", RoleServer, withVersion(raw(Header{Type: TypeRequest, TxID: 1}), 2), Limits{}, ErrVersion},
		{"HTTP request", RoleServer, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Limits{}, ErrVersion},
		{"one byte of HTTP", RoleServer, []byte("G"), Limits{}, ErrVersion},
		{"type 0", RoleServer, raw(Header{Type: 0, TxID: 1}), Limits{}, ErrType},
		{"type 4", RoleServer, raw(Header{Type: 4, TxID: 1}), Limits{}, ErrType},
		{"type 255", RoleClient, raw(Header{Type: 255, TxID: 1}), Limits{}, ErrType},

		// Direction.
		{"reply to a server", RoleServer, raw(Header{Type: TypeReply, TxID: 1}), Limits{}, ErrDirection},
		{"request to a client", RoleClient, raw(Header{Type: TypeRequest, TxID: 1}), Limits{}, ErrDirection},
		{"completion to a client", RoleClient, raw(Header{Type: TypeCompletion, Flags: FlagRDMA, RDMA: crDone}), Limits{}, ErrDirection},

		// Flags.
		{"undefined flag", RoleServer, raw(Header{Type: TypeRequest, Flags: 1 << 15, TxID: 1}), Limits{}, ErrFlags},
		{"error on a request", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagError, TxID: 1}), Limits{}, ErrFlags},
		{"unordered on a reply", RoleClient, raw(Header{Type: TypeReply, Flags: FlagUnordered, TxID: 1}), Limits{}, ErrFlags},
		{"cumulative on a request", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagCumulative, TxID: 1}), Limits{}, ErrFlags},
		{"by-rdma on a request", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA | FlagByRDMA, TxID: 1, RDMA: swReq}), Limits{}, ErrFlags},
		{"by-rdma without rdma", RoleClient, raw(Header{Type: TypeReply, Flags: FlagByRDMA, TxID: 1}), Limits{}, ErrFlags},
		{"error with rdma", RoleClient, raw(Header{Type: TypeReply, Flags: FlagError | FlagRDMA, TxID: 1, Length: 2, RDMA: fallback}, 0, 1), Limits{}, ErrFlags},
		{"completion without rdma", RoleServer, raw(Header{Type: TypeCompletion}), Limits{}, ErrFlags},

		// Transaction ids.
		{"request txid 0", RoleServer, raw(Header{Type: TypeRequest}), Limits{}, ErrTxID},
		{"reply txid 0", RoleClient, raw(Header{Type: TypeReply, Length: 1}, 'x'), Limits{}, ErrTxID},
		{"completion txid 1", RoleServer, raw(Header{Type: TypeCompletion, Flags: FlagRDMA, TxID: 1, RDMA: crDone}), Limits{}, ErrTxID},

		// Lengths.
		{"payload over the limit", RoleServer, raw(Header{Type: TypeRequest, TxID: 1, Length: 11}), Limits{MaxPayload: 10}, ErrPayloadTooLarge},
		{"payload over the default limit", RoleServer, raw(Header{Type: TypeRequest, TxID: 1, Length: DefaultMaxPayload + 1}), Limits{}, ErrPayloadTooLarge},
		{"completion with payload", RoleServer, raw(Header{Type: TypeCompletion, Flags: FlagRDMA, Length: 1, RDMA: crDone}, 0), Limits{}, ErrUnexpectedPayload},
		{"by-rdma reply with payload", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 1, Length: 1, RDMA: swDone}, 0), Limits{}, ErrUnexpectedPayload},
		{"error body of 1 byte", RoleClient, raw(Header{Type: TypeReply, Flags: FlagError, TxID: 1, Length: 1}, 0), Limits{}, ErrErrorBody},
		{"error body too long", RoleClient, raw(Header{Type: TypeReply, Flags: FlagError, TxID: 1, Length: 2 + MaxErrorMessage + 1}), Limits{}, ErrErrorBody},

		// Descriptors.
		{"mode 0", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Op: 1, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"mode 3", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: 3, Op: 1, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"op 0", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"request without port", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1}}), Limits{}, ErrDescriptor},
		{"request with unspecified address", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Endpoint: netip.MustParseAddrPort("0.0.0.0:1")}}), Limits{}, ErrDescriptor},
		{"request with channel", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Channel: 1, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"request with reason", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Reason: 1, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"server-writes without buffer", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeServerWrites, Op: 1, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"client-reads with buffer", RoleServer, raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Len: 5, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"reply with endpoint", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeServerWrites, Op: 1, Len: 1, Endpoint: clientEP}}), Limits{}, ErrDescriptor},
		{"written reply with address", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeServerWrites, Op: 1, Len: 1, Addr: 1}}), Limits{}, ErrDescriptor},
		{"delivered reply with reason", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, Reason: 1}}), Limits{}, ErrDescriptor},
		{"fallback without reason", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeServerWrites, Op: 1}}), Limits{}, ErrDescriptor},
		{"fallback with region", RoleClient, raw(Header{Type: TypeReply, Flags: FlagRDMA, TxID: 1, RDMA: Descriptor{Mode: deliver.ModeServerWrites, Op: 1, Reason: 1, Len: 3}}), Limits{}, ErrDescriptor},
		{"server-writes completion", RoleServer, raw(Header{Type: TypeCompletion, Flags: FlagRDMA, RDMA: Descriptor{Mode: deliver.ModeServerWrites, Op: 1}}), Limits{}, ErrDescriptor},
		{"completion with region", RoleServer, raw(Header{Type: TypeCompletion, Flags: FlagRDMA, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 1, RKey: 1}}), Limits{}, ErrDescriptor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewParser(tt.role, tt.lim)
			var h Header
			n, err := p.Next(tt.in, &h)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Next = %d, %v; want %v", n, err, tt.want)
			}
			if err != nil {
				if n != 0 {
					t.Errorf("consumed %d bytes on error", n)
				}
				if !strings.HasPrefix(err.Error(), "quartet: msg: ") {
					t.Errorf("error %q does not name the package", err)
				}
				// Errors are final.
				if _, again := p.Next(tt.in, &h); again != err {
					t.Errorf("second Next = %v, want the same error", again)
				}
				return
			}
			if n != h.HeadSize() {
				t.Errorf("consumed %d, head is %d", n, h.HeadSize())
			}
			got := p.Payload(tt.in[n:])
			if len(got) != int(h.Length) || len(got) > 0 && &got[0] != &tt.in[n] {
				t.Errorf("payload %q is not the %d bytes after the head, aliased", got, h.Length)
			}
			// Re-encoding gives the same bytes: one encoding per head.
			out := make([]byte, MaxHeadSize)
			m, err := PutHead(out, &h)
			if err != nil || !bytes.Equal(out[:m], tt.in[:n]) {
				t.Errorf("PutHead = % x, %v; want % x", out[:m], err, tt.in[:n])
			}
		})
	}
}

// TestNextTooLargeNamesTxID: the error frame for an oversized request is
// the reply to that request, so the parser must leave its txid in h.
func TestNextTooLargeNamesTxID(t *testing.T) {
	p := NewParser(RoleServer, Limits{MaxPayload: 100})
	var h Header
	_, err := p.Next(raw(Header{Type: TypeRequest, TxID: 77, Length: 101}), &h)
	if !errors.Is(err, ErrPayloadTooLarge) || h.TxID != 77 || CodeOf(err) != CodeTooLarge {
		t.Fatalf("err %v, txid %d, code %v", err, h.TxID, CodeOf(err))
	}
}

// TestNextIncremental feeds a stream of frames one byte more at a time
// and checks that every frame comes out whole, at the first call that
// has all of its head, and that ErrNeedMore consumes nothing.
func TestNextIncremental(t *testing.T) {
	frames := [][]byte{
		raw(Header{Type: TypeRequest, TxID: 1, Length: 5}, 'h', 'e', 'l', 'l', 'o'),
		raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 2, RDMA: swReq}),
		raw(Header{Type: TypeRequest, TxID: 3}),
		raw(Header{Type: TypeCompletion, Flags: FlagRDMA | FlagCumulative, RDMA: crDone}),
		raw(Header{Type: TypeRequest, Flags: FlagUnordered | FlagRDMA, TxID: 4, Length: 2, RDMA: Descriptor{Mode: deliver.ModeClientReads, Op: 6, Endpoint: clientEP}}, 'o', 'k'),
	}
	stream := bytes.Join(frames, nil)
	p := NewParser(RoleServer, Limits{})
	var got []Header
	var payload []byte
	start := 0 // first byte not yet consumed
	for end := 0; end <= len(stream); end++ {
		for {
			if p.Remaining() > 0 {
				b := p.Payload(stream[start:end])
				if len(b) == 0 {
					break
				}
				payload = append(payload, b...)
				start += len(b)
				continue
			}
			var h Header
			n, err := p.Next(stream[start:end], &h)
			if errors.Is(err, ErrNeedMore) {
				break
			}
			if err != nil {
				t.Fatalf("at %d:%d: %v", start, end, err)
			}
			if end != start+h.HeadSize() {
				t.Fatalf("head of frame %d complete at %d, reported at %d", len(got), start+h.HeadSize(), end)
			}
			start += n
			got = append(got, h)
		}
	}
	if len(got) != len(frames) || p.Remaining() != 0 || start != len(stream) || string(payload) != "hellook" {
		t.Fatalf("got %d frames, %d left, at %d of %d, payload %q", len(got), p.Remaining(), start, len(stream), payload)
	}
}

func TestPayloadPending(t *testing.T) {
	p := NewParser(RoleServer, Limits{})
	in := raw(Header{Type: TypeRequest, TxID: 1, Length: 4}, 1, 2, 3, 4)
	var h Header
	n, err := p.Next(in, &h)
	if err != nil {
		t.Fatal(err)
	}
	p.Payload(in[n : n+3])
	if _, err := p.Next(in[n+3:], &h); !errors.Is(err, ErrPayloadPending) {
		t.Fatalf("Next with a byte of payload left = %v", err)
	}
	p.Payload(in[n+3:])
	// Not final: once the payload is taken the stream goes on.
	if _, err := p.Next(raw(Header{Type: TypeRequest, TxID: 2}), &h); err != nil || h.TxID != 2 {
		t.Fatalf("Next after the payload = %v, txid %d", err, h.TxID)
	}
}

func TestOpIDs(t *testing.T) {
	req := func(op uint64) []byte {
		d := crReq
		d.Op = op
		return raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: op, RDMA: d})
	}
	done := func(op uint64, f Flags) []byte {
		d := crDone
		d.Op = op
		return raw(Header{Type: TypeCompletion, Flags: FlagRDMA | f, RDMA: d})
	}
	tests := []struct {
		name   string
		frames [][]byte
		want   error // of the last frame
	}{
		{"increasing, with gaps", [][]byte{req(1), req(2), req(10)}, nil},
		{"completion of the last op", [][]byte{req(1), req(7), done(7, FlagCumulative)}, nil},
		{"completion of an earlier op", [][]byte{req(1), req(7), done(1, 0)}, nil},
		{"plain requests do not count", [][]byte{req(3), raw(Header{Type: TypeRequest, TxID: 9}), req(4)}, nil},
		{"repeated op", [][]byte{req(3), req(3)}, ErrOpID},
		{"decreasing op", [][]byte{req(3), req(2)}, ErrOpID},
		{"completion before any request", [][]byte{done(1, 0)}, ErrOpID},
		{"completion of a future op", [][]byte{req(3), done(4, FlagCumulative)}, ErrOpID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewParser(RoleServer, Limits{})
			var err error
			for i, f := range tt.frames {
				var h Header
				if _, err = p.Next(f, &h); err != nil && i < len(tt.frames)-1 {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("last frame: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadHead(t *testing.T) {
	stream := bytes.Join([][]byte{
		raw(Header{Type: TypeReply, TxID: 1, Length: 3}, 'a', 'b', 'c'),
		raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 2, RDMA: crGrant}),
		raw(Header{Type: TypeReply, TxID: 3, Length: 2}, 'd', 'e'),
	}, nil)
	// One byte per Read: ReadHead must assemble heads across reads.
	br := bufio.NewReaderSize(iotestOneByte{bytes.NewReader(stream)}, MaxHeadSize)
	p := NewParser(RoleClient, Limits{})
	var h Header
	var got []uint64
	var payloads string
	for {
		err := p.ReadHead(br, &h)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.TxID)
		if h.TxID == 3 {
			if err := p.SkipPayload(br); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := p.ReadPayload(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		payloads += string(b)
	}
	if len(got) != 3 || payloads != "abc" {
		t.Fatalf("txids %v, payloads %q", got, payloads)
	}

	// A buffer that cannot hold a head is the caller's mistake, named.
	if err := p.ReadHead(bufio.NewReaderSize(bytes.NewReader(stream), 16), &h); err == nil || !strings.Contains(err.Error(), "needs 68") {
		t.Fatalf("ReadHead with a 16-byte bufio.Reader: %v", err)
	}

	// A head cut short is io.ErrUnexpectedEOF, a payload cut short too.
	br = bufio.NewReader(bytes.NewReader(stream[:HeaderSize+20]))
	p = NewParser(RoleClient, Limits{})
	if err := p.ReadHead(br, &h); err != nil {
		t.Fatal(err)
	}
	if err := p.SkipPayload(br); err != nil {
		t.Fatal(err)
	}
	if err := p.ReadHead(br, &h); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut head: %v", err)
	}
	br = bufio.NewReader(bytes.NewReader(stream[:HeaderSize+1]))
	p = NewParser(RoleClient, Limits{})
	if err := p.ReadHead(br, &h); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadPayload(br, nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut payload: %v", err)
	}
}

type iotestOneByte struct{ r io.Reader }

func (o iotestOneByte) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return o.r.Read(b[:1])
}
