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

	// Per-connection module state and clean-ups, set by pre-connection
	// hooks (in the reader loop, before the first request) and read by
	// whichever stage owns the connection afterwards.
	values   []any
	cleanups []func()
}

// SetValue attaches v to the connection under key (a module's index).
// Call it from a pre-connection hook, or from the stage that owns the
// connection.
func (c *Conn) SetValue(key int, v any) {
	for len(c.values) <= key {
		c.values = append(c.values, nil)
	}
	c.values[key] = v
}

// Value returns what SetValue attached under key, or nil.
func (c *Conn) Value(key int) any {
	if key < len(c.values) {
		return c.values[key]
	}
	return nil
}

// OnClose registers fn to run when the connection's fd is closed, in the
// reader loop, last registered first (mod_rdma's connection clean-up: an
// RDMA connection cached for this client is torn down here).
func (c *Conn) OnClose(fn func()) { c.cleanups = append(c.cleanups, fn) }

// RunCleanups runs the clean-ups registered with OnClose. The reader calls
// it after closing the fd.
func (c *Conn) RunCleanups() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
	c.cleanups, c.values = nil, nil
}
