// Package gnetboot holds what the gnet peers share at start-up.
package gnetboot

import (
	"errors"
	"fmt"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Addr is the IPv4 address eng's listener is bound to. The port is only
// known once bound (-addr :0), so it is read from a dup of the listening
// socket; call it from OnBoot.
func Addr(eng gnet.Engine) (string, error) {
	fd, err := eng.Dup()
	if err != nil {
		return "", err
	}
	sa, err := unix.Getsockname(fd)
	unix.Close(fd)
	if err != nil {
		return "", err
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return "", errors.New("gnetboot: the listener is not IPv4")
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", in4.Addr[0], in4.Addr[1], in4.Addr[2], in4.Addr[3], in4.Port), nil
}
