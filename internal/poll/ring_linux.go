//go:build linux

package poll

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ring sends to and receives from several non-blocking sockets in one
// system call: an io_uring used for nothing but that. A loop that answers
// k connections in a turn makes one io_uring_enter instead of k writes,
// and one instead of k reads. Each system call costs its entry and exit
// besides its work, and on this project's machines (a KVM guest with
// page-table isolation) a null system call takes about a microsecond, as
// long as loopback's whole transmit of a small response. Measured with a
// bare epoll responder (server on one CPU, wrk -t1 -c100 on the other, 4
// alternating rounds): 10.4 µs of server CPU a request with its writes
// batched, against 11.2 µs with a write each; in Quartet, batching the
// reads as well took a further tenth off (reader/gather.go).
//
// Every operation goes with MSG_DONTWAIT, so io_uring never parks one to
// wait for the socket: a full socket completes a send at once with
// EAGAIN, an empty one a receive, as write and read would return it, and
// Submit's wait for every completion cannot block. The ring holds no
// memory of the caller's past a Submit: the kernel reads the bytes and
// the iovecs, and fills the receive buffers, during the call.
//
// One goroutine at a time; it need not stay on one thread (no
// IORING_SETUP_SINGLE_ISSUER, which would bind the ring to a thread and
// make a Go loop lock its own).
type Ring struct {
	fd      int
	rings   []byte // the SQ and CQ rings (one mapping: IORING_FEAT_SINGLE_MMAP)
	sqeMem  []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	sqes    []ringSQE
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []ringCQE
	msgs    []unix.Msghdr // one per SQE slot: SENDMSG reads its msghdr during the call
	queued  uint32
}

// ringSQE is struct io_uring_sqe (64 bytes).
type ringSQE struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	msgFlags    uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	pad         uint64
}

// ringCQE is struct io_uring_cqe (16 bytes; no IORING_SETUP_CQE32).
type ringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// sqOffsets and cqOffsets are struct io_sqring_offsets and
// io_cqring_offsets: where in the mapping each ring's fields are.
type sqOffsets struct {
	head, tail, mask, entries, flags, dropped, array, resv1 uint32
	userAddr                                                uint64
}

type cqOffsets struct {
	head, tail, mask, entries, overflow, cqes, flags, resv1 uint32
	userAddr                                                uint64
}

// ringParams is struct io_uring_params.
type ringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sq                                                                     sqOffsets
	cq                                                                     cqOffsets
}

const (
	ringOpSendmsg       = 9  // IORING_OP_SENDMSG
	ringOpRecv          = 27 // IORING_OP_RECV (Linux 5.6)
	ringFeatSingleMmap  = 1 << 0
	ringOffSQEs         = 0x10000000 // IORING_OFF_SQES
	ringEnterGetEvents  = 1 << 0
	ringSendFlags       = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
	sizeofRingSQE       = 64
	sizeofRingCQE       = 16
	maxRingEntries      = 4096
	errRingNotSupported = "io_uring without IORING_FEAT_SINGLE_MMAP"
)

// ErrNoRing: the kernel refused an io_uring (ENOSYS before Linux 5.1,
// EPERM under a seccomp filter such as Docker's default profile, or
// kernel.io_uring_disabled). Callers write as before.
var ErrNoRing = errors.New("quartet: io_uring unavailable")

