package runtime

import (
	"time"

	"github.com/quartet-server/quartet/internal/ratelog"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// reject answers a request the reader could not dispatch (malformed, too
// large, timed out) with its protocol's refusal (HTTP/1.1: a short text
// response and Connection: close). The writer sends it like any other
// response, runs the logger, and hands the connection back for a
// lingering close, so the client reads why instead of a reset. This is
// the error path: the protocol may allocate its answer.
func (s *Server) reject(c *stages.Conn, req *stages.Request, err error) {
	s.bindWriter(c, req.Follows)
	s.refuse(c, req, stages.Refusal{Err: err, Now: time.Now()})
}

// refuse sends the answer c's protocol gives a refused request (a reject,
// or a request shed by admission control); the protocol says whether the
// connection carries on, unless the server is shutting down. c's writer
// must be bound.
func (s *Server) refuse(c *stages.Conn, req *stages.Request, why stages.Refusal) {
	s.answerRefusal(c, req, why, nil)
}

// answerRefusal is refuse; with direct (a reader loop's, on that loop's
// goroutine), the answer is written there, as a response served inline
// is, and only what the socket does not take goes to the writer loop.
func (s *Server) answerRefusal(c *stages.Conn, req *stages.Request, why stages.Refusal, direct *writer.Direct) {
	why.Closing = s.state.Load() == stateShutdown
	rej := s.protocols[c.Protocol].Reject(req, why)
	r := s.response()
	r.Begin(c, req, why.Now)
	if direct != nil {
		r.HoldKicks() // Write takes it whole, or hands it over
	}
	r.Status = rej.Status
	r.KeepAlive = rej.KeepAlive && !why.Closing
	r.HeaderBytes = int64(rej.Head)
	c.SetPhase(stages.PhaseWriting)
	if len(rej.Frame) > 0 {
		_ = r.Append(stages.Bucket{Kind: stages.BucketHeap, Data: rej.Frame}, stages.Bucket{Kind: stages.BucketEOS})
	} else {
		_ = r.Append(stages.Bucket{Kind: stages.BucketEOS})
	}
	r.Done()
	if direct != nil && direct.Write(s.writers.at(c.Writer).Loop, r) {
		r.ResumeKicks() // to c's writer, bound by the caller
	}
}

// acceptFailed is a listener's OnAcceptError: it logs the failure (the
// process or the system is out of fds, most likely), the first at once
// and then one line every ratelog.DefaultEvery with the count, while the
// accept loop retries every few milliseconds. addr is read when it fails:
// the listener's address is known only once it is bound.
func (s *Server) acceptFailed(listener string, addr *string) func(error) {
	var limit ratelog.Limiter
	return func(err error) {
		if log, n := limit.Allow(time.Now()); log {
			s.cfg.Logger.Error("quartet: accept failed; new clients wait in the backlog while it does",
				"listener", listener, "addr", *addr, "err", err, "failures", n)
		}
	}
}

// fileEnded is the writers' Trouble: a response cut short because its
// file was cut short under it (writer.ErrFileEnded), which the client sees
// as a connection closed mid-body. It is the operator's doing, a file
// changed in place while the static file cache kept it open, and nginx
// says so too ("was truncated"): the first at once, then a line every
// ratelog.DefaultEvery with the count. The limiter is the server's, for
// every writer loop and the reader loops that write directly.
func (s *Server) fileEnded() func(*stages.Response, error) {
	var limit ratelog.Limiter
	return func(r *stages.Response, err error) {
		if log, n := limit.Allow(time.Now()); log {
			s.cfg.Logger.Error("quartet: a file changed while it was served; its response was cut short "+
				"(replace served files by rename, as mv does, not in place, as cp and truncate do)",
				"err", err, "responses", n)
		}
	}
}
