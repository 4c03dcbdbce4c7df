package bench

// Result.Protocol's values.
const (
	protoHTTP = "http"
	protoMsg  = "msg"
)

// speaker is the protocol a connection speaks: how the requests in its
// ring look on the wire and how what comes back is parsed. The loop, the
// ring, the open-loop schedule and the figures are the protocol's
// neither: HTTP and the messenger share them. Each connection has its own
// speaker, made once before the run, so the per-request path calls
// through an interface that holds a pointer and allocates nothing.
type speaker interface {
	// queued is called when a request enters ring slot i of c: a
	// messenger frame gets its transaction id there.
	queued(c *conn, i int)
	// wire returns the bytes of the request in ring slot i of c: a head
	// and a body, written one after the other (either may be empty). It
	// is called again for a request that was only partly written, so it
	// must return the same bytes until the slot is reused.
	wire(c *conn, i int) (head, body []byte)
	// feed parses b, calling c.done for each complete response in order.
	// An error means the stream is broken: the connection is dropped.
	feed(c *conn, b []byte) error
	// eof reports whether the server's close completes the current
	// response (a body delimited by close), of size bytes, and resets the
	// speaker for a new connection.
	eof() (complete bool, status int, size int64)
	// reset forgets a dropped connection's partial response.
	reset()
}

// httpSpeaker speaks HTTP/1.1: the requests are the mix's, serialised
// once for the whole run and shared by every connection.
type httpSpeaker struct {
	p respParser
}

func (*httpSpeaker) queued(*conn, int) {}

func (*httpSpeaker) wire(c *conn, i int) (head, body []byte) {
	return c.l.reqs[c.ring[i].req].raw, nil
}

func (s *httpSpeaker) feed(c *conn, b []byte) error { return s.p.feed(b, c) }

func (s *httpSpeaker) eof() (bool, int, int64) { return s.p.eof() }

func (s *httpSpeaker) reset() { s.p.reset() }
