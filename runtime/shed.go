package runtime

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/control"
	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// shed answers a request that admission control refused: 503 Service
// Unavailable with a Retry-After, through the writer like any response, so
// the client is told at once instead of waiting, and nothing is dropped or
// reset. The connection stays open when the request's framing allows: the
// writer hands it back as for any response, and the reader reads (or
// throws away) whatever body the request had before the next request. A
// client that asked for 100-continue was not told to send its body, so
// nobody knows what comes next on its connection: it is closed, as it is
// for a request that asked for a close.
//
// Under overload half the requests may end here, so this allocates
// nothing: the response's bytes are built once per second and Retry-After
// value, and shared.
func (s *Server) shed(req *stages.Request, retryAfter int64, now time.Time) {
	if req.Conn.Protocol != stages.ProtocolHTTP1 {
		s.answerFramed(req.Conn, req, stages.ErrOverloaded, now)
		return
	}
	r := s.response()
	r.Begin(req.Conn, req, now)
	keep := req.Minor >= 1 && req.KeepAlive() && !req.Expect100 && s.state.Load() != stateShutdown
	r.Status, r.KeepAlive = http.StatusServiceUnavailable, keep
	req.Conn.SetPhase(stages.PhaseWriting)
	_ = r.Append(stages.Bucket{Kind: stages.BucketHeap, Data: s.shedBytes(now, retryAfter, keep)}, stages.Bucket{Kind: stages.BucketEOS})
	r.Done()
}

// shedBlock is one 503 response, valid for one second of Date.
type shedBlock struct {
	sec  int64
	data []byte
}

// maxRetryAfter is the largest Retry-After handed out, in seconds.
const maxRetryAfter = int64(control.MaxRetryAfter / time.Second)

// shedCache holds the 503 responses in use, by keep-alive and Retry-After.
type shedCache [2][maxRetryAfter + 1]atomic.Pointer[shedBlock]

// shedBytes returns the bytes of a 503 for now, retryAfter seconds (1 to
// maxRetryAfter) and keep-alive. They are never written to once built:
// any number of responses may be sending them.
func (s *Server) shedBytes(now time.Time, retryAfter int64, keep bool) []byte {
	retryAfter = min(max(retryAfter, 1), maxRetryAfter)
	k := 0
	if keep {
		k = 1
	}
	slot := &s.shedCache[k][retryAfter]
	sec := now.Unix()
	if b := slot.Load(); b != nil && b.sec == sec {
		return b.data
	}
	data, _ := http1.ErrorResponse{Status: http.StatusServiceUnavailable, Date: now, Server: s.cfg.ServerName,
		RetryAfter: retryAfter, KeepAlive: keep}.Append(nil)
	b := &shedBlock{sec: sec, data: data}
	slot.Store(b)
	return b.data
}
