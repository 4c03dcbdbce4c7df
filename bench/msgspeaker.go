package bench

import (
	"bytes"
	"errors"

	"github.com/quartet-server/quartet/protocol/msg"
)

// A messenger reply has no HTTP status; conn.done and loop.record take
// one of these in its place, so both protocols share the ring and the
// figures.
const (
	// replyOK: the reply names the oldest request's transaction id and
	// carries back the payload sent.
	replyOK = 0
	// replyError: an error frame (FlagError) answered the request.
	replyError = -1
	// replyMismatch: the reply names another transaction id, carries
	// another payload, or carries flags never asked for.
	replyMismatch = -2
)

// msgSpeaker speaks the messenger (protocol/msg) to an echo dispatcher:
// every request carries the run's payload and its reply must carry it
// back. Each ring slot has its own frame head (only the transaction id
// differs from slot to slot); the payload is the run's, shared and never
// written, so a request is two iovecs and no copy.
type msgSpeaker struct {
	payload []byte   // the run's request payload, read-only
	heads   []byte   // msg.HeaderSize bytes per ring slot
	txids   []uint64 // per ring slot, the id its head carries
	txid    uint64   // the last transaction id used on this connection

	p msg.Parser
	h msg.Header
	// carry holds the start of a head split between reads: Next needs a
	// whole head at once, and one is at most MaxHeadSize bytes.
	carry  [msg.MaxHeadSize]byte
	nCarry int
	// The reply being read (inFrame): its outcome so far, how much of its
	// payload was compared, whether it answers a request (an error frame
	// with transaction id 0 is about the connection and answers none).
	inFrame bool
	status  int
	off     int
	retires bool
}

func newMsgSpeaker(payload []byte, pipeline int) *msgSpeaker {
	s := &msgSpeaker{payload: payload, heads: make([]byte, pipeline*msg.HeaderSize),
		txids: make([]uint64, pipeline)}
	s.reset()
	return s
}

func (s *msgSpeaker) queued(_ *conn, i int) {
	// Transaction ids are never 0 (that names the connection) and never
	// repeat on a connection, so a reply cannot be taken for an older one.
	s.txid++
	h := msg.Header{Type: msg.TypeRequest, TxID: s.txid, Length: uint32(len(s.payload))}
	// PutHead fails only on a header this package got wrong (validate
	// bounds the payload); the frame then goes out as it was.
	_, _ = msg.PutHead(s.heads[i*msg.HeaderSize:], &h)
	s.txids[i] = s.txid
}

func (s *msgSpeaker) wire(_ *conn, i int) (head, body []byte) {
	return s.heads[i*msg.HeaderSize : (i+1)*msg.HeaderSize], s.payload
}

func (s *msgSpeaker) feed(c *conn, b []byte) error {
	for len(b) > 0 {
		if !s.inFrame {
			var n int
			var err error
			if s.nCarry == 0 {
				n, err = s.p.Next(b, &s.h)
				if errors.Is(err, msg.ErrNeedMore) {
					s.nCarry = copy(s.carry[:], b)
					return nil
				}
				b = b[min(n, len(b)):]
			} else {
				old := s.nCarry
				k := copy(s.carry[old:], b)
				n, err = s.p.Next(s.carry[:old+k], &s.h)
				if errors.Is(err, msg.ErrNeedMore) {
					// carry holds MaxHeadSize bytes, which always hold a
					// head: b was all taken.
					s.nCarry += k
					return nil
				}
				s.nCarry = 0
				b = b[max(n-old, 0):]
			}
			if err != nil {
				return errParse
			}
			if !s.start(c) {
				return errParse
			}
		}
		chunk := s.p.Payload(b)
		b = b[len(chunk):]
		if s.status == replyOK {
			if s.off+len(chunk) > len(s.payload) || !bytes.Equal(chunk, s.payload[s.off:s.off+len(chunk)]) {
				s.status = replyMismatch
			}
		}
		s.off += len(chunk)
		if s.p.Remaining() == 0 {
			s.inFrame = false
			if s.retires {
				c.done(s.status, false, int64(s.h.HeadSize()+int(s.h.Length)))
			}
		}
	}
	return nil
}

// start judges the head just parsed against the oldest request in
// flight; it returns false for a reply nothing was sent for.
func (s *msgSpeaker) start(c *conn) bool {
	s.inFrame, s.off, s.status, s.retires = true, 0, replyOK, true
	if s.h.Flags.Has(msg.FlagError) && s.h.TxID == 0 {
		// The server's last word before it closes: counted, and the
		// requests in flight are lost when it does.
		s.retires = false
		c.l.stats.Errors.Reply++
		return true
	}
	if c.n == 0 || c.n == c.unsent {
		return false
	}
	switch {
	case s.h.Flags.Has(msg.FlagError):
		s.status = replyError
	case s.h.Flags != 0 || s.h.TxID != s.txids[c.head] || int(s.h.Length) != len(s.payload):
		s.status = replyMismatch
	}
	return true
}

func (s *msgSpeaker) eof() (bool, int, int64) {
	s.reset()
	return false, 0, 0
}

func (s *msgSpeaker) reset() {
	// A parser's errors are final; a new connection gets a new one. The
	// default limit (not the payload's size) lets a too-long echo be
	// read and counted as a mismatch rather than break the stream.
	s.p = msg.NewParser(msg.RoleClient, msg.Limits{})
	s.nCarry, s.inFrame = 0, false
}
