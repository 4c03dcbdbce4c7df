//go:build !linux

package poll

import (
	"errors"

	"golang.org/x/sys/unix"
)

// SendRing is io_uring's batched send, which only Linux has: elsewhere
// NewSendRing fails and callers write as before.
type SendRing struct{}

// ErrNoSendRing: no io_uring here.
var ErrNoSendRing = errors.New("quartet: io_uring unavailable")

// NewSendRing fails: no io_uring here.
func NewSendRing(int) (*SendRing, error) { return nil, ErrNoSendRing }

func (*SendRing) Cap() int                                        { return 0 }
func (*SendRing) Queued() int                                     { return 0 }
func (*SendRing) Send(int, []unix.Iovec, uint64) bool             { return false }
func (*SendRing) Submit(func(tag uint64, n int, err error)) error { return nil }
func (*SendRing) Close() error                                    { return nil }
