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
// once per second and Retry-After value).
func (s *Server) shed(req *stages.Request, retryAfter int64, now time.Time) {
	s.refuse(req.Conn, req, stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: retryAfter, Now: now})
}
