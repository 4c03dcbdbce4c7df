package soft

// Provider and device glue (siw_verbs.c): limits, the device object and
// the entry points of rdma.Provider and rdma.Device.

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// Device limits. They match siw's where siw has one (SIW_MAX_SGE,
// SIW_MAX_ORD_QP/IRD_QP) so programs tuned on one run on the other.
const (
	DeviceName = "soft0"

	maxSGE    = 6
	maxInline = 64
	maxQPWR   = 1 << 15
	maxCQE    = 1 << 20
	maxRD     = 128
	maxMR     = 1 << 20
	maxQP     = 1 << 20
	minULPDU  = 128

	defaultMPATimeout = 10 * time.Second
)

var einval = syscall.EINVAL

// Config tunes a Provider. The zero value speaks like siw with its
// default module parameters: MPA revision 2, no CRC unless the peer asks,
// one FPDU per TCP segment.
type Config struct {
	// CRC requests the MPA CRC (RFC 5044 section 4.4). If either side
	// asks, both use it.
	CRC bool
	// MaxULPDU overrides the ULPDU size derived from the TCP MSS (RFC
	// 5044 MULPDU); 0 derives it. At most 65535.
	MaxULPDU int
	// MPATimeout bounds the MPA exchange; 0 means 10 s.
	MPATimeout time.Duration
}

// Provider is the pure-Go software iWARP provider. It holds no global
// state: each value is independent.
type Provider struct {
	cfg Config
}

var _ rdma.Provider = (*Provider)(nil)

// New returns a software iWARP provider.
func New(cfg Config) *Provider { return &Provider{cfg: cfg} }

func (p *Provider) Name() string { return "soft" }

func (p *Provider) info() rdma.DeviceInfo {
	return rdma.DeviceInfo{
		Name:            DeviceName,
		Provider:        p.Name(),
		Transport:       rdma.TransportIWARP,
		FWVersion:       "quartet-soft",
		Caps:            rdma.CapMemoryWindows | rdma.CapMWRangeChecked | rdma.CapSolicitedEvent,
		Ports:           []rdma.PortInfo{{Num: 1, State: "ACTIVE", MTU: 4096, LinkLayer: "Ethernet"}},
		MaxQP:           maxQP,
		MaxQPWR:         maxQPWR,
		MaxSGE:          maxSGE,
		MaxCQ:           maxQP,
		MaxCQE:          maxCQE,
		MaxMR:           maxMR,
		MaxMRSize:       1 << 40,
		MaxPD:           maxQP,
		MaxMW:           maxMR,
		MaxQPRdAtom:     maxRD,
		MaxQPInitRdAtom: maxRD,
		MaxInlineData:   maxInline,
	}
}

// Devices lists the one software device; it always exists.
func (p *Provider) Devices() ([]rdma.DeviceInfo, error) {
	return []rdma.DeviceInfo{p.info()}, nil
}

// Open opens a new instance of the software device. Each instance has
// its own STag table and QP numbers, like a separate ibv_context.
func (p *Provider) Open(name string) (rdma.Device, error) {
	if name != "" && name != DeviceName {
		return nil, fmt.Errorf("%w %q (soft has %s)", rdma.ErrUnknownDevice, name, DeviceName)
	}
	return &device{prov: p, mem: newMemTable(maxMR), qps: map[*qp]struct{}{}}, nil
}

// OpenByAddr: software iWARP runs over any local address, so every
// address maps to the soft device.
func (p *Provider) OpenByAddr(ip netip.Addr) (rdma.Device, error) {
	if !ip.IsValid() {
		return nil, fmt.Errorf("%w: invalid address", rdma.ErrInvalid)
	}
	return p.Open("")
}

type device struct {
	prov   *Provider
	mem    *memTable
	qpnum  atomic.Uint32
	objs   atomic.Int32 // PDs, CQs, QPs, listeners
	closed atomic.Bool

	qpsMu sync.Mutex
	qps   map[*qp]struct{} // live QPs, for evict
}

// evict fails every QP whose transmit or receive currently holds r, so
// that its blocked I/O returns and releases r (see region.quiesce).
func (d *device) evict(r *region) {
	d.qpsMu.Lock()
	var victims []*qp
	for q := range d.qps {
		if q.holds(r) {
			victims = append(victims, q)
		}
	}
	d.qpsMu.Unlock()
	for _, q := range victims {
		q.fail(errRegionClosed, nil)
	}
}

var _ rdma.Device = (*device)(nil)

func (d *device) Info() rdma.DeviceInfo { return d.prov.info() }

func (d *device) AllocPD() (rdma.PD, error) {
	if d.closed.Load() {
		return nil, rdma.ErrClosed
	}
	d.objs.Add(1)
	return &pd{dev: d}, nil
}

func (d *device) CreateCQ(depth int) (rdma.CQ, error) {
	if d.closed.Load() {
		return nil, rdma.ErrClosed
	}
	c, err := newCQ(d, depth)
	if err != nil {
		return nil, err
	}
	d.objs.Add(1)
	return c, nil
}

func (d *device) Close() error {
	if n := d.objs.Load(); n != 0 {
		return fmt.Errorf("%w: device has %d open objects", rdma.ErrBusy, n)
	}
	d.closed.Store(true)
	return nil
}
