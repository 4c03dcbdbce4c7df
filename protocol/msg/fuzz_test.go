package msg

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fuzzLimits is small enough that fuzz inputs reach ErrPayloadTooLarge.
var fuzzLimits = Limits{MaxPayload: 4096}

// event is one frame as a parse run saw it.
type event struct {
	h       Header
	payload string
}

// parseStream parses data as one connection's byte stream that arrives
// step bytes at a time, taking whatever each arrival allows, the way a
// reader loop does. It returns the frames seen and how the stream ended:
// "" (cleanly between frames), "need-more" (inside a frame) or an error.
// It fails t on any breach of the parser's contract.
func parseStream(t *testing.T, role Role, data []byte, step int) ([]event, string) {
	p := NewParser(role, fuzzLimits)
	var evs []event
	start := 0
	for end := min(step, len(data)); ; end = min(end+step, len(data)) {
		for {
			if p.Remaining() > 0 {
				b := p.Payload(data[start:end])
				if len(b) == 0 {
					break
				}
				if &b[0] != &data[start] {
					t.Fatalf("Payload copied")
				}
				evs[len(evs)-1].payload += string(b)
				start += len(b)
				continue
			}
			var h Header
			n, err := p.Next(data[start:end], &h)
			if errors.Is(err, ErrNeedMore) {
				if n != 0 {
					t.Fatalf("ErrNeedMore consumed %d bytes", n)
				}
				break
			}
			if err != nil {
				if n != 0 || !strings.HasPrefix(err.Error(), "quartet: msg: ") || CodeOf(err) == CodeInternal {
					t.Fatalf("error %v (code %v) after consuming %d", err, CodeOf(err), n)
				}
				return evs, err.Error()
			}
			if n != h.HeadSize() || n > end-start {
				t.Fatalf("consumed %d of %d bytes for a %d-byte head", n, end-start, h.HeadSize())
			}
			// One encoding per head: what was accepted re-encodes to the
			// very bytes it came from.
			var out [MaxHeadSize]byte
			if m, err := PutHead(out[:], &h); err != nil || !bytes.Equal(out[:m], data[start:start+n]) {
				t.Fatalf("PutHead(%+v) = % x, %v; parsed from % x", h, out[:m], err, data[start:start+n])
			}
			if h.Flags.Has(FlagError) && h.Length > 2+MaxErrorMessage || !h.Flags.Has(FlagError) && h.Length > fuzzLimits.Payload() {
				t.Fatalf("accepted a %d-byte payload", h.Length)
			}
			start += n
			evs = append(evs, event{h: h})
		}
		if end == len(data) {
			break
		}
	}
	if start < len(data) || p.Remaining() > 0 {
		return evs, "need-more"
	}
	return evs, ""
}

// FuzzParse feeds arbitrary bytes to both sides' parsers, all at once and
// in pieces of every size the fuzzer picks: the parser must never panic
// or over-read, must find the same frames and end the same way however
// the bytes arrive, and must accept only heads that PutHead would write.
//
//	go test ./protocol/msg -run '^$' -fuzz FuzzParse -fuzztime 5000000x
func FuzzParse(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed, uint8(1))
		f.Add(seed, uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		for _, role := range []Role{RoleServer, RoleClient} {
			whole, wholeEnd := parseStream(t, role, data, max(1, len(data)))
			parts, partsEnd := parseStream(t, role, data, int(step%80)+1)
			if wholeEnd != partsEnd || fmt.Sprint(whole) != fmt.Sprint(parts) {
				t.Fatalf("%s, at once: %v, %q\nin %d-byte pieces: %v, %q", role, whole, wholeEnd, int(step%80)+1, parts, partsEnd)
			}
		}
	})
}

func fuzzSeeds() [][]byte {
	return [][]byte{
		{},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		raw(Header{Type: TypeRequest, TxID: 1, Length: 5}, 'h', 'e', 'l', 'l', 'o'),
		bytes.Join([][]byte{
			raw(Header{Type: TypeRequest, Flags: FlagUnordered, TxID: 1, Length: 2}, 'a', 'b'),
			raw(Header{Type: TypeRequest, Flags: FlagRDMA, TxID: 2, RDMA: swReq}),
			raw(Header{Type: TypeCompletion, Flags: FlagRDMA | FlagCumulative, RDMA: crDone}),
		}, nil),
		bytes.Join([][]byte{
			raw(Header{Type: TypeReply, TxID: 1, Length: 1}, 'x'),
			raw(Header{Type: TypeReply, Flags: FlagRDMA | FlagByRDMA, TxID: 2, RDMA: crGrant}),
			raw(Header{Type: TypeReply, Flags: FlagRDMA, TxID: 3, Length: 1, RDMA: fallback}, 'y'),
			raw(Header{Type: TypeReply, Flags: FlagError, Length: 4}, 0, 1, 'n', 'o'),
		}, nil),
		raw(Header{Type: TypeRequest, TxID: 1, Length: 5000}),
	}
}
