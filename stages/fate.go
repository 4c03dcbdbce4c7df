package stages

// Fate is what becomes of a connection when the stage holding it for a
// request lets go. The writer decides it when a response ends (the runtime
// when a stopping pool leaves requests unserved); the connection's reader
// carries it out, since only the reader closes fds. It travels with the
// response (Response.SetFate) and then with the hand-back
// (reader.Loop.Return).
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
	// FateClose: the connection is broken (a write failed or timed out).
	// Next: the reader closes it at once.
	FateClose
)

var fateNames = [...]string{"keep-alive", "linger", "close"}

func (f Fate) String() string {
	if int(f) < len(fateNames) {
		return fateNames[f]
	}
	return "fate?"
}
