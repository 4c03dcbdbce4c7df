//go:build verbs

package verbs

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/quartet-server/quartet/rdma"
	"golang.org/x/sys/unix"
)

// Timeouts rdma_cm needs in milliseconds. 2 s is what rping uses for
// address and route resolution; acceptTimeout bounds Accept waiting for
// ESTABLISHED when its context does not end sooner: a peer that never
// completes the handshake must not hold the caller forever.
const (
	resolveTimeoutMS = 2000
	acceptTimeout    = 30 * time.Second
)

// cmEvent is a copy of an rdma_cm event, taken before the event is acked
// (the private data lives in the event).
type cmEvent struct {
	kind     C.int
	status   int
	id       *C.struct_rdma_cm_id
	listenID *C.struct_rdma_cm_id
	priv     []byte
	param    rdma.ConnParam
}

func (e *cmEvent) String() string {
	return C.GoString(C.rdma_event_str(uint32(e.kind)))
}

// channel is an rdma_cm event channel in non-blocking mode with a
// duplicate of its fd registered in Go's runtime poller, so a goroutine
// waits for events without holding an OS thread and a context can cut the
// wait short through a read deadline.
type channel struct {
	ch *C.struct_rdma_event_channel
	f  *os.File // owns the dup, never the original fd

	// mu orders next against close: a goroutine parked in wait (Accept,
	// the QP's event watcher) is woken by close through f and must not
	// touch the C channel after it is destroyed.
	mu     sync.Mutex
	closed bool
}

func newChannel() (_ *channel, err error) {
	ch, cerr := C.rdma_create_event_channel()
	if ch == nil {
		return nil, verbErr("rdma_create_event_channel", cerr)
	}
	defer func() {
		if err != nil {
			C.rdma_destroy_event_channel(ch)
		}
	}()
	if rc, cerr := C.q_set_nonblock(ch.fd); rc != 0 {
		return nil, verbErr("fcntl(O_NONBLOCK) on rdma_cm channel", cerr)
	}
	dup, derr := unix.FcntlInt(uintptr(ch.fd), unix.F_DUPFD_CLOEXEC, 0)
	if derr != nil {
		return nil, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)
	}
	return &channel{ch: ch, f: os.NewFile(uintptr(dup), "rdma_cm")}, nil
}

func (c *channel) fd() int { return int(c.ch.fd) }

// close destroys the channel; every id on it must be destroyed first,
// by before, which runs under the channel's lock with the channel still
// usable through nextLocked. A goroutine parked in wait wakes up with
// rdma.ErrClosed.
func (c *channel) close(before func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if before != nil {
		before()
	}
	c.closed = true
	c.f.Close()
	C.rdma_destroy_event_channel(c.ch)
}

// next returns the next event without blocking; ok is false when there
// is none. The event is acked before next returns.
func (c *channel) next() (ev cmEvent, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ev, false, rdma.ErrClosed
	}
	return c.nextLocked()
}

func (c *channel) nextLocked() (ev cmEvent, ok bool, err error) {
	var e *C.struct_rdma_cm_event
	if rc, cerr := C.rdma_get_cm_event(c.ch, &e); rc != 0 {
		if errors.Is(cerr, syscall.EAGAIN) {
			return ev, false, nil
		}
		return ev, false, verbErr("rdma_get_cm_event", cerr)
	}
	var q C.struct_q_ev
	C.q_ev_read(e, &q)
	ev = cmEvent{
		kind:     q.event,
		status:   int(q.status),
		id:       q.id,
		listenID: q.listen_id,
		param:    rdma.ConnParam{ResponderResources: int(q.responder_resources), InitiatorDepth: int(q.initiator_depth)},
	}
	if q.priv != nil && q.priv_len > 0 {
		ev.priv = C.GoBytes(unsafe.Pointer(q.priv), q.priv_len)
	}
	C.rdma_ack_cm_event(e)
	return ev, true, nil
}

