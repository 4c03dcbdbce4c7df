package deliver

import (
	"errors"

	"github.com/quartet-server/quartet/rdma"
)

// Why a delivery failed after Deliver accepted it, as Notify's callbacks
// hear it (wrapped in a *UnitError; test with errors.Is).
var (
	// ErrTransfer: a work request of the unit completed with an error
	// (UnitError.Status says which), or was flushed after one.
	ErrTransfer = errors.New("deliver: transfer failed")
	// ErrNoCompletion: no completion at or beyond the unit came within
	// Config.CompletionTimeout; the channel was retired.
	ErrNoCompletion = errors.New("deliver: no completion")
	// ErrChannelClosed: the unit's channel was destroyed (it failed, or
	// the engine closed) before a completion retired the unit, or an
	// exposure's channel died before the client confirmed.
	ErrChannelClosed = errors.New("deliver: channel closed")
	// ErrExposureExpired: the client did not confirm its Read within
	// Config.ExposureTimeout; the exposure was revoked.
	ErrExposureExpired = errors.New("deliver: exposure timed out")
)

// UnitError is why a unit failed. Detail is what a peer may be told: the
// detail of X-RDMA-Fallback's rdma-failed ("remote access error", "no
// completion in 30s", "connection closed after ..."), and Error returns
// exactly it.
type UnitError struct {
	Err    error       // ErrTransfer, ErrNoCompletion or ErrChannelClosed
	Status rdma.Status // the completion's status, when one came
	Detail string
}

func (e *UnitError) Error() string { return e.Detail }
func (e *UnitError) Unwrap() error { return e.Err }
