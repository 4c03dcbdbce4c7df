package poll

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// The raw calls behave as the plain ones on a non-blocking socket: bytes
// through, EAGAIN when there is nothing to read, the errno otherwise.
func TestRawIO(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	buf := make([]byte, 64)
	if n, err := Read(fds[1], buf); err != unix.EAGAIN || n != -1 {
		t.Fatalf("Read of an empty socket: %d, %v; want -1, EAGAIN", n, err)
	}
	if n, err := Write(fds[0], []byte("ab")); err != nil || n != 2 {
		t.Fatalf("Write: %d, %v", n, err)
	}
	c, d := []byte("cd"), []byte("efg")
	iov := []unix.Iovec{{Base: &c[0]}, {Base: &d[0]}}
	iov[0].SetLen(len(c))
	iov[1].SetLen(len(d))
	if n, err := Writev(fds[0], iov); err != nil || n != 5 {
		t.Fatalf("Writev: %d, %v", n, err)
	}
	if n, err := Read(fds[1], buf); err != nil || !bytes.Equal(buf[:n], []byte("abcdefg")) {
		t.Fatalf("Read: %q, %v", buf[:max(n, 0)], err)
	}
	if _, err := Read(-1, buf); err != unix.EBADF {
		t.Fatalf("Read of fd -1: %v, want EBADF", err)
	}
}
