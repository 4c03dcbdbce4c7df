//go:build !linux

package listener

import (
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// Quartet's loops run on Linux only (see internal/poll): New fails here at
// the first socket, naming the platform.

func socket(int) (int, error) { return -1, poll.Unsupported("listener") }

func accept(int) (int, unix.Sockaddr, error) { return -1, nil, poll.Unsupported("accept4") }
