package reader

import (
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

var ioEOF = io.EOF

// The errors a streamed body's Read returns when the loop ends it. They
// are the stages' (stages.ErrBody*), named here too for the handlers that
// test for them: the protocol, not the reader, decides what each one
// answers (HTTP/1.1: 413, 408, 408, 400).
var (
	// ErrBodyTooLarge: the body passed Config.MaxBodyBytes (a streamed
	// body; a declared length over the limit is refused before dispatch).
	ErrBodyTooLarge = stages.ErrBodyTooLarge
	// ErrBodyTimeout: the client sent nothing for Config.BodyTimeout.
	ErrBodyTimeout = stages.ErrBodyTimeout
	// ErrBodyTooSlow: the client sent the body slower than
	// Config.MinBodyRate after Config.MinBodyRateGrace.
	ErrBodyTooSlow = stages.ErrBodyTooSlow
	// ErrBodyClosed: the body was read after the response had finished.
	ErrBodyClosed = stages.ErrBodyClosed
)

// pipe carries a streaming request body from the loop that reads the socket
// to the handler that reads the body. The loop fills buf[w:raw] with raw
// (still chunk-coded) bytes and decodes them in place to buf[r:w]; the
// handler reads buf[r:w]. Only the loop moves bytes; the handler only
// advances r. All of it under mu: the loop's non-blocking read into buf
// is short, and the handler's copy-out shorter.
type pipe struct {
	mu   sync.Mutex
	buf  []byte
	r, w int
	raw  int
	err  error // io.EOF at the end of the body, or why it failed
	done bool  // the response is finished: bytes are discarded
	full bool  // the loop stopped for lack of room; a Read that makes room resumes it
	// incoming is how many bytes of a counted body are still to come
	// from the socket; -1 for a chunked body that has not ended.
	incoming int64
	ready    chan struct{}
	timer    *time.Timer // the handler's, for the body timeout; kept with ready across requests
	timeout  time.Duration
	resume   func()
}

// reset readies the pipe for a new body in buf (len(buf) bytes of room).
func (p *pipe) reset(buf []byte, timeout time.Duration, resume func()) {
	p.buf = buf
	if p.ready == nil {
		p.ready = make(chan struct{}, 1)
	}
	select {
	case <-p.ready:
	default:
	}
	p.r, p.w, p.raw = 0, 0, 0
	p.err, p.done, p.full = nil, false, false
	p.timeout, p.resume = timeout, resume
}

// release takes the pipe's buffer back, for a pipe whose body is over
// (finish has run and its handler has returned); nil if it has none.
func (p *pipe) release() []byte {
	p.mu.Lock()
	b := p.buf
	p.buf = nil
	p.r, p.w, p.raw = 0, 0, 0
	p.mu.Unlock()
	return b
}

var (
	_ stages.ParkingReader = (*pipe)(nil)
	_ stages.IncomingBody  = (*pipe)(nil)
)

// Incoming reports the bytes of the body still to come from the client
// (stages.IncomingBody). Any goroutine.
func (p *pipe) Incoming() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.incoming, 0), p.incoming >= 0
}

// Read is the handler's side.
func (p *pipe) Read(b []byte) (int, error) { return p.ReadParking(b, nil) }

// ReadParking is Read; when it has to wait for the client, pk is told
// before and after, so the processor can run another handler meanwhile.
func (p *pipe) ReadParking(b []byte, pk stages.Parker) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	armed := false
	defer func() {
		if armed {
			p.timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			return 0, ErrBodyClosed
		}
		if p.r < p.w {
			n := copy(b, p.buf[p.r:p.w])
			p.r += n
			wake := p.full && p.r >= len(p.buf)/2
			if wake {
				p.full = false
			}
			p.mu.Unlock()
			if wake {
				p.resume()
			}
			return n, nil
		}
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return 0, err
		}
		wake := p.full
		p.full = false
		p.mu.Unlock()
		if wake {
			p.resume()
		}
		if !armed {
			// The body timeout runs from the first wait of this Read. The
			// timer is the pipe's, reused: a blocking Read allocates nothing.
			if p.timer == nil {
				p.timer = time.NewTimer(p.timeout)
			} else {
				p.timer.Reset(p.timeout)
			}
			armed = true
		}
		if pk != nil {
			pk.Park()
		}
		timedOut := false
		select {
		case <-p.ready:
		case <-p.timer.C:
			timedOut = true
		}
		if pk != nil {
			pk.Unpark()
		}
		if timedOut {
			return 0, ErrBodyTimeout
		}
	}
}

