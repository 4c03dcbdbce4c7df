package rdmahttp

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Header names of the protocol (docs/rdma-http.md).
const (
	HeaderMode     = "X-RDMA-Mode"
	HeaderEndpoint = "X-RDMA-Endpoint"
	HeaderOp       = "X-RDMA-Op"
	HeaderBuffer   = "X-RDMA-Buffer"
	HeaderChannel  = "X-RDMA-Channel"
	HeaderWritten  = "X-RDMA-Written"
	HeaderRead     = "X-RDMA-Read"
	HeaderFallback = "X-RDMA-Fallback"
	HeaderDigest   = "Repr-Digest"
)

// Mode is how a body travels.
type Mode uint8

const (
	ModeOff          Mode = iota // plain HTTP
	ModeServerWrites             // the server RDMA-Writes into the client's buffer
	ModeClientReads              // the client RDMA-Reads the server's exposure
)

func (m Mode) String() string {
	switch m {
	case ModeServerWrites:
		return "server-writes"
	case ModeClientReads:
		return "client-reads"
	}
	return "off"
}

// ParseMode parses a mode name as the headers and flags spell it.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "server-writes":
		return ModeServerWrites, nil
	case "client-reads":
		return ModeClientReads, nil
	case "off", "":
		return ModeOff, nil
	}
	return ModeOff, fmt.Errorf("rdmahttp: unknown mode %q (server-writes, client-reads, off)", s)
}

// Fallback reasons, the first word of X-RDMA-Fallback.
const (
	reasonBadRequest      = "bad-request"
	reasonForeignEndpoint = "foreign-endpoint"
	reasonConnect         = "connect-failed"
	reasonBufferTooSmall  = "buffer-too-small"
	reasonRegister        = "register-failed"
	reasonPost            = "post-failed"
	reasonNoRDMA          = "no-rdma"
	reasonTooLarge        = "too-large"
	reasonUnsupported     = "unsupported"
	// reasonTooManyExposures: the client holds maxExposuresPerChannel
	// unconfirmed client-reads exposures already.
	reasonTooManyExposures = "too-many-exposures"
	// reasonRDMAFailed: server-writes was posted, but its completion was
	// an error (the detail is the status) or never came; the header was
	// still held, so the body follows over TCP in the same response.
	reasonRDMAFailed = "rdma-failed"
)

// maxExposuresPerChannel bounds a client's unconfirmed exposures: an
// honest client confirms each before its next request on the channel,
// so this only stops one that never does from pinning memory.
const maxExposuresPerChannel = 64

// region is an (address, key, length) triple as X-RDMA-Buffer and
// X-RDMA-Read carry it.
type region struct {
	Addr uint64
	RKey uint32
	Len  int64
}

func (r region) String() string {
	return fmt.Sprintf("addr=0x%x, rkey=0x%x, len=%d", r.Addr, r.RKey, r.Len)
}

func parseRegion(s string) (region, error) {
	var r region
	var have [3]bool
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return r, fmt.Errorf("region %q: want key=value", s)
		}
		var err error
		switch k {
		case "addr":
			r.Addr, err = strconv.ParseUint(v, 0, 64)
			have[0] = true
		case "rkey":
			var k32 uint64
			k32, err = strconv.ParseUint(v, 0, 32)
			r.RKey = uint32(k32)
			have[1] = true
		case "len":
			r.Len, err = strconv.ParseInt(v, 10, 64)
			if err == nil && r.Len < 0 {
				err = errors.New("negative")
			}
			have[2] = true
		default:
			return r, fmt.Errorf("region %q: unknown key %q", s, k)
		}
		if err != nil {
			return r, fmt.Errorf("region %q: %s: %w", s, k, err)
		}
	}
	if !have[0] || !have[1] || !have[2] {
		return r, fmt.Errorf("region %q: need addr, rkey and len", s)
	}
	return r, nil
}

// request is what a GET asked for in its X-RDMA-* headers.
type request struct {
	mode     Mode
	endpoint netip.AddrPort
	op       uint64
	buf      region // server-writes
}

