//go:build linux

package listener

import (
	"net/netip"
	"os"
	"unsafe"

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

// peerAddr is where accept writes a peer's address: one per accept loop,
// reused, because x/sys's Accept4 allocates about 250 bytes per
// connection (its address buffer escapes, and so does the Sockaddr it
// returns), garbage that a burst of 10k connections turns into as many
// megabytes of heap the GC lets grow before it collects.
type peerAddr = unix.RawSockaddrAny

// accept takes one connection, non-blocking and close-on-exec in the same
// call (accept4), so no fork can inherit it in between, and returns the
// peer's address (zero for a family other than IPv4 and IPv6).
func accept(fd int, pa *peerAddr) (int, netip.AddrPort, error) {
	n := uint32(unix.SizeofSockaddrAny)
	nfd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(pa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	switch pa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(pa))
		return int(nfd), netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port)), nil
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(pa))
		return int(nfd), netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port)), nil
	}
	return int(nfd), netip.AddrPort{}, nil
}

// ntohs reads a port as the kernel stores it, in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
