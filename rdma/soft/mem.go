package soft

// Memory regions, memory windows and steering tags (siw_mem.c).
//
// An STag is index<<8 | key, as in siw: the index selects a slot in the
// device's table, the 8-bit key changes every time the slot is reused or
// a window rebound, so a stale STag misses. lkey and rkey are the same
// STag. Addresses are virtual addresses of the registered memory (the
// Tagged Offset of RFC 5040 is the VA), as siw does for user MRs.
//
// Every inbound tagged placement and Read Request goes through
// memTable.acquire, which checks the STag, the protection domain, the
// QP binding of a window, the access rights and the bounds before
// handing out a slice of the region; nothing is ever written through a
// slice acquire did not return.

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/quartet-server/quartet/rdma"
)

// region is an MR or an MW: a range of memory with a key and rights.
type region struct {
	table *memTable
	pd    *pd
	isMW  bool

	// users counts placements and transmissions using mem right now;
	// closing sets closed and waits for users to drain, so once Close
	// returns no goroutine touches mem again (the caller may munmap).
	users  atomic.Int32
	closed atomic.Bool

	// stag is read by lookups that race with a window rebind.
	stag atomic.Uint32
	// The fields below change only while users is drained (quiesce).
	mem    []byte
	base   uint64
	access rdma.Access
	qp     *qp     // MW: the QP it is bound to; nil when unbound
	parent *region // MW: the MR it is bound over
	mws    atomic.Int32
}

// accessErr says why an access check failed; it maps onto both the DDP
// and the RDMAP Terminate codes.
type accessErr uint8

const (
	accessOK accessErr = iota
	accessInvalidSTag
	accessBaseBounds
	accessNotAssoc
	accessRights
	accessTOWrap
)

func (e accessErr) ddpCode() uint8 {
	switch e {
	case accessBaseBounds:
		return ddpEcodeTBaseBounds
	case accessNotAssoc:
		return ddpEcodeTSTagNotAssoc
	case accessTOWrap:
		return ddpEcodeTTOWrap
	}
	return ddpEcodeTInvalidSTag
}

func (e accessErr) rdmapCode() uint8 {
	switch e {
	case accessBaseBounds:
		return rdmapEcodeBaseBounds
	case accessNotAssoc:
		return rdmapEcodeSTagNotAssoc
	case accessRights:
		return rdmapEcodeAccessRights
	case accessTOWrap:
		return rdmapEcodeTOWrap
	}
	return rdmapEcodeInvalidSTag
}

// memTable maps STag indexes to regions for one device.
type memTable struct {
	mu      sync.RWMutex
	slots   []*region // index 0 is never used, so STag 0 is always invalid
	keys    []uint8   // next key per slot
	free    []uint32
	maxSlot int
}

func newMemTable(max int) *memTable {
	return &memTable{slots: make([]*region, 1), keys: make([]uint8, 1), maxSlot: max}
}

// insert gives r a fresh STag.
func (t *memTable) insert(r *region) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var idx uint32
	if n := len(t.free); n > 0 {
		idx = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		if len(t.slots) > t.maxSlot || len(t.slots) >= 1<<24 {
			return fmt.Errorf("%w: %d memory regions and windows", rdma.ErrQueueFull, len(t.slots)-1)
		}
		idx = uint32(len(t.slots))
		t.slots = append(t.slots, nil)
		t.keys = append(t.keys, 0)
	}
	t.keys[idx]++
	r.stag.Store(idx<<8 | uint32(t.keys[idx]))
	t.slots[idx] = r
	return nil
}

func (t *memTable) remove(r *region) {
	t.mu.Lock()
	defer t.mu.Unlock()
	idx := r.stag.Load() >> 8
	if int(idx) < len(t.slots) && t.slots[idx] == r {
		t.slots[idx] = nil
		t.free = append(t.free, idx)
	}
}

func (t *memTable) lookup(stag uint32) *region {
	idx := stag >> 8
	t.mu.RLock()
	var r *region
	if int(idx) < len(t.slots) {
		r = t.slots[idx]
	}
	t.mu.RUnlock()
	if r == nil || r.stag.Load() != stag {
		return nil
	}
	return r
}

