//go:build !linux && !darwin

package soft

import "golang.org/x/sys/unix"

// readv reads into the first buffer only, on the platforms where
// x/sys/unix has no readv (FreeBSD and the other BSDs). That is a short
// read, which rxStream.readv's callers handle as they must for readv.
func readv(fd int, iov [][]byte) (int, error) { return unix.Read(fd, iov[0]) }
