package rdma

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// waitSlice bounds how long Wait sleeps in poll(2) before looking at
// ctx again; contexts have no fd, so this is how cancellation is seen.
const waitSlice = 50 * time.Millisecond

// Wait blocks until cq has completions or ctx is done, and polls up to
// len(dst) of them into dst. It follows the CQ protocol (arm, then poll,
// then sleep on the fd) and is meant for tools and tests; a server puts
// CQ.Fd in its own poller instead. It blocks an OS thread in poll(2).
func Wait(ctx context.Context, cq CQ, dst []Completion) (int, error) {
	for {
		if n, err := cq.Poll(dst); n > 0 || err != nil {
			return n, err
		}
		if err := cq.Arm(false); err != nil {
			return 0, err
		}
		// A completion that landed before Arm raised no event: poll once
		// more now that the CQ is armed.
		if n, err := cq.Poll(dst); n > 0 || err != nil {
			return n, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		timeout := waitSlice
		if dl, ok := ctx.Deadline(); ok {
			if d := time.Until(dl); d < timeout {
				timeout = max(d, time.Millisecond)
			}
		}
		fds := []unix.PollFd{{Fd: int32(cq.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(timeout/time.Millisecond)); err != nil && err != unix.EINTR {
			return 0, os.NewSyscallError("poll", err)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			if _, err := cq.Consume(); err != nil {
				return 0, err
			}
		}
	}
}
