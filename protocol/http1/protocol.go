package http1

import (
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// Protocol is HTTP/1.1 on the stages (stages.Protocol): its parser plans
// each request's body from its framing fields, and its Reject answers a
// refused request with a short status response. The processors serve its
// requests with the server's Handler (stages.HandlerProtocol).
type Protocol struct {
	limits Limits
	server string
	// shed holds the 503s in use, by keep-alive and Retry-After: under
	// overload half the requests may be shed, so their answer is built
	// once per second and Retry-After value, and shared.
	shed [2][MaxRetryAfter + 1]atomic.Pointer[shedBlock]
}

// Config sets up a Protocol.
type Config struct {
	Limits     Limits // the request head's limits
	ServerName string // the Server field of the stages' own answers
}

// MaxRetryAfter is the largest Retry-After a shed request is given, in
// seconds; a larger suggestion is cut to it.
const MaxRetryAfter = 60

// New returns HTTP/1.1 for a server's protocol table. A ServerName
// holding CR, LF or NUL is sent with spaces instead (CleanFieldValue).
func New(cfg Config) *Protocol {
	return &Protocol{limits: cfg.Limits, server: CleanFieldValue(cfg.ServerName)}
}

// MaxHeadBytes is the most the reader need buffer for one request head.
func (p *Protocol) MaxHeadBytes() int { return p.limits.HeaderBytes() }

// NewParser returns a request parser for one connection at a time
// (stages.Protocol).
func (p *Protocol) NewParser() stages.FrameParser {
	return &frameParser{limits: p.limits, interim: []byte(Continue)}
}

// RunsHandlers marks HTTP/1.1 as served by the server's Handler
// (stages.HandlerProtocol).
func (p *Protocol) RunsHandlers() {}

// Serve is never called: the processors run the Handler for HTTP/1.1
// (stages.HandlerProtocol). Were it called, the request would get a 500
// rather than hang.
func (p *Protocol) Serve(resp *stages.Response, req *stages.Request) {
	frame, head := ErrorResponse{Status: http.StatusInternalServerError, Date: time.Now(), Server: p.server}.Append(nil)
	resp.Status, resp.KeepAlive, resp.HeaderBytes = http.StatusInternalServerError, false, int64(head)
	_ = resp.Append(stages.Bucket{Kind: stages.BucketHeap, Data: frame}, stages.Bucket{Kind: stages.BucketEOS})
	resp.Conn.SetPhase(stages.PhaseWriting)
	resp.Done()
}

// Wait returns at once: HTTP/1.1 starts no replies of its own (its
// handlers are the processors' to wait for).
func (p *Protocol) Wait() {}

// Reject answers a refused request (stages.Protocol): with a 503 and a
// Retry-After for one shed under overload, which keeps the connection
// when the request's framing allows; with the error's status
// (StatusOf) and Connection: close for anything else, since the stream
// is lost. A client that asked for 100-continue was not told to send its
// body, so nobody knows what comes next on its connection: it is closed
// too, as for a request that asked for a close, or when the server is
// shutting down.
func (p *Protocol) Reject(req *stages.Request, why stages.Refusal) stages.Rejection {
	now := why.Now
	if now.IsZero() {
		now = time.Now()
	}
	if errors.Is(why.Err, stages.ErrOverloaded) {
		keep := req.Minor >= 1 && req.KeepAlive() && !req.Expect100 && !why.Closing
		return stages.Rejection{Frame: p.shedResponse(now, why.RetryAfter, keep), Status: http.StatusServiceUnavailable, KeepAlive: keep}
	}
	status := StatusOf(why.Err)
	frame, head := ErrorResponse{Status: status, Date: now, Server: p.server}.Append(nil)
	return stages.Rejection{Frame: frame, Head: head, Status: status}
}

// shedBlock is one 503 response, valid for one second of Date.
type shedBlock struct {
	sec  int64
	data []byte
}

// shedResponse returns the bytes of a 503 for now, retryAfter seconds
// (1 to MaxRetryAfter) and keep-alive. They are never written to once
// built: any number of responses may be sending them.
func (p *Protocol) shedResponse(now time.Time, retryAfter int64, keep bool) []byte {
	retryAfter = min(max(retryAfter, 1), MaxRetryAfter)
	k := 0
	if keep {
		k = 1
	}
	slot := &p.shed[k][retryAfter]
	sec := now.Unix()
	if b := slot.Load(); b != nil && b.sec == sec {
		return b.data
	}
	data, _ := ErrorResponse{Status: http.StatusServiceUnavailable, Date: now, Server: p.server,
		RetryAfter: retryAfter, KeepAlive: keep}.Append(nil)
	b := &shedBlock{sec: sec, data: data}
	slot.Store(b)
	return b.data
}

// frameParser is the reader's view of Parser (stages.FrameParser): the
// head aliases the connection's buffer, and its framing fields become the
// body's plan.
type frameParser struct {
	p       Parser
	limits  Limits
	chunked ChunkedDecoder
	interim []byte // Continue, for the plans of requests that await it; never written
}

// Head parses a request head and plans its body (stages.FrameParser):
// none; Content-Length bytes, for the reader to read before dispatch or
// stream; or chunked, streamed through the decoder. Expect: 100-continue
// makes the client wait for the handler's first Read, which sends it 100
// Continue (the plan's Interim). The parser has set Expect100 only for
// HTTP/1.1 and later, as 1.0 clients know no 1xx.
func (f *frameParser) Head(buf []byte, req *stages.Request) (stages.Head, error) {
	n, err := f.p.Parse(buf, f.limits, req)
	if err != nil {
		return stages.Head{}, err
	}
	h := stages.Head{Size: n, Aliases: true}
	switch {
	case req.Chunked:
		f.chunked.Reset()
		h.Body = stages.BodyPlan{Kind: stages.BodyDecoded, Decoder: &f.chunked}
	case req.ContentLength > 0:
		h.Body = stages.BodyPlan{Kind: stages.BodyLength, Length: req.ContentLength}
	default:
		return h, nil
	}
	if req.Expect100 {
		h.Body.Await, h.Body.Interim = true, f.interim
	}
	return h, nil
}

// Reset forgets a partial scan (stages.FrameParser).
func (f *frameParser) Reset() {
	f.p.Reset()
	f.chunked.Reset()
}
