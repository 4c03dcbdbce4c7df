//go:build !linux

package stages

import "github.com/quartet-server/quartet/internal/poll"

// SendQueue needs SIOCOUTQ (see internal/poll on other platforms).
func (c *Conn) SendQueue() (int, error) { return 0, poll.Unsupported("SIOCOUTQ") }

// RecvQueue needs SIOCINQ.
func (c *Conn) RecvQueue() (int, error) { return 0, poll.Unsupported("SIOCINQ") }
