package processor

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// Alternative is a complete response kept ready to replace the rest of the
// response being built, should a hold be diverted (stages.Hold.Divert).
//
// The case it exists for: a filter ships the body another way (RDMA) and
// holds the header back until that transfer completes; if the transfer
// fails, the header that announces it must not go out, and the body must
// go over TCP in the same response instead. The filter prepares the
// alternative while it still has the body, before it passes the hold; the
// completion, later and on another goroutine, renders it and diverts.
//
// Only responses that use it pay for it: Alternative copies the header,
// Render allocates the header block. Ordinary responses are untouched.
type Alternative struct {
	p      *Pool
	minor  int
	status int
	head   bool
	ka     bool
	hdr    Header // a copy: the response's own dies with its request
	body   []stages.Bucket
	length int64
}

// ErrAlternativeBody is returned by Alternative for a body bucket that is
// not heap or file data.
var ErrAlternativeBody = errors.New("quartet: an alternative body holds heap and file buckets only")

// Alternative prepares a replacement for the rest of this response: the
// same status line and header fields as they are now (Render may edit a
// copy of them), Date and Server as the real header block adds them, the
// same keep-alive decision (pinned now, so the real header block cannot
// decide otherwise later), and Content-Length framing for body. For HEAD,
// body only gives the length and is not sent.
//
// body's heap data and files must stay valid until the response is
// recycled (register their release with OnRecycle): the writer reads them
// only if the hold is diverted, which may be after the handler returned.
func (c *FilterChain) Alternative(body []stages.Bucket) (*Alternative, error) {
	w := c.w
	st := c.Status()
	if st == 0 {
		st = http.StatusOK
	}
	if !bodyAllowed(st) {
		return nil, ErrBodyNotAllowed
	}
	a := &Alternative{p: w.p, minor: w.req.Minor, status: st, head: w.head}
	for i := range body {
		if k := body[i].Kind; k != stages.BucketHeap && k != stages.BucketFile {
			return nil, ErrAlternativeBody
		}
		a.length += body[i].Size()
	}
	if !a.head {
		a.body = append([]stages.Bucket(nil), body...)
	}
	for i := range w.hdr.fields {
		if f := &w.hdr.fields[i]; !f.dead {
			// Header strings may alias the request's arena: copy them.
			a.hdr.fields = append(a.hdr.fields, headerField{name: strings.Clone(f.name), value: strings.Clone(f.value)})
		}
	}
	a.ka = w.keepAlive()
	if a.ka {
		w.kaPinned = true
	} else {
		w.close = true
	}
	return a, nil
}

// Len is the alternative's body length, its Content-Length.
func (a *Alternative) Len() int64 { return a.length }

// Render returns the alternative as buckets for stages.Hold.Divert: the
// header block, built by the same code as the real one after edit (if not
// nil) has changed a copy of the header (framing fields, Content-Length
// among them, are the framer's and ignored), then the body (none for
// HEAD). It may be called from any goroutine, any number of times, until
// the response is recycled.
func (a *Alternative) Render(edit func(h *Header)) []stages.Bucket {
	h := Header{fields: append([]headerField(nil), a.hdr.fields...)}
	if edit != nil {
		edit(&h)
	}
	// A detached writer: headerBlock needs the pool (Date, Server), the
	// request's version and a clock, and emits into the sink.
	buf := make([]byte, 0, 512)
	d := &ResponseWriter{p: a.p, req: &stages.Request{Major: 1, Minor: a.minor}, now: time.Now(), sink: &buf}
	d.headerBlock(a.status, &h, a.length, a.ka)
	out := make([]stages.Bucket, 0, 1+len(a.body))
	out = append(out, stages.Bucket{Kind: stages.BucketHeap, Data: buf})
	return append(out, a.body...)
}