// NewRing sets up a ring for up to entries operations per Submit (a power
// of two, at most 4096). The caller owns it and releases it with Close.
func NewRing(entries int) (*Ring, error) {
	if entries < 1 || entries > maxRingEntries || entries&(entries-1) != 0 {
		return nil, fmt.Errorf("quartet: io_uring of %d entries: want a power of two up to %d", entries, maxRingEntries)
	}
	var p ringParams
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %w", ErrNoRing, e)
	}
	r := &Ring{fd: int(fd)}
	if p.features&ringFeatSingleMmap == 0 {
		r.Close()
		return nil, fmt.Errorf("%w: %s", ErrNoRing, errRingNotSupported)
	}
	size := max(p.sq.array+p.sqEntries*4, p.cq.cqes+p.cqEntries*sizeofRingCQE)
	var err error
	if r.rings, err = unix.Mmap(r.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("quartet: mmap of io_uring rings: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, ringOffSQEs, int(p.sqEntries)*sizeofRingSQE, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("quartet: mmap of io_uring SQEs: %w", err)
	}
	base := unsafe.Pointer(&r.rings[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqMask = at(p.sq.head), at(p.sq.tail), *at(p.sq.mask)
	r.sqArray = unsafe.Slice(at(p.sq.array), p.sqEntries)
	r.sqes = unsafe.Slice((*ringSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = at(p.cq.head), at(p.cq.tail), *at(p.cq.mask)
	r.cqes = unsafe.Slice((*ringCQE)(unsafe.Add(base, p.cq.cqes)), p.cqEntries)
	r.msgs = make([]unix.Msghdr, p.sqEntries)
	return r, nil
}

// Cap is how many operations one Submit takes.
func (r *Ring) Cap() int { return len(r.sqes) }

// Queued is how many operations wait for Submit.
func (r *Ring) Queued() int { return int(r.queued) }

// Send queues a sendmsg of iov on the non-blocking socket fd, tagged tag
// for Submit's report. The bytes and iov must stay as they are until
// Submit returns. It reports false, queuing nothing, when the ring holds
// Cap sends already.
func (r *Ring) Send(fd int, iov []unix.Iovec, tag uint64) bool {
	if int(r.queued) == len(r.sqes) || len(iov) == 0 {
		return false
	}
	tail := *r.sqTail
	i := tail & r.sqMask
	m := &r.msgs[i]
	*m = unix.Msghdr{Iov: &iov[0]}
	m.SetIovlen(len(iov))
	r.sqes[i] = ringSQE{opcode: ringOpSendmsg, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(m))), len: 1,
		msgFlags: ringSendFlags, userData: tag}
	r.sqArray[i] = i
	atomic.StoreUint32(r.sqTail, tail+1) // the kernel reads the SQE once it sees the tail
	r.queued++
	return true
}

// Recv queues a recv into b from the non-blocking socket fd, tagged tag
// for Submit's report. b must stay as it is until Submit returns, and be
// left alone until then: the kernel writes it during the call. It reports
// false, queuing nothing, when the ring holds Cap operations already or b
// is empty.
func (r *Ring) Recv(fd int, b []byte, tag uint64) bool {
	if int(r.queued) == len(r.sqes) || len(b) == 0 {
		return false
	}
	tail := *r.sqTail
	i := tail & r.sqMask
	r.sqes[i] = ringSQE{opcode: ringOpRecv, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(&b[0]))), len: uint32(len(b)),
		msgFlags: unix.MSG_DONTWAIT, userData: tag}
	r.sqArray[i] = i
	atomic.StoreUint32(r.sqTail, tail+1)
	r.queued++
	return true
}

// Submit makes everything queued with one io_uring_enter and reports each
// operation, in the order the kernel finished them, as sendmsg or recv
// would have returned it: the bytes taken or read (0 for a receive at
// EOF), or an error (unix.EAGAIN when the socket was full, or empty).
// Operations on different sockets run in no particular order; queue at
// most one per socket. An error is the ring failing as a whole: the
// operations it did not report may or may not have been made, and they
// stay queued in the kernel's view, so the caller must Close the ring and
// not use it again.
func (r *Ring) Submit(report func(tag uint64, n int, err error)) error {
	want := r.queued
	if want == 0 {
		return nil
	}
	toSubmit := want
	for got := uint32(0); got < want; {
		// Raw: every send is non-blocking, so the call never waits long
		// (see Read on what a raw call saves).
		_, _, e := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(want-got), ringEnterGetEvents, 0, 0)
		switch e {
		case 0:
			toSubmit = 0
		case unix.EINTR:
			// Submitted or not, the kernel says by the SQ head.
			toSubmit = *r.sqTail - atomic.LoadUint32(r.sqHead)
		default:
			r.queued = 0
			return fmt.Errorf("quartet: io_uring_enter: %w", e)
		}
		head := *r.cqHead
		tail := atomic.LoadUint32(r.cqTail)
		for ; head != tail; head++ {
			c := &r.cqes[head&r.cqMask]
			got++
			if c.res < 0 {
				report(c.userData, 0, unix.Errno(-c.res))
			} else {
				report(c.userData, int(c.res), nil)
			}
		}
		atomic.StoreUint32(r.cqHead, head)
	}
	r.queued = 0
	return nil
}

// Close unmaps the rings and closes the ring's fd.
func (r *Ring) Close() error {
	var errs []error
	if r.sqeMem != nil {
		errs = append(errs, unix.Munmap(r.sqeMem))
		r.sqeMem = nil
	}
	if r.rings != nil {
		errs = append(errs, unix.Munmap(r.rings))
		r.rings = nil
	}
	if r.fd >= 0 {
		errs = append(errs, unix.Close(r.fd))
		r.fd = -1
	}
	return errors.Join(errs...)
}
