//go:build verbs

package verbs

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"unsafe"
)

// fillSockaddr builds a sockaddr_in or sockaddr_in6 in C memory (or a
// C struct on the Go stack, which holds no Go pointers).
func fillSockaddr(ss *C.struct_sockaddr_storage, ip netip.Addr, port int) {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		C.q_sockaddr(ss, 0, (*C.uchar)(unsafe.Pointer(&b[0])), C.int(port))
		return
	}
	b := ip.As16()
	C.q_sockaddr(ss, 1, (*C.uchar)(unsafe.Pointer(&b[0])), C.int(port))
}

// goAddr converts a sockaddr into a *net.TCPAddr (rdma_cm's port space is
// RDMA_PS_TCP, and its ports are the iWARP TCP ports).
func goAddr(sa *C.struct_sockaddr) net.Addr {
	var ip [16]byte
	var port C.int
	switch C.q_addr_parts(sa, (*C.uchar)(unsafe.Pointer(&ip[0])), &port) {
	case 4:
		return &net.TCPAddr{IP: net.IP(ip[:4]).To16(), Port: int(port)}
	case 16:
		return &net.TCPAddr{IP: net.IP(ip[:]), Port: int(port)}
	}
	return nil
}

// resolve turns "host:port" into an address and port; host may be a name.
func resolve(ctx context.Context, addr string) (netip.Addr, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("rdma/verbs: address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return netip.Addr{}, 0, fmt.Errorf("rdma/verbs: address %q: bad port", addr)
	}
	if host == "" {
		return netip.IPv4Unspecified(), port, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, port, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, 0, fmt.Errorf("rdma/verbs: resolving %q: %w", host, err)
	}
	return ips[0], port, nil
}
