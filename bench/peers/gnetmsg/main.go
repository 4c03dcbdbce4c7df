// Command gnetmsg is the bare gnet v2 messenger peer: gnet's event loops
// answering the messenger's requests (docs/messenger.md) as Quartet's
// built-in echo dispatcher does, with Quartet's own codec
// (protocol/msg's Parser, PutHead and PutErrorFrame) and nothing else: no
// stages, no processor hand-off, no reply hook. Held against `quartet
// serve --msg-addr`, which parses with the same code, it shows what the
// four stages cost a messenger request.
//
// Like Quartet it reads a frame's whole payload before it answers, and
// answers in order: a reply with the request's transaction id and its
// payload back (a request with the rdma flag gets its payload inline, with
// the rdma flag and reason no-rdma, as Quartet without an RDMA engine
// answers). Pipelined frames are answered in one write per read. A frame
// that breaks the format gets the error frame Quartet sends (the code from
// msg.CodeOf, the request's txid for too-large), then the connection is
// closed, without Quartet's lingering.
//
// It listens on -addr (default 127.0.0.1:0), prints msg://IP:PORT as the
// first line on stdout, and stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/quartet-server/quartet/bench/peers/internal/gnetboot"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// connState is per connection, owned by its event loop.
type connState struct {
	p msg.Parser
	h msg.Header
	// head is the size of h's head, when Next has parsed a head whose
	// payload is not all in yet: the head stays in gnet's buffer, and the
	// frame is answered once its payload has arrived.
	head int
	out  []byte
}

type server struct {
	gnet.BuiltinEventEngine
	limits msg.Limits
	addr   chan string
	eng    chan gnet.Engine
	err    chan error
}

func (s *server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng <- eng
	a, err := gnetboot.Addr(eng)
	if err != nil {
		s.err <- err
		return gnet.Shutdown
	}
	s.addr <- a
	return gnet.None
}

func (s *server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(&connState{p: msg.NewParser(msg.RoleServer, s.limits)})
	return nil, gnet.None
}

func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	st := c.Context().(*connState)
	buf, _ := c.Peek(-1)
	var consumed int
	var ok bool
	st.out, consumed, ok = answer(st, st.out[:0], buf)
	if len(st.out) > 0 {
		_, _ = c.Write(st.out)
	}
	if consumed > 0 { // gnet's Discard(0) discards everything
		_, _ = c.Discard(consumed)
	}
	if !ok {
		return gnet.Close
	}
	return gnet.None
}

// answer appends to out the replies to the whole frames at the start of
// buf and returns how many bytes they took; ok is false once a frame broke
// the format, whose error frame is then out's last.
func answer(st *connState, out, buf []byte) (_ []byte, consumed int, ok bool) {
	for {
		if st.head == 0 {
			n, err := st.p.Next(buf[consumed:], &st.h)
			if errors.Is(err, msg.ErrNeedMore) {
				return out, consumed, true
			}
			if err != nil {
				return appendError(out, &st.h, err), consumed, false
			}
			st.head = n
		}
		end := consumed + st.head + int(st.h.Length)
		if len(buf) < end {
			return out, consumed, true // the payload is not all in
		}
		payload := st.p.Payload(buf[consumed+st.head : end])
		if st.h.Type == msg.TypeRequest { // a completion has no reply
			out = appendEcho(out, &st.h, payload)
		}
		consumed, st.head = end, 0
	}
}

// appendEcho appends the echo's reply to request h: what Quartet's
// transport frames for msg.Echo's reply.
func appendEcho(out []byte, req *msg.Header, payload []byte) []byte {
	h := msg.Header{Type: msg.TypeReply, TxID: req.TxID, Length: uint32(len(payload))}
	if req.Flags.Has(msg.FlagRDMA) {
		h.Flags = msg.FlagRDMA
		h.RDMA = msg.Descriptor{Mode: req.RDMA.Mode, Op: req.RDMA.Op, Reason: deliver.ReasonNoRDMA}
	}
	var head [msg.MaxHeadSize]byte
	n, err := msg.PutHead(head[:], &h)
	if err != nil { // cannot happen: h answers a request the parser accepted
		return appendError(out, &msg.Header{}, err)
	}
	out = append(out, head[:n]...)
	return append(out, payload...)
}

// appendError appends the error frame for a frame error: the request's
// txid for one too large (the parser filled h), else the connection's.
func appendError(out []byte, h *msg.Header, err error) []byte {
	code := msg.CodeOf(err)
	var txid uint64
	if code == msg.CodeTooLarge {
		txid = h.TxID
	}
	var frame [msg.MaxErrorFrame]byte
	n, _ := msg.PutErrorFrame(frame[:], txid, code, err.Error())
	return append(out, frame[:n]...)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	maxPayload := flag.Int("max-payload", msg.DefaultMaxPayload, "largest request payload in bytes")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := serve(ctx, *addr, msg.Limits{MaxPayload: *maxPayload}, func(a string) { fmt.Printf("msg://%s\n", a) })
	stop()
	if err != nil {
		log.Fatal(err)
	}
}

// serve runs the peer on addr until ctx ends, calling ready with the
// bound address once it listens.
func serve(ctx context.Context, addr string, limits msg.Limits, ready func(addr string)) error {
	s := &server{limits: limits, addr: make(chan string, 1), eng: make(chan gnet.Engine, 1), err: make(chan error, 1)}
	errc := make(chan error, 1)
	go func() {
		errc <- gnet.Run(s, "tcp://"+addr, gnet.WithMulticore(true), gnet.WithLogger(gnetboot.Logger(os.Stderr)))
	}()
	select {
	case a := <-s.addr:
		ready(a)
	case err := <-s.err:
		<-errc // OnBoot said Shutdown
		return err
	case err := <-errc:
		return err
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := (<-s.eng).Stop(sctx); err != nil {
			return err
		}
		return <-errc
	case err := <-errc:
		return err
	}
}
