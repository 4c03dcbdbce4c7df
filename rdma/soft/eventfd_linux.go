//go:build linux

package soft

import (
	"os"

	"golang.org/x/sys/unix"
)

// newEventfd is the notification fd of a completion queue or a listener: a
// non-blocking, close-on-exec eventfd; semaphore makes each read take one
// count (one connection request per read) instead of all of them.
func newEventfd(semaphore bool) (int, error) {
	flags := unix.EFD_NONBLOCK | unix.EFD_CLOEXEC
	if semaphore {
		flags |= unix.EFD_SEMAPHORE
	}
	fd, err := unix.Eventfd(0, flags)
	if err != nil {
		return -1, os.NewSyscallError("eventfd", err)
	}
	return fd, nil
}
