//go:build linux

package listener

import (
	"os"

	"golang.org/x/sys/unix"
)

// socket opens a non-blocking, close-on-exec TCP socket in one call.
func socket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

// accept takes one connection, non-blocking and close-on-exec in the same
// call (accept4), so no fork can inherit it in between.
func accept(fd int) (int, unix.Sockaddr, error) {
	return unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
}
