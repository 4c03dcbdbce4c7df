package rdma

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Waiter blocks a goroutine until a CQ has completions, parking it in Go's
// runtime poller on a duplicate of the CQ's fd: no OS thread sits in
// poll(2) holding a P, which on a small machine would stall the very
// goroutines (a soft provider's transmit and receive) that produce the
// completion. It is for tools, tests and simple clients; a server puts
// CQ.Fd in its own poller instead. One goroutine at a time; Close it.
type Waiter struct {
	cq CQ
	f  *os.File
	rc syscall.RawConn

	consumed int
	err      error
	tryFn    func(fd uintptr) bool // w.try, bound once so waits allocate nothing
}

// NewWaiter duplicates cq's fd and registers the duplicate with the
// runtime poller. The Waiter owns the duplicate; cq keeps its own fd.
func NewWaiter(cq CQ) (*Waiter, error) {
	fd, err := unix.FcntlInt(uintptr(cq.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	// The duplicate shares the file status flags, so it is non-blocking
	// like the original and os.NewFile hands it to the poller.
	f := os.NewFile(uintptr(fd), "rdma-cq")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	w := &Waiter{cq: cq, f: f, rc: rc}
	w.tryFn = w.try
	return w, nil
}

// try is the raw-read callback: take the CQ's event if one is pending,
// else tell the poller to wait for the fd.
func (w *Waiter) try(uintptr) bool {
	w.consumed, w.err = w.cq.Consume()
	return w.consumed > 0 || w.err != nil
}

// Wait blocks until the CQ has completions or ctx is done and polls up
// to len(dst) of them into dst, following the CQ protocol: poll, arm,
// poll again (a completion that landed before the arm raised no event),
// then sleep on the fd, consume, repeat.
func (w *Waiter) Wait(ctx context.Context, dst []Completion) (int, error) {
	for {
		if n, err := w.cq.Poll(dst); n > 0 || err != nil {
			return n, err
		}
		if err := w.cq.Arm(false); err != nil {
			return 0, err
		}
		if n, err := w.cq.Poll(dst); n > 0 || err != nil {
			return n, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		dl, _ := ctx.Deadline()
		_ = w.f.SetReadDeadline(dl)
		var stop func() bool
		if ctx.Done() != nil {
			stop = context.AfterFunc(ctx, func() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) })
		}
		err := w.rc.Read(w.tryFn)
		if stop != nil {
			stop()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The fd deadline mirrors ctx; its timer may fire a
				// moment before ctx's own.
				if e := ctx.Err(); e != nil {
					return 0, e
				}
				if !dl.IsZero() && !time.Now().Before(dl) {
					return 0, context.DeadlineExceeded
				}
				continue
			}
			return 0, err
		}
		if w.err != nil {
			return 0, w.err
		}
	}
}

// Close releases the duplicate fd.
func (w *Waiter) Close() error { return w.f.Close() }

// Wait is Waiter.Wait with a Waiter made for this call when it has to
// block (a dup and a poller registration); loops that wait often should
// keep a Waiter.
func Wait(ctx context.Context, cq CQ, dst []Completion) (int, error) {
	if n, err := cq.Poll(dst); n > 0 || err != nil {
		return n, err
	}
	w, err := NewWaiter(cq)
	if err != nil {
		return 0, err
	}
	defer w.Close()
	return w.Wait(ctx, dst)
}
