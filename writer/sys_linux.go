//go:build linux

package writer

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// writev is unix.Writev without its per-call allocation, and raw: the
// socket is non-blocking (poll.Read says why that matters).
func writev(fd int, iov []unix.Iovec) (int, error) {
	for {
		var n int
		var err error
		if len(iov) == 1 {
			// One buffer (most small responses: header and body in one
			// block) goes by write: writev first copies and checks the
			// iovec array, which costs the kernel more than the 150 bytes
			// of a /hello response.
			n, err = poll.Write(fd, unsafe.Slice(iov[0].Base, iov[0].Len))
		} else {
			n, err = poll.Writev(fd, iov)
		}
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}
