package rdma

import (
	"context"
	"net"
	"net/netip"
)

// Provider is one implementation of RDMA: rdma-core through cgo
// (rdma/verbs, build tag verbs) or pure-Go software iWARP (rdma/soft).
// A Provider value holds no global state; several may coexist in one
// process. Select one by name with a Registry.
type Provider interface {
	// Name is the short name used for selection: "verbs", "soft".
	Name() string

	// Devices lists the devices this provider can open. An empty list
	// with a nil error means the provider works but has no device (no
	// RDMA NIC, no loaded driver).
	Devices() ([]DeviceInfo, error)

	// Open opens the named device; "" opens the provider's default (the
	// first device Devices lists). It returns ErrNoDevice when there is
	// none and ErrUnknownDevice when name matches no device.
	Open(name string) (Device, error)

	// OpenByAddr opens the device that owns the local IP address ip, the
	// way rdma_cm picks a device when binding: on iWARP and RoCE the
	// device is the one whose netdev carries the address. The soft
	// provider owns every address. ErrNoDevice if no device has ip.
	OpenByAddr(ip netip.Addr) (Device, error)
}

// Transport is the wire family of a device.
type Transport uint8

const (
	TransportUnknown Transport = iota
	TransportIB                // InfiniBand
	TransportIWARP             // RDMAP/DDP/MPA over TCP (RFC 5040/5041/5044)
	TransportRoCE              // InfiniBand transport over UDP/IP (RoCE v2)
)

func (t Transport) String() string {
	switch t {
	case TransportIB:
		return "InfiniBand"
	case TransportIWARP:
		return "iWARP"
	case TransportRoCE:
		return "RoCE"
	}
	return "unknown"
}

// Caps are optional device capabilities; probe them before use and fall
// back (rdma_server.c probes max_inline_data the same way).
type Caps uint32

const (
	// CapMemoryWindows: PD.AllocMW and QP.BindMW work (type 2 windows,
	// bound to one QP). Without it, an rkey covers a whole MR.
	CapMemoryWindows Caps = 1 << iota
	// CapWriteImm: QP.PostWriteImm works. Never on iWARP, whose RDMAP
	// has no immediate data.
	CapWriteImm
	// CapSolicitedEvent: Send with SendSolicited sets the Solicited Event
	// bit and CQ.Arm(true) honours it.
	CapSolicitedEvent
	// CapMWRangeChecked: a memory window's rkey reaches only the window's
	// range. Without it (Linux 6.1's rxe checks a window's key and QP but
	// the range against the whole MR) a window is no narrower than its
	// MR: expose through windows only MRs whose every byte the peer may
	// read, or register per operation instead.
	CapMWRangeChecked
)

// DeviceInfo describes a device and its limits (a subset of
// ibv_device_attr plus what rdma_cm needs to pick a device).
type DeviceInfo struct {
	Name      string    // "siw0", "rxe0", "mlx5_0", "soft0"
	Provider  string    // Provider.Name of the provider that lists it
	Transport Transport // wire family
	NodeGUID  uint64
	FWVersion string
	Caps      Caps

	// Addrs are the local IP addresses that rdma_cm maps to this device.
	// Empty for the soft provider, which accepts any local address.
	Addrs []netip.Addr
	Ports []PortInfo

	MaxQP           int
	MaxQPWR         int // work requests per send or receive queue
	MaxSGE          int // scatter/gather entries per work request
	MaxCQ           int
	MaxCQE          int // entries per CQ
	MaxMR           int
	MaxMRSize       uint64
	MaxPD           int
	MaxMW           int
	MaxQPRdAtom     int // IRD: inbound RDMA Reads a QP may have outstanding
	MaxQPInitRdAtom int // ORD: outbound RDMA Reads a QP may have outstanding
	MaxInlineData   int
}

// PortInfo is one port of a device (ibv_port_attr subset).
type PortInfo struct {
	Num       int
	State     string // "ACTIVE", "DOWN", ...
	MTU       int    // active MTU in bytes
	LinkLayer string // "Ethernet", "InfiniBand"
}

