// Command gnet is the bare gnet v2 peer: gnet's event loops with the
// smallest HTTP/1.1 parser that serves the benchmark endpoints (request
// line, Content-Length, pipelining). It shows what an event-loop server
// costs without a real HTTP layer, so it is an upper bound, not a peer in
// features.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/quartet-server/quartet/bench/peers"
	"github.com/quartet-server/quartet/bench/peers/internal/gnetboot"
)

// maxHeader bounds a request head; a longer one closes the connection.
const maxHeader = 16 << 10

// connState is per connection, owned by its event loop.
type connState struct {
	// sleeping: a /sleep response is pending; later pipelined requests
	// wait in gnet's inbound buffer so responses stay in order.
	sleeping bool
	out      []byte
}

type server struct {
	gnet.BuiltinEventEngine
	addr chan string
	eng  chan gnet.Engine
}

func (s *server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng <- eng
	a, err := gnetboot.Addr(eng)
	if err != nil {
		log.Fatal(err)
	}
	s.addr <- a
	return gnet.None
}

func (s *server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(&connState{})
	return nil, gnet.None
}

func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	st := c.Context().(*connState)
	if st.sleeping {
		return gnet.None
	}
	buf, _ := c.Peek(-1)
	st.out = st.out[:0]
	consumed := 0
	for consumed < len(buf) {
		n, sleep, ok := s.handle(st, buf[consumed:])
		if !ok {
			return gnet.Close
		}
		if n == 0 {
			break // incomplete request
		}
		consumed += n
		if sleep > 0 {
			st.sleeping = true
			s.sleepThenAnswer(c, st, sleep)
			break
		}
	}
	if len(st.out) > 0 {
		_, _ = c.Write(st.out)
	}
	if consumed > 0 { // gnet's Discard(0) discards everything, a partial request too
		_, _ = c.Discard(consumed)
	}
	return gnet.None
}

// sleepThenAnswer answers a /sleep request off the event loop, then wakes
// the connection to serve what was pipelined behind it.
func (s *server) sleepThenAnswer(c gnet.Conn, st *connState, d time.Duration) {
	time.AfterFunc(d, func() {
		resp := appendResponse(nil, peers.Hello)
		_ = c.AsyncWrite(resp, func(c gnet.Conn, err error) error {
			st.sleeping = false // runs on the event loop
			if err == nil {
				return c.Wake(nil)
			}
			return nil
		})
	})
}

// handle parses one request at the start of b and appends its response to
// st.out. n is 0 when the request is incomplete; sleep is non-zero for a
// /sleep request, whose response is left to the caller.
func (s *server) handle(st *connState, b []byte) (n int, sleep time.Duration, ok bool) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return 0, 0, len(b) <= maxHeader
	}
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	f := bytes.Fields(line)
	if len(f) != 3 {
		return 0, 0, false
	}
	method, target := f[0], f[1]
	length := 0
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, val, found := bytes.Cut(h, []byte(":"))
		if found && bytes.EqualFold(bytes.TrimSpace(name), []byte("content-length")) {
			v, err := strconv.Atoi(string(bytes.TrimSpace(val)))
			if err != nil || v < 0 || v > peers.MaxBytes {
				return 0, 0, false
			}
			length = v
		}
	}
	total := end + 4 + length
	if len(b) < total {
		return 0, 0, true
	}
	body := b[end+4 : total]
	path, query, _ := bytes.Cut(target, []byte("?"))
	switch {
	case string(path) == "/hello":
		st.out = appendResponse(st.out, peers.Hello)
	case string(path) == "/sleep":
		if ms := peers.Query(string(query), "ms"); ms > 0 {
			return total, time.Duration(ms) * time.Millisecond, true
		}
		st.out = appendResponse(st.out, peers.Hello)
	case string(path) == "/compute":
		// On the event loop, as a gnet server computes: gnet runs
		// handlers nowhere else.
		st.out = appendResponse(st.out, peers.ComputeAnswer(peers.Query(string(query), "n")))
	case string(path) == "/bytes":
		st.out = appendResponse(st.out, bytes.Repeat([]byte{'x'}, min(peers.Query(string(query), "n"), peers.MaxBytes)))
	case string(path) == "/echo" && string(method) == "POST":
		st.out = appendResponse(st.out, body)
	default:
		st.out = append(st.out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"...)
	}
	return total, 0, true
}

func appendResponse(out, body []byte) []byte {
	out = append(out, "HTTP/1.1 200 OK\r\nServer: gnet\r\nContent-Type: text/plain\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n\r\n"...)
	return append(out, body...)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	s := &server{addr: make(chan string, 1), eng: make(chan gnet.Engine, 1)}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() {
		errc <- gnet.Run(s, "tcp://"+*addr, gnet.WithMulticore(true), gnet.WithLogger(gnetboot.Logger(os.Stderr)))
	}()
	select {
	case a := <-s.addr:
		fmt.Printf("http://%s\n", a)
	case err := <-errc:
		log.Fatal(err)
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		eng := <-s.eng
		_ = eng.Stop(sctx)
	case err := <-errc:
		if err != nil {
			log.Fatal(err)
		}
	}
}
