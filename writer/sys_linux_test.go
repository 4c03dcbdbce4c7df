package writer

import (
	"io"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkSmallWrite is the kernel's cost of a small response (147
// bytes, /hello's) in one buffer, by write and by a one-element writev,
// over loopback TCP with a client draining it: why writev sends a single
// buffer by write (writev first copies and checks the iovec array).
//
//	go test -run '^$' -bench SmallWrite -count 6 ./writer
func BenchmarkSmallWrite(b *testing.B) {
	msg := pattern(3, 147)
	for _, bc := range []struct {
		name string
		call func(fd int, iov []unix.Iovec) (uintptr, unix.Errno)
	}{
		{"write", func(fd int, iov []unix.Iovec) (uintptr, unix.Errno) {
			n, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(iov[0].Base)), uintptr(iov[0].Len))
			return n, e
		}},
		{"writev", func(fd int, iov []unix.Iovec) (uintptr, unix.Errno) {
			n, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			return n, e
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fd, client := tcpPair(b, 0, 0)
			go func() { _, _ = io.Copy(io.Discard, client) }()
			iov := []unix.Iovec{{Base: &msg[0]}}
			iov[0].SetLen(len(msg))
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				for {
					_, e := bc.call(fd, iov)
					if e == 0 {
						break
					}
					if e != unix.EAGAIN && e != unix.EINTR {
						b.Fatal(e)
					}
				}
			}
		})
	}
}