// Device is an opened RDMA device (ibv_context). Every object created
// from it must be closed before it; Close reports ErrBusy otherwise and
// leaves the device open.
type Device interface {
	Info() DeviceInfo

	// AllocPD allocates a protection domain (ibv_alloc_pd).
	AllocPD() (PD, error)

	// CreateCQ creates a completion queue of at least depth entries with
	// its own completion channel (verbs) or eventfd (soft), so each CQ is
	// one fd in the caller's poller.
	CreateCQ(depth int) (CQ, error)

	// Listen starts the passive side of connection management on
	// addr ("ip:port"; port 0 picks one, see Listener.Addr), with at most
	// backlog requests waiting for Accept (rdma_listen).
	Listen(addr string, backlog int) (Listener, error)

	// Dial connects a reliable-connected QP to a listener at addr
	// (rdma_resolve_addr, rdma_resolve_route, rdma_create_qp,
	// rdma_connect). privateData travels in the connect request (MPA
	// request on iWARP); the peer's reply private data is QP.PrivateData.
	// A rejection returns an error matching ErrRejected. ctx bounds the
	// whole setup.
	Dial(ctx context.Context, addr string, cfg QPConfig, privateData []byte) (QP, error)

	// Close releases the device (ibv_close_device).
	Close() error
}

// QPConfig are the attributes of a new reliable-connected queue pair
// and of its connection (ibv_qp_init_attr + rdma_conn_param).
type QPConfig struct {
	PD     PD
	SendCQ CQ
	RecvCQ CQ // may equal SendCQ

	MaxSendWR  int // send queue depth (sends, writes, reads, binds)
	MaxRecvWR  int // receive queue depth
	MaxSendSGE int // 0 means 1
	MaxRecvSGE int // 0 means 1
	MaxInline  int // bytes; a hint, the provider may round down

	// SignalAll makes every send-queue work request generate a
	// completion; otherwise only those posted with SendSignaled do
	// (sq_sig_all). Receives always complete.
	SignalAll bool

	// ResponderResources (IRD) is how many inbound RDMA Reads this side
	// serves at once; InitiatorDepth (ORD) how many it issues at once.
	// 0 means the device maximum. On iWARP these are negotiated in the
	// MPA v2 exchange (RFC 6581).
	ResponderResources int
	InitiatorDepth     int

	// Prepare, if set, runs on the new QP (state INIT) before the
	// connection is requested (Dial) or accepted (ConnRequest.Accept).
	// Post the first receives here: on iWARP a Send that finds no posted
	// receive is fatal (a Terminate, no RNR retry), and the peer may send
	// the moment the connection is established. Only PostRecv is allowed
	// on an INIT QP. An error aborts the setup (Dial fails, Accept
	// rejects) and is returned.
	//
	// Prepare may run more than once in one Dial, each time on a new QP:
	// on iWARP, rdma_cm picks the local port without asking TCP, and a
	// Dial whose port turns out taken tries again with another port and
	// another QP. So Prepare must not assume it runs once (register its
	// memory beforehand, not in it). A QP that Dial or Accept does not
	// return is destroyed, and nothing of it reaches the caller: the
	// completions of what Prepare posted on it are dropped, not flushed
	// into the CQs.
	Prepare func(QP) error
}

// ConnParam are the connection parameters the peer asked for.
type ConnParam struct {
	ResponderResources int // peer's IRD
	InitiatorDepth     int // peer's ORD
}

// Listener is the passive side of connection management (an rdma_cm
// listening cm_id with its event channel).
type Listener interface {
	// Fd is readable while a connect request is waiting; it can sit in
	// any poller (level-triggered). Do not read from it: call Accept.
	Fd() int

	// Accept returns the next connect request, blocking until one arrives
	// or ctx is done. A request that is neither accepted nor rejected
	// holds the peer waiting: always call exactly one of them.
	Accept(ctx context.Context) (ConnRequest, error)

	// Addr is the bound address (the real port when 0 was asked for).
	Addr() net.Addr

	// Close stops listening and rejects the requests not yet answered,
	// queued or already returned by Accept; Accept or Reject on one of
	// those then returns ErrClosed.
	Close() error
}

// ConnRequest is one pending connect request (RDMA_CM_EVENT_CONNECT_REQUEST).
type ConnRequest interface {
	// PrivateData is the peer's private data. Valid until Accept or
	// Reject returns.
	PrivateData() []byte
	Param() ConnParam
	LocalAddr() net.Addr
	RemoteAddr() net.Addr

	// Accept creates the QP from cfg and completes the connection,
	// sending privateData in the reply (rdma_accept). The QP is in RTS
	// when Accept returns. ctx bounds the wait for the connection to come
	// up: when it ends first, Accept rejects the request (or, past the
	// reply, tears the connection down), frees the QP and returns ctx's
	// error. Providers bound the wait themselves too, so a peer that never
	// completes the handshake does not hold Accept forever.
	Accept(ctx context.Context, cfg QPConfig, privateData []byte) (QP, error)

	// Reject refuses the request, sending privateData in the reply
	// (rdma_reject; on iWARP an MPA reply with the Reject bit).
	Reject(privateData []byte) error
}

