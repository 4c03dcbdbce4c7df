package deliver

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/quartet-server/quartet/rdma"
)

// stageBuf is staging memory: a mapping outside Go's heap that a device
// may read (heap bytes are copied here, since Go memory cannot be
// registered) and, once registered, its MR in the engine's PD.
type stageBuf struct {
	mem   *rdma.Memory
	mr    rdma.MR // nil until registered
	class int     // the pool's size class; -1 when the buffer is not pooled
}

// bytes is the whole buffer, which may be longer than what was asked.
func (b *stageBuf) bytes() []byte { return b.mem.Bytes() }

// Staging size classes: powers of two from minClass to maxClass bytes.
// Larger bodies get a buffer of their own, registered for the delivery
// and deregistered after it (registering tens of MiB costs far less
// than moving them; keeping them idle would pin far more than it saves).
const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 22 // 4 MiB
	numClasses    = maxClassShift - minClassShift + 1
)

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	c := bits.Len(uint(n-1)) - minClassShift
	if c >= numClasses {
		return -1
	}
	return c
}

// stagePool keeps registered staging buffers for reuse, so a reply's
// staging costs a copy, not an mmap, a registration (a pinning syscall
// on verbs), a deregistration and an munmap. It is the memory RDS's
// barrier reclaims: a buffer comes back when its delivery's unit retires
// (a completion at or beyond it, in any signalling mode), and is kept
// while the idle total stays under maxIdle.
//
// Reused buffers hold earlier bodies' bytes. Nothing exposes them:
// Writes send exactly the body, windows cover exactly the body where the
// device checks a window's range, and where it does not (Linux 6.1's rxe:
// a window reaches its whole MR) the body's slack is cleared before the
// window is bound (Body.clearSlack).
type stagePool struct {
	pd      rdma.PD
	access  rdma.Access
	st      *stats
	maxIdle int64
	keepErr func(format string, args ...any) // the engine's, for failed releases

	mu     sync.Mutex
	free   [numClasses][]*stageBuf
	idle   int64
	closed bool
}

func newStagePool(pd rdma.PD, access rdma.Access, maxIdle int64, st *stats) *stagePool {
	return &stagePool{pd: pd, access: access, maxIdle: maxIdle, st: st}
}

// get returns a buffer of at least n bytes: a pooled one, registered,
// for small and medium sizes; otherwise exactly n bytes, unregistered
// (register registers it when it is about to be used).
func (p *stagePool) get(n int) (*stageBuf, error) {
	c := classOf(n)
	if c < 0 || p.maxIdle <= 0 {
		m, err := rdma.Alloc(n)
		if err != nil {
			return nil, err
		}
		return &stageBuf{mem: m, class: -1}, nil
	}
	p.mu.Lock()
	if k := len(p.free[c]); k > 0 {
		b := p.free[c][k-1]
		p.free[c][k-1] = nil
		p.free[c] = p.free[c][:k-1]
		p.idle -= int64(b.mem.Len())
		p.mu.Unlock()
		p.st.pooledMRs.Add(-1)
		p.st.liveMRs.Add(1)
		return b, nil
	}
	p.mu.Unlock()
	m, err := rdma.Alloc(1 << (c + minClassShift))
	if err != nil {
		return nil, err
	}
	b := &stageBuf{mem: m, class: c}
	if err := p.register(b); err != nil {
		m.Free()
		return nil, err
	}
	return b, nil
}

// register registers b in the engine's PD if it is not yet.
func (p *stagePool) register(b *stageBuf) error {
	if b.mr != nil {
		return nil
	}
	mr, err := p.pd.Register(b.mem.Bytes(), p.access)
	if err != nil {
		return fmt.Errorf("ibv_reg_mr: %w", err)
	}
	b.mr = mr
	p.st.liveMRs.Add(1)
	return nil
}

// put gives b back: to the pool when it fits, else deregistered and
// unmapped. The device must be done with it.
func (p *stagePool) put(b *stageBuf) {
	if b.class >= 0 && b.mr != nil {
		size := int64(b.mem.Len())
		p.mu.Lock()
		if !p.closed && p.idle+size <= p.maxIdle {
			p.free[b.class] = append(p.free[b.class], b)
			p.idle += size
			p.mu.Unlock()
			p.st.liveMRs.Add(-1)
			p.st.pooledMRs.Add(1)
			return
		}
		p.mu.Unlock()
	}
	p.release(b)
}

func (p *stagePool) release(b *stageBuf) {
	if b.mr != nil {
		if err := b.mr.Close(); err == nil {
			p.st.liveMRs.Add(-1)
		} else if p.keepErr != nil {
			p.keepErr("staging ibv_dereg_mr: %w", err)
		}
		b.mr = nil
	}
	b.mem.Free()
}

// close releases the idle buffers; buffers still out are put back by
// their users and released then.
func (p *stagePool) close() error {
	p.mu.Lock()
	p.closed = true
	var all []*stageBuf
	for c := range p.free {
		all = append(all, p.free[c]...)
		p.free[c] = nil
	}
	p.idle = 0
	p.mu.Unlock()
	var errs []error
	for _, b := range all {
		p.st.pooledMRs.Add(-1)
		if err := b.mr.Close(); err != nil {
			errs = append(errs, fmt.Errorf("deliver: staging ibv_dereg_mr: %w", err))
		}
		b.mem.Free()
	}
	return errors.Join(errs...)
}
