//go:build linux

// Command sendfile is the floor of a Go static-file server, the peer
// `quartet bench compare --static --only nginx,sendfile` holds Quartet
// against beside nginx: one event loop per GOMAXPROCS, each a locked
// thread with its own SO_REUSEPORT listener and epoll, blocking in
// epoll_pwait; every call a raw system call (out of sysmon's sight, as
// Quartet's loops make them); and, for each GET of a file, the calls
// nginx makes with sendfile and tcp_nopush: the head with MSG_MORE,
// TCP_CORK, sendfile, and the cork off. Files are opened once and their
// heads built once; nothing is parsed beyond the request line, and
// nothing is checked again (a file that changes is served as it was).
// It is what a Go server costs with none of a server's work, so that
// the distance between it and Quartet is Quartet's own: not a peer in
// features.
//
// It serves GET and HEAD of the files under -root, and /hello; anything
// else gets 404 (405 for other methods), and a request head over 16 KiB
// or without a request line closes the connection. It prints its base
// URL as its first line and ends on SIGINT or SIGTERM (Go's default: the
// loops hold their Ps in the kernel, so there is no graceful stop).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/quartet-server/quartet/bench/peers"
	"golang.org/x/sys/unix"
)

// maxHead bounds a request head.
const maxHead = 16 << 10

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	root := flag.String("root", ".", "directory of the files served")
	flag.Parse()
	ap, err := net.ResolveTCPAddr("tcp4", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var ip [4]byte
	copy(ip[:], ap.IP.To4())
	port := ap.Port
	var fds []int
	for range runtime.GOMAXPROCS(0) {
		fd, p, err := listen(ip, port)
		if err != nil {
			log.Fatal(err)
		}
		fds, port = append(fds, fd), p
	}
	errs := make(chan error, len(fds))
	for _, fd := range fds {
		lp, err := newLoop(fd, &fileTable{root: *root, byPath: map[string]*file{}})
		if err != nil {
			log.Fatal(err)
		}
		go func() { errs <- lp.run() }()
	}
	fmt.Printf("http://%s\n", net.JoinHostPort(net.IP(ip[:]).String(), strconv.Itoa(port)))
	log.Fatal(<-errs)
}

// listen opens a non-blocking SO_REUSEPORT listener on ip:port (port 0
// picks one) and returns it with its port.
func listen(ip [4]byte, port int) (int, int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	for _, o := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1); err != nil {
			return -1, 0, err
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: ip}); err != nil {
		return -1, 0, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		return -1, 0, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return -1, 0, err
	}
	return fd, sa.(*unix.SockaddrInet4).Port, nil
}

// file is an open file and the head of its 200.
type file struct {
	fd   int
	size int64
	head []byte
}

// fileTable opens each path once, a table per loop (no lock): a file,
// or nil for a path that is missing (and stays so).
type fileTable struct {
	root   string
	byPath map[string]*file
}

func (t *fileTable) get(path []byte) *file {
	if f, ok := t.byPath[string(path)]; ok {
		return f
	}
	var f *file
	p := string(path)
	if clean := filepath.Clean("/" + p); clean == p && !strings.Contains(p, "\x00") {
		if fd, err := unix.Open(filepath.Join(t.root, clean), unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
				f = &file{fd: fd, size: st.Size, head: []byte("HTTP/1.1 200 OK\r\nServer: sendfile\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
					strconv.FormatInt(st.Size, 10) + "\r\n\r\n")}
			} else {
				unix.Close(fd)
			}
		}
	}
	t.byPath[p] = f
	return f
}

var (
	notFound   = []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
	notAllowed = []byte("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n\r\n")
	hello      = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n" + string(peers.Hello))
)

// conn is a connection's state, owned by its loop.
type conn struct {
	fd     int
	in     []byte
	file   *file // the file being sent, nil when none
	off    int64
	corked bool
}

type loop struct {
	ln, ep int
	files  *fileTable
	conns  map[int]*conn
	buf    []byte
	events []unix.EpollEvent
}

