//go:build linux

package stages

import (
	"os"

	"golang.org/x/sys/unix"
)

// newEventfd is the waker's fd: eventfd(EFD_NONBLOCK|EFD_CLOEXEC).
func newEventfd() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("eventfd", err)
	}
	return fd, nil
}
