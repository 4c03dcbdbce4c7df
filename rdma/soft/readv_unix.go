//go:build linux || darwin

package soft

import "golang.org/x/sys/unix"

// readv is readv(2).
func readv(fd int, iov [][]byte) (int, error) { return unix.Readv(fd, iov) }
