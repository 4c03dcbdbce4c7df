package rdmahttp

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/stages"
)

// segment is one piece of the body, in order: bytes in the staging
// memory (heap buckets, copied) or a file region.
type segment struct {
	file     *os.File
	off, n   int64 // staging offset, or file offset
	fe       *fileEntry
	stageOff int64
}

// bodyFilter is the output filter of one response that asked for RDMA
// (mod_rdma's rdma_output_filter). It collects the body (heap bytes
// copied into registered staging memory, since a heap bucket dies when
// the filter returns; file regions noted, to be mapped through the
// cache), and at EOS ships it by RDMA, holding the header until the
// writer loop sees the completion, or falls back to TCP.
type bodyFilter struct {
	s          *Server
	q          request
	passReason string // set: fall back at the first bucket
	passing    bool   // fallen back: everything passes unchanged

	segs  []segment
	total int64
	stage *rdma.Memory // heap bytes, grown by doubling
	used  int64
}

// limit is the most the body may be for RDMA delivery.
func (f *bodyFilter) limit() int64 {
	if f.q.mode == ModeServerWrites {
		return f.q.buf.Len
	}
	return f.s.cfg.MaxStaging
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
	for i := range bs {
		b := &bs[i]
		switch b.Kind {
		case stages.BucketHeap:
			if f.total+int64(len(b.Data)) > f.limit() {
				return f.fallback(c, f.tooBig(), bs[i:])
			}
			if err := f.addHeap(b.Data); err != nil {
				return f.fallback(c, reasonRegister+": "+err.Error(), bs[i:])
			}
		case stages.BucketFile:
			if f.total+b.Len > f.limit() {
				return f.fallback(c, f.tooBig(), bs[i:])
			}
			f.segs = append(f.segs, segment{file: b.File, off: b.Off, n: b.Len})
			f.total += b.Len
		case stages.BucketFlush:
			// Delivery is at EOS; a flush has nothing to push out early.
		case stages.BucketHold:
			return f.fallback(c, reasonUnsupported+": hold in the body", bs[i:])
		case stages.BucketEOS:
			return f.finish(c, bs[i:])
		}
	}
	return nil
}

func (f *bodyFilter) tooBig() string {
	if f.q.mode == ModeServerWrites {
		return reasonBufferTooSmall
	}
	return reasonTooLarge
}

// addHeap copies p into the staging memory (the bucket dies on return).
func (f *bodyFilter) addHeap(p []byte) error {
	n := int64(len(p))
	if err := f.grow(f.used + n); err != nil {
		return err
	}
	copy(f.stage.Bytes()[f.used:], p)
	f.appendHeap(n)
	return nil
}

func (f *bodyFilter) appendHeap(n int64) {
	if k := len(f.segs); k > 0 && f.segs[k-1].file == nil && f.segs[k-1].stageOff+f.segs[k-1].n == f.used {
		f.segs[k-1].n += n
	} else {
		f.segs = append(f.segs, segment{stageOff: f.used, n: n})
	}
	f.used += n
	f.total += n
}

// grow makes the staging memory hold at least need bytes.
func (f *bodyFilter) grow(need int64) error {
	if f.stage != nil && int64(f.stage.Len()) >= need {
		return nil
	}
	size := int64(64 << 10)
	if f.stage != nil {
		size = int64(f.stage.Len())
	}
	for size < need {
		size *= 2
	}
	m, err := rdma.Alloc(int(size))
	if err != nil {
		return err
	}
	if f.stage != nil {
		copy(m.Bytes(), f.stage.Bytes()[:f.used])
		f.stage.Free()
	}
	f.stage = m
	return nil
}

// freeStage releases the staging memory when nothing is registered on it.
func (f *bodyFilter) freeStage() {
	if f.stage != nil {
		f.stage.Free()
		f.stage = nil
	}
}

