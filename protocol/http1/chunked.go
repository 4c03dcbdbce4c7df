package http1

import "github.com/quartet-server/quartet/stages"

// The chunked decoder is a byte state machine in the style of nginx's
// ngx_http_parse_chunked: all state lives in the ChunkedDecoder, so a body
// split anywhere across reads decodes the same, and it never allocates or
// buffers (RFC 9112 §7.1):
//
//	chunked-body = *chunk last-chunk trailer-section CRLF
//	chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//	last-chunk   = 1*("0") [ chunk-ext ] CRLF
//
// Policy: line ends must be CRLF (bare LF or a CR not before LF is a 400, as
// for the header block); chunk extensions are skipped but may not hold
// control bytes; trailer fields are checked like header fields (token name,
// no whitespace before the colon, no obs-fold, no CTLs) and discarded.
//
// Overhead. Every limit on a body (MaxBodyBytes, the unread-body drain)
// counts data, so framing that carries no data must be bounded by itself,
// or a client can make the server read megabytes of chunk extensions to
// deliver a few bytes (RFC 9112 §7.1.1: "a server ought to limit the total
// length of chunk extensions received"). The rule is net/http's (its fix
// for CVE-2023-39326), so a Go front end and Quartet draw the line at the
// same byte: each chunk-size line costs its length plus the CRLF that ends
// its data, and earns 16 bytes plus twice the chunk's size; what is not
// paid for accumulates, never below zero, so credit from one large chunk
// cannot pay for a flood later; once it passes maxChunkOverhead the body
// is refused with ErrChunkOverhead (400). Streaming one byte per chunk
// ("1\r\nX\r\n") costs 3 and earns 18, so honest senders never come near
// it. The trailer section has its own bound (MaxTrailerBytes, 431).

// chunkState is where the decoder is within the chunked body.
type chunkState uint8

const (
	csSize         chunkState = iota // in chunk-size hex digits → csSizeOWS, csExt, csSizeLF
	csSizeOWS                        // BWS after the size → csExt, csSizeLF
	csExt                            // in chunk-ext, up to CR → csSizeLF
	csSizeLF                         // saw CR of the size line → csData, or csTrailer for the last chunk
	csData                           // in chunk-data → csDataCR
	csDataCR                         // expecting CR after chunk-data → csDataLF
	csDataLF                         // expecting LF after chunk-data → csSize
	csTrailer                        // at the start of a trailer line → csTrailerName, csEndLF
	csTrailerName                    // in a trailer field name → csTrailerValue
	csTrailerValue                   // in a trailer field value → csTrailerLF
	csTrailerLF                      // saw CR of a trailer line → csTrailer
	csEndLF                          // saw CR of the final empty line → csDone
	csDone                           // body complete; Decode returns done
)

// maxChunkLine bounds a chunk-size line with its extensions. Extensions carry
// nothing Quartet uses, and net/http draws the line at the same 4096 bytes,
// so a client cannot make the decoder skip an unbounded run of junk.
const maxChunkLine = 4096

// The overhead allowance (see the policy above): per chunk, a fixed
// allowance plus a multiple of its data; beyond the allowance, at most
// maxChunkOverhead unpaid bytes.
const (
	chunkLineAllowance = 16
	chunkDataAllowance = 2
	maxChunkOverhead   = 16 << 10
)

// ChunkedDecoder decodes a chunked request body, resumable across reads.
// The zero value is ready; Reset readies it for the next body.
type ChunkedDecoder struct {
	// MaxTrailerBytes bounds the trailer section, its final CRLF
	// included; zero means DefaultMaxTrailerBytes. Over it →
	// ErrTrailerTooLarge (431).
	MaxTrailerBytes int

	state   chunkState
	digits  int    // hex digits of the current chunk-size
	size    uint64 // chunk-size being parsed, then bytes of chunk-data left
	line    int    // bytes of the current chunk-size line
	trailer int    // bytes of the trailer section so far
	excess  uint64 // framing bytes not paid for by data; see maxChunkOverhead
	err     error  // sticky: once malformed, always malformed
}

// Reset readies d for a new body, keeping MaxTrailerBytes.
func (d *ChunkedDecoder) Reset() { *d = ChunkedDecoder{MaxTrailerBytes: d.MaxTrailerBytes} }

// Done reports whether the whole chunked body, trailer included, has been decoded.
func (d *ChunkedDecoder) Done() bool { return d.state == csDone }

func (d *ChunkedDecoder) maxTrailerBytes() int {
	if d.MaxTrailerBytes > 0 {
		return d.MaxTrailerBytes
	}
	return DefaultMaxTrailerBytes
}

