//go:build !linux

package listener

import (
	"net/netip"

	"github.com/quartet-server/quartet/internal/poll"
)

// Quartet's loops run on Linux only (see internal/poll): New fails here at
// the first socket, naming the platform.

func socket(int) (int, error) { return -1, poll.Unsupported("listener") }

type peerAddr struct{}

func accept(int, *peerAddr) (int, netip.AddrPort, error) {
	return -1, netip.AddrPort{}, poll.Unsupported("accept4")
}
