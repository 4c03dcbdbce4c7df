//go:build !linux

package poll

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Ring is io_uring's batched send and receive, which only Linux has: elsewhere
// NewRing fails and callers write as before.
type Ring struct{}

// ErrNoRing: no io_uring here.
var ErrNoRing = errors.New("quartet: io_uring unavailable")

// NewRing fails: no io_uring here.
func NewRing(int) (*Ring, error) { return nil, ErrNoRing }

func (*Ring) Cap() int                                        { return 0 }
func (*Ring) Queued() int                                     { return 0 }
func (*Ring) Send(int, []unix.Iovec, uint64) bool             { return false }
func (*Ring) Recv(int, []byte, uint64) bool                   { return false }
func (*Ring) Submit(func(tag uint64, n int, err error)) error { return nil }
func (*Ring) Close() error                                    { return nil }
