package bench

import "net/netip"

// connState is where a client connection stands.
type connState uint8

const (
	// csIdle: no socket; a (re)connect is due at retryAt. Next: csConnecting.
	csIdle connState = iota
	// csConnecting: non-blocking connect in progress, waiting for EPOLLOUT.
	// Next: csOpen, or csIdle on failure.
	csConnecting
	// csOpen: connected, requests flow. Next: csIdle on error or close.
	csOpen
	// csDone: the run is over for this connection. Terminal.
	csDone
)

func (s connState) String() string {
	switch s {
	case csIdle:
		return "idle"
	case csConnecting:
		return "connecting"
	case csOpen:
		return "open"
	case csDone:
		return "done"
	}
	return "invalid"
}

// inflight is one request sent (or queued for writing) and not yet answered.
type inflight struct {
	intended int64 // when it should have been sent (open loop), ns since run start
	sent     int64 // when it was queued, ns since run start
	req      uint16
	measured bool // sent after warm-up: its response is recorded
}

// conn is one client connection. It belongs to exactly one loop and is only
// touched by that loop's goroutine.
type conn struct {
	idx   uint32 // position in loop.conns, in the epoll data word
	gen   uint32 // bumped on every close, so stale events are dropped
	fd    int
	state connState
	src   netip.Addr // source address to bind, if valid

	// sp is the protocol the connection speaks (speaker.go).
	sp speaker
	// ring holds the in-flight requests in send order: responses pop from
	// head; the last unsent entries are not (fully) written yet, the first
	// of them from byte wOff on.
	ring   []inflight
	head   int
	n      int
	unsent int
	wOff   int
	// wantOut: EPOLLOUT is armed because a write hit EAGAIN.
	wantOut bool

	next    int   // position in the mix schedule
	due     int64 // open loop: intended time of the next request
	heapIdx int   // open loop: position in loop.timers, -1 when absent
	late    bool  // open loop: due passed while the pipeline was full
	retryAt int64 // csIdle: when to reconnect

	// Set by the parser callbacks during one feed, acted on after it.
	closing    bool // server sent Connection: close
	unsolicted bool // a response arrived with nothing in flight
	answered   int  // responses completed during this feed
	l          *loop
}

func (c *conn) push(f inflight) {
	c.ring[(c.head+c.n)%len(c.ring)] = f
	c.n++
	c.unsent++
}

func (c *conn) oldest() *inflight { return &c.ring[c.head] }

// noBody implements respSink.
func (c *conn) noBody() bool {
	if c.n == 0 {
		return false
	}
	return c.l.reqs[c.ring[c.head].req].noBody
}

// done implements respSink: it retires the oldest request.
func (c *conn) done(status int, close bool, size int64) {
	if c.n == 0 || c.n == c.unsent {
		c.unsolicted = true
		return
	}
	f := c.ring[c.head]
	c.head = (c.head + 1) % len(c.ring)
	c.n--
	c.answered++
	c.closing = c.closing || close
	c.l.record(&f, status, size)
}