// signal wakes a Read waiting for bytes.
func (p *pipe) signal() {
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

// fail ends the body with err for the handler.
func (p *pipe) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.signal()
}

// finish marks the response done; later Reads fail. Safe on an unused pipe.
func (p *pipe) finish() {
	if p.ready == nil {
		return
	}
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
	p.signal()
}

// room makes space at the end of buf for raw bytes; it returns the free
// region. Caller holds mu.
func (p *pipe) room() []byte {
	if p.done {
		// Discarding: decoded bytes are dropped as soon as they exist.
		n := copy(p.buf, p.buf[p.w:p.raw])
		p.r, p.w, p.raw = 0, 0, n
	} else if p.raw == len(p.buf) && p.r > 0 {
		n := copy(p.buf, p.buf[p.r:p.raw])
		p.w -= p.r
		p.raw = n
		p.r = 0
	} else if p.r == p.w && p.r > 0 {
		n := copy(p.buf, p.buf[p.w:p.raw])
		p.r, p.w, p.raw = 0, 0, n
	}
	return p.buf[p.raw:]
}

// startStream sets up the pipe for a body that is read while the handler
// runs, as plan says (counted, or through its decoder), and feeds it what
// is already buffered.
func (l *Loop) startStream(slot int32, plan stages.BodyPlan) {
	rc := l.conns[slot]
	c := rc.c
	buf, ok := l.pipes.get()
	if !ok {
		buf = make([]byte, l.cfg.PipeBytes)
	}
	rc.pipe.reset(buf, l.cfg.BodyTimeout, func() { l.send(msg{c: c, op: opResume}) })
	rc.req.Body = &rc.pipe
	rc.feeding = true
	rc.rateFrom, rc.rateBytes, rc.rateStopped = l.core.Now(), 0, time.Time{} // dispatch starts its timer
	rc.rateAwaits = plan.Await
	if plan.Await {
		rc.req.Interim = plan.Interim // the processor sends it at the handler's first Read
	}
	rc.remaining = plan.Length
	rc.decoder = plan.Decoder
	rc.pipe.mu.Lock()
	rc.pipe.incoming = -1
	if plan.Kind == stages.BodyLength {
		rc.req.ContentLength = plan.Length
		rc.pipe.incoming = plan.Length
	}
	rc.pipe.mu.Unlock()
	rc.fpos = rc.start + rc.hdrLen
	rc.consumed = rc.hdrLen
	l.feedLocked(slot)
}

// feed continues a streaming body (after a readiness event or a resume).
func (l *Loop) feed(slot int32) { l.feedLocked(slot) }

// drainBody discards the unread rest of a finished request's body, then
// moves on to the next request.
func (l *Loop) drainBody(slot int32) {
	l.feedLocked(slot)
	rc := l.conn(slot)
	if rc == nil || rc.state != stateDrain {
		return
	}
	if !rc.feeding {
		l.nextRequest(slot)
	} else if rc.discarded > maxDiscardBytes {
		// The response is out, framed for keep-alive (a chunked body's
		// length is not known until its end), and the client is still
		// sending: a FIN tells it, and lingering keeps the reset a close
		// could cause from destroying the response (maxLingerBytes).
		l.endBody(rc)
		l.lingerClose(slot)
	}
}

// feedLocked moves body bytes from the read buffer and the socket into the
// pipe until the body ends, the pipe is full, the socket is drained, or the
// turn's budget is spent.
func (l *Loop) feedLocked(slot int32) {
	rc := l.conns[slot]
	p := &rc.pipe
	if !rc.rateStopped.IsZero() {
		// The handler made room: the client is on the clock again.
		rc.rateFrom = rc.rateFrom.Add(l.core.Now().Sub(rc.rateStopped))
		rc.rateStopped = time.Time{}
	}
	budget := maxReadBytesPerTurn
	for rc.feeding && budget > 0 {
		p.mu.Lock()
		free := p.room()
		if len(free) == 0 {
			p.full = true
			p.mu.Unlock()
			if rc.state == stateOut {
				rc.rateStopped = l.core.Now() // the handler is behind, not the client
			}
			return
		}
		if rc.decoder == nil && int64(len(free)) > rc.remaining {
			free = free[:rc.remaining]
		}
		var n int
		var rerr error
		if rc.fpos < rc.end {
			n = copy(free, rc.buf[rc.fpos:rc.end])
			rc.fpos += n
			rc.consumed = rc.fpos - rc.start
		} else {
			n, rerr = readFD(rc.c.FD, free)
		}
		if n > 0 {
			budget -= n
			rc.req.WireBytes.Add(int64(n))
			p.raw += n
			if rc.rateAwaits {
				rc.rateAwaits, rc.rateFrom = false, l.core.Now()
			}
			rc.rateBytes += int64(n)
			l.decodeLocked(rc)
		}
		p.mu.Unlock()
		if n > 0 {
			p.signal()
		}
		switch {
		case rerr == unix.EAGAIN:
			return
		case rerr != nil:
			rc.feeding = false
			rc.peerClosed = true
			p.fail(io.ErrUnexpectedEOF)
			if rc.state == stateOut {
				l.hangUp(slot) // mid-body: nobody is left to answer
			}
			return
		}
	}
	if rc.feeding && budget <= 0 {
		l.ready = append(l.ready, slot)
	}
}