// parseRequest reads the request's RDMA headers; get returns a header's
// value or "". ModeOff with a nil error means the client did not ask.
func parseRequest(get func(string) string) (request, error) {
	var q request
	m := get(HeaderMode)
	if m == "" {
		return q, nil
	}
	mode, err := ParseMode(m)
	if err != nil || mode == ModeOff {
		return q, fmt.Errorf("%s: %q", HeaderMode, m)
	}
	q.mode = mode
	if q.endpoint, err = netip.ParseAddrPort(get(HeaderEndpoint)); err != nil {
		return q, fmt.Errorf("%s: %w", HeaderEndpoint, err)
	}
	if q.op, err = strconv.ParseUint(get(HeaderOp), 10, 64); err != nil || q.op == 0 {
		return q, fmt.Errorf("%s: want a decimal id > 0", HeaderOp)
	}
	if mode == ModeServerWrites {
		if q.buf, err = parseRegion(get(HeaderBuffer)); err != nil {
			return q, fmt.Errorf("%s: %w", HeaderBuffer, err)
		}
	}
	return q, nil
}

// digestValue formats a sha-256 Repr-Digest (RFC 9530).
func digestValue(sum [sha256.Size]byte) string {
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

// parseDigest extracts the sha-256 member of a Repr-Digest; ok is false
// when there is none.
func parseDigest(v string) (sum []byte, ok bool, err error) {
	for _, m := range strings.Split(v, ",") {
		k, val, found := strings.Cut(strings.TrimSpace(m), "=")
		if !found || k != "sha-256" {
			continue
		}
		val = strings.TrimSuffix(strings.TrimPrefix(val, ":"), ":")
		b, err := base64.StdEncoding.DecodeString(val)
		if err != nil || len(b) != sha256.Size {
			return nil, true, fmt.Errorf("%s: bad sha-256 %q", HeaderDigest, val)
		}
		return b, true, nil
	}
	return nil, false, nil
}

// The RDMA message (docs/rdma-http.md): 16 bytes, big endian.
const (
	msgLen          = 16
	msgMagic uint32 = 'Q'<<24 | 'D'<<16 | 'O'<<8 | 'N'
	// msgWritten: server → client, after the Writes of server-writes.
	msgWritten uint32 = 1
	// msgReadDone: client → server, after the Reads of client-reads.
	msgReadDone uint32 = 2
)

func putMsg(b []byte, kind uint32, op uint64) {
	binary.BigEndian.PutUint32(b[0:], msgMagic)
	binary.BigEndian.PutUint32(b[4:], kind)
	binary.BigEndian.PutUint64(b[8:], op)
}

func parseMsg(b []byte) (kind uint32, op uint64, ok bool) {
	if len(b) < msgLen || binary.BigEndian.Uint32(b) != msgMagic {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint64(b[8:]), true
}

// Connect private data: "QRT1" and the server's channel id.
const privLen = 8

var privMagic = [4]byte{'Q', 'R', 'T', '1'}

func putPriv(id uint32) []byte {
	b := make([]byte, privLen)
	copy(b, privMagic[:])
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

func parsePriv(b []byte) (uint32, bool) {
	if len(b) < privLen || [4]byte(b[:4]) != privMagic {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[4:]), true
}

// Message area layout, shared by both sides: one page per QP, receive
// slots first, then a ring of send slots. 32 receives outlast any burst
// of confirmations a QP sees between two turns of its loop; the send
// ring is larger than the send queue's share of messages, so a slot is
// never reused while its Send is queued.
const (
	recvSlots = 32
	sendSlots = 128
	msgArea   = (recvSlots + sendSlots) * msgLen

	// Work-request id tags: receives carry (channel, slot); everything
	// else is a plain counter below tagRecv.
	tagRecv uint64 = 1 << 63
	// tagChan marks unsignaled Writes: only a failure completes them, and
	// the low 32 bits name the channel to retire.
	tagChan uint64 = 1 << 62
)

func recvID(ch uint32, slot int) uint64 { return tagRecv | uint64(ch)<<16 | uint64(slot) }

func splitRecvID(id uint64) (ch uint32, slot int) {
	return uint32(id>>16) & 0xffffffff, int(id & 0xffff)
}
