package bench

import (
	"bytes"
	"errors"

	"github.com/quartet-server/quartet/stages"
)

// maxHeaderBytes bounds a response header block; beyond it the response is
// counted as a parse error and the connection reopened.
const maxHeaderBytes = 64 << 10

// errParse is returned by respParser.feed for a malformed response.
var errParse = errors.New("bench: malformed response")

// parseState is where respParser stands in the current response.
type parseState uint8

const (
	// stHeader: collecting the status line and headers up to CRLFCRLF.
	// Next: stBody, stChunkSize, stUntilClose, or stHeader (no body).
	stHeader parseState = iota
	// stBody: skipping remain bytes of a Content-Length body. Next: stHeader.
	stBody
	// stChunkSize: reading a chunk-size line (hex, extensions ignored).
	// Next: stChunkData, or stTrailer for the last chunk.
	stChunkSize
	// stChunkData: skipping remain chunk bytes plus the CRLF after them.
	// Next: stChunkSize.
	stChunkData
	// stTrailer: skipping trailer lines up to an empty line. Next: stHeader.
	stTrailer
	// stUntilClose: body delimited by connection close. Next: none.
	stUntilClose
)

// respParser is a resumable HTTP/1.1 response parser: it keeps its state
// across reads so no byte is scanned twice except the few of a header
// terminator split between reads. Bodies are counted and skipped, never
// copied. Only a header block split across reads is copied, into carry.
type respParser struct {
	state  parseState
	remain int64 // body or chunk bytes still to skip (incl. chunk CRLF)
	// sawDigit/lineLen track progress inside a chunk-size or trailer line.
	sawDigit bool
	lineLen  int
	carry    []byte // partial header block
	// taken counts the current response's bytes consumed by earlier feeds,
	// so that each response's size is known whatever the read boundaries:
	// bytes read are attributed to responses, and a response to the phase
	// (warm-up or measurement) of its request.
	taken int64
	// Per response, valid when done is reported.
	status int
	close  bool // server asked to close the connection after this response
}

// respSink receives parsed responses. It is an interface rather than two
// func values so that passing a connection costs no allocation.
type respSink interface {
	// noBody reports whether the response to the oldest in-flight request
	// has no body whatever its headers say (a HEAD request).
	noBody() bool
	// done is called for each complete response of size bytes (status
	// line, headers and body, interim 1xx responses before it included).
	done(status int, close bool, size int64)
}

