//go:build linux

package stages

import "golang.org/x/sys/unix"

// SendQueue is what the connection's socket still holds for the client:
// bytes not yet sent, or sent and not yet acknowledged (SIOCOUTQ). Its
// owner stage only.
func (c *Conn) SendQueue() (int, error) { return unix.IoctlGetInt(c.FD, unix.SIOCOUTQ) }

// RecvQueue is what the client has sent that nobody has read yet
// (SIOCINQ). Its owner stage only.
func (c *Conn) RecvQueue() (int, error) { return unix.IoctlGetInt(c.FD, unix.SIOCINQ) }