// acquire checks an access of n bytes at address to under stag for q
// (whose PD must own it) with rights need, and returns the region with
// a use held (release it with r.release) and the memory slice. n may be
// 0 only when the caller decided a zero-length access needs no check.
func (t *memTable) acquire(stag uint32, q *qp, to uint64, n uint64, need rdma.Access) (*region, []byte, accessErr) {
	r := t.lookup(stag)
	if r == nil {
		return nil, nil, accessInvalidSTag
	}
	r.users.Add(1)
	if r.closed.Load() || r.stag.Load() != stag {
		r.users.Add(-1)
		return nil, nil, accessInvalidSTag
	}
	if r.pd != q.pd || (r.isMW && r.qp != q) {
		r.users.Add(-1)
		return nil, nil, accessNotAssoc
	}
	if r.access&need != need {
		r.users.Add(-1)
		return nil, nil, accessRights
	}
	if to+n < to {
		r.users.Add(-1)
		return nil, nil, accessTOWrap
	}
	if to < r.base || to+n > r.base+uint64(len(r.mem)) {
		r.users.Add(-1)
		return nil, nil, accessBaseBounds
	}
	off := to - r.base
	return r, r.mem[off : off+n : off+n], accessOK
}

func (r *region) release() { r.users.Add(-1) }

// quiesce stops new users and waits for current ones to leave. A user
// holds a region for one FPDU on receive and one message on transmit,
// which is short unless the peer stalls: a client that asks for a body by
// RDMA Read and then stops reading its socket blocks our transmit in the
// middle of the region. So after quiesceGrace the QPs still holding the
// region are failed (as a NIC fails a QP whose memory is deregistered
// under it), which unblocks their I/O; Close never waits on a peer.
func (r *region) quiesce() {
	r.closed.Store(true)
	start := time.Now()
	evicted := false
	for i := 0; r.users.Load() != 0; i++ {
		switch {
		case i < 100:
			runtime.Gosched()
		case !evicted && time.Since(start) > quiesceGrace:
			r.pd.dev.evict(r)
			evicted = true
		default:
			time.Sleep(time.Millisecond)
		}
	}
}

// quiesceGrace is how long closing a region waits for transfers using
// it before failing their QPs: long enough for any transfer that is
// moving, short enough that a stalled peer cannot hold a Close.
const quiesceGrace = 100 * time.Millisecond

// errRegionClosed fails a QP whose transfer held a region being closed.
var errRegionClosed = fmt.Errorf("%w: memory region or window closed during a transfer", rdma.ErrClosed)

// mr is the rdma.MR of the soft provider.
type mr struct{ region }

var _ rdma.MR = (*mr)(nil)

func (m *mr) Addr() uint64  { return m.base }
func (m *mr) Len() int      { return len(m.mem) }
func (m *mr) LKey() uint32  { return m.stag.Load() }
func (m *mr) RKey() uint32  { return m.stag.Load() }
func (m *mr) Bytes() []byte { return m.mem }
func (m *mr) String() string {
	return fmt.Sprintf("MR stag %#x [%#x+%d]", m.stag.Load(), m.base, len(m.mem))
}

// Close deregisters: after it returns no placement or transmission
// touches the memory. ErrBusy while a memory window is bound over it.
func (m *mr) Close() error {
	if m.mws.Load() != 0 {
		return fmt.Errorf("%w: memory window bound to MR", rdma.ErrBusy)
	}
	if m.closed.Swap(true) {
		return nil
	}
	m.quiesce()
	m.table.remove(&m.region)
	m.pd.objs.Add(-1)
	return nil
}

// mw is the rdma.MW of the soft provider: a type 2 window.
type mw struct {
	region
	mu   sync.Mutex // serialises bind against close
	gone bool       // closed by the owner (region.closed also means unbound)
}

var _ rdma.MW = (*mw)(nil)

func (w *mw) RKey() uint32 { return w.stag.Load() }

func (w *mw) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone {
		return nil
	}
	w.gone = true
	w.quiesce()
	w.unbindLocked()
	w.table.remove(&w.region)
	w.pd.objs.Add(-1)
	return nil
}

