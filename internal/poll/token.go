package poll

// Token is the 64-bit word registered with an fd and returned with each of
// its events. Every loop in Quartet packs it the same way:
//
//	bit 63    61 60           32 31                0
//	   | kind   | generation     | slot             |
//
// The slot is the registration's index in its loop's table (a
// connection, a response record, a completion source). The generation is
// the slot's occupant: the loop bumps it whenever the slot is reused, so an
// event collected for an occupant that has gone since is recognised as
// stale and dropped, even if the kernel has given the same fd number to a
// new connection (Go's runtime netpoll does the same with fdseq; nginx
// with the instance bit in its event pointer). The kind says which table
// the slot indexes.
type Token uint64

// Kind says what a registration is, and so which table its slot indexes.
type Kind uint8

// The kinds of registration, for every loop; one list so that no two
// loops' kinds collide and the loop core knows its own.
const (
	// KindConn is a connection's socket: in a reader, the connection's
	// slot; in a writer, a response record's slot (while its socket's
	// one-shot writability is armed); in the load generator, a client
	// connection.
	KindConn Kind = iota
	// KindWaker is the loop's wake-up fd (stages.LoopWaker); the loop core
	// consumes its events.
	KindWaker
	// KindSource is a writer's completion source (an RDMA completion
	// channel, an rdma_cm event channel).
	KindSource
	// KindListener is a listening socket.
	KindListener
)

// Field widths. A generation is compared only for equality and wraps; 2^29
// reuses of one slot between an event's collection and its dispatch (one
// loop turn) cannot happen.
const (
	slotBits  = 32
	genBits   = 29
	kindShift = slotBits + genBits
	genMask   = 1<<genBits - 1
)

// MakeToken packs a registration's kind, generation and slot. Only the low
// 29 bits of gen are kept, and the low 32 bits of slot.
func MakeToken(k Kind, gen uint32, slot int) Token {
	return Token(uint64(k)<<kindShift | uint64(gen&genMask)<<slotBits | uint64(uint32(slot)))
}

// Kind is the token's kind.
func (t Token) Kind() Kind { return Kind(t >> kindShift) }

// Slot is the token's slot.
func (t Token) Slot() int { return int(uint32(t)) }

// Matches reports whether t was made for generation gen of its slot (the
// generations compared modulo 2^29, as MakeToken keeps them).
func (t Token) Matches(gen uint32) bool {
	return uint32(t>>slotBits)&genMask == gen&genMask
}
