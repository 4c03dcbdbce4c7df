package runtime

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// routeClasses gives each request its class for admission control and for
// fair scheduling between classes (stages.ClassQueue): the first segment of
// its path ("/sleep?ms=50" is class "sleep", "/" is class "/"). A route
// earns a class of its own the first time one of its requests is served
// without error, until stages.MaxClasses are open; before that, and for
// every route after, requests share class 0, "other". Learning from
// served requests, not from arrivals, keeps a client that sends random
// paths (all 404) from filling the table with classes of its own.
//
// The classifier is the runtime's: the reader and the processors see only
// a class number, and a protocol other than HTTP supplies its own.
type routeClasses struct {
	q      *stages.ClassQueue
	logger *slog.Logger

	mu    sync.Mutex                 // serialises learn
	table atomic.Pointer[routeTable] // immutable; replaced whole by learn
}

// routeTable maps first path segments to classes: segs[i] is class i's
// (segs[0] is unused: class 0 has none).
type routeTable struct {
	segs  [][]byte
	names []string
}

// maxClassSegment: a first segment longer than this is not a route worth
// a class of its own.
const maxClassSegment = 64

func newRouteClasses(q *stages.ClassQueue, logger *slog.Logger) *routeClasses {
	rc := &routeClasses{q: q, logger: logger}
	rc.table.Store(&routeTable{segs: [][]byte{nil}, names: []string{"other"}})
	return rc
}

// classify returns r's class. It allocates nothing; the reader's dispatch
// calls it for every request.
func (rc *routeClasses) classify(r *stages.Request) int {
	seg := firstSegment(r.Path)
	t := rc.table.Load()
	for i := 1; i < len(t.segs); i++ {
		if bytes.Equal(t.segs[i], seg) {
			return i
		}
	}
	return 0
}

// names returns the classes' names, by class number.
func (rc *routeClasses) names() []string { return rc.table.Load().names }

// served is called when a request's handler has returned with status (0:
// not yet committed, which will be a 200): a request of class 0 that
// succeeded opens a class for its route, if there is room.
func (rc *routeClasses) served(r *stages.Request, status int) {
	if r.Class != 0 || status >= 400 {
		return
	}
	t := rc.table.Load()
	if len(t.segs) >= stages.MaxClasses {
		return
	}
	seg := firstSegment(r.Path)
	if len(seg) > maxClassSegment {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	t = rc.table.Load()
	for _, s := range t.segs[1:] {
		if bytes.Equal(s, seg) {
			return // learnt meanwhile
		}
	}
	c, ok := rc.q.AddClass()
	if !ok || c != len(t.segs) {
		return
	}
	name := string(seg)
	if name == "" {
		name = "/"
	}
	next := &routeTable{
		segs:  append(append([][]byte(nil), t.segs...), bytes.Clone(seg)),
		names: append(append([]string(nil), t.names...), name),
	}
	rc.table.Store(next)
	rc.logger.Info("quartet: request class opened", "class", c, "route", name)
}

// wrap returns next with the learning step after it.
func (rc *routeClasses) wrap(next processor.Handler) processor.Handler {
	return processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		next.ServeQuartet(w, r)
		if r.Class == 0 {
			rc.served(r, w.Status())
		}
	})
}

// firstSegment is path's first segment: "/a/b" gives "a", "/" gives "".
func firstSegment(path []byte) []byte {
	if len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	if i := bytes.IndexByte(path, '/'); i >= 0 {
		path = path[:i]
	}
	return path
}