func (w *mw) unbindLocked() {
	if w.parent != nil {
		w.parent.mws.Add(-1)
	}
	w.parent, w.qp, w.mem, w.base, w.access = nil, nil, nil, 0, 0
}

// bind binds w over [addr, addr+n) of m for q, with a new key. It runs
// on the transmit goroutine when the bind reaches the head of the send
// queue; the key was chosen at post time (nextKey).
func (w *mw) bind(m *mr, q *qp, addr uint64, n uint32, access rdma.Access, stag uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone {
		return rdma.ErrClosed
	}
	if m.closed.Load() || m.access&rdma.AccessMWBind == 0 || m.pd != q.pd {
		return fmt.Errorf("%w: MR not bindable", rdma.ErrInvalid)
	}
	if addr < m.base || addr+uint64(n) < addr || addr+uint64(n) > m.base+uint64(len(m.mem)) {
		return fmt.Errorf("%w: window outside MR", rdma.ErrInvalid)
	}
	w.quiesce()
	w.unbindLocked()
	m.mws.Add(1)
	off := addr - m.base
	w.parent, w.qp = &m.region, q
	w.mem = m.mem[off : off+uint64(n) : off+uint64(n)]
	w.base, w.access = addr, access
	w.stag.Store(stag)
	w.closed.Store(false)
	return nil
}

// nextKey is the STag the next bind of w will give it (ibv_bind_mw
// returns it at post time).
func (w *mw) nextKey() uint32 {
	w.table.mu.Lock()
	defer w.table.mu.Unlock()
	idx := w.stag.Load() >> 8
	w.table.keys[idx]++
	return idx<<8 | uint32(w.table.keys[idx])
}

// pd is the rdma.PD of the soft provider.
type pd struct {
	dev  *device
	objs atomic.Int32 // MRs, MWs and QPs in this PD
	done atomic.Bool
}

var _ rdma.PD = (*pd)(nil)

// Register registers mem. It must not be Go-heap memory (use rdma.Alloc
// or rdma.MapFile): the soft provider keeps only a slice, but the same
// program must run unchanged on the verbs provider, and a heap buffer
// could be freed by the collector while a peer still holds its rkey.
func (p *pd) Register(mem []byte, access rdma.Access) (rdma.MR, error) {
	if p.done.Load() {
		return nil, rdma.ErrClosed
	}
	if len(mem) == 0 {
		return nil, &rdma.VerbError{Verb: "ibv_reg_mr", Errno: einval}
	}
	// Verbs rule: remote write needs local write.
	if access&rdma.AccessRemoteWrite != 0 && access&rdma.AccessLocalWrite == 0 {
		return nil, &rdma.VerbError{Verb: "ibv_reg_mr", Errno: einval}
	}
	if access&rdma.AccessRemoteAtomic != 0 {
		return nil, fmt.Errorf("%w: atomics on iWARP", rdma.ErrNotSupported)
	}
	m := &mr{region{table: p.dev.mem, pd: p, mem: mem[:len(mem):len(mem)], access: access}}
	m.base = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	if err := p.dev.mem.insert(&m.region); err != nil {
		return nil, err
	}
	p.objs.Add(1)
	return m, nil
}

// AllocMW allocates a type 2 memory window, unbound.
func (p *pd) AllocMW() (rdma.MW, error) {
	if p.done.Load() {
		return nil, rdma.ErrClosed
	}
	w := &mw{region: region{table: p.dev.mem, pd: p, isMW: true}}
	if err := p.dev.mem.insert(&w.region); err != nil {
		return nil, err
	}
	w.closed.Store(true) // unbound windows match nothing
	p.objs.Add(1)
	return w, nil
}

func (p *pd) Close() error {
	if p.objs.Load() != 0 {
		return fmt.Errorf("%w: PD has %d MRs, MWs or QPs", rdma.ErrBusy, p.objs.Load())
	}
	if p.done.Swap(true) {
		return nil
	}
	p.dev.objs.Add(-1)
	return nil
}
