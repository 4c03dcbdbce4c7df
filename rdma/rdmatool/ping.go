package rdmatool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/quartet-server/quartet/rdma"
)

// rping's constants (librdmacm/examples/rping.c): default port and size,
// the size limits its getopt enforces, and its queue depths.
const (
	rpingPort    = 7174
	rpingSize    = 64
	rpingMinSize = 26 // sizeof(stringify(INT_MAX)) + sizeof("rdma-ping-%d: ")
	rpingMaxSize = 64*1024 - 1
	rpingSQDepth = 16
	rpingInfoLen = 16 // struct rping_rdma_info {be64 buf; be32 rkey; be32 size}
)

// Work request ids of the ping exchange; completions are matched by
// opcode, the ids only make debug output readable.
const (
	wrRecv uint64 = iota + 1
	wrSend
	wrRead
	wrWrite
)

// pingLayout places the ping buffers in one registered area: the 16-byte
// receive and send messages first, then the RDMA buffer (the server's
// read target and write source; the client's sink), then the client's
// start buffer.
type pingLayout struct{ size int }

func (l pingLayout) recv() int  { return 0 }
func (l pingLayout) send() int  { return rpingInfoLen }
func (l pingLayout) rdma() int  { return 64 }
func (l pingLayout) start() int { return 64 + l.size }
func (l pingLayout) total() int { return 64 + 2*l.size }

type pingFlags struct {
	server, client, verbose, validate, debug bool
	addr                                     string
	port, count, size                        int
}

// Ping runs rping's client (-c) or server (-s) on the named provider.
func Ping(ctx context.Context, provider string, args []string, stdout, stderr io.Writer) error {
	var f pingFlags
	fs := flag.NewFlagSet("quartet rdma ping", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&f.server, "s", false, "server side")
	fs.BoolVar(&f.client, "c", false, "client side")
	fs.StringVar(&f.addr, "a", "", "address (server: bind address; client: server address)")
	fs.IntVar(&f.port, "p", rpingPort, "port")
	fs.IntVar(&f.count, "C", 0, "ping count (client; 0 pings until interrupted)")
	fs.IntVar(&f.size, "S", rpingSize, fmt.Sprintf("ping data size (%d to %d)", rpingMinSize, rpingMaxSize))
	fs.BoolVar(&f.verbose, "v", false, "display ping data")
	fs.BoolVar(&f.validate, "V", false, "validate ping data (always done; accepted for rping's sake)")
	fs.BoolVar(&f.debug, "d", false, "debug output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case f.server == f.client:
		return errors.New("exactly one of -s and -c is required")
	case f.client && f.addr == "":
		return errors.New("-c needs -a ADDR")
	case f.size < rpingMinSize || f.size > rpingMaxSize:
		return fmt.Errorf("invalid size %d (valid range is %d to %d)", f.size, rpingMinSize, rpingMaxSize)
	case f.count < 0:
		return fmt.Errorf("invalid count %d", f.count)
	}
	p, err := NewRegistry().Get(provider)
	if err != nil {
		return err
	}
	lay := pingLayout{f.size}
	e, err := newEndpoint(p, f.addr, 2*rpingSQDepth, lay.total())
	if err != nil {
		return err
	}
	if f.debug {
		fmt.Fprintf(stderr, "provider %s device %s (%s)\n", p.Name(), e.dev.Info().Name, e.dev.Info().Transport)
	}
	if f.server {
		err = pingServer(ctx, e, lay, f, stdout, stderr)
	} else {
		err = pingClient(ctx, e, lay, f, stdout, stderr)
	}
	if cerr := e.close(); err == nil {
		err = cerr
	}
	return err
}

// pingQPConfig is rping's QP: 16 sends, 2 receives, every request
// signalled, one RDMA Read in flight each way; Prepare posts the first
// receive before the peer can send.
func pingQPConfig(e *endpoint, lay pingLayout) rdma.QPConfig {
	return rdma.QPConfig{
		PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq,
		MaxSendWR: rpingSQDepth, MaxRecvWR: 2,
		SignalAll:          true,
		ResponderResources: 1, InitiatorDepth: 1,
		Prepare: func(qp rdma.QP) error { return postPingRecv(qp, e, lay) },
	}
}

func postPingRecv(qp rdma.QP, e *endpoint, lay pingLayout) error {
	return qp.PostRecv(wrRecv, []rdma.SGE{rdma.SGEOf(e.mr, lay.recv(), rpingInfoLen)})
}

// sendInfo sends {addr, rkey, len} of the area at off.
func sendInfo(e *endpoint, lay pingLayout, off, n int) error {
	msg := e.mr.Bytes()[lay.send() : lay.send()+rpingInfoLen]
	binary.BigEndian.PutUint64(msg[0:], e.mr.Addr()+uint64(off))
	binary.BigEndian.PutUint32(msg[8:], e.mr.RKey())
	binary.BigEndian.PutUint32(msg[12:], uint32(n))
	return e.qp.PostSend(wrSend, []rdma.SGE{rdma.SGEOf(e.mr, lay.send(), rpingInfoLen)}, 0)
}