// feed consumes b, calling s.done for each complete response, until b is
// exhausted. It returns errParse for a malformed response.
func (p *respParser) feed(b []byte, s respSink) error {
	// mark is len(b) where the current response's part of b began: the
	// response has consumed mark-len(b) bytes of this feed.
	mark := len(b)
	done := func() {
		s.done(p.status, p.close, p.taken+int64(mark-len(b)))
		p.taken, mark = 0, len(b)
	}
	for len(b) > 0 {
		switch p.state {
		case stHeader:
			var hdr []byte
			if len(p.carry) == 0 {
				i := bytes.Index(b, crlfcrlf)
				if i < 0 {
					if len(b) > maxHeaderBytes {
						return errParse
					}
					p.carry = append(p.carry, b...)
					p.taken += int64(mark)
					return nil
				}
				hdr, b = b[:i+4], b[i+4:]
			} else {
				// Only the last 3 carried bytes can start a terminator.
				from := max(0, len(p.carry)-3)
				old := len(p.carry)
				p.carry = append(p.carry, b...)
				i := bytes.Index(p.carry[from:], crlfcrlf)
				if i < 0 {
					if len(p.carry) > maxHeaderBytes {
						return errParse
					}
					p.taken += int64(mark)
					return nil
				}
				end := from + i + 4
				hdr, b = p.carry[:end], b[end-old:]
			}
			chunked, length, err := p.header(hdr)
			p.carry = p.carry[:0]
			if err != nil {
				return err
			}
			switch {
			case p.status < 200 && p.status >= 100:
				// Interim response: the final one follows.
				continue
			case s.noBody() || p.status == 204 || p.status == 304:
				done()
			case chunked:
				p.state, p.sawDigit, p.remain, p.lineLen = stChunkSize, false, 0, 0
			case length > 0:
				p.state, p.remain = stBody, length
			case length == 0:
				done()
			default:
				p.state = stUntilClose
			}
		case stBody:
			n := min(int64(len(b)), p.remain)
			b = b[n:]
			if p.remain -= n; p.remain == 0 {
				p.state = stHeader
				done()
			}
		case stChunkSize:
			c := b[0]
			b = b[1:]
			switch {
			case c == '\n':
				if !p.sawDigit {
					return errParse
				}
				if p.remain == 0 {
					p.state, p.lineLen = stTrailer, 0
				} else {
					p.state, p.remain = stChunkData, p.remain+2
				}
			case p.lineLen < 0: // inside an extension or after '\r'
			case c == ';' || c == '\r' || c == ' ':
				p.lineLen = -1
			default:
				v, ok := stages.Unhex(c)
				if !ok || p.remain > 1<<40 {
					return errParse
				}
				p.remain, p.sawDigit = p.remain<<4|int64(v), true
			}
		case stChunkData:
			n := min(int64(len(b)), p.remain)
			b = b[n:]
			if p.remain -= n; p.remain == 0 {
				p.state, p.sawDigit, p.lineLen = stChunkSize, false, 0
			}
		case stTrailer:
			c := b[0]
			b = b[1:]
			switch c {
			case '\n':
				if p.lineLen == 0 {
					p.state = stHeader
					done()
				}
				p.lineLen = 0
			case '\r':
			default:
				p.lineLen++
			}
		case stUntilClose:
			p.taken += int64(mark)
			return nil
		}
	}
	p.taken += int64(mark)
	return nil
}

// eof reports whether a connection close completes the current response
// (a body delimited by close), of size bytes, and resets the parser for a
// new connection.
func (p *respParser) eof() (complete bool, status int, size int64) {
	complete, status, size = p.state == stUntilClose, p.status, p.taken
	p.reset()
	return complete, status, size
}

func (p *respParser) reset() {
	p.state, p.remain, p.sawDigit, p.lineLen, p.taken = stHeader, 0, false, 0, 0
	p.carry = p.carry[:0]
}

// header parses a complete header block ending in CRLFCRLF. length is -1
// when there is neither Content-Length nor chunked encoding.
func (p *respParser) header(h []byte) (chunked bool, length int64, err error) {
	// "HTTP/1.1 200 OK\r\n": the status code sits at bytes 9..11.
	if len(h) < 12 || !bytes.HasPrefix(h, httpSlash) || h[8] != ' ' {
		return false, 0, errParse
	}
	p.status = 0
	for _, c := range h[9:12] {
		if c < '0' || c > '9' {
			return false, 0, errParse
		}
		p.status = p.status*10 + int(c-'0')
	}
	// HTTP/1.0 closes by default.
	p.close = h[7] == '0'
	length = -1
	i := bytes.IndexByte(h, '\n') + 1
	for i < len(h) {
		j := bytes.IndexByte(h[i:], '\n')
		if j < 0 {
			break
		}
		line := h[i : i+j]
		i += j + 1
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		name, val := line[:colon], stages.TrimOWS(line[colon+1:])
		switch {
		case stages.EqualFoldASCII(name, "content-length"):
			length = 0
			for _, c := range val {
				if c < '0' || c > '9' || length > 1<<50 {
					return false, 0, errParse
				}
				length = length*10 + int64(c-'0')
			}
		case stages.EqualFoldASCII(name, "transfer-encoding"):
			chunked = stages.EqualFoldASCII(val, "chunked")
		case stages.EqualFoldASCII(name, "connection"):
			if stages.EqualFoldASCII(val, "close") {
				p.close = true
			} else if stages.EqualFoldASCII(val, "keep-alive") {
				p.close = false
			}
		}
	}
	return chunked, length, nil
}

var (
	crlfcrlf  = []byte("\r\n\r\n")
	httpSlash = []byte("HTTP/1.")
)