func newLoop(ln int, files *fileTable) (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, ln, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ln)}); err != nil {
		return nil, err
	}
	return &loop{ln: ln, ep: ep, files: files, conns: map[int]*conn{}, buf: make([]byte, 16<<10), events: make([]unix.EpollEvent, 256)}, nil
}

// run serves until a call fails in a way a loop cannot recover from.
func (l *loop) run() error {
	runtime.LockOSThread()
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.ep), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), ^uintptr(0), 0, 0)
		if e == unix.EINTR {
			continue // a signal (the runtime's preemption): wait again
		}
		if e != 0 {
			return fmt.Errorf("epoll_pwait: %w", e)
		}
		for i := range l.events[:n] {
			ev := &l.events[i]
			if int(ev.Fd) == l.ln {
				l.accept()
				continue
			}
			if c := l.conns[int(ev.Fd)]; c != nil {
				l.serve(c, ev.Events)
			}
		}
	}
}

func (l *loop) accept() {
	for {
		fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(l.ln), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if e != 0 {
			return // EAGAIN, or the fd table full: the backlog keeps it
		}
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}); err != nil {
			unix.Close(int(fd))
			continue
		}
		l.conns[int(fd)] = &conn{fd: int(fd)}
	}
}

// serve reads what c's socket has, then answers its complete requests
// in order, one file at a time.
func (l *loop) serve(c *conn, events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		for {
			n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(c.fd), uintptr(unsafe.Pointer(&l.buf[0])), uintptr(len(l.buf)))
			if e == unix.EAGAIN {
				break
			}
			if e != 0 || n == 0 || len(c.in)+int(n) > maxHead {
				l.close(c)
				return
			}
			c.in = append(c.in, l.buf[:n]...)
			if int(n) < len(l.buf) {
				break // drained: edge-triggered, the next read would say EAGAIN
			}
		}
	}
	for {
		if c.file != nil && !l.sendFile(c) {
			return // the socket is full: EPOLLOUT comes back here
		}
		end := bytes.Index(c.in, []byte("\r\n\r\n"))
		if end < 0 {
			return
		}
		line := c.in[:bytes.IndexByte(c.in, '\r')]
		method, rest, _ := bytes.Cut(line, []byte(" "))
		path, _, ok := bytes.Cut(rest, []byte(" "))
		if !ok {
			l.close(c)
			return
		}
		head := string(method) == "HEAD"
		var f *file
		switch {
		case string(method) != "GET" && !head:
			l.send(c, notAllowed, 0)
		case string(path) == "/hello":
			l.send(c, hello, 0)
		default:
			if f = l.files.get(path); f == nil {
				l.send(c, notFound, 0)
			} else if head {
				l.send(c, f.head, 0)
				f = nil
			}
		}
		c.in = c.in[:copy(c.in, c.in[end+4:])]
		if f != nil {
			l.send(c, f.head, unix.MSG_MORE)
			c.corked = setCork(c.fd, true)
			c.file, c.off = f, 0
		}
	}
}

// send writes a whole head; on loopback with an empty queue it fits.
func (l *loop) send(c *conn, b []byte, flags int) {
	_, _, _ = unix.RawSyscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags|unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL), 0, 0)
}

// sendFile sends what is left of c's file, and reports whether it is all
// out (the cork off).
func (l *loop) sendFile(c *conn) bool {
	for c.off < c.file.size {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDFILE, uintptr(c.fd), uintptr(c.file.fd), uintptr(unsafe.Pointer(&c.off)), uintptr(c.file.size-c.off), 0, 0)
		if e == unix.EAGAIN {
			return false
		}
		if e != 0 {
			c.off = c.file.size // the client is gone: its EPOLLHUP closes it
		}
	}
	if c.corked {
		c.corked = !setCork(c.fd, false)
	}
	c.file = nil
	return true
}

func setCork(fd int, on bool) bool {
	v := int32(0)
	if on {
		v = 1
	}
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_CORK, uintptr(unsafe.Pointer(&v)), 4, 0)
	return e == 0
}

func (l *loop) close(c *conn) {
	delete(l.conns, c.fd)
	unix.Close(c.fd)
}
