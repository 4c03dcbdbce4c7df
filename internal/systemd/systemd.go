// Package systemd speaks the two service protocols of systemd that a
// server needs, without a dependency: socket activation (sd_listen_fds(3):
// the listening sockets arrive as descriptors 3, 4, ... with LISTEN_PID and
// LISTEN_FDS in the environment) and readiness notification (sd_notify(3):
// datagrams such as "READY=1" to the unix socket named by NOTIFY_SOCKET).
// Outside systemd both are no-ops, so a server can always call them.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// Env is the environment the protocols read; os.Getenv and os.Unsetenv in
// a real process, a map in tests.
type Env interface {
	Getenv(string) string
	Unsetenv(string) error
}

// ProcessEnv is the process's environment.
type ProcessEnv struct{}

func (ProcessEnv) Getenv(k string) string  { return os.Getenv(k) }
func (ProcessEnv) Unsetenv(k string) error { return os.Unsetenv(k) }

// Listeners returns the listening sockets systemd passed to this process,
// in order, named by LISTEN_FDNAMES where given; none when the process was
// not socket-activated (or the variables are meant for another process:
// LISTEN_PID is not ours). It unsets the variables, as sd_listen_fds(1)
// does, so that a child process does not take the sockets for its own.
func Listeners(env Env) ([]net.Listener, []string, error) {
	pid, fds := env.Getenv("LISTEN_PID"), env.Getenv("LISTEN_FDS")
	names := env.Getenv("LISTEN_FDNAMES")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		env.Unsetenv(k)
	}
	if fds == "" {
		return nil, nil, nil
	}
	if pid != strconv.Itoa(os.Getpid()) {
		return nil, nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, nil, fmt.Errorf("systemd: LISTEN_FDS=%q is not a count", fds)
	}
	nameList := strings.Split(names, ":")
	var lns []net.Listener
	var got []string
	for i := range n {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(nameList) && nameList[i] != "" {
			name = nameList[i]
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f) // duplicates the descriptor
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, nil, fmt.Errorf("systemd: socket %d (%s): %w", fd, name, err)
		}
		lns = append(lns, ln)
		got = append(got, name)
	}
	return lns, got, nil
}

// Notifier sends sd_notify(3) states. The zero value, and one made outside
// systemd, does nothing.
type Notifier struct {
	addr *net.UnixAddr
}

// NewNotifier reads NOTIFY_SOCKET (and unsets it, so that a child does not
// report for us).
func NewNotifier(env Env) *Notifier {
	path := env.Getenv("NOTIFY_SOCKET")
	env.Unsetenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	return &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
}

// errNotDatagram is returned when NOTIFY_SOCKET names a stream socket.
var errNotDatagram = errors.New("systemd: NOTIFY_SOCKET is not a datagram socket")

// Notify sends state lines, such as "READY=1", "STOPPING=1" or
// "STATUS=...", as one datagram; nothing without NOTIFY_SOCKET.
func (n *Notifier) Notify(state ...string) error {
	if n == nil || n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		if errors.Is(err, syscall.EPROTOTYPE) {
			return errNotDatagram
		}
		return fmt.Errorf("systemd: notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(state, "\n"))); err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	return nil
}