// Access are memory access rights; the values are ibv_access_flags.
type Access uint32

const (
	AccessLocalWrite   Access = 1 << 0 // IBV_ACCESS_LOCAL_WRITE: receives and read responses may land here
	AccessRemoteWrite  Access = 1 << 1 // IBV_ACCESS_REMOTE_WRITE (requires AccessLocalWrite)
	AccessRemoteRead   Access = 1 << 2 // IBV_ACCESS_REMOTE_READ
	AccessRemoteAtomic Access = 1 << 3 // IBV_ACCESS_REMOTE_ATOMIC (never on iWARP)
	AccessMWBind       Access = 1 << 4 // IBV_ACCESS_MW_BIND: windows may be bound over this MR
)

// PD is a protection domain (ibv_pd). MRs, MWs and QPs created in one PD
// can only be used together.
type PD interface {
	// Register registers mem for RDMA (ibv_reg_mr). mem must not be Go
	// heap memory (the garbage collector may move or free it while the
	// device uses it, and cgo forbids keeping it): use Alloc or MapFile.
	// mem must stay mapped until the MR is closed.
	Register(mem []byte, access Access) (MR, error)

	// AllocMW allocates a type 2 memory window (ibv_alloc_mw); without
	// CapMemoryWindows it returns ErrNotSupported.
	AllocMW() (MW, error)

	// Close deallocates the PD (ibv_dealloc_pd); ErrBusy while MRs, MWs
	// or QPs still use it.
	Close() error
}

// MR is a registered memory region (ibv_mr). Addr is the address remote
// peers use in RDMA operations together with RKey (the iWARP Tagged
// Offset), and the address local SGEs use together with LKey.
type MR interface {
	Addr() uint64
	Len() int
	LKey() uint32
	RKey() uint32
	// Bytes is the registered memory itself.
	Bytes() []byte
	// Close deregisters (ibv_dereg_mr). Work requests still using the MR
	// fail with a protection error; the memory itself is not freed.
	Close() error
}

// MW is a memory window (ibv_mw, type 2): an rkey scoped to one range of
// one MR and to one QP, bound and invalidated through that QP.
type MW interface {
	// RKey is the key of the current binding; it changes on every bind.
	RKey() uint32
	Close() error
}

// SGE is one scatter/gather element (ibv_sge): Len bytes at Addr inside
// the MR whose local key is LKey. Build one with SGEOf.
type SGE struct {
	Addr uint64
	Len  uint32
	LKey uint32
}

// SGEOf returns the SGE for n bytes at offset off within mr.
func SGEOf(mr MR, off, n int) SGE {
	return SGE{Addr: mr.Addr() + uint64(off), Len: uint32(n), LKey: mr.LKey()}
}

// SendFlags modify a send-queue work request; the values are
// ibv_send_flags.
type SendFlags uint32

const (
	// SendFence: wait for earlier RDMA Reads on this QP to complete
	// before starting this request.
	SendFence SendFlags = 1 << 0
	// SendSignaled: generate a completion (implied by QPConfig.SignalAll).
	SendSignaled SendFlags = 1 << 1
	// SendSolicited: the peer's receive completion raises a solicited
	// event (Send with Solicited Event on iWARP).
	SendSolicited SendFlags = 1 << 2
	// SendInline: copy the payload at post time so the SGE memory may be
	// reused at once; the lkey is not checked.
	SendInline SendFlags = 1 << 3
)

// QPState is the state of a queue pair; the values are ibv_qp_state.
//
// A QP from Dial or ConnRequest.Accept starts in QPStateRTS. RTS goes to
// QPStateSQD never (not exposed), to QPStateError on a fatal error, a
// Terminate from the peer or a lost connection (posted work requests
// then complete with StatusWRFlushErr), and to QPStateReset on Close.
type QPState uint8

const (
	QPStateReset QPState = iota
	QPStateInit
	QPStateRTR
	QPStateRTS
	QPStateSQD
	QPStateSQE
	QPStateError
)

func (s QPState) String() string {
	switch s {
	case QPStateReset:
		return "RESET"
	case QPStateInit:
		return "INIT"
	case QPStateRTR:
		return "RTR"
	case QPStateRTS:
		return "RTS"
	case QPStateSQD:
		return "SQD"
	case QPStateSQE:
		return "SQE"
	case QPStateError:
		return "ERROR"
	}
	return "UNKNOWN"
}

