package stages

// Fate is what becomes of a connection when the stage holding it for a
// request lets go. The writer decides it when a response ends (a processor
// when it drops a request whose client has gone, the runtime when a
// stopping pool leaves requests unserved); the connection's reader carries
// it out, since only the reader closes fds. It travels with the response
// (Response.SetFate) and then with the hand-back (reader.Loop.Return).
//
// Like httpd's conn_state_e, each fate says what comes next.
type Fate uint8

const (
	// FateKeepAlive: the response went out whole and the connection may
	// carry another request. Next, in the reader: drain the unread rest
	// of the request body (if cheap), then read the next request; or
	// close, if the client hung up or the server is draining.
	FateKeepAlive Fate = iota
	// FateLinger: the writer sent the last byte and shut down the sending
	// side (FIN). Next: the reader discards what the client still sends
	// until its FIN or the linger timeout, then closes, so that our close
	// does not become a reset that destroys the response in the client's
	// receive buffer.
	FateLinger
	// FateClose: the connection is broken (a write failed: the peer reset
	// it) or was never answered (its client had gone). Next: the reader
	// closes it at once.
	FateClose
	// FateReset: the client stopped taking the response (write timeout,
	// or slower than the minimum rate). Next: the reader closes with
	// SO_LINGER 0, so the kernel answers with RST and drops every byte
	// still queued, instead of keeping megabytes in an orphaned socket
	// that goes on feeding a client we gave up on (nginx's
	// reset_timedout_connection).
	FateReset
)

var fateNames = [...]string{"keep-alive", "linger", "close", "reset"}

func (f Fate) String() string {
	if int(f) < len(fateNames) {
		return fateNames[f]
	}
	return "fate?"
}

// Phase is where a dispatched request stands while its connection is out
// of its reader's care. The stage that holds the request sets it (the
// reader when it dispatches, the processor as the handler runs, parks and
// returns); the reader reads it to count its connections by state.
type Phase uint32

const (
	// PhaseQueued: dispatched, waiting for a processor place. Next:
	// running, or (client gone) back to the reader unanswered.
	PhaseQueued Phase = iota
	// PhaseRunning: a handler runs with a processor place (computing, or
	// waiting on its own work: a database, a sleep). Next: parked,
	// writing.
	PhaseRunning
	// PhaseParked: the handler waits on its client (request body bytes,
	// or the client reading the response) and holds no place. Next:
	// running, once the wait is over and a place is free.
	PhaseParked
	// PhaseWriting: the handler has returned; the writer is still
	// sending the response. Next: the reader takes the connection back.
	PhaseWriting
)

var phaseNames = [...]string{"queued", "running", "parked", "writing"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "phase?"
}

// Parker is told when a handler is about to wait on its client and when
// the wait is over, so that the processor stage can run another handler
// meanwhile: Pane's design exists so that a processor "won't ever find
// itself blocked on a network write". Response.WaitDrained and request
// bodies that implement ParkingReader call it around each wait that would
// block; a nil Parker is allowed and means nobody is told.
type Parker interface {
	// Park is called just before the caller blocks on the client.
	Park()
	// Unpark is called when the wait is over, before the caller goes on;
	// it may block until the caller is allowed to run again.
	Unpark()
}

// ParkingReader is implemented by request bodies whose Read may wait for
// the client (the reader stage's streaming body): ReadParking is Read,
// with pk told around any wait for bytes that have not arrived yet.
type ParkingReader interface {
	ReadParking(p []byte, pk Parker) (int, error)
}

// DiscardLimit is how many bytes of a request body its handler left
// unread the reader reads and throws away after the response, so that
// the connection can carry the next request (net/http reads 256 KiB for
// the same decision). A longer rest costs more to read than a new
// connection: the connection closes after the response instead.
const DiscardLimit = 256 << 10

// IncomingBody is implemented by request bodies that go on arriving
// while their handler runs (the reader stage's streaming body): Incoming
// reports how many of the body's bytes have still to come from the
// client, and whether that is known: for a counted body it is; for a
// chunked one only once its end has been read. The processor asks it when
// it frames a response: one whose request may have more than
// DiscardLimit to come says the connection closes after it (net/http's
// rule), so that the client does not count on the connection, and a
// client that goes on sending is not cut off before it has read the
// response (FateLinger).
type IncomingBody interface {
	Incoming() (n int64, known bool)
}
