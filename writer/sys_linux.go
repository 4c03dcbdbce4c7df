//go:build linux

package writer

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// writev is unix.Writev without its per-call allocation.
func writev(fd int, iov []unix.Iovec) (int, error) {
	// One buffer (most small responses: header and body in one block)
	// goes by write: writev first copies and checks the iovec array, which
	// costs the kernel more than the 150 bytes of a /hello response.
	nr, arg, arg2 := uintptr(unix.SYS_WRITEV), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov))
	if len(iov) == 1 {
		nr, arg, arg2 = unix.SYS_WRITE, uintptr(unsafe.Pointer(iov[0].Base)), uintptr(iov[0].Len)
	}
	for {
		n, _, e := unix.Syscall(nr, uintptr(fd), arg, arg2)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(n), nil
	}
}