func (c *channel) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// wait blocks until the channel has an event or ctx is done.
func (c *channel) wait(ctx context.Context) (cmEvent, error) {
	for {
		if ev, ok, err := c.next(); ok || err != nil {
			return ev, err
		}
		if err := ctx.Err(); err != nil {
			return cmEvent{}, err
		}
		rc, err := c.f.SyscallConn()
		if err != nil {
			if c.isClosed() {
				return cmEvent{}, rdma.ErrClosed
			}
			return cmEvent{}, err
		}
		c.f.SetReadDeadline(time.Time{})
		if dl, ok := ctx.Deadline(); ok {
			c.f.SetReadDeadline(dl)
		}
		stop := context.AfterFunc(ctx, func() { c.f.SetReadDeadline(time.Unix(1, 0)) })
		// Read parks the goroutine in the runtime poller until the fd is
		// readable; returning true from the callback ends the wait.
		err = rc.Read(func(fd uintptr) bool {
			// fd is the dup: same open file, so the same readiness, and
			// valid for as long as Read runs even if close is under way.
			var p [1]unix.PollFd
			p[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
			n, _ := unix.Poll(p[:], 0)
			return n > 0
		})
		stop()
		if err != nil && ctx.Err() != nil {
			return cmEvent{}, ctx.Err()
		}
		if err != nil && c.isClosed() {
			return cmEvent{}, rdma.ErrClosed // woken by close
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return cmEvent{}, err
		}
	}
}

// expect waits for the event want on id, turning the failure events into
// errors named after verb.
func (c *channel) expect(ctx context.Context, verb string, want C.int) (cmEvent, error) {
	for {
		ev, err := c.wait(ctx)
		if err != nil {
			return ev, fmt.Errorf("rdma/verbs: %s: waiting for %s: %w", verb,
				C.GoString(C.rdma_event_str(uint32(want))), err)
		}
		switch {
		case ev.kind == want:
			return ev, nil
		case ev.kind == C.RDMA_CM_EVENT_REJECTED:
			return ev, &rdma.RejectError{PrivateData: ev.priv}
		case ev.kind == C.RDMA_CM_EVENT_ADDR_ERROR, ev.kind == C.RDMA_CM_EVENT_ROUTE_ERROR,
			ev.kind == C.RDMA_CM_EVENT_CONNECT_ERROR, ev.kind == C.RDMA_CM_EVENT_UNREACHABLE,
			ev.kind == C.RDMA_CM_EVENT_DEVICE_REMOVAL, ev.kind == C.RDMA_CM_EVENT_DISCONNECTED:
			errno := syscall.Errno(-ev.status)
			if ev.status >= 0 {
				errno = syscall.ECONNABORTED
			}
			return ev, fmt.Errorf("%w (event %s)", &rdma.VerbError{Verb: verb, Errno: errno}, ev.String())
		}
		// Anything else (e.g. a late TIMEWAIT_EXIT) is not for this wait.
	}
}

// Listener is a listening cm_id on its own event channel.
type Listener struct {
	dev    *Device
	ch     *channel
	id     *C.struct_rdma_cm_id // valid until Close
	addr   net.Addr
	closed atomic.Bool
	// reqs are the requests Accept handed out and nobody has accepted
	// or rejected yet; guarded by ch.mu. Their ids live on the
	// listener's channel, so Close rejects and destroys them before it
	// destroys the channel, and a request used after that refuses with
	// ErrClosed instead of handing librdmacm an id whose channel is
	// gone.
	reqs map[*ConnRequest]struct{}
}

var _ rdma.Listener = (*Listener)(nil)

// portAttempts bounds the tries of a Listen on port 0 or a Dial whose
// port rdma_cm chose and the kernel then found taken (see Listen).
const portAttempts = 4

// Listen binds and listens (rdma_create_id, rdma_bind_addr, rdma_listen).
//
// On iWARP a listener or connection is also a kernel TCP socket, bound
// to the port rdma_cm picked from its own port space, which knows nothing
// of ordinary sockets: with many TCP connections about (64 HTTP clients in
// the VM) the bind can collide and fail with EADDRINUSE. When the port was
// rdma_cm's choice (Listen on port 0, every Dial) another try picks
// another port.
func (d *Device) Listen(addr string, backlog int) (rdma.Listener, error) {
	ip, port, err := resolve(context.Background(), addr)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		l, err := d.listen(addr, ip, port, backlog)
		if err == nil || port != 0 || attempt == portAttempts || !errors.Is(err, syscall.EADDRINUSE) {
			return l, err
		}
	}
}