// QP is a connected reliable-connected queue pair with its rdma_cm id.
//
// Post methods are safe for concurrent use but the intended use is one
// poster per QP (the writer stage). They do not retain sgl: the provider
// copies it, so callers may reuse one slice for every post (a slice
// literal per call escapes to the heap and allocates). They return
// ErrQueueFull when the queue has no free slot, and an error matching
// ErrQPState once the QP has left RTS.
//
// Completions of a QP's send queue appear on QPConfig.SendCQ in posting
// order, those of its receive queue on RecvCQ in arrival order.
//
// Ordering across the wire (RC and iWARP alike): the data of an RDMA
// Write is placed at the peer before a Send posted after it completes
// there, so mod_rdma's server-writes step (Write the body, then Send the
// response header) needs no extra round trip. A local Write completion
// does not mean the data is placed (on iWARP it means TCP took it); a
// later Read, even of zero bytes, completes only after it is.
type QP interface {
	// Num is the QP number, as Completion.QPNum reports it.
	Num() uint32
	State() QPState
	// Err is why the QP left RTS (a *VerbError, a Terminate from the
	// peer, a connection error), or nil.
	Err() error

	// PrivateData is the private data the peer sent while connecting
	// (its accept reply, or its request on the passive side).
	PrivateData() []byte
	LocalAddr() net.Addr
	RemoteAddr() net.Addr

	// PostSend posts a Send of the bytes in sgl (IBV_WR_SEND).
	PostSend(id uint64, sgl []SGE, flags SendFlags) error
	// PostWrite posts an RDMA Write of sgl to remoteAddr under rkey
	// (IBV_WR_RDMA_WRITE).
	PostWrite(id uint64, sgl []SGE, remoteAddr uint64, rkey uint32, flags SendFlags) error
	// PostWriteImm posts an RDMA Write with immediate data
	// (IBV_WR_RDMA_WRITE_WITH_IMM); it consumes a receive at the peer.
	// ErrNotSupported without CapWriteImm (all of iWARP).
	PostWriteImm(id uint64, sgl []SGE, remoteAddr uint64, rkey uint32, imm uint32, flags SendFlags) error
	// PostRead posts an RDMA Read of remote bytes into sgl
	// (IBV_WR_RDMA_READ). At most InitiatorDepth reads are in flight;
	// further ones wait in the send queue.
	PostRead(id uint64, sgl []SGE, remoteAddr uint64, rkey uint32, flags SendFlags) error
	// PostRecv posts a receive buffer for one inbound Send.
	PostRecv(id uint64, sgl []SGE) error
	// BindMW binds mw to the range of mr described by sge, for this QP
	// only, with access (IBV_WR_BIND_MW); it returns the window's new
	// rkey, valid once the bind completes (OpBindMW). ErrNotSupported
	// without CapMemoryWindows.
	BindMW(id uint64, mw MW, mr MR, sge SGE, access Access, flags SendFlags) (rkey uint32, err error)

	// Disconnect starts an orderly disconnect (rdma_disconnect): the QP
	// goes to ERROR and outstanding work requests complete with
	// StatusWRFlushErr. Idempotent.
	Disconnect() error
	// Close disconnects if needed and destroys the QP and its cm_id.
	// Completions already queued on the CQs stay there.
	Close() error
}

// CQ is a completion queue with a notification fd.
//
// The notification protocol is the one rping uses, with the ack folded
// into Consume:
//
//	cq.Arm(false)                 // once, before the first wait
//	for {
//		wait until cq.Fd() is readable (epoll, poll, the runtime poller)
//		cq.Consume()              // take the event (and ack it)
//		cq.Arm(false)             // re-arm BEFORE draining, so a
//		                          // completion that lands while we
//		                          // drain raises a new event
//		for n, _ := cq.Poll(buf); n > 0; n, _ = cq.Poll(buf) { ... }
//	}
//
// A completion that arrives between Poll returning 0 and the next wait
// is not lost: the Arm before draining guarantees an event for it.
// Spurious wakeups are possible (Consume returns 0, or Poll finds
// nothing); they are harmless.
//
// Poll, Arm and Consume are for one goroutine at a time (the CQ's owner,
// e.g. the writer stage); Fd may be read from anywhere.
type CQ interface {
	// Fd is the notification fd: the completion channel fd (verbs) or an
	// eventfd (soft). It is non-blocking and level-triggered readable
	// while an event is pending. Do not read or close it.
	Fd() int
	// Arm requests one notification for the next completion
	// (ibv_req_notify_cq); solicitedOnly limits it to receive
	// completions of Sends with the Solicited Event bit and to errors.
	Arm(solicitedOnly bool) error
	// Consume takes the pending notifications without blocking
	// (ibv_get_cq_event until EAGAIN, then ibv_ack_cq_events) and
	// returns how many it took; 0 on a spurious wakeup.
	Consume() (int, error)
	// Poll moves up to len(dst) completions into dst (ibv_poll_cq) and
	// returns how many. It never blocks and allocates nothing.
	Poll(dst []Completion) (int, error)
	// Close destroys the CQ; ErrBusy while a QP uses it.
	Close() error
}

