package reader

import (
	"errors"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// A framed protocol's connection (stages.Protocol) goes through the same
// states as an HTTP/1.1 one, with the protocol's parser in place of the
// HTTP parser:
//
//	header  the head is parsed in place from the read buffer (zero-copy:
//	        the parser decodes it into its own record, req.Frame);
//	body    the body the head announces is read whole into the same
//	        buffer before dispatch, however large: the protocol's parser
//	        has bounded it already (msg.Limits), and its reply may alias
//	        it (an echo copies nothing). A body that does not fit behind
//	        the head gets a buffer of its own size, as a preread HTTP
//	        body does; it goes back to the garbage collector, not to the
//	        loop's pool, when the connection goes idle;
//	out     dispatched; the next request is parsed when the connection
//	        comes back (one request in the stages at a time, so replies
//	        go in request order and never interleave).
//
// A parser error, or a head and body not received within the header
// timeout, is answered with the protocol's Reject frame and a lingering
// close, never by waiting.

// errFramedRefused stands for an HTTP status the loop found for a framed
// connection other than a timeout (the read buffer overflowing, which a
// framed head, bounded by its protocol, should never cause).
var errFramedRefused = errors.New("quartet: reader: request refused")

// framedReason is the error a framed protocol is given for an HTTP status
// the loop's shared paths decided on.
func framedReason(status int) error {
	if status == 408 {
		return stages.ErrHeadTimeout
	}
	return errFramedRefused
}

// parseFramed parses the head of a framed protocol's request in the
// connection's buffer and dispatches the request once its body is
// buffered too. Like parse, it reports true when the connection left the
// header and body states.
func (l *Loop) parseFramed(slot int32) bool {
	rc := l.conns[slot]
	id := rc.c.Protocol
	if int(id) >= len(l.cfg.Protocols) || l.cfg.Protocols[id] == nil {
		l.close(slot) // a listener marked it with a protocol nobody serves: a wiring bug
		return true
	}
	if rc.framer == nil || rc.framerOf != id {
		rc.framer, rc.framerOf = l.cfg.Protocols[id].NewParser(), id
	}
	start := time.Now()
	rc.req.Conn = rc.c // the parser may keep connection state there
	n, bodyLen, err := rc.framer.Head(rc.buf[rc.start:rc.end], &rc.req)
	if err == stages.ErrNeedMore {
		return false
	}
	if l.counters != nil {
		l.counters.Service.Record(time.Since(start))
	}
	if err != nil {
		l.reject(slot, err)
		return true
	}
	rc.hdrLen = n
	rc.req.WireBytes.Store(int64(n))
	rc.seq++
	rc.req.Conn, rc.req.Seq = rc.c, rc.seq
	rc.req.ContentLength = bodyLen
	if rc.req.Received.IsZero() {
		rc.req.Received = l.core.Now()
	}
	rc.remaining = bodyLen
	if buffered := rc.end - rc.start - n; int64(buffered) < bodyLen {
		// The head is decoded already (req.Frame is the parser's, not the
		// buffer's), so the bytes may move: a buffer of the frame's size
		// if this one has no room behind them.
		if need := n + int(bodyLen); len(rc.buf)-rc.start < need {
			nb := make([]byte, need)
			rc.end = copy(nb, rc.buf[rc.start:rc.end])
			rc.buf, rc.start = nb, 0
		}
		rc.state = stateBody // parse dispatches once the body is in
		return false
	}
	body := rc.buf[rc.start+n : rc.start+n+int(bodyLen)]
	rc.small.Reset(body)
	rc.req.Body, rc.req.BodyBytes = &rc.small, body
	rc.req.WireBytes.Add(bodyLen)
	rc.consumed = n + int(bodyLen)
	rc.remaining = 0
	l.dispatch(slot)
	return true
}

// reject answers a framed connection's current request with its
// protocol's error frame through the writer; the connection comes back
// for a lingering close, as after fail.
func (l *Loop) reject(slot int32, err error) {
	rc := l.conns[slot]
	rc.state = stateOut
	rc.feeding = false
	rc.peerClosed = true // no further request will be read
	rc.c.SetPhase(stages.PhaseWriting)
	l.clearTimer(slot)
	l.cfg.Reject(rc.c, &rc.req, err)
}