func (d *Device) listen(addr string, ip netip.Addr, port int, backlog int) (_ rdma.Listener, err error) {
	if err := d.ref(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.unref()
		}
	}()
	ch, err := newChannel()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ch.close(nil)
		}
	}()
	var id *C.struct_rdma_cm_id
	if rc, cerr := C.rdma_create_id(ch.ch, &id, nil, C.RDMA_PS_TCP); rc != 0 {
		return nil, verbErr("rdma_create_id", cerr)
	}
	defer func() {
		if err != nil {
			C.rdma_destroy_id(id)
		}
	}()
	var ss C.struct_sockaddr_storage
	fillSockaddr(&ss, ip, port)
	if rc, cerr := C.rdma_bind_addr(id, (*C.struct_sockaddr)(unsafe.Pointer(&ss))); rc != 0 {
		return nil, verbErr("rdma_bind_addr", cerr)
	}
	if v := C.q_id_verbs(id); v != nil && v != d.ctx {
		return nil, fmt.Errorf("%w: %s belongs to device %s, not %s", rdma.ErrInvalid, addr,
			C.GoString(C.ibv_get_device_name(v.device)), d.info.Name)
	}
	if rc, cerr := C.rdma_listen(id, C.int(backlog)); rc != 0 {
		return nil, verbErr("rdma_listen", cerr)
	}
	return &Listener{dev: d, ch: ch, id: id, addr: goAddr(C.q_src_addr(id)), reqs: map[*ConnRequest]struct{}{}}, nil
}

// Fd is the listener's event channel fd.
func (l *Listener) Fd() int { return l.ch.fd() }

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Accept waits for the next connect request.
func (l *Listener) Accept(ctx context.Context) (rdma.ConnRequest, error) {
	for {
		ev, err := l.ch.wait(ctx)
		if err != nil {
			return nil, err
		}
		if ev.kind != C.RDMA_CM_EVENT_CONNECT_REQUEST {
			continue // e.g. DEVICE_REMOVAL on the listener: nothing to hand out
		}
		r := &ConnRequest{l: l, id: ev.id, priv: ev.priv, param: ev.param,
			local: goAddr(C.q_src_addr(ev.id)), remote: goAddr(C.q_dst_addr(ev.id))}
		l.ch.mu.Lock()
		if l.ch.closed {
			// Close came between the event and here: the channel's end
			// took the request's kernel id with it, and its user-space
			// part cannot be destroyed without the channel.
			l.ch.mu.Unlock()
			return nil, rdma.ErrClosed
		}
		l.reqs[r] = struct{}{}
		l.ch.mu.Unlock()
		return r, nil
	}
}

// Close rejects requests still queued, then destroys the listening id.
func (l *Listener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	var rc C.int
	var cerr error
	l.ch.close(func() {
		for {
			ev, ok, err := l.ch.nextLocked()
			if err != nil || !ok {
				break
			}
			if ev.kind == C.RDMA_CM_EVENT_CONNECT_REQUEST {
				C.rdma_reject(ev.id, nil, 0)
				C.rdma_destroy_id(ev.id)
			}
		}
		for r := range l.reqs {
			C.rdma_reject(r.id, nil, 0)
			C.rdma_destroy_id(r.id)
			r.id = nil
		}
		clear(l.reqs)
		rc, cerr = C.rdma_destroy_id(l.id)
	})
	l.dev.unref()
	return rcErr("rdma_destroy_id", rc, cerr)
}

// ConnRequest is a pending connect request: a child cm_id that is still
// on the listener's channel. id is guarded by the listener's ch.mu: nil
// once accepted, rejected, or destroyed by the listener's Close.
type ConnRequest struct {
	l             *Listener
	id            *C.struct_rdma_cm_id
	priv          []byte
	param         rdma.ConnParam
	local, remote net.Addr
}

var _ rdma.ConnRequest = (*ConnRequest)(nil)

func (r *ConnRequest) PrivateData() []byte   { return r.priv }
func (r *ConnRequest) Param() rdma.ConnParam { return r.param }
func (r *ConnRequest) LocalAddr() net.Addr   { return r.local }
func (r *ConnRequest) RemoteAddr() net.Addr  { return r.remote }

// takeLocked makes the request's id the caller's, off the listener's books;
// nil if it was accepted, rejected or closed already. Under l.ch.mu.
func (r *ConnRequest) takeLocked() *C.struct_rdma_cm_id {
	id := r.id
	r.id = nil
	delete(r.l.reqs, r)
	return id
}

// Reject refuses the request (rdma_reject) and destroys its id.
func (r *ConnRequest) Reject(privateData []byte) error {
	r.l.ch.mu.Lock()
	defer r.l.ch.mu.Unlock()
	id := r.takeLocked()
	if id == nil {
		return rdma.ErrClosed
	}
	p, n := cBytes(privateData)
	rc, cerr := C.rdma_reject(id, p, n)
	C.free(p)
	C.rdma_destroy_id(id)
	return rcErr("rdma_reject", rc, cerr)
}

