package runtime

import (
	"time"

	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// fail answers a request the reader could not dispatch (malformed, too
// large, timed out) with a short text response and Connection: close. The
// writer sends it like any other response, runs the logger, and hands the
// connection back for a lingering close, so the client reads the status
// instead of a reset. This is the error path: it may allocate.
func (s *Server) fail(c *stages.Conn, req *stages.Request, status int) {
	s.bindWriter(c)
	r := s.response()
	now := time.Now()
	r.Begin(c, req, now)
	r.Status, r.KeepAlive = status, false
	resp, head := http1.ErrorResponse{Status: status, Date: now, Server: s.cfg.ServerName}.Append(nil)
	r.HeaderBytes = int64(head)
	_ = r.Append(stages.Bucket{Kind: stages.BucketHeap, Data: resp}, stages.Bucket{Kind: stages.BucketEOS})
	r.Done()
}

// reject answers a framed protocol's request the reader could not
// dispatch (its parser's error, a timeout) with the protocol's own frame,
// as fail does for HTTP/1.1: the writer sends it and hands the connection
// back for a lingering close.
func (s *Server) reject(c *stages.Conn, req *stages.Request, err error) {
	s.bindWriter(c)
	s.answerFramed(c, req, err, time.Now())
}

// answerFramed sends the frame c's protocol answers err with (a reject,
// or a request shed by admission control); the protocol says whether the
// connection carries on. c's writer must be bound. This is the error
// path: the protocol may allocate the frame.
func (s *Server) answerFramed(c *stages.Conn, req *stages.Request, err error, now time.Time) {
	frame, keep := s.protocols[c.Protocol].Reject(req, err)
	r := s.response()
	r.Begin(c, req, now)
	r.KeepAlive = keep && s.state.Load() != stateShutdown
	r.HeaderBytes = int64(len(frame))
	c.SetPhase(stages.PhaseWriting)
	if len(frame) > 0 {
		_ = r.Append(stages.Bucket{Kind: stages.BucketHeap, Data: frame})
	}
	_ = r.Append(stages.Bucket{Kind: stages.BucketEOS})
	r.Done()
}
