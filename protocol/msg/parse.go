package msg

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Role says which side of a connection a parser reads for, and so which
// frame types it accepts (ErrDirection for the others).
type Role uint8

const (
	// RoleServer parses what a client sends: requests and completions.
	RoleServer Role = 1
	// RoleClient parses what a server sends: replies.
	RoleClient Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleServer:
		return "server"
	case RoleClient:
		return "client"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Parser reads frames from one connection's byte stream, in place: it
// decodes a frame's head from the caller's buffer and then counts the
// payload off as the caller takes it, so the caller decides per frame
// whether the payload is aliased in its read buffer or read into a
// buffer of its own, and nothing is copied on the parser's account.
//
// A frame is parsed in two steps, like soft-iWARP's receive path
// (GET_HDR, then GET_DATA):
//
//	Next(buf, &h)   decodes the head at buf[0:]; h.Length payload bytes follow
//	Payload(b)      takes payload bytes, as many calls as the caller likes,
//	                until Remaining() is 0; then Next again
//
// A head is at most MaxHeadSize bytes, so Next needs no partial state:
// with too few bytes it returns ErrNeedMore and the caller calls again
// with those bytes and more (looking at 68 bytes again costs less than
// saving a half-decoded header would). It does check the first byte as
// soon as it has it, so a peer that speaks something else (HTTP, another
// version) is refused at once rather than waited for.
//
// Any error but ErrNeedMore and ErrPayloadPending is final: the stream
// cannot be resynchronised, and every later call returns the same error.
// One Parser serves one connection; it is not safe for concurrent use.
type Parser struct {
	role       Role
	maxPayload uint32
	left       uint32 // payload bytes of the current frame not yet taken
	lastOp     uint64 // RoleServer: the last RDMA request's operation id
	err        error
}

// NewParser returns a parser for one connection, reading for role within
// limits. It panics on a role that is neither RoleServer nor RoleClient.
func NewParser(role Role, limits Limits) Parser {
	if role != RoleServer && role != RoleClient {
		panic(fmt.Sprintf("msg: NewParser: unknown role %d", role))
	}
	return Parser{role: role, maxPayload: limits.Payload()}
}

// Next decodes the head of the next frame from the start of buf into h
// and returns the head's size; the frame's h.Length payload bytes start
// at buf[n:] (or later in the stream), and Next may not be called again
// until Payload has taken all of them.
//
// It returns ErrNeedMore, with nothing consumed, while buf holds less
// than the head; ErrPayloadPending if the previous frame's payload was
// not all taken; otherwise one of the frame errors (errors.go), wrapped
// with the detail, after which the connection is finished. With
// ErrPayloadTooLarge, h is filled (so the error frame can name h.TxID).
// It allocates nothing unless it fails.
func (p *Parser) Next(buf []byte, h *Header) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.role == 0 {
		panic("msg: Parser used without NewParser")
	}
	if p.left != 0 {
		return 0, ErrPayloadPending
	}
	if len(buf) > 0 && buf[offVersion] != Version {
		return 0, p.fail(fmt.Errorf("%w: %d (this side speaks %d)", ErrVersion, buf[offVersion], Version))
	}
	if len(buf) < HeaderSize {
		return 0, ErrNeedMore
	}
	getHeader(buf, h)
	if err := h.checkHeader(); err != nil {
		return 0, p.fail(err)
	}
	if err := p.checkDirection(h.Type); err != nil {
		return 0, p.fail(err)
	}
	// An error body has its own, fixed bound (checkHeader), so a peer
	// with a small MaxPayload still learns why its request failed.
	if h.Length > p.maxPayload && !h.Flags.Has(FlagError) {
		return 0, p.fail(fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, h.Length, p.maxPayload))
	}
	n := HeaderSize
	if h.Flags&FlagRDMA != 0 {
		if len(buf) < MaxHeadSize {
			return 0, ErrNeedMore
		}
		getDescriptor(buf[HeaderSize:MaxHeadSize], &h.RDMA)
		if err := h.checkDescriptor(); err != nil {
			return 0, p.fail(err)
		}
		if err := p.checkOp(h); err != nil {
			return 0, p.fail(err)
		}
		n = MaxHeadSize
	}
	p.left = h.Length
	return n, nil
}

