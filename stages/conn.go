package stages

import (
	"net/netip"
	"time"
)

// Conn is one accepted client connection. Exactly one stage owns it at any
// moment, and only its owner may touch its mutable fields; ownership passes
// with the hand-off through a stage queue, never by sharing.
//
// The file descriptor is closed only by the reader loop the connection
// belongs to, and only while that loop owns it. So an fd number cannot be
// reused by the kernel while any other stage still holds the Conn: a
// response queued for a connection whose peer has gone writes into the old,
// still-open socket (and fails with EPIPE), never into a new connection that
// happens to get the same number.
type Conn struct {
	ID       uint64 // unique for the server's lifetime; fds are reused, IDs are not
	FD       int
	Remote   netip.AddrPort
	Local    netip.AddrPort
	Accepted time.Time

	Reader int // index of the reader loop that owns reading and closing
	Writer int // index of the writer loop that owns writing

	// RSlot is the connection's place in its reader loop's table. Only
	// that loop writes it; others pass it back unchanged.
	RSlot int32
}
