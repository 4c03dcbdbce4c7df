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

// Message area layout, shared by both sides: one page per QP, receive
// slots first, then a ring of send slots. 32 receives outlast any burst
// of confirmations a QP sees between two turns of its loop; the send
// ring is larger than the send queue's share of messages in flight (a
// slot is reused only after sendSlots later messages, and the server
// signals at least every sqDepth/2 work requests), so a slot is never
// rewritten while its Send may still read it. Sends are posted inline
// where the device takes 16 bytes inline, which makes that moot there.
const (
	recvSlots = 32
	sendSlots = 128
	msgArea   = (recvSlots + sendSlots) * msgLen
)

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
