//go:build verbs

package verbs

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/quartet-server/quartet/rdma"
)

// Device is an opened device: one librdmacm-owned ibv_context.
type Device struct {
	list **C.struct_ibv_context // rdma_get_devices' table, freed by Close
	ctx  *C.struct_ibv_context
	info rdma.DeviceInfo

	mu     sync.Mutex
	refs   int // PDs, CQs, listeners and QPs not yet closed
	closed bool
}

var _ rdma.Device = (*Device)(nil)

func newDevice(list **C.struct_ibv_context, ctx *C.struct_ibv_context) (*Device, error) {
	info, err := queryDevice(ctx)
	if err != nil {
		return nil, err
	}
	if byDev, err := addrsByDevice(); err == nil {
		info.Addrs = byDev[info.Name]
	}
	return &Device{list: list, ctx: ctx, info: info}, nil
}

// Info describes the device as it was when opened.
func (d *Device) Info() rdma.DeviceInfo { return d.info }

// ref counts a new child object; it fails once the device is closed.
func (d *Device) ref() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return rdma.ErrClosed
	}
	d.refs++
	return nil
}

func (d *Device) unref() {
	d.mu.Lock()
	d.refs--
	d.mu.Unlock()
}

// Close releases the device; ErrBusy while objects made from it are open.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	if d.refs > 0 {
		return fmt.Errorf("%w: device %s has %d open objects", rdma.ErrBusy, d.info.Name, d.refs)
	}
	d.closed = true
	C.rdma_free_devices(d.list)
	return nil
}

// AllocPD allocates a protection domain (ibv_alloc_pd).
func (d *Device) AllocPD() (rdma.PD, error) {
	if err := d.ref(); err != nil {
		return nil, err
	}
	pd, err := C.ibv_alloc_pd(d.ctx)
	if pd == nil {
		d.unref()
		return nil, verbErr("ibv_alloc_pd", err)
	}
	return &PD{dev: d, pd: pd}, nil
}

// PD is a protection domain.
type PD struct {
	dev *Device
	pd  *C.struct_ibv_pd

	mu     sync.Mutex
	refs   int // MRs, MWs and QPs
	closed bool
}

var _ rdma.PD = (*PD)(nil)

func (p *PD) ref() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return rdma.ErrClosed
	}
	p.refs++
	return nil
}

func (p *PD) unref() {
	p.mu.Lock()
	p.refs--
	p.mu.Unlock()
}

// Register registers mem (ibv_reg_mr). mem must not be Go heap memory:
// use rdma.Alloc or rdma.MapFile.
func (p *PD) Register(mem []byte, access rdma.Access) (rdma.MR, error) {
	if len(mem) == 0 {
		return nil, fmt.Errorf("%w: Register of empty memory", rdma.ErrInvalid)
	}
	if err := p.ref(); err != nil {
		return nil, err
	}
	mr, err := C.q_reg_mr(p.pd, unsafe.Pointer(unsafe.SliceData(mem)), C.size_t(len(mem)), C.int(access))
	if mr == nil {
		p.unref()
		return nil, rdma.MemlockExplains(verbErr("ibv_reg_mr", err), len(mem))
	}
	return &MR{pd: p, mr: mr, mem: mem, addr: uint64(uintptr(mr.addr)), lkey: uint32(mr.lkey), rkey: uint32(mr.rkey)}, nil
}

// AllocMW allocates a type 2 memory window (ibv_alloc_mw).
func (p *PD) AllocMW() (rdma.MW, error) {
	if p.dev.info.Caps&rdma.CapMemoryWindows == 0 {
		return nil, fmt.Errorf("%w: memory windows on %s", rdma.ErrNotSupported, p.dev.info.Name)
	}
	if err := p.ref(); err != nil {
		return nil, err
	}
	mw, err := C.q_alloc_mw(p.pd)
	if mw == nil {
		p.unref()
		return nil, verbErr("ibv_alloc_mw", err)
	}
	w := &MW{pd: p, mw: mw}
	w.rkey.Store(uint32(mw.rkey))
	return w, nil
}

// Close deallocates the PD (ibv_dealloc_pd).
func (p *PD) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if p.refs > 0 {
		return fmt.Errorf("%w: PD has %d MRs, MWs or QPs", rdma.ErrBusy, p.refs)
	}
	if rc, err := C.ibv_dealloc_pd(p.pd); rc != 0 {
		return rcErr("ibv_dealloc_pd", rc, err)
	}
	p.closed = true
	p.dev.unref()
	return nil
}

// MR is a registered memory region. Its address and keys are copied at
// registration: ibv_dereg_mr frees the struct they were read from.
type MR struct {
	pd         *PD
	mr         *C.struct_ibv_mr
	mem        []byte
	addr       uint64
	lkey, rkey uint32
	mu         sync.RWMutex // Close writes; BindMW reads, many binds at once over a shared region
	closed     bool
}

var _ rdma.MR = (*MR)(nil)

func (m *MR) Addr() uint64  { return m.addr }
func (m *MR) Len() int      { return len(m.mem) }
func (m *MR) LKey() uint32  { return m.lkey }
func (m *MR) RKey() uint32  { return m.rkey }
func (m *MR) Bytes() []byte { return m.mem }

// Close deregisters the region (ibv_dereg_mr); again, it does nothing.
func (m *MR) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	if rc, err := C.ibv_dereg_mr(m.mr); rc != 0 {
		return rcErr("ibv_dereg_mr", rc, err)
	}
	m.closed = true
	m.pd.unref()
	return nil
}

// MW is a type 2 memory window.
type MW struct {
	pd     *PD
	mw     *C.struct_ibv_mw
	rkey   atomic.Uint32 // key of the latest bind; posting a bind sets it
	mu     sync.Mutex    // orders Close against Close
	closed bool
}

var _ rdma.MW = (*MW)(nil)

func (w *MW) RKey() uint32 { return w.rkey.Load() }

// Close deallocates the window (ibv_dealloc_mw), which also invalidates
// it; again, it does nothing.
func (w *MW) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	if rc, err := C.q_dealloc_mw(w.mw); rc != 0 {
		return rcErr("ibv_dealloc_mw", rc, err)
	}
	w.closed = true
	w.pd.unref()
	return nil
}
