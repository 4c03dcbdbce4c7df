package msg

import (
	"fmt"
	"net/netip"

	"github.com/quartet-server/quartet/rdma/deliver"
)

// Version is the only wire version this package speaks; it is the first
// byte of every frame. A peer that speaks another version gets an error
// frame (CodeVersion) and the connection is closed, so a version can
// change the layout freely. An HTTP request sent to a messenger port
// fails here at its first byte ('G' of GET is 0x47).
const Version = 1

// Sizes of a frame's fixed parts (docs/messenger.md has the byte tables).
const (
	// HeaderSize is the fixed header every frame starts with.
	HeaderSize = 16
	// DescriptorSize is the RDMA descriptor that follows the header when
	// FlagRDMA is set.
	DescriptorSize = 52
	// MaxHeadSize is the largest head (header and descriptor) a frame can
	// have: a reader that holds this many bytes of a frame holds its head.
	MaxHeadSize = HeaderSize + DescriptorSize
)

// Header field offsets.
const (
	offVersion = 0
	offType    = 1
	offFlags   = 2
	offLength  = 4
	offTxID    = 8
)

// Descriptor field offsets, from the descriptor's first byte.
const (
	descMode     = 0
	descReason   = 1
	descPort     = 2
	descChannel  = 4
	descOp       = 8
	descAddr     = 16
	descLen      = 24
	descRKey     = 32
	descEndpoint = 36
)

// Type says what a frame is and so which side may send it.
type Type uint8

const (
	// TypeRequest (client → server) asks for exactly one reply with the
	// same transaction id.
	TypeRequest Type = 1
	// TypeReply (server → client) answers the request with its TxID, or,
	// with FlagError and TxID 0, reports a connection error just before
	// the server closes.
	TypeReply Type = 2
	// TypeCompletion (client → server) tells the server that client-reads
	// operations are done: one operation, or with FlagCumulative every
	// operation up to an id, so the server can revoke their exposures. It
	// has no reply.
	TypeCompletion Type = 3
)

func (t Type) String() string {
	switch t {
	case TypeRequest:
		return "request"
	case TypeReply:
		return "reply"
	case TypeCompletion:
		return "completion"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Flags qualify a frame. Each flag is allowed on some types only; a flag
// this version does not define is an error (ErrFlags), never ignored.
type Flags uint16

const (
	// FlagUnordered (request): the reply may overtake, and be overtaken
	// by, replies to other requests of the connection. Without it, the
	// reply is sent after the replies to every request received before it.
	FlagUnordered Flags = 1 << 0
	// FlagError (reply): the request failed; the payload is an error body
	// (code and message), never application data.
	FlagError Flags = 1 << 1
	// FlagRDMA (request, reply, completion): an RDMA descriptor follows the
	// header. On a request it asks for the reply's payload by RDMA; on a
	// reply it says how the payload went (FlagByRDMA) or why it did not
	// (Descriptor.Reason); a completion always carries one.
	FlagRDMA Flags = 1 << 2
	// FlagByRDMA (reply, with FlagRDMA): the payload was delivered by RDMA,
	// not in this frame, whose payload length is 0; the descriptor says
	// where and how much.
	FlagByRDMA Flags = 1 << 3
	// FlagCumulative (completion): every operation of the connection with
	// an id up to and including the descriptor's Op is done (RDS's
	// barrier), not only that one.
	FlagCumulative Flags = 1 << 4

	flagsDefined = FlagUnordered | FlagError | FlagRDMA | FlagByRDMA | FlagCumulative
)

// allowedFlags lists the flags each type may carry.
var allowedFlags = [...]Flags{
	TypeRequest:    FlagUnordered | FlagRDMA,
	TypeReply:      FlagError | FlagRDMA | FlagByRDMA,
	TypeCompletion: FlagRDMA | FlagCumulative,
}

// Has reports whether all of want are set in f.
func (f Flags) Has(want Flags) bool { return f&want == want }

// Header is a frame's head as the parser reports it and the encoder takes
// it: the fixed header and, when Flags has FlagRDMA, the descriptor.
type Header struct {
	Type  Type
	Flags Flags
	// TxID is chosen by the client for a request (never 0, distinct from
	// every other request in flight on the connection) and echoed by its
	// reply. 0 names the connection itself: a reply with FlagError and
	// TxID 0 is a connection error; completions carry 0.
	TxID uint64
	// Length is the number of payload bytes that follow the head.
	Length uint32
	// RDMA is meaningful only when Flags has FlagRDMA.
	RDMA Descriptor
}

// HeadSize is the number of bytes h's head takes on the wire.
func (h *Header) HeadSize() int {
	if h.Flags&FlagRDMA != 0 {
		return MaxHeadSize
	}
	return HeaderSize
}

// Descriptor carries an RDMA operation's fields. Which fields a frame may
// set depends on its type and flags (docs/messenger.md, "RDMA
// descriptor"); every field a use does not name must be zero, so each
// frame has exactly one encoding.
type Descriptor struct {
	// Mode is deliver.ModeServerWrites or deliver.ModeClientReads (the
	// engine's values are the wire's); ModeOff is malformed.
	Mode deliver.Mode
	// Reason is set on a reply that carries its payload inline although
	// its request asked for RDMA (deliver's fallback reasons, whose values
	// are the wire's); 0 everywhere else. The wire allows any non-zero
	// value, so an older client can still read the payload of a reply
	// whose reason it does not know.
	Reason deliver.Reason
	// Channel names the server's RDMA connection the operation used
	// (replies, completions); 0 in a request.
	Channel uint32
	// Op is the operation id, > 0. The client numbers its RDMA requests
	// with strictly increasing ids per connection (RDS); a reply and a
	// completion name the request's id.
	Op uint64
	// Addr, RKey and Len describe remote memory: in a server-writes
	// request the client's buffer (Len is its capacity, > 0); in a
	// client-reads reply the server's exposure. A server-writes reply sets
	// only Len, the number of bytes written.
	Addr uint64
	RKey uint32
	Len  uint64
	// Endpoint is the client's RDMA listener, in requests only; the server
	// dials it (as rdmahttp does). A zero address with a port means "the
	// address this connection comes from".
	Endpoint netip.AddrPort
}

var flagNames = [...]struct {
	f    Flags
	name string
}{
	{FlagUnordered, "unordered"},
	{FlagError, "error"},
	{FlagRDMA, "rdma"},
	{FlagByRDMA, "by-rdma"},
	{FlagCumulative, "cumulative"},
}

func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	s := ""
	for _, fn := range flagNames {
		if f&fn.f != 0 {
			if s != "" {
				s += "|"
			}
			s += fn.name
			f &^= fn.f
		}
	}
	if f != 0 {
		if s != "" {
			s += "|"
		}
		s += fmt.Sprintf("%#04x", uint16(f))
	}
	return s
}