// recvInfo waits for the peer's 16-byte message, reposts the receive and
// decodes the message.
func recvInfo(ctx context.Context, e *endpoint, lay pingLayout) (addr uint64, rkey, n uint32, err error) {
	c, err := e.await(ctx, rdma.OpRecv)
	if err != nil {
		return 0, 0, 0, err
	}
	if c.Bytes != rpingInfoLen {
		return 0, 0, 0, fmt.Errorf("received bogus data, size %d", c.Bytes)
	}
	msg := e.mr.Bytes()[lay.recv() : lay.recv()+rpingInfoLen]
	addr, rkey, n = binary.BigEndian.Uint64(msg[0:]), binary.BigEndian.Uint32(msg[8:]), binary.BigEndian.Uint32(msg[12:])
	if err := postPingRecv(e.qp, e, lay); err != nil {
		return 0, 0, 0, err
	}
	return addr, rkey, n, nil
}

func pingClient(ctx context.Context, e *endpoint, lay pingLayout, f pingFlags, stdout, stderr io.Writer) error {
	qp, err := e.dev.Dial(ctx, net.JoinHostPort(f.addr, strconv.Itoa(f.port)), pingQPConfig(e, lay), nil)
	if err != nil {
		return err
	}
	e.qp = qp
	start := e.mr.Bytes()[lay.start() : lay.start()+f.size]
	sink := e.mr.Bytes()[lay.rdma() : lay.rdma()+f.size]
	first := byte('A')
	for ping := 0; f.count == 0 || ping < f.count; ping++ {
		fillPing(start, ping, first)
		if first++; first > 'z' {
			first = 'A'
		}
		if err := sendInfo(e, lay, lay.start(), f.size); err != nil {
			return err
		}
		if _, _, _, err := recvInfo(ctx, e, lay); err != nil {
			return fmt.Errorf("ping %d: waiting for the server's read: %w", ping, err)
		}
		if err := sendInfo(e, lay, lay.rdma(), f.size); err != nil {
			return err
		}
		if _, _, _, err := recvInfo(ctx, e, lay); err != nil {
			return fmt.Errorf("ping %d: waiting for the server's write: %w", ping, err)
		}
		if !bytes.Equal(start, sink) {
			return fmt.Errorf("ping %d: data mismatch", ping)
		}
		if f.verbose {
			fmt.Fprintf(stdout, "ping data: %s\n", cString(sink))
		}
	}
	return qp.Disconnect()
}

// fillPing writes rping's ping text: "rdma-ping-N: " then letters from
// first to 'z', wrapping to 'A', with a NUL in the last byte.
func fillPing(b []byte, ping int, first byte) {
	n := copy(b, fmt.Sprintf("rdma-ping-%d: ", ping))
	c := first
	for i := n; i < len(b); i++ {
		b[i] = c
		if c++; c > 'z' {
			c = 'A'
		}
	}
	b[len(b)-1] = 0
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func pingServer(ctx context.Context, e *endpoint, lay pingLayout, f pingFlags, stdout, stderr io.Writer) error {
	host := f.addr
	if host == "" {
		host = "0.0.0.0"
	}
	l, err := e.dev.Listen(net.JoinHostPort(host, strconv.Itoa(f.port)), 3)
	if err != nil {
		return err
	}
	req, err := l.Accept(ctx)
	if err != nil {
		l.Close()
		return err
	}
	qp, err := req.Accept(ctx, pingQPConfig(e, lay), nil)
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	e.qp = qp
	buf := e.mr.Bytes()[lay.rdma() : lay.rdma()+f.size]
	for ping := 0; ; ping++ {
		raddr, rkey, n, err := recvInfo(ctx, e, lay)
		if errors.Is(err, errDisconnected) {
			fmt.Fprintf(stderr, "server DISCONNECT EVENT... after %d pings\n", ping)
			return nil
		}
		if err != nil {
			return err
		}
		if int(n) > f.size {
			return fmt.Errorf("ping %d: client buffer of %d bytes exceeds -S %d", ping, n, f.size)
		}
		if err := e.qp.PostRead(wrRead, []rdma.SGE{rdma.SGEOf(e.mr, lay.rdma(), int(n))}, raddr, rkey, 0); err != nil {
			return err
		}
		if _, err := e.await(ctx, rdma.OpRead); err != nil {
			return fmt.Errorf("ping %d: RDMA Read: %w", ping, err)
		}
		if f.verbose {
			fmt.Fprintf(stdout, "server ping data: %s\n", cString(buf))
		}
		if err := e.qp.PostSend(wrSend, []rdma.SGE{rdma.SGEOf(e.mr, lay.send(), rpingInfoLen)}, 0); err != nil {
			return err
		}
		raddr, rkey, _, err = recvInfo(ctx, e, lay)
		if err != nil {
			return fmt.Errorf("ping %d: waiting for the sink: %w", ping, err)
		}
		wlen := len(cString(buf)) + 1 // rping writes strlen + 1
		if wlen > f.size {
			wlen = f.size
		}
		if err := e.qp.PostWrite(wrWrite, []rdma.SGE{rdma.SGEOf(e.mr, lay.rdma(), wlen)}, raddr, rkey, 0); err != nil {
			return err
		}
		if _, err := e.await(ctx, rdma.OpWrite); err != nil {
			return fmt.Errorf("ping %d: RDMA Write: %w", ping, err)
		}
		if err := e.qp.PostSend(wrSend, []rdma.SGE{rdma.SGEOf(e.mr, lay.send(), rpingInfoLen)}, 0); err != nil {
			return err
		}
	}
}
