package rdma

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Each says when it is returned; test with errors.Is,
// since providers wrap them with detail.
var (
	// ErrNotSupported: the transport or device lacks the operation
	// (PostWriteImm on iWARP, AllocMW without CapMemoryWindows).
	ErrNotSupported = errors.New("rdma: operation not supported by this device")
	// ErrClosed: the object (device, PD, CQ, QP, listener) is closed.
	ErrClosed = errors.New("rdma: use of closed object")
	// ErrBusy: Close of an object others still depend on (a PD with MRs,
	// a CQ with QPs, a device with any of them).
	ErrBusy = errors.New("rdma: object still in use")
	// ErrQueueFull: a post found no free slot in the send or receive
	// queue; poll the CQ and retry.
	ErrQueueFull = errors.New("rdma: work queue full")
	// ErrQPState: a post or connect on a QP that is not in RTS; QP.Err
	// says why it left.
	ErrQPState = errors.New("rdma: queue pair not ready to send")
	// ErrNoDevice: the provider has no device (or none owns the address).
	ErrNoDevice = errors.New("rdma: no RDMA device")
	// ErrUnknownDevice: Open was given a name no device has.
	ErrUnknownDevice = errors.New("rdma: unknown device")
	// ErrUnknownProvider: Registry.Get was given a name no provider has.
	ErrUnknownProvider = errors.New("rdma: unknown provider")
	// ErrRejected: the peer rejected the connect request; a *RejectError
	// carries its private data.
	ErrRejected = errors.New("rdma: connection rejected by peer")
	// ErrInvalid: an argument is out of range (SGE outside its MR, too
	// many SGEs, access rights that make no sense, mismatched PD).
	ErrInvalid = errors.New("rdma: invalid argument")
	// ErrRemoteAccess: the peer refused an rkey, its rights or its range;
	// the QP is in ERROR (QP.Err wraps this).
	ErrRemoteAccess = errors.New("rdma: remote access error")
	// ErrConnLost: the transport connection under the QP broke without
	// an orderly disconnect or Terminate.
	ErrConnLost = errors.New("rdma: connection lost")
	// ErrProtocol: the peer broke the wire protocol (bad MPA, DDP or
	// RDMAP framing, CRC mismatch); QP.Err wraps this.
	ErrProtocol = errors.New("rdma: protocol error")
)

// VerbError is a failed verbs or rdma_cm call, named as in rdma-core
// ("ibv_reg_mr", "rdma_connect") with its errno.
type VerbError struct {
	Verb  string
	Errno syscall.Errno
}

func (e *VerbError) Error() string {
	return fmt.Sprintf("rdma: %s: %v", e.Verb, e.Errno)
}

// Unwrap exposes the errno, so errors.Is(err, syscall.ENOMEM) works.
func (e *VerbError) Unwrap() error { return e.Errno }

// Is maps errnos that have a portable meaning onto the sentinels, so
// code written against one provider tests the same way against another.
func (e *VerbError) Is(target error) bool {
	switch target {
	case ErrNotSupported:
		return e.Errno == syscall.EOPNOTSUPP || e.Errno == syscall.ENOSYS
	case ErrQueueFull:
		return e.Errno == syscall.ENOMEM && isPostVerb(e.Verb)
	case ErrBusy:
		return e.Errno == syscall.EBUSY
	case ErrInvalid:
		return e.Errno == syscall.EINVAL
	case ErrNoDevice:
		return e.Errno == syscall.ENODEV
	case ErrRejected:
		return e.Errno == syscall.ECONNREFUSED
	}
	return false
}

func isPostVerb(v string) bool {
	return v == "ibv_post_send" || v == "ibv_post_recv"
}

// RejectError is returned by Device.Dial when the peer rejected the
// request; it matches ErrRejected.
type RejectError struct {
	PrivateData []byte
}

func (e *RejectError) Error() string { return "rdma: connection rejected by peer" }
func (e *RejectError) Is(target error) bool {
	return target == ErrRejected
}
