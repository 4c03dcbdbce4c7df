package runtime

import (
	"sync/atomic"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// fusion is what a reader loop needs to serve a request on itself (stage
// fusion: dispatch, servesInline): the handler's caller and the writer of
// what it answered. Only the loop holding the id uses it; a loop added
// later under the same id (loops.go) takes it over, so its counts, which
// Stats sums, only grow.
type fusion struct {
	inline *processor.InlineServer
	direct writer.Direct
	// ending is the response direct is writing, while it writes it: if
	// direct ends it, it is recycled right there, on the loop, and the
	// connection goes back with the loop's ReturnOwn instead of through
	// its queue. Written by the loop; read by whoever recycles a response
	// of the loop's connections, which for any other response than this
	// one is some other goroutine.
	ending atomic.Pointer[stages.Response]
}

// fusionFor makes reader loop id's fusion if it has none yet. Called
// before the loop starts (New, or addReader under loopsMu), so the loop
// sees it; Stats reads it through the atomic pointer.
func (s *Server) fusionFor(id int) {
	if !s.fusing || s.fused[id].Load() != nil {
		return
	}
	s.fused[id].Store(&fusion{inline: s.pool.NewInline()})
}

// returnsToItself reports whether r, being recycled, is a response its
// connection's reader loop wrote itself and is ending now: the caller is
// that loop's goroutine.
func (s *Server) returnsToItself(r *stages.Response) bool {
	if !s.fusing {
		return false
	}
	f := s.fused[r.Conn.Reader].Load()
	return f != nil && f.ending.Load() == r
}

// fusedCounts sums the requests served inline and the responses written
// directly by every reader loop that has had an id.
func (s *Server) fusedCounts() (inline, direct uint64) {
	for i := range s.fused {
		if f := s.fused[i].Load(); f != nil {
			inline += f.inline.Served()
			direct += f.direct.Ended()
		}
	}
	return inline, direct
}