// decodeLocked turns the pipe's raw bytes into body bytes. Caller holds
// p.mu.
func (l *Loop) decodeLocked(rc *rconn) {
	p := &rc.pipe
	var produced, read int
	done := false
	if rc.decoder != nil {
		consumed, prod, fin, err := rc.decoder.Decode(p.buf[p.w:], p.buf[p.w:p.raw])
		if err != nil {
			rc.feeding = false
			rc.mustClose = true
			if p.err == nil {
				p.err = err
			}
			return
		}
		// Keep undecoded bytes right after the decoded ones.
		rest := p.raw - (p.w + consumed)
		copy(p.buf[p.w+prod:], p.buf[p.w+consumed:p.raw])
		p.raw = p.w + prod + rest
		produced, read, done = prod, consumed, fin
		if fin && rest > 0 {
			// Bytes past the body belong to the next request: hand them back
			// to the read buffer once the current request has let go of it.
			rc.carry = append(rc.carry[:0], p.buf[p.w+prod:p.raw]...)
			rc.req.WireBytes.Add(-int64(rest))
			p.raw = p.w + prod
		}
	} else {
		produced = p.raw - p.w
		read = produced
		rc.remaining -= int64(produced)
		p.incoming = rc.remaining
		done = rc.remaining == 0
	}
	p.w += produced
	rc.bodyTotal += int64(produced)
	if p.done {
		// Draining counts what the body costs to read, chunk framing
		// included, so maxDiscardBytes bounds the bytes read, not the
		// data they carry.
		rc.discarded += int64(read)
	}
	if rc.bodyTotal > l.cfg.MaxBodyBytes {
		rc.feeding = false
		rc.mustClose = true
		if p.err == nil {
			p.err = ErrBodyTooLarge
		}
		return
	}
	if done {
		rc.feeding = false
		p.incoming = 0
		if p.err == nil {
			p.err = io.EOF
		}
	}
}

func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := poll.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, io.ErrUnexpectedEOF
		}
		return n, nil
	}
}

// checkBodyRate holds a streamed body to the minimum rate, at its timer:
// the client must have sent MinBodyRate bytes for every second the loop
// waited on it beyond MinBodyRateGrace. One that did not is cut off: the
// handler's Read fails with ErrBodyTooSlow (408 if nothing was sent yet)
// and the connection closes after the response.
func (l *Loop) checkBodyRate(slot int32, now time.Time) {
	rc := l.conns[slot]
	if rc.state != stateOut || !rc.feeding {
		l.clearTimer(slot) // the body is over
		return
	}
	if rc.rateAwaits {
		// The client waits for 100 Continue, which the handler sends when
		// it first reads: it cannot be slow before then.
		l.setTimer(slot, classBody, now.Add(bodyRateCheck))
		return
	}
	waited := now.Sub(rc.rateFrom)
	if !rc.rateStopped.IsZero() {
		waited = rc.rateStopped.Sub(rc.rateFrom)
	}
	allowed := l.cfg.MinBodyRateGrace + time.Duration(float64(rc.rateBytes)/float64(l.cfg.MinBodyRate)*float64(time.Second))
	if waited <= allowed {
		l.setTimer(slot, classBody, now.Add(bodyRateCheck))
		return
	}
	l.clearTimer(slot)
	rc.feeding = false
	rc.mustClose = true
	// Counted before the pipe fails: the handler's answer (a 408) can
	// reach the client before this goroutine runs again.
	l.slowBodies.Add(1)
	rc.pipe.fail(ErrBodyTooSlow)
}
