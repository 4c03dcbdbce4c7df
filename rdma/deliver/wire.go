package deliver

import "encoding/binary"

// The RDMA message (docs/rdma-http.md, "RDMA messages"): one 16-byte
// Send, both directions, big endian:
//
//	magic "QDON" (4) | kind (uint32) | operation id (uint64)
const (
	msgLen          = 16
	msgMagic uint32 = 'Q'<<24 | 'D'<<16 | 'O'<<8 | 'N'
	// msgWritten: server → client, behind the Writes of server-writes;
	// RC ordering places the bytes before it, so it is the client's proof.
	msgWritten uint32 = 1
	// msgReadDone: client → server, after the Reads of client-reads.
	msgReadDone uint32 = 2
	// msgBarrier: server → client, a signalled Send that carries no news
	// for the client; its completion tells the server that everything
	// posted before it on the queue pair is done (sparse signalling's
	// reclaim when the channel goes idle). Clients ignore it; its op id
	// is 0.
	msgBarrier uint32 = 3
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

// Message areas: one per QP on each side, receive slots first, then a
// ring of send slots.
//
// iWARP has no RNR retry: a Send that finds no posted receive kills the
// connection, so each side posts enough receives for what the other may
// send before it reposts. The server receives read-done messages, at
// most one per client-reads request in flight; serverRecvSlots covers
// an HTTP client (one request at a time) many times over. The client
// receives written messages and barriers. Written messages answer its
// own server-writes requests, which Endpoint.Expect caps at
// MaxWrittenInFlight, and the server posts at most one barrier between
// two units (a barrier resets the count it waits on), so in any stretch
// of what the client has not processed yet there are at most
// MaxWrittenInFlight written messages and one more barrier than that:
// 2*MaxWrittenInFlight+1 receives. The 31 to spare are for messages
// that come after their wait gave up (later than the operation timeout).
//
// The server's send ring is as long as its send queue: a slot is
// rewritten only after sqDepth later messages, never while its Send can
// still be queued, inline or not.
const (
	serverRecvSlots = 32
	serverSendSlots = sqDepth
	clientRecvSlots = 512
	clientSendSlots = 128

	// MaxWrittenInFlight bounds an Endpoint's server-writes operations
	// whose written message is awaited (see above).
	MaxWrittenInFlight = (clientRecvSlots - 32) / 2
)

func msgArea(recvSlots, sendSlots int) int { return (recvSlots + sendSlots) * msgLen }

// Work-request ids of the server. A receive carries (channel, slot); a
// send-queue request carries (channel, the low 32 bits of its unit's
// sequence number), so a completion names the unit it finishes without a
// table lookup per request: the channel's units are in sequence order
// and far fewer than 2^31 are ever outstanding, so the low bits identify
// one.
const (
	tagRecv uint64 = 1 << 63
	tagSend uint64 = 1 << 62
	// chanIDMask bounds channel ids to the 30 bits a send id has for them.
	chanIDMask = 1<<30 - 1
)

func recvID(ch uint32, slot int) uint64 { return tagRecv | uint64(ch)<<16 | uint64(slot) }

func splitRecvID(id uint64) (ch uint32, slot int) {
	return uint32(id>>16) & 0xffffffff, int(id & 0xffff)
}

func sendID(ch uint32, seq uint64) uint64 {
	return tagSend | uint64(ch&chanIDMask)<<32 | uint64(uint32(seq))
}

func splitSendID(id uint64) (ch uint32, seqLow uint32) {
	return uint32(id>>32) & chanIDMask, uint32(id)
}
