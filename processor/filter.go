package processor

import (
	"errors"
	"net/http"
	"os"

	"github.com/quartet-server/quartet/stages"
)

// OutputFilter sees a response's body on its way from the handler to the
// writer, as buckets, before the HTTP framing is applied: APR's output
// filters, nginx's body filters. A filter may pass buckets on unchanged
// (c.Pass), transform them, drop them, or take over shipping them (mod_rdma
// ships file and heap buckets by RDMA and passes on only what the client
// must still receive over TCP). Until the first bucket reaches the end of
// the chain, a filter may still change the status and the header
// (c.SetStatus, c.Header): the header block is built from what they are
// then.
//
// Lifetimes: a heap bucket's Data is valid only until FilterOutput returns
// (the handler's bytes are staged in one reused buffer); a filter that needs
// them later copies them. A file bucket's File stays open until the
// response is recycled, as the handler arranged. The last bucket a handler
// produces is EOS; a filter that holds work back must pass everything
// before passing EOS on.
type OutputFilter interface {
	FilterOutput(c *FilterChain, bs []stages.Bucket) error
}

// OutputFilterFunc adapts a function to OutputFilter.
type OutputFilterFunc func(c *FilterChain, bs []stages.Bucket) error

// FilterOutput calls f.
func (f OutputFilterFunc) FilterOutput(c *FilterChain, bs []stages.Bucket) error { return f(c, bs) }

// maxFilters bounds a response's chain; filters are few (Apache's usual
// chain is a handful), and a fixed array keeps the chain allocation-free.
const maxFilters = 8

// ErrTooManyFilters is returned by AddOutputFilter beyond maxFilters.
var ErrTooManyFilters = errors.New("quartet: too many output filters on one response")

// ErrFiltersAfterCommit is returned by AddOutputFilter once the response's
// header has been sent: a filter added then would see half a body.
var ErrFiltersAfterCommit = errors.New("quartet: output filter added after the header was sent")

// FilterChain is a filter's view of its response and of the filters after
// it. Each filter gets its own position in the chain.
type FilterChain struct {
	w   *ResponseWriter
	pos int // index of the filter this chain position calls next
}

// AddOutputFilter appends f to the response's chain: the first filter added
// is the first to see the handler's output. Call it from an insert-filter
// hook or from the handler before writing any body.
func (w *ResponseWriter) AddOutputFilter(f OutputFilter) error {
	if w.committed || w.filterStarted {
		return ErrFiltersAfterCommit
	}
	if w.nfilters == maxFilters {
		return ErrTooManyFilters
	}
	w.filters[w.nfilters] = f
	w.nfilters++
	return nil
}

// filtering reports whether a public call must enter the chain rather than
// go to the framing code: only when there are filters and the call is not
// the end of the chain itself.
func (w *ResponseWriter) filtering() bool { return w.nfilters > 0 && !w.framing }

// Pass hands buckets to the next filter, or to the framing code at the end
// of the chain.
func (c *FilterChain) Pass(bs ...stages.Bucket) error {
	w := c.w
	if c.pos < w.nfilters {
		return w.filters[c.pos].FilterOutput(&w.chain[c.pos+1], bs)
	}
	return w.frame(bs)
}

// Request is the request being answered.
func (c *FilterChain) Request() *stages.Request { return c.w.req }

// Conn is the connection the response goes to.
func (c *FilterChain) Conn() *stages.Conn { return c.w.req.Conn }

// Header is the response header; changes count until the first bucket
// reaches the end of the chain.
func (c *FilterChain) Header() *Header { return &c.w.hdr }

// Status is the status the handler chose (200 if it has written without
// choosing), or 0 before either.
func (c *FilterChain) Status() int {
	if c.w.status != 0 {
		return c.w.status
	}
	return c.w.fstatus
}

// SetStatus changes the status; it has no effect once the header is sent.
func (c *FilterChain) SetStatus(code int) {
	if c.w.status == 0 {
		c.w.fstatus = code
	}
}

// Committed reports whether the header block has been built.
func (c *FilterChain) Committed() bool { return c.w.committed }

// NewHold makes a hold for this response; pass it on as
// stages.Bucket{Kind: stages.BucketHold, Hold: h} and the writer stops
// there until h.Release. A hold passed before anything else keeps even the
// header back.
func (c *FilterChain) NewHold() *stages.Hold {
	h := stages.NewHold(c.w.resp)
	c.w.holds = append(c.w.holds, h)
	return h
}

// OnRecycle registers a clean-up for when the response is recycled.
func (c *FilterChain) OnRecycle(x stages.Cleanup) { c.w.OnRecycle(x) }

// Head reports whether the request is HEAD (the body is counted, not sent).
func (c *FilterChain) Head() bool { return c.w.head }

// The handler's side, in filter mode.

func filterWrite[S string | []byte](w *ResponseWriter, p S) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.fstatus == 0 && w.status == 0 {
		w.fstatus = http.StatusOK
	}
	if w.stage == nil {
		w.stage = w.p.getChunk()
	}
	n := 0
	for n < len(p) {
		k := copy(w.stage[:cap(w.stage)], p[n:])
		if err := w.enter(stages.Bucket{Kind: stages.BucketHeap, Data: w.stage[:k]}); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

func (w *ResponseWriter) filterSendFile(f *os.File, off, n int64) error {
	if w.fstatus == 0 && w.status == 0 {
		w.fstatus = http.StatusOK
	}
	return w.enter(stages.Bucket{Kind: stages.BucketFile, File: f, Off: off, Len: n})
}

// enter starts buckets down the chain from the first filter.
func (w *ResponseWriter) enter(bs ...stages.Bucket) error {
	if w.err != nil {
		return w.err
	}
	w.filterStarted = true
	w.one[0] = bs[0]
	if len(bs) == 1 {
		bs = w.one[:1]
	}
	err := w.filters[0].FilterOutput(&w.chain[1], bs)
	w.one[0] = stages.Bucket{}
	if err != nil && w.err == nil {
		w.broken = true
		w.fail(err)
	}
	return err
}

// frame is the end of the chain: what the filters pass becomes HTTP, by
// the same code that serves handlers without filters.
func (w *ResponseWriter) frame(bs []stages.Bucket) error {
	w.framing = true
	defer func() { w.framing = false }()
	for i := range bs {
		b := &bs[i]
		if b.Kind != stages.BucketHold && w.status == 0 {
			code := w.fstatus
			if code == 0 {
				code = http.StatusOK
			}
			w.WriteHeader(code)
		}
		var err error
		switch b.Kind {
		case stages.BucketHeap:
			_, err = w.Write(b.Data)
		case stages.BucketFile:
			err = w.SendFile(b.File, b.Off, b.Len)
		case stages.BucketFlush:
			err = w.Flush()
		case stages.BucketHold:
			w.holdBucket(b.Hold)
		case stages.BucketEOS:
			w.eosFramed = true
		}
		if err != nil {
			return err
		}
	}
	return w.err
}