// Accept creates the QP, runs cfg.Prepare on it (so receives are posted
// before the peer can send: iWARP has no RNR retry, and a Send that finds
// no receive kills the connection), and accepts the connection.
func (r *ConnRequest) Accept(ctx context.Context, cfg rdma.QPConfig, privateData []byte) (_ rdma.QP, err error) {
	if err := ctx.Err(); err != nil {
		if rerr := r.Reject(nil); rerr != nil {
			return nil, rerr
		}
		return nil, fmt.Errorf("rdma/verbs: accept: %w", err)
	}
	// The connection gets its own event channel, so its DISCONNECTED and
	// ESTABLISHED events do not mix with the listener's requests.
	ch, err := newChannel()
	if err != nil {
		return nil, err
	}
	id, err := r.moveTo(ch)
	if err != nil {
		ch.close(nil)
		return nil, err
	}
	d := r.l.dev
	idOwned := true // until newQP takes id and ch over
	defer func() {
		if err != nil && idOwned {
			C.rdma_reject(id, nil, 0)
			C.rdma_destroy_id(id) // on ch, which goes after it
			ch.close(nil)
		}
	}()
	if v := C.q_id_verbs(id); v != d.ctx {
		return nil, fmt.Errorf("%w: connect request arrived on another device", rdma.ErrInvalid)
	}
	qp, err := newQP(d, ch, id, cfg)
	if err != nil {
		return nil, err
	}
	idOwned = false
	accepted := false
	defer func() {
		if err != nil {
			if !accepted {
				C.rdma_reject(id, nil, 0)
			}
			qp.discard()
		}
	}()
	if cfg.Prepare != nil {
		if err := cfg.Prepare(qp); err != nil {
			return nil, fmt.Errorf("rdma/verbs: QPConfig.Prepare: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rdma/verbs: accept: %w", err)
	}
	param := connParam(d, cfg, r.param.InitiatorDepth, r.param.ResponderResources)
	p, n := cBytes(privateData)
	defer C.free(p)
	param.private_data, param.private_data_len = p, C.uint8_t(n)
	if rc, cerr := C.rdma_accept(id, &param); rc != 0 {
		return nil, verbErr("rdma_accept", cerr)
	}
	accepted = true
	ctx, cancel := context.WithTimeout(ctx, acceptTimeout)
	defer cancel()
	if _, err := ch.expect(ctx, "rdma_accept", C.RDMA_CM_EVENT_ESTABLISHED); err != nil {
		return nil, err
	}
	qp.priv = r.priv
	qp.watch()
	return qp, nil
}

// moveTo takes the request's id off the listener's channel onto ch
// (rdma_migrate_id), under the listener channel's lock, so that the
// listener's Close cannot destroy that channel meanwhile. A request
// already accepted, rejected or closed gives ErrClosed; a failed
// migration rejects and destroys the id where it is.
func (r *ConnRequest) moveTo(ch *channel) (*C.struct_rdma_cm_id, error) {
	r.l.ch.mu.Lock()
	defer r.l.ch.mu.Unlock()
	id := r.takeLocked()
	if id == nil {
		return nil, rdma.ErrClosed
	}
	if rc, cerr := C.rdma_migrate_id(id, ch.ch); rc != 0 {
		C.rdma_reject(id, nil, 0)
		C.rdma_destroy_id(id)
		return nil, verbErr("rdma_migrate_id", cerr)
	}
	return id, nil
}

// Dial connects (rdma_resolve_addr, rdma_resolve_route, rdma_create_qp,
// cfg.Prepare, rdma_connect). A try whose port collided (see Listen) is
// retried from the start, with a new QP and Prepare run again; the failed
// try's QP is discarded, its completions dropped.
func (d *Device) Dial(ctx context.Context, addr string, cfg rdma.QPConfig, privateData []byte) (rdma.QP, error) {
	ip, port, err := resolve(ctx, addr)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		qp, err := d.dial(ctx, ip, port, cfg, privateData)
		if err == nil || attempt == portAttempts || !dialPortCollided(err) || ctx.Err() != nil {
			return qp, err
		}
	}
}

