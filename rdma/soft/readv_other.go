//go:build !linux && !darwin

package soft

import "golang.org/x/sys/unix"

// readv reads into the first buffer only where x/sys/unix has no readv
// (the BSDs but macOS): a short read, which every caller of rxStream.readv
// takes in its stride, as it must from readv itself.
func readv(fd int, iov [][]byte) (int, error) { return unix.Read(fd, iov[0]) }
