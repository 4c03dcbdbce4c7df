package rdmahttp

import (
	"errors"
	"os"
	"strconv"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/stages"
)

// bodyFilter is the output filter of one response that asked for RDMA
// (mod_rdma's rdma_output_filter). It collects the body into a
// deliver.Body (heap bytes copied into registered staging memory, since
// a heap bucket dies when the filter returns; file regions noted, to be
// mapped through the engine's cache), and at EOS hands it to the engine,
// holding the header until the writer loop sees the completion where
// the engine says so, or falls back to TCP.
type bodyFilter struct {
	s          *Server
	q          deliver.Target
	passReason string // set: fall back at the first bucket
	passing    bool   // fallen back: everything passes unchanged
	body       *deliver.Body
}

func (f *bodyFilter) FilterOutput(c *processor.FilterChain, bs []stages.Bucket) error {
	if f.passing {
		return c.Pass(bs...)
	}
	if c.Head() {
		f.passing = true
		return c.Pass(bs...)
	}
	if f.passReason != "" {
		return f.fallback(c, f.passReason, bs)
	}
	if f.body == nil {
		f.body = f.s.e.NewBody()
	}
	limit, tooBig := f.s.e.Limit(&f.q)
	for i := range bs {
		b := &bs[i]
		switch b.Kind {
		case stages.BucketHeap:
			if f.body.Len()+int64(len(b.Data)) > limit {
				return f.fallback(c, tooBig.String(), bs[i:])
			}
			if err := f.body.AddHeap(b.Data); err != nil {
				return f.fallback(c, deliver.ReasonRegisterFailed.String()+": "+err.Error(), bs[i:])
			}
		case stages.BucketFile:
			if f.body.Len()+b.Len > limit {
				return f.fallback(c, tooBig.String(), bs[i:])
			}
			f.body.AddFile(b.File, b.Off, b.Len)
		case stages.BucketFlush:
			// Delivery is at EOS; a flush has nothing to push out early.
		case stages.BucketHold:
			return f.fallback(c, deliver.ReasonUnsupported.String()+": hold in the body", bs[i:])
		case stages.BucketEOS:
			return f.finish(c, bs[i:])
		}
	}
	return nil
}

// fallback sends what was collected, then rest, over TCP, with a header
// saying why RDMA was not used.
func (f *bodyFilter) fallback(c *processor.FilterChain, reason string, rest []stages.Bucket) error {
	f.passing = true
	f.s.e.CountFallback()
	if !c.Committed() {
		c.Header().Set(HeaderFallback, reason)
	}
	if err := f.passCollected(c); err != nil {
		return err
	}
	if len(rest) == 0 {
		return nil
	}
	return c.Pass(rest...)
}

// passCollected passes the collected body on as buckets and drops the
// filter's reference; the framing copies heap bytes, so the staging
// memory can go right after.
func (f *bodyFilter) passCollected(c *processor.FilterChain) error {
	if f.body == nil {
		return nil
	}
	defer func() { f.body.Release(); f.body = nil }()
	const piece = 256 << 10 // bounded Writes keep the processor's back-pressure working
	return f.body.Each(func(heap []byte, file *os.File, off, n int64) error {
		if file != nil {
			return c.Pass(stages.Bucket{Kind: stages.BucketFile, File: file, Off: off, Len: n})
		}
		for len(heap) > 0 {
			k := min(len(heap), piece)
			if err := c.Pass(stages.Bucket{Kind: stages.BucketHeap, Data: heap[:k]}); err != nil {
				return err
			}
			heap = heap[k:]
		}
		return nil
	})
}

