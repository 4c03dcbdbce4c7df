//go:build verbs

package verbs

/*
#cgo LDFLAGS: -libverbs -lrdmacm
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"github.com/quartet-server/quartet/rdma"
)

var _ rdma.Provider = (*Provider)(nil)

// Provider opens rdma-core devices. It holds no state: libibverbs and
// librdmacm keep their own per-process device tables.
type Provider struct{}

// New returns the verbs provider.
func New() *Provider { return &Provider{} }

// Name is "verbs".
func (*Provider) Name() string { return "verbs" }

// verbErr names a verb that failed with errno set (cgo returns errno as
// err). A verb that fails without errno is reported as EIO rather than as
// success.
func verbErr(verb string, err error) error {
	var en syscall.Errno
	if errors.As(err, &en) && en != 0 {
		return &rdma.VerbError{Verb: verb, Errno: en}
	}
	return &rdma.VerbError{Verb: verb, Errno: syscall.EIO}
}

// handle passes a C object to a hot-path shim helper as an integer: cgo
// checks pointer arguments for Go memory on every call (see shim.h), and
// these objects are C memory, allocated by libibverbs or by C.calloc.
func handle[T any](p *T) C.uintptr_t { return C.uintptr_t(uintptr(unsafe.Pointer(p))) }

// rcErr names a verb that returns an errno value (ibv_post_send,
// ibv_req_notify_cq, ibv_destroy_*); 0 is success. Some providers return
// -errno, others -1 with errno set.
func rcErr(verb string, rc C.int, err error) error {
	switch {
	case rc == 0:
		return nil
	case rc > 0:
		return &rdma.VerbError{Verb: verb, Errno: syscall.Errno(rc)}
	case rc < -1:
		return &rdma.VerbError{Verb: verb, Errno: syscall.Errno(-rc)}
	}
	return verbErr(verb, err)
}

// noDevice is Devices' finding none: no error, unless the kernel has
// devices libibverbs skipped because this process cannot open them
// (rdma.NoDeviceError), which "auto" would otherwise pass over in silence
// for the software provider.
func noDevice() error { return rdma.ExplainNoDevice(nil) }

// Devices lists every device libibverbs sees, with its limits and the
// local addresses rdma_cm maps to it.
func (p *Provider) Devices() ([]rdma.DeviceInfo, error) {
	var n C.int
	list, err := C.ibv_get_device_list(&n)
	if list == nil {
		if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.ENOENT) {
			return nil, noDevice() // no uverbs at all: a provider with no device
		}
		return nil, verbErr("ibv_get_device_list", err)
	}
	defer C.ibv_free_device_list(list)
	if n == 0 {
		return nil, noDevice()
	}
	infos := make([]rdma.DeviceInfo, 0, int(n))
	for i := 0; i < int(n); i++ {
		dev := C.q_dev_at(list, C.int(i))
		ctx, err := C.ibv_open_device(dev)
		if ctx == nil {
			return nil, verbErr("ibv_open_device", err)
		}
		info, err := queryDevice(ctx)
		C.ibv_close_device(ctx)
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	if len(infos) > 0 {
		byDev, err := addrsByDevice()
		if err != nil {
			return nil, err
		}
		for i := range infos {
			infos[i].Addrs = byDev[infos[i].Name]
		}
	}
	return infos, nil
}

// queryDevice fills a DeviceInfo from ibv_query_device and ibv_query_port.
func queryDevice(ctx *C.struct_ibv_context) (rdma.DeviceInfo, error) {
	var da C.struct_ibv_device_attr
	if rc, err := C.ibv_query_device(ctx, &da); rc != 0 {
		return rdma.DeviceInfo{}, rcErr("ibv_query_device", rc, err)
	}
	info := rdma.DeviceInfo{
		Name:            C.GoString(C.ibv_get_device_name(ctx.device)),
		Provider:        "verbs",
		NodeGUID:        uint64(da.node_guid),
		FWVersion:       C.GoString(&da.fw_ver[0]),
		MaxQP:           int(da.max_qp),
		MaxQPWR:         int(da.max_qp_wr),
		MaxSGE:          int(da.max_sge),
		MaxCQ:           int(da.max_cq),
		MaxCQE:          int(da.max_cqe),
		MaxMR:           int(da.max_mr),
		MaxMRSize:       uint64(da.max_mr_size),
		MaxPD:           int(da.max_pd),
		MaxMW:           int(da.max_mw),
		MaxQPRdAtom:     int(da.max_qp_rd_atom),
		MaxQPInitRdAtom: int(da.max_qp_init_rd_atom),
	}
	// node_guid is big endian on the wire and in sysfs; show it that way.
	info.NodeGUID = swap64(info.NodeGUID)
	roce := false
	for port := 1; port <= int(da.phys_port_cnt); port++ {
		var pa C.struct_ibv_port_attr
		if rc, err := C.q_query_port(ctx, C.uint8_t(port), &pa); rc != 0 {
			return rdma.DeviceInfo{}, rcErr("ibv_query_port", rc, err)
		}
		ll := "InfiniBand"
		if pa.link_layer == C.IBV_LINK_LAYER_ETHERNET {
			ll = "Ethernet"
			roce = true
		}
		info.Ports = append(info.Ports, rdma.PortInfo{
			Num:       port,
			State:     C.GoString(C.ibv_port_state_str(pa.state)),
			MTU:       128 << int(pa.active_mtu), // IBV_MTU_256 is 1
			LinkLayer: ll,
		})
	}
	switch {
	case ctx.device.transport_type == C.IBV_TRANSPORT_IWARP:
		info.Transport = rdma.TransportIWARP
	case roce:
		info.Transport = rdma.TransportRoCE
	case ctx.device.transport_type == C.IBV_TRANSPORT_IB:
		info.Transport = rdma.TransportIB
	}
	if info.Transport != rdma.TransportIWARP {
		info.Caps |= rdma.CapWriteImm // RDMAP has no immediate data
	}
	info.Caps |= rdma.CapSolicitedEvent
	if da.max_mw > 0 && da.device_cap_flags&(C.IBV_DEVICE_MEM_WINDOW_TYPE_2A|C.IBV_DEVICE_MEM_WINDOW_TYPE_2B) != 0 {
		info.Caps |= rdma.CapMemoryWindows
	}
	return info, nil
}

func swap64(v uint64) uint64 {
	var r uint64
	for i := 0; i < 8; i++ {
		r = r<<8 | v&0xff
		v >>= 8
	}
	return r
}

// addrsByDevice asks rdma_cm which device owns each local address, by
// binding a throw-away cm_id to it: that is exactly how rdma_cm picks the
// device for a listener or a connection.
func addrsByDevice() (map[string][]netip.Addr, error) {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("rdma/verbs: listing local addresses: %w", err)
	}
	ch, err := C.rdma_create_event_channel()
	if ch == nil {
		return nil, verbErr("rdma_create_event_channel", err)
	}
	defer C.rdma_destroy_event_channel(ch)
	out := map[string][]netip.Addr{}
	for _, a := range ifAddrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil || pfx.Addr().IsLoopback() || pfx.Addr().Is6() && pfx.Addr().IsLinkLocalUnicast() {
			continue // rdma_cm does not resolve over lo; link-local needs a zone
		}
		name, err := deviceOf(ch, pfx.Addr())
		if err != nil {
			return nil, err
		}
		if name != "" {
			out[name] = append(out[name], pfx.Addr())
		}
	}
	return out, nil
}

// deviceOf binds a cm_id to ip and returns the name of the device rdma_cm
// chose, or "" when the address has none.
func deviceOf(ch *C.struct_rdma_event_channel, ip netip.Addr) (string, error) {
	var id *C.struct_rdma_cm_id
	if rc, err := C.rdma_create_id(ch, &id, nil, C.RDMA_PS_TCP); rc != 0 {
		return "", verbErr("rdma_create_id", err)
	}
	defer C.rdma_destroy_id(id)
	var ss C.struct_sockaddr_storage
	fillSockaddr(&ss, ip, 0)
	if rc, _ := C.rdma_bind_addr(id, (*C.struct_sockaddr)(unsafe.Pointer(&ss))); rc != 0 {
		return "", nil // an address rdma_cm cannot bind has no device
	}
	v := C.q_id_verbs(id)
	if v == nil {
		return "", nil
	}
	return C.GoString(C.ibv_get_device_name(v.device)), nil
}

// Open opens the named device ("" is the first) through librdmacm's
// device table, so its context is the one rdma_cm ids bound to the
// device use: PDs and CQs from it work with those ids' QPs.
func (p *Provider) Open(name string) (rdma.Device, error) {
	var n C.int
	list, err := C.rdma_get_devices(&n)
	if list == nil {
		// ENODEV: librdmacm found no device it could open.
		return nil, rdma.ExplainNoDevice(verbErr("rdma_get_devices", err))
	}
	for i := 0; i < int(n); i++ {
		ctx := C.q_ctx_at(list, C.int(i))
		if name == "" || C.GoString(C.ibv_get_device_name(ctx.device)) == name {
			d, err := newDevice(list, ctx)
			if err != nil {
				C.rdma_free_devices(list)
			}
			return d, err
		}
	}
	C.rdma_free_devices(list)
	if n == 0 {
		return nil, rdma.ExplainNoDevice(rdma.ErrNoDevice)
	}
	return nil, fmt.Errorf("%w %q", rdma.ErrUnknownDevice, name)
}

// OpenByAddr opens the device rdma_cm maps ip to.
func (p *Provider) OpenByAddr(ip netip.Addr) (rdma.Device, error) {
	ch, err := C.rdma_create_event_channel()
	if ch == nil {
		return nil, verbErr("rdma_create_event_channel", err)
	}
	name, err := deviceOf(ch, ip)
	C.rdma_destroy_event_channel(ch)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("%w for address %v", rdma.ErrNoDevice, ip)
	}
	return p.Open(name)
}
