package msg

import "math"

// DefaultMaxPayload bounds one frame's payload when Limits.MaxPayload is
// 0: 64 MiB, the largest echo the tests send. A reader that takes a
// payload into a buffer of its own allocates up to this much per frame
// in flight, so a server with many connections wants it no larger than
// its biggest real message.
const DefaultMaxPayload = 64 << 20

// MaxErrorMessage bounds an error frame's message. It is fixed, not a
// setting: an error body is metadata, and a fixed bound lets a receiver
// read it into a small buffer whatever MaxPayload is. PutErrorFrame cuts
// longer messages.
const MaxErrorMessage = 1024

// MaxErrorFrame is the size of the largest error frame: a buffer this
// large always holds what PutErrorFrame writes.
const MaxErrorFrame = HeaderSize + 2 + MaxErrorMessage

// Limits bounds what a parser accepts; the zero value takes the defaults.
//
// There is one setting, not a frame limit and a payload limit: a frame
// is its payload plus a head of at most MaxHeadSize fixed bytes, so the
// largest frame is MaxFrame() and a second setting could only disagree
// with the first.
type Limits struct {
	// MaxPayload bounds a frame's payload in bytes; over it the parser
	// returns ErrPayloadTooLarge (code CodeTooLarge). Error replies are
	// bounded by MaxErrorMessage instead, so even a peer with a small
	// limit learns why its request failed. 0 means
	// DefaultMaxPayload; values above the wire's 32-bit length field mean
	// no limit but the wire's.
	MaxPayload int
}

// Payload returns the payload limit in effect.
func (l Limits) Payload() uint32 {
	switch {
	case l.MaxPayload <= 0:
		return DefaultMaxPayload
	case uint64(l.MaxPayload) > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(l.MaxPayload)
}

// MaxFrame returns the largest frame, head included, the limits let
// through.
func (l Limits) MaxFrame() int64 { return int64(MaxHeadSize) + int64(l.Payload()) }
