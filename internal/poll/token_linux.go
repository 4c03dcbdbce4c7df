package poll

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// x/sys/unix splits epoll_data into Fd and Pad on most Linux ports; the
// 64-bit union starts at Fd either way, so the token is stored over both.
func putToken(ev *unix.EpollEvent, t uint64) {
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = t
}

func getToken(ev *unix.EpollEvent) uint64 {
	return *(*uint64)(unsafe.Pointer(&ev.Fd))
}