// finish is EOS: deliver by RDMA, or fall back.
func (f *bodyFilter) finish(c *processor.FilterChain, eos []stages.Bucket) error {
	if st := c.Status(); st != 0 && st != 200 { // 0: the handler chose none, so 200
		f.passing = true
		if err := f.passCollected(c); err != nil {
			return err
		}
		return c.Pass(eos...)
	}
	e := f.s.e
	// The channel and the exposures the client confirms later live in the
	// engine loop of the connection's writer loop: keep it there.
	c.Conn().PinWriter()
	if !e.Attached(c.Conn().Writer) {
		return f.fallback(c, deliver.ReasonNoRDMA.String(), eos)
	}
	body := f.body
	if err := body.Map(); err != nil {
		return f.fallback(c, err.Error(), eos)
	}
	c.Header().Set(HeaderDigest, digestValue(body.Digest()))
	// Where the reply waits for a completion, make the hold now (the
	// completion may come before Deliver returns) and, for server-writes,
	// the response with the body over TCP that replaces it should the
	// transfer fail while the header is still held. That alternative reads
	// the body's staging memory and files, so it keeps a reference until
	// the response is recycled.
	var hold *stages.Hold
	var alt *processor.Alternative
	if e.WillWait(&f.q, body) {
		hold = c.NewHold()
		if f.q.Mode == deliver.ModeServerWrites {
			if alt = f.alternative(c, body); alt != nil {
				body.Retain()
				c.OnRecycle(body)
			}
		}
	}
	n := deliver.Notify{}
	if hold != nil {
		n.Ready = func(err error) {
			if err == nil {
				hold.Release() // the header goes out from the writer loop, now
				return
			}
			f.s.fail(hold, alt, err.Error())
		}
	}
	r, err := e.Deliver(c.Conn().Writer, f.q, body, n)
	if err != nil {
		if hold != nil {
			hold.Release()
		}
		var fb *deliver.Fallback
		if !errors.As(err, &fb) {
			fb = &deliver.Fallback{Reason: deliver.ReasonPostFailed, Detail: err.Error()}
		}
		return f.fallback(c, fb.Error(), eos)
	}
	f.body = nil // the engine's now
	f.setDelivered(c, r.Channel)
	if f.q.Mode == deliver.ModeServerWrites {
		c.Header().Set(HeaderWritten, strconv.FormatInt(r.Written, 10))
	} else {
		c.Header().Set(HeaderRead, formatRegion(r.Exposure))
	}
	f.passing = true
	if r.Wait {
		return c.Pass(append([]stages.Bucket{{Kind: stages.BucketHold, Hold: hold}}, eos...)...)
	}
	if hold != nil {
		hold.Release()
	}
	return c.Pass(eos...)
}

// setDelivered sets the headers every RDMA-delivered response has.
func (f *bodyFilter) setDelivered(c *processor.FilterChain, channel uint32) {
	hdr := c.Header()
	hdr.Set(HeaderMode, f.q.Mode.String())
	hdr.Set(HeaderOp, strconv.FormatUint(f.q.Op, 10))
	if channel != 0 {
		hdr.Set(HeaderChannel, strconv.FormatUint(uint64(channel), 10))
	}
	hdr.Set("Content-Length", "0")
}

// alternative prepares the TCP copy of a server-writes body, for a
// transfer that fails while the header is still held: the body's pieces
// in order, file regions from their files (open until the response is
// recycled) and heap bytes from the staging memory, under the response's
// header. nil if it cannot be made: a failure then goes out as before,
// with the delivery header, and the client retries.
func (f *bodyFilter) alternative(c *processor.FilterChain, body *deliver.Body) *processor.Alternative {
	var bs []stages.Bucket
	_ = body.Each(func(heap []byte, file *os.File, off, n int64) error {
		if file != nil {
			bs = append(bs, stages.Bucket{Kind: stages.BucketFile, File: file, Off: off, Len: n})
		} else {
			bs = append(bs, stages.Bucket{Kind: stages.BucketHeap, Data: heap})
		}
		return nil
	})
	alt, err := c.Alternative(bs)
	if err != nil {
		return nil
	}
	return alt
}

// fail ends the hold of a transfer that failed (or never finished).
// Where an alternative was prepared, the header that announces the
// transfer is still held (the hold is ahead of it), so the response is
// diverted onto the body over TCP with X-RDMA-Fallback saying why, and
// the client needs no retry. Otherwise the hold is released: the
// response goes out as it is, and the client detects the loss.
func (s *Server) fail(hold *stages.Hold, alt *processor.Alternative, why string) {
	if alt != nil {
		bs := alt.Render(func(h *processor.Header) {
			for _, name := range deliveryHeaders {
				h.Del(name)
			}
			h.Set(HeaderFallback, deliver.ReasonRDMAFailed.String()+": "+why)
		})
		// Counted before the divert, which may send the response at once:
		// a client that has it then sees it in the stats too.
		s.e.CountFallback()
		if hold.Divert(bs) {
			return
		}
		s.e.UncountFallback() // released (or diverted) by someone else first
	}
	hold.Release()
}

// deliveryHeaders are the response fields that describe an RDMA delivery;
// a diverted response drops them.
var deliveryHeaders = [...]string{HeaderMode, HeaderOp, HeaderChannel, HeaderWritten, HeaderRead}