// Remaining returns how many payload bytes of the current frame have
// not been taken by Payload yet.
func (p *Parser) Remaining() int { return int(p.left) }

// Payload takes the current frame's next payload bytes from the start
// of buf and returns them: buf[:min(len(buf), Remaining())], aliased,
// never copied. A caller that reads a payload into its own buffer passes
// each filled part of that buffer, so the parser keeps count either way.
func (p *Parser) Payload(buf []byte) []byte {
	n := min(uint64(len(buf)), uint64(p.left))
	p.left -= uint32(n)
	return buf[:n]
}

// Resume gives a fresh parser the state of the connection it carries on
// from: the last RDMA request's operation id, so that ids keep growing
// across a reader that keeps no parser while the connection is idle.
func (p *Parser) Resume(lastOp uint64) { p.lastOp = lastOp }

// Skip counts up to n payload bytes of the current frame as taken
// without seeing them, and returns how many it counted: for a caller that
// reads the payload by its own means (a reader stage that reads a frame's
// whole body into its buffer by its generic machinery, knowing h.Length).
func (p *Parser) Skip(n int) int {
	k := min(uint64(max(n, 0)), uint64(p.left))
	p.left -= uint32(k)
	return int(k)
}

// ReadHead is Next for a blocking reader (a goroutine per connection, as
// in a client or a test server): it reads from br until it holds a whole
// head, decodes it into h and consumes it. It returns io.EOF at a frame
// boundary and io.ErrUnexpectedEOF inside a head. br's buffer must hold
// MaxHeadSize bytes (bufio's default does).
func (p *Parser) ReadHead(br *bufio.Reader, h *Header) error {
	if br.Size() < MaxHeadSize {
		return fmt.Errorf("quartet: msg: ReadHead: a bufio.Reader of %d bytes; a head needs %d", br.Size(), MaxHeadSize)
	}
	if _, err := br.Peek(1); err != nil {
		return err
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		n, err := p.Next(buf, h)
		if err == nil {
			_, err = br.Discard(n)
			return err
		}
		if !errors.Is(err, ErrNeedMore) {
			return err
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// ReadPayload reads the current frame's remaining payload from br into
// dst, reusing dst's array when it is large enough, and returns it.
func (p *Parser) ReadPayload(br *bufio.Reader, dst []byte) ([]byte, error) {
	n := p.Remaining()
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	got, err := io.ReadFull(br, dst)
	p.Payload(dst[:got])
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return dst, err
}

// SkipPayload reads the current frame's remaining payload from br and
// drops it (a reply nobody waits for any more).
func (p *Parser) SkipPayload(br *bufio.Reader) error {
	n, err := br.Discard(p.Remaining())
	p.left -= uint32(n)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (p *Parser) fail(err error) error {
	p.err = err
	return err
}

func (p *Parser) checkDirection(t Type) error {
	if p.role == RoleServer && t == TypeReply || p.role == RoleClient && t != TypeReply {
		return fmt.Errorf("%w: a %s sent to a %s", ErrDirection, t, p.role)
	}
	return nil
}

// checkOp keeps RDS's rule on a server: RDMA requests' operation ids only
// grow, and a completion confirms only ids already requested. A client
// sees replies out of order, so it checks nothing here.
func (p *Parser) checkOp(h *Header) error {
	if p.role != RoleServer {
		return nil
	}
	op := h.RDMA.Op
	switch h.Type {
	case TypeRequest:
		if op <= p.lastOp {
			return fmt.Errorf("%w: request op %d after op %d", ErrOpID, op, p.lastOp)
		}
		p.lastOp = op
	case TypeCompletion:
		if op > p.lastOp {
			return fmt.Errorf("%w: completion for op %d, last requested %d", ErrOpID, op, p.lastOp)
		}
	}
	return nil
}