// fallback sends what was collected, then rest, over TCP, with a header
// saying why RDMA was not used.
func (f *bodyFilter) fallback(c *processor.FilterChain, reason string, rest []stages.Bucket) error {
	f.passing = true
	f.s.st.fallbacks.Add(1)
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

// passCollected passes the collected segments on as buckets; the framing
// copies heap bytes, so the staging memory can go right after.
func (f *bodyFilter) passCollected(c *processor.FilterChain) error {
	defer f.freeStage()
	const piece = 256 << 10 // bounded Writes keep the processor's back-pressure working
	for _, sg := range f.segs {
		if sg.file != nil {
			if err := c.Pass(stages.Bucket{Kind: stages.BucketFile, File: sg.file, Off: sg.off, Len: sg.n}); err != nil {
				return err
			}
			continue
		}
		for off := sg.stageOff; off < sg.stageOff+sg.n; off += piece {
			end := min(off+piece, sg.stageOff+sg.n)
			if err := c.Pass(stages.Bucket{Kind: stages.BucketHeap, Data: f.stage.Bytes()[off:end]}); err != nil {
				return err
			}
		}
	}
	f.segs = nil
	return nil
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
	lp := f.s.loopFor(c.Conn().Writer)
	if lp == nil {
		return f.fallback(c, reasonNoRDMA, eos)
	}
	t0 := time.Now()
	defer func() { f.s.st.collectNanos.Add(int64(time.Since(t0))) }()
	// Map and register the file regions (the cache makes this once per
	// file), then digest the body as it will be delivered.
	var refs []*fileEntry
	release := func() {
		for _, e := range refs {
			f.s.cache.put(e)
		}
	}
	h := sha256.New()
	for i := range f.segs {
		sg := &f.segs[i]
		if sg.file == nil {
			h.Write(f.stage.Bytes()[sg.stageOff : sg.stageOff+sg.n])
			continue
		}
		e, err := f.s.cache.get(sg.file)
		if err != nil || sg.off+sg.n > e.size {
			if err == nil {
				f.s.cache.put(e)
				err = fmt.Errorf("region beyond the file's %d bytes", e.size)
			}
			release()
			return f.fallback(c, reasonRegister+": "+err.Error(), eos)
		}
		refs = append(refs, e)
		sg.fe = e
		if len(f.segs) == 1 && sg.off == 0 && sg.n == e.size {
			h = nil // the cached digest is this body's
			break
		}
		h.Write(e.mem.Bytes()[sg.off : sg.off+sg.n])
	}
	var sum [sha256.Size]byte
	if h != nil {
		h.Sum(sum[:0])
	} else {
		sum = f.segs[0].fe.digest
	}
	hdr := c.Header()
	hdr.Set(HeaderDigest, digestValue(sum))
	if f.total == 0 {
		// Nothing to move: answer at once, no RDMA operation exists.
		release()
		f.freeStage()
		f.setDelivered(c, nil)
		if f.q.mode == ModeServerWrites {
			hdr.Set(HeaderWritten, "0")
		} else {
			hdr.Set(HeaderRead, region{}.String())
		}
		return c.Pass(eos...)
	}
	// A per-operation MR exposure needs a channel in a PD of its own.
	ch, err := lp.channel(f.q.endpoint, f.q.mode == ModeClientReads && !f.byWindow())
	if err != nil {
		release()
		return f.fallback(c, reasonConnect+": "+err.Error(), eos)
	}
	defer lp.releaseChannel(ch)
	if f.q.mode == ModeServerWrites {
		return f.shipWrites(c, lp, ch, release, eos)
	}
	return f.expose(c, lp, ch, refs, release, eos)
}

// setDelivered sets the headers every RDMA-delivered response has.
func (f *bodyFilter) setDelivered(c *processor.FilterChain, ch *channel) {
	hdr := c.Header()
	hdr.Set(HeaderMode, f.q.mode.String())
	hdr.Set(HeaderOp, strconv.FormatUint(f.q.op, 10))
	if ch != nil {
		hdr.Set(HeaderChannel, strconv.FormatUint(uint64(ch.id), 10))
	}
	hdr.Set("Content-Length", "0")
}

// registerStage registers the staging memory for this response.
func (f *bodyFilter) registerStage(access rdma.Access) (rdma.MR, error) {
	mr, err := f.s.pd.Register(f.stage.Bytes()[:f.used], access)
	if err != nil {
		return nil, err
	}
	f.s.st.liveMRs.Add(1)
	return mr, nil
}

// shipWrites is server-writes: Writes of every segment into the client's
// buffer, then the written message, signaled; a hold keeps the header
// back until that completion reaches the writer loop.
func (f *bodyFilter) shipWrites(c *processor.FilterChain, lp *loop, ch *channel, release func(), eos []stages.Bucket) error {
	var stageMR rdma.MR
	if f.used > 0 {
		mr, err := f.registerStage(0)
		if err != nil {
			release()
			return f.fallback(c, reasonRegister+": "+err.Error(), eos)
		}
		stageMR = mr
	}
	stage := f.stage
	f.stage = nil // owned by the op from here
	done := func() {
		release()
		if stageMR != nil && stageMR.Close() == nil {
			f.s.st.liveMRs.Add(-1)
		}
		if stage != nil {
			stage.Free()
		}
	}
	var sgl [1]rdma.SGE
	raddr := f.q.buf.Addr
	for _, sg := range f.segs {
		mr, base := stageMR, sg.stageOff
		if sg.file != nil {
			mr, base = sg.fe.mr, sg.off
		}
		for off := int64(0); off < sg.n; off += maxWriteChunk {
			n := min(sg.n-off, maxWriteChunk)
			sgl[0] = rdma.SGEOf(mr, int(base+off), int(n))
			if err := ch.qp.PostWrite(tagChan|uint64(ch.id), sgl[:], raddr, f.q.buf.RKey, 0); err != nil {
				// Writes already posted may still land; the client's
				// buffer is its own and the TCP body supersedes them.
				f.stage = stage
				stage = nil
				done()
				return f.fallback(c, reasonPost+": "+err.Error(), eos)
			}
			raddr += uint64(n)
		}
	}
	// Should the transfer fail while the hold still keeps the header
	// back, the completion diverts the hold onto the body over TCP: the
	// writer then reads the same staging memory and files the device
	// reads, so both own them (sharedBody).
	body := newSharedBody(done)
	hold := c.NewHold()
	o := &op{kind: opWritten, ch: ch, hold: hold, bytes: f.total, release: body.put, alt: f.alternative(c, stage)}
	err := lp.post(o, func(id uint64) error {
		sgl[0] = lp.sendSlot(ch, msgWritten, f.q.op)
		return ch.qp.PostSend(id, sgl[:], rdma.SendSignaled|rdma.SendInline)
	})
	if err != nil {
		hold.Release()
		f.stage = stage
		stage = nil
		done()
		return f.fallback(c, reasonPost+": "+err.Error(), eos)
	}
	c.OnRecycle(body) // the response's reference; the op holds the device's
	f.setDelivered(c, ch)
	c.Header().Set(HeaderWritten, strconv.FormatInt(f.total, 10))
	f.passing = true
	return c.Pass(append([]stages.Bucket{{Kind: stages.BucketHold, Hold: hold}}, eos...)...)
}

// alternative prepares the TCP copy of a server-writes body, for a
// transfer that fails while the header is still held: the collected
// segments in order, file regions from their files (open until the
// response is recycled) and heap bytes from the staging memory, under the
// response's header. nil if it cannot be made: a failure then goes out as
// before, with the delivery header, and the client retries.
func (f *bodyFilter) alternative(c *processor.FilterChain, stage *rdma.Memory) *processor.Alternative {
	body := make([]stages.Bucket, 0, len(f.segs))
	for _, sg := range f.segs {
		if sg.file != nil {
			body = append(body, stages.Bucket{Kind: stages.BucketFile, File: sg.file, Off: sg.off, Len: sg.n})
			continue
		}
		body = append(body, stages.Bucket{Kind: stages.BucketHeap, Data: stage.Bytes()[sg.stageOff : sg.stageOff+sg.n]})
	}
	alt, err := c.Alternative(body)
	if err != nil {
		return nil
	}
	return alt
}

// sharedBody is the one owner of what a server-writes op reads from: its
// staging memory and the MR over it, and its file cache references. Two
// readers may still use them: the device, until the op's completion (or
// its flush, or Close), and the writer, which sends them over TCP if the
// response is diverted, until the response is recycled. Each holds one
// reference; the last to let go runs free.
type sharedBody struct {
	refs atomic.Int32
	free func()
}

func newSharedBody(free func()) *sharedBody {
	b := &sharedBody{free: free}
	b.refs.Store(2) // the op's and the response's
	return b
}

func (b *sharedBody) put() {
	if n := b.refs.Add(-1); n == 0 {
		b.free()
	} else if n < 0 {
		panic("rdmahttp: sharedBody released more than twice")
	}
}

// Cleanup is the response's put, when it is recycled (stages.Cleanup).
func (b *sharedBody) Cleanup() { b.put() }

// expose is client-reads: one contiguous registered region holding
// exactly the body, exposed read-only to this client's QP only.
func (f *bodyFilter) expose(c *processor.FilterChain, lp *loop, ch *channel, refs []*fileEntry, release func(), eos []stages.Bucket) error {
	s := f.s
	var (
		base    rdma.MR // what the window binds over (windows)
		bytes   []byte  // the body's bytes (per-operation MR)
		off     int
		stage   *rdma.Memory
		cleanup = release
		useMW   = f.byWindow()
	)
	if len(f.segs) == 1 && f.segs[0].file != nil {
		sg := f.segs[0]
		base, off = sg.fe.mr, int(sg.off)
		bytes = sg.fe.mem.Bytes()[sg.off : sg.off+sg.n]
		f.freeStage()
	} else {
		if len(refs) > 0 {
			// Mixed heap and file: one contiguous copy.
			if err := f.flatten(); err != nil {
				release()
				return f.fallback(c, reasonRegister+": "+err.Error(), eos)
			}
			release()
			refs = nil
		}
		stage, f.stage = f.stage, nil
		bytes = stage.Bytes()[:f.used]
		cleanup = func() { stage.Free() }
		if useMW {
			mr, err := s.pd.Register(bytes, rdma.AccessMWBind)
			if err != nil {
				f.stage = stage
				return f.fallback(c, reasonRegister+": "+err.Error(), eos)
			}
			s.st.liveMRs.Add(1)
			base = mr
			cleanup = func() {
				if mr.Close() == nil {
					s.st.liveMRs.Add(-1)
				}
				stage.Free()
			}
		}
	}
	e := &exposure{op: f.q.op, ch: ch, release: cleanup}
	var rg region
	var hold *stages.Hold
	if useMW {
		mw, err := s.pd.AllocMW()
		if err != nil {
			cleanup()
			return f.fallback(c, reasonRegister+": ibv_alloc_mw: "+err.Error(), eos)
		}
		s.st.liveMWs.Add(1)
		e.mw = mw
		sge := rdma.SGEOf(base, off, len(bytes))
		if why := lp.addExposure(e); why != "" {
			lp.discard(e)
			return f.fallback(c, why, eos)
		}
		hold = c.NewHold()
		var rkey uint32
		err = lp.post(&op{kind: opBind, ch: ch, hold: hold, exp: e}, func(id uint64) error {
			var err error
			rkey, err = ch.qp.BindMW(id, mw, base, sge, rdma.AccessRemoteRead, rdma.SendSignaled)
			return err
		})
		if err != nil {
			hold.Release()
			lp.revoke(ch, f.q.op, false)
			return f.fallback(c, reasonPost+": ibv_bind_mw: "+err.Error(), eos)
		}
		rg = region{Addr: sge.Addr, RKey: rkey, Len: int64(len(bytes))}
		s.st.byWindow.Add(1)
	} else {
		mr, err := ch.pd.Register(bytes, rdma.AccessRemoteRead) // the isolated channel's PD
		if err != nil {
			cleanup()
			return f.fallback(c, reasonRegister+": "+err.Error(), eos)
		}
		s.st.liveMRs.Add(1)
		e.mr = mr
		if why := lp.addExposure(e); why != "" {
			lp.discard(e)
			return f.fallback(c, why, eos)
		}
		rg = region{Addr: mr.Addr(), RKey: mr.RKey(), Len: int64(len(bytes))}
	}
	f.setDelivered(c, ch)
	c.Header().Set(HeaderRead, rg.String())
	f.passing = true
	if hold != nil {
		return c.Pass(append([]stages.Bucket{{Kind: stages.BucketHold, Hold: hold}}, eos...)...)
	}
	return c.Pass(eos...)
}

// byWindow reports whether a client-reads exposure of the collected body
// is a memory window: where the device has them and the window reaches
// only the body, either because the device enforces a window's range or
// because the window covers its whole MR (staging memory registered for
// exactly the body, a whole cached file). Otherwise (no windows, as on
// siw; a part of a file on a device such as Linux 6.1's rxe) it is a
// per-operation MR, on an isolated channel.
func (f *bodyFilter) byWindow() bool {
	s := f.s
	if !s.mw {
		return false
	}
	if len(f.segs) == 1 && f.segs[0].file != nil {
		sg := f.segs[0]
		whole := sg.off == 0 && sg.n == sg.fe.size
		return whole || s.info.Caps&rdma.CapMWRangeChecked != 0
	}
	return true
}

// flatten copies every segment, in order, into one new staging memory.
func (f *bodyFilter) flatten() error {
	m, err := rdma.Alloc(int(f.total))
	if err != nil {
		return err
	}
	dst := m.Bytes()
	pos := int64(0)
	for _, sg := range f.segs {
		if sg.file != nil {
			if _, err := sg.file.ReadAt(dst[pos:pos+sg.n], sg.off); err != nil && err != io.EOF {
				m.Free()
				return err
			}
		} else {
			copy(dst[pos:], f.stage.Bytes()[sg.stageOff:sg.stageOff+sg.n])
		}
		pos += sg.n
	}
	f.freeStage()
	f.stage, f.used = m, f.total
	f.segs = []segment{{stageOff: 0, n: f.total}}
	return nil
}
