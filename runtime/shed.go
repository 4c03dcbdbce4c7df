package runtime

import (
	"time"

	"github.com/quartet-server/quartet/stages"
)

// shed answers a request that admission control refused with its
// protocol's refusal (HTTP/1.1: 503 Service Unavailable with a
// Retry-After), through the writer like any response, so the client is
// told at once instead of waiting, and nothing is dropped or reset. The
// connection stays open when the protocol says the request's framing
// allows: the writer hands it back as for any response, and the reader
// reads (or throws away) whatever body the request had before the next
// request.
//
// Under overload half the requests may end here, so this path allocates
// nothing: the protocol hands out shared answers (HTTP/1.1 builds its 503
// once per second and Retry-After value). And it is written by the reader
// loop that refused it, as a request served inline is, when the loop has
// a direct writer and no other request of the connection is in flight:
// through the writer loop a 503 cost 37 µs of CPU against 14 for an
// inline /hello (CPU-bound 2x overload, one core), so shedding took the
// CPU the admitted requests needed.
func (s *Server) shed(req *stages.Request, retryAfter int64, now time.Time) {
	why := stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: retryAfter, Now: now}
	if !req.Follows && s.fusing {
		if f := s.fused[req.Conn.Reader].Load(); f != nil {
			s.answerRefusal(req.Conn, req, why, &f.direct)
			return
		}
	}
	s.refuse(req.Conn, req, why)
}