// Opcode is the operation a completion reports; values are ibv_wc_opcode.
type Opcode uint8

const (
	OpSend         Opcode = 0
	OpWrite        Opcode = 1
	OpRead         Opcode = 2
	OpCompSwap     Opcode = 3
	OpFetchAdd     Opcode = 4
	OpBindMW       Opcode = 5
	OpLocalInv     Opcode = 6
	OpRecv         Opcode = 128
	OpRecvWriteImm Opcode = 129 // receive consumed by an RDMA Write with immediate
)

// opRecvFlag is set in every receive-side opcode (IBV_WC_RECV).
const opRecvFlag Opcode = 128

// IsRecv reports whether op completes a receive-queue request.
func (op Opcode) IsRecv() bool { return op&opRecvFlag != 0 }

func (op Opcode) String() string {
	switch op {
	case OpSend:
		return "SEND"
	case OpWrite:
		return "RDMA_WRITE"
	case OpRead:
		return "RDMA_READ"
	case OpCompSwap:
		return "COMP_SWAP"
	case OpFetchAdd:
		return "FETCH_ADD"
	case OpBindMW:
		return "BIND_MW"
	case OpLocalInv:
		return "LOCAL_INV"
	case OpRecv:
		return "RECV"
	case OpRecvWriteImm:
		return "RECV_RDMA_WITH_IMM"
	}
	return "UNKNOWN"
}

// Status is the outcome of a work request; the values are ibv_wc_status.
type Status uint8

const (
	StatusSuccess        Status = 0
	StatusLocLenErr      Status = 1  // receive buffer too small, or SGE longer than allowed
	StatusLocQPOpErr     Status = 2  // internal QP consistency error
	StatusLocEECOpErr    Status = 3  // unused on RC
	StatusLocProtErr     Status = 4  // local SGE outside its MR, wrong lkey or rights
	StatusWRFlushErr     Status = 5  // QP in ERROR: request was flushed (teardown)
	StatusMWBindErr      Status = 6  // memory window bind failed
	StatusBadRespErr     Status = 7  // unexpected response from the peer
	StatusLocAccessErr   Status = 8  // local protection error on inbound data
	StatusRemInvReqErr   Status = 9  // peer found the request invalid
	StatusRemAccessErr   Status = 10 // peer refused the rkey, rights or range
	StatusRemOpErr       Status = 11 // peer could not complete the operation
	StatusRetryExcErr    Status = 12 // transport retries exhausted
	StatusRNRRetryExcErr Status = 13 // peer had no receive posted, retries exhausted
	StatusLocRDDViolErr  Status = 14
	StatusRemInvRdReqErr Status = 15
	StatusRemAbortErr    Status = 16 // peer aborted the operation
	StatusInvEECNErr     Status = 17
	StatusInvEECStateErr Status = 18
	StatusFatalErr       Status = 19
	StatusRespTimeoutErr Status = 20
	StatusGeneralErr     Status = 21
)

var statusNames = [...]string{
	"success", "local length error", "local QP operation error",
	"local EE context operation error", "local protection error",
	"work request flushed error", "memory window bind error",
	"bad response error", "local access error",
	"remote invalid request error", "remote access error",
	"remote operation error", "transport retry counter exceeded",
	"RNR retry counter exceeded", "local RDD violation error",
	"remote invalid RD request", "aborted error",
	"invalid EE context number", "invalid EE context state",
	"fatal error", "response timeout error", "general error",
}

// String matches ibv_wc_status_str.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Completion is one work completion (ibv_wc subset).
type Completion struct {
	WRID      uint64 // the id given at post time
	QPNum     uint32 // QP.Num of the queue pair it belongs to
	Bytes     uint32 // bytes received (receives) or transferred (reads)
	Imm       uint32 // immediate data, host order, when HasImm
	VendorErr uint32 // provider detail for a failed status (verbs: vendor_err; soft: the Terminate word, layer<<28 | type<<24 | code<<16)
	Status    Status
	Op        Opcode // valid only when Status is StatusSuccess (as in verbs)
	HasImm    bool
}
