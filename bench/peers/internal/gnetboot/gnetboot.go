// Package gnetboot holds what the gnet peers share at start-up.
package gnetboot

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
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

// Logger is gnet's logger for a peer: errors go to w, and nothing
// below an error goes anywhere. gnet's default logger writes INFO lines
// ("Launching gnet with ...") to stdout before OnBoot, ahead of the
// address line the bench tool reads first; WithLogLevel does not help,
// since gnet applies it only to a log file (WithLogPath).
func Logger(w io.Writer) logging.Logger { return errorsOnly{w} }

type errorsOnly struct{ w io.Writer }

func (errorsOnly) Debugf(string, ...any) {}
func (errorsOnly) Infof(string, ...any)  {}
func (errorsOnly) Warnf(string, ...any)  {}

func (l errorsOnly) Errorf(format string, args ...any) {
	fmt.Fprintf(l.w, "gnet: error: "+format+"\n", args...)
}

// Fatalf exits, as gnet's own logger does at FATAL: gnet calls it when
// it cannot go on (a poller it could not create).
func (l errorsOnly) Fatalf(format string, args ...any) {
	fmt.Fprintf(l.w, "gnet: fatal: "+format+"\n", args...)
	os.Exit(1)
}