// dialPortCollided reports whether a Dial failed on the local port
// rdma_cm chose for it, so that another try with another port may
// succeed. On iWARP the connection's kernel TCP socket is bound to that
// port before it connects (see Listen): the bind fails with EADDRINUSE
// when an ordinary socket holds the port, and the connect with
// EADDRNOTAVAIL when a socket of the same port pair is still about (in
// TIME_WAIT, say). An ordinary connect never sees the latter, because
// the kernel picks its port and skips such pairs; rdma_cm's choice is
// made without looking at them.
func dialPortCollided(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

func (d *Device) dial(ctx context.Context, ip netip.Addr, port int, cfg rdma.QPConfig, privateData []byte) (_ rdma.QP, err error) {
	ch, err := newChannel()
	if err != nil {
		return nil, err
	}
	idOwned := true // until newQP takes id and ch over
	defer func() {
		if err != nil && idOwned {
			ch.close(nil)
		}
	}()
	var id *C.struct_rdma_cm_id
	if rc, cerr := C.rdma_create_id(ch.ch, &id, nil, C.RDMA_PS_TCP); rc != 0 {
		return nil, verbErr("rdma_create_id", cerr)
	}
	defer func() {
		if err != nil && idOwned {
			C.rdma_destroy_id(id)
		}
	}()
	var ss C.struct_sockaddr_storage
	fillSockaddr(&ss, ip, port)
	if rc, cerr := C.rdma_resolve_addr(id, nil, (*C.struct_sockaddr)(unsafe.Pointer(&ss)), resolveTimeoutMS); rc != 0 {
		return nil, verbErr("rdma_resolve_addr", cerr)
	}
	if _, err := ch.expect(ctx, "rdma_resolve_addr", C.RDMA_CM_EVENT_ADDR_RESOLVED); err != nil {
		return nil, err
	}
	if rc, cerr := C.rdma_resolve_route(id, resolveTimeoutMS); rc != 0 {
		return nil, verbErr("rdma_resolve_route", cerr)
	}
	if _, err := ch.expect(ctx, "rdma_resolve_route", C.RDMA_CM_EVENT_ROUTE_RESOLVED); err != nil {
		return nil, err
	}
	if v := C.q_id_verbs(id); v != d.ctx {
		return nil, fmt.Errorf("%w: %s is reached through another device than %s", rdma.ErrInvalid, netip.AddrPortFrom(ip, uint16(port)), d.info.Name)
	}
	qp, err := newQP(d, ch, id, cfg)
	if err != nil {
		return nil, err
	}
	idOwned = false // qp.discard releases id and channel from here on
	defer func() {
		if err != nil {
			qp.discard()
		}
	}()
	if cfg.Prepare != nil {
		if err := cfg.Prepare(qp); err != nil {
			return nil, fmt.Errorf("rdma/verbs: QPConfig.Prepare: %w", err)
		}
	}
	param := connParam(d, cfg, 0, 0)
	p, n := cBytes(privateData)
	defer C.free(p)
	param.private_data, param.private_data_len = p, C.uint8_t(n)
	if rc, cerr := C.q_connect(id, &param); rc != 0 {
		return nil, verbErr("rdma_connect", cerr)
	}
	ev, err := ch.expect(ctx, "rdma_connect", C.RDMA_CM_EVENT_ESTABLISHED)
	if err != nil {
		return nil, err
	}
	qp.priv = ev.priv
	qp.watch()
	return qp, nil
}

// connParam fills rdma_conn_param: IRD/ORD from cfg (0 = device maximum),
// clamped to what the peer offered when it is known (peerORD/peerIRD > 0),
// and retry counts at their maximum (7: retry forever on RNR), as rping.
func connParam(d *Device, cfg rdma.QPConfig, peerORD, peerIRD int) C.struct_rdma_conn_param {
	ird := cfg.ResponderResources
	if ird <= 0 || ird > d.info.MaxQPRdAtom {
		ird = d.info.MaxQPRdAtom
	}
	ord := cfg.InitiatorDepth
	if ord <= 0 || ord > d.info.MaxQPInitRdAtom {
		ord = d.info.MaxQPInitRdAtom
	}
	if peerORD > 0 && ird > peerORD {
		ird = peerORD
	}
	if peerIRD > 0 && ord > peerIRD {
		ord = peerIRD
	}
	var p C.struct_rdma_conn_param
	p.responder_resources = C.uint8_t(min(ird, 255))
	p.initiator_depth = C.uint8_t(min(ord, 255))
	p.retry_count = 7
	p.rnr_retry_count = 7
	return p
}

// cBytes copies b into C memory (private data must not be Go memory once
// librdmacm holds it); free the result with C.free, even when b is empty.
func cBytes(b []byte) (unsafe.Pointer, C.uint8_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return C.CBytes(b), C.uint8_t(min(len(b), 255))
}
