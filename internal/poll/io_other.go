//go:build !linux

package poll

import "golang.org/x/sys/unix"

// Read and Write: no loop runs here (openPoller fails), so nothing calls
// them; they are the plain calls, for the build.
func Read(fd int, b []byte) (int, error)  { return unix.Read(fd, b) }
func Write(fd int, b []byte) (int, error) { return unix.Write(fd, b) }

// Writev: as Read and Write, never called here; an error, not a plain
// call, since the platforms differ in what writev takes.
func Writev(int, []unix.Iovec) (int, error) { return -1, Unsupported("poll: writev") }