// Decode consumes chunked-coded bytes from src and writes decoded body bytes
// to dst; dst may alias src (decoding in place), because output never runs
// ahead of input. It returns the bytes consumed from src and produced in
// dst; done once the last-chunk and trailer section are consumed (bytes
// after that, such as a pipelined request, are left unconsumed); or an
// error: ErrMalformedChunk (400), ErrChunkOverhead (400),
// ErrChunkSizeOverflow (413), ErrTrailerTooLarge (431). It stops early
// when dst is full, so call it again with more room; with an empty dst it
// still consumes framing bytes.
func (d *ChunkedDecoder) Decode(dst, src []byte) (consumed, produced int, done bool, err error) {
	if d.err != nil {
		return 0, 0, false, d.err
	}
	i := 0
	for i < len(src) && d.state != csDone {
		if d.state == csData {
			// The only state that moves payload: copy as much as both
			// sides allow (copy is memmove, so in place is fine).
			k := len(src) - i
			if uint64(k) > d.size {
				k = int(d.size)
			}
			k = copy(dst[produced:], src[i:i+k])
			if k == 0 {
				break // dst is full
			}
			i += k
			produced += k
			if d.size -= uint64(k); d.size == 0 {
				d.state = csDataCR
			}
			continue
		}
		c := src[i]
		i++
		if err := d.step(c); err != nil {
			d.err = err
			return i, produced, false, err
		}
	}
	return i, produced, d.state == csDone, nil
}

// step advances the framing state machine by one byte.
func (d *ChunkedDecoder) step(c byte) error {
	switch d.state {
	case csSize, csSizeOWS, csExt:
		if d.line++; d.line > maxChunkLine {
			return ErrMalformedChunk
		}
	case csTrailer, csTrailerName, csTrailerValue, csTrailerLF, csEndLF:
		if d.trailer++; d.trailer > d.maxTrailerBytes() {
			return ErrTrailerTooLarge
		}
	}

	switch d.state {
	case csSize:
		if v, ok := stages.Unhex(c); ok {
			// Leading zeros are chunk-size's grammar (1*HEXDIG, and
			// last-chunk is 1*"0"), bounded by the line's own limit:
			// only a 17th significant digit overflows. (net/http
			// refuses any 17th digit; "00000000000000005" is 5 bytes,
			// and 413 said it was too large. nginx takes it.)
			if d.size>>60 != 0 {
				return ErrChunkSizeOverflow
			}
			d.digits++
			d.size = d.size<<4 | uint64(v)
			return nil
		}
		if d.digits == 0 {
			return ErrMalformedChunk
		}
		if d.size > 1<<63-1 {
			return ErrChunkSizeOverflow
		}
		return d.afterSize(c)
	case csSizeOWS:
		return d.afterSize(c)
	case csExt:
		switch {
		case c == '\r':
			d.state = csSizeLF
		case c < ' ' && c != '\t' || c == 0x7f:
			return ErrMalformedChunk // includes bare LF
		}
		return nil
	case csSizeLF:
		if c != '\n' {
			return ErrMalformedChunk
		}
		if !d.payOverhead() {
			return ErrChunkOverhead
		}
		if d.size == 0 {
			d.state = csTrailer
		} else {
			d.state = csData
		}
		return nil
	case csDataCR:
		if c != '\r' {
			return ErrMalformedChunk
		}
		d.state = csDataLF
		return nil
	case csDataLF:
		if c != '\n' {
			return ErrMalformedChunk
		}
		d.state, d.digits, d.size, d.line = csSize, 0, 0, 0
		return nil
	case csTrailer:
		switch {
		case c == '\r':
			d.state = csEndLF
		case isTokenByte(c):
			d.state = csTrailerName
		default:
			// SP/HTAB here is obs-fold; anything else is not a name.
			return ErrMalformedChunk
		}
		return nil
	case csTrailerName:
		switch {
		case c == ':':
			d.state = csTrailerValue
		case !isTokenByte(c):
			return ErrMalformedChunk // includes whitespace before the colon
		}
		return nil
	case csTrailerValue:
		switch {
		case c == '\r':
			d.state = csTrailerLF
		case c < ' ' && c != '\t' || c == 0x7f:
			return ErrMalformedChunk
		}
		return nil
	case csTrailerLF:
		if c != '\n' {
			return ErrMalformedChunk
		}
		d.state = csTrailer
		return nil
	case csEndLF:
		if c != '\n' {
			return ErrMalformedChunk
		}
		d.state = csDone
		return nil
	}
	return ErrMalformedChunk
}

// payOverhead charges the chunk-size line just ended (d.line bytes, its CR
// included) and the CRLF that will end the chunk's data against the
// chunk's allowance, and reports whether the unpaid total is still within
// maxChunkOverhead.
func (d *ChunkedDecoder) payOverhead() bool {
	cost := uint64(d.line-1) + 2 // the line without its CRLF; the CRLF after the data
	earned := uint64(chunkLineAllowance)
	if d.size > (1<<63)/chunkDataAllowance {
		earned = 1 << 63 // saturate: no line can cost that much
	} else {
		earned += chunkDataAllowance * d.size
	}
	if d.excess += cost; d.excess > earned {
		d.excess -= earned
	} else {
		d.excess = 0
	}
	return d.excess <= maxChunkOverhead
}

// afterSize handles the bytes between chunk-size and CRLF:
// BWS, then ";" chunk-ext or CR (RFC 9112 §7.1.1 allows BWS before ";").
func (d *ChunkedDecoder) afterSize(c byte) error {
	switch c {
	case ' ', '\t':
		d.state = csSizeOWS
	case ';':
		d.state = csExt
	case '\r':
		d.state = csSizeLF
	default:
		return ErrMalformedChunk
	}
	return nil
}
