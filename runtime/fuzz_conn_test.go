package runtime

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/static"
)

// FuzzServeConn sends arbitrary bytes, cut into arbitrary segments, to a
// real server on one connection, half-closes it, and reads what comes
// back. Whatever the bytes, the server must not crash, must answer with
// well-framed HTTP/1.1 responses, no more of them than the requests it
// could have parsed, must end the connection soon after the client's EOF,
// and must release it. The parser's own fuzz target (protocol/http1)
// checks what a request means; this one checks the reader loop, the
// hand-offs, body streaming and the writer around it, which hold the
// connection's state across segments and requests.
//
//	go test -run '^$' -fuzz FuzzServeConn -fuzztime 1000000x ./runtime
func FuzzServeConn(f *testing.F) {
	for _, seed := range []string{
		"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nHEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.0\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /drop HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\nxyz",
		"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"GET /bytes?n=100000 HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /stream HTTP/1.0\r\n\r\n",
		"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /hello HTTP/1.1\r\nHost: x\r\n X: folded\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
		"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://x/hello HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
		// Static files (fuzzRoot): ranges, validators, HEAD, a directory,
		// a file sent by sendfile in several writes, a way out of the root.
		"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\nHEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /small.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\"\r\nRange: bytes=-5\r\n\r\nGET /small.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=9999-\r\n\r\n",
		"GET /sub HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/ HTTP/1.1\r\nHost: x\r\n\r\nGET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(seed), uint64(0)) // in one write, inline, FIN at once
		f.Add([]byte(seed), uint64(3)) // cut, through the processors, FIN once answered
		f.Add([]byte(seed), uint64(6)) // cut, inline with each reply written at once, FIN once answered
	}
	// Three servers: one that serves /hello (and cached static files) on
	// its reader loops, batching their replies' sends (writer/batch.go),
	// one that sends every request through the processors, and one that
	// serves inline but writes each reply with its own call. The lowest
	// bit of cuts picks inline or not, and for inline the third bit
	// batching or not.
	files := fuzzRoot(f)
	var servers [3]*Server
	for i := range servers {
		servers[i] = startServer(f, Config{
			Handler:        fuzzHandler{next: Builtin(files)},
			NoInline:       i == 1,
			NoBatchedSends: i == 2,
			MaxHeaderBytes: 4 << 10,
			MaxRequestLine: 1 << 10,
			MaxHeaders:     20,
			MaxBodyBytes:   128 << 10,
			PrereadBody:    1 << 10,
			LingerTimeout:  time.Second,
		})
	}
	f.Fuzz(func(t *testing.T, data []byte, cuts uint64) {
		if len(data) > 256<<10 {
			return
		}
		s := servers[cuts&1]
		if cuts&5 == 4 {
			s = servers[2]
		}
		// answerFirst: the client half-closes only once every request it
		// sent whole is answered, so that each must be (a FIN that comes
		// while a lone request is out may be taken for the client gone,
		// stages.Conn.Gone); otherwise right after its last byte.
		answerFirst := cuts&2 != 0
		methods, accepted, whole := requestMethods(data)
		fc := dialFuzz(t, s.Addr().String(), data, cuts, !answerFirst || whole == 0)

		br := bufio.NewReader(fc)
		final := 0
		said := false // a response announced the close (Connection: close), or was cut short
		for {
			if final >= whole || said {
				fc.halfClose()
			}
			if _, err := br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) || isReset(err) {
					break
				}
				if !fc.finSent {
					t.Fatalf("%d responses to %d whole requests, then nothing: %v", final, whole, err)
				}
				t.Fatalf("after %d responses: %v (the server did not end the connection within %v of the client's EOF)", final, err, connBound)
			}
			req := &http.Request{Method: "GET"}
			if final < len(methods) {
				req.Method = methods[final]
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatalf("response %d: %v", final, err)
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 100 || resp.StatusCode > 599 {
				t.Fatalf("response %d: status %d", final, resp.StatusCode)
			}
			if resp.StatusCode >= 200 {
				final++
				said = said || resp.Close
			}
			if err != nil {
				said = true
				// A response cut short (its handler aborted when the
				// body ran out at the client's EOF) must be the last.
				if _, perr := br.Peek(1); perr == nil {
					t.Fatalf("response %d cut short (%v), then more bytes followed", final-1, err)
				}
				break
			}
		}
		fc.Close()
		checkAnswers(t, s, final, accepted, whole, answerFirst, said)
	})
}

// connBound is how long a fuzz connection may take, from dial to the
// server's close: every input is answered, rejected or timed out well
// within it (the longest wait a request may cause is LingerTimeout).
const connBound = 10 * time.Second

// fuzzClient is the client's end of one fuzz input's connection.
type fuzzClient struct {
	net.Conn
	sent    chan struct{} // closed once sendCut is done
	finSent bool
}

// dialFuzz connects to addr and sends data, cut by cuts, from a goroutine
// of its own; with finNow it half-closes right after the last byte,
// otherwise halfClose does.
func dialFuzz(t *testing.T, addr string, data []byte, cuts uint64, finNow bool) *fuzzClient {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(connBound))
	fc := &fuzzClient{Conn: c, sent: make(chan struct{}), finSent: finNow}
	go func() {
		sendCut(c, data, cuts)
		close(fc.sent)
		if finNow {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	return fc
}

// halfClose sends the client's FIN once all of data has gone. Reader's
// goroutine only.
func (fc *fuzzClient) halfClose() {
	if !fc.finSent {
		<-fc.sent
		fc.Conn.(*net.TCPConn).CloseWrite()
		fc.finSent = true
	}
}

// checkAnswers fails t when the server gave more final answers than the
// requests it could have parsed (plus one error that ends the
// connection); or, when the client waited for them (answerFirst), fewer
// than the requests it sent whole, without saying that the connection
// ends (said); or when it does not release the connection soon after the
// client closed.
func checkAnswers(t *testing.T, s *Server, answers, accepted, whole int, answerFirst, said bool) {
	if answers > accepted+1 {
		t.Fatalf("%d answers to %d requests the parser accepts (one more may be the error that ends the connection)", answers, accepted)
	}
	if answerFirst && answers < whole && !said {
		t.Fatalf("%d answers to %d whole requests, and the connection ended unannounced", answers, whole)
	}
	if !eventually(3*time.Second, func() bool { return s.openConns() == 0 }) {
		t.Fatalf("%d connections still open 3s after the client closed", s.openConns())
	}
}

// sendCut writes data in segments chosen by cuts.
func sendCut(c net.Conn, data []byte, cuts uint64) {
	rng := rand.New(rand.NewPCG(cuts, cuts>>7|1))
	for len(data) > 0 {
		n := len(data)
		if cuts != 0 {
			n = min(n, 1+rng.IntN(max(1, len(data)/3+8)))
		}
		if _, err := c.Write(data[:n]); err != nil {
			return // the server closed: it answered and ended
		}
		data = data[n:]
	}
}

// requestMethods parses data as the server's parser does and returns the
// methods of the requests it accepts, in order, up to the first it does
// not, or one after which the server closes; accepted is how many, and
// whole how many of them came with all their body.
func requestMethods(data []byte) (methods []string, accepted, whole int) {
	var p http1.Parser
	lim := http1.Limits{MaxRequestLine: 1 << 10, MaxHeaderBytes: 4 << 10, MaxHeaders: 20}
	for len(data) > 0 {
		req := &stages.Request{}
		req.Reset()
		used, err := p.Parse(data, lim, req)
		if err != nil || used == 0 {
			break
		}
		methods = append(methods, string(req.Method))
		accepted++
		data = data[used:]
		switch {
		case req.Chunked:
			var d http1.ChunkedDecoder
			d.MaxTrailerBytes = 1 << 30 // no stricter than the server
			consumed, _, done, err := d.Decode(make([]byte, len(data)), data)
			if !done || err != nil {
				return methods, accepted, whole
			}
			data = data[consumed:]
		case req.ContentLength > 0:
			if int64(len(data)) < req.ContentLength {
				return methods, accepted, whole
			}
			data = data[req.ContentLength:]
		}
		whole++
		if req.Close || req.Minor == 0 && !stages.ListHasToken(req.Header("Connection"), "keep-alive") {
			break // the server closes after this one
		}
	}
	return methods, accepted, whole
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// fuzzRoot is a directory of static files for the fuzz target's server,
// closed when the fuzzing ends: a small file, one large enough to take
// several sendfile writes, and a directory with an index.
func fuzzRoot(f *testing.F) *static.Dir {
	root := f.TempDir()
	for name, size := range map[string]int{"small.txt": 13, "big.bin": 300 << 10, "sub/index.html": 40} {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(path, bytes.Repeat([]byte{'q'}, size), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	d, err := static.NewDir(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	return d
}

// fuzzHandler serves the fuzz target's routes: /hello on the reader loop,
// /echo through the processors (both Builtin's), static files for the
// paths Builtin does not serve, and three more shapes of response that
// bounded inputs can reach.
type fuzzHandler struct{ next processor.Handler }

func (h fuzzHandler) Inline(r *stages.Request) bool { return processor.ServesInline(h.next, r) }

func (h fuzzHandler) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	switch string(r.Path) {
	case "/drop": // never reads the body: the server must discard or close
		w.WriteString("dropped")
	case "/stream": // flushed in parts: chunked on HTTP/1.1, close-delimited on 1.0
		for i := range 3 {
			w.WriteString("part " + strconv.Itoa(i) + "\n")
			if err := w.Flush(); err != nil {
				return
			}
		}
	case "/bytes": // Builtin's, bounded
		if n, ok := r.QueryInt("n"); !ok || n > 1<<20 {
			w.WriteHeader(400)
			return
		}
		h.next.ServeQuartet(w, r)
	case "/sleep", "/compute":
		w.WriteHeader(404)
	default:
		h.next.ServeQuartet(w, r)
	}
}

// FuzzMsgConn is FuzzServeConn for the messenger: arbitrary bytes, cut
// at arbitrary points, to a real server's messenger address; every frame
// back must parse as a reply, with no more replies than the requests a
// server-side parser accepts (plus one connection error), as many as the
// whole requests when the client waits for them before its FIN (unless a
// connection error ends it), and the server must end and release the
// connection soon after the client's EOF.
//
//	go test -run '^$' -fuzz FuzzMsgConn -fuzztime 1000000x ./runtime
func FuzzMsgConn(f *testing.F) {
	// frame lays out a 16-byte head by hand (docs/messenger.md), so that
	// seeds may break the rules PutHead enforces.
	frame := func(typ msg.Type, flags msg.Flags, txid uint64, payload string) []byte {
		b := []byte{1, byte(typ)}
		b = binary.BigEndian.AppendUint16(b, uint16(flags))
		b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
		b = binary.BigEndian.AppendUint64(b, txid)
		return append(b, payload...)
	}
	join := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	for _, seed := range [][]byte{
		frame(msg.TypeRequest, msg.FlagUnordered, 1, "Hello, world!"),
		join(frame(msg.TypeRequest, 0, 1, "a"), frame(msg.TypeRequest, 0, 2, ""), frame(msg.TypeRequest, msg.FlagUnordered, 3, "ccc")),
		join(frame(msg.TypeRequest, 0, 1, "a"), frame(msg.TypeRequest, 0, 1, "duplicate")),
		join(frame(msg.TypeRequest, 0, 5, "x"), frame(msg.TypeCompletion, 0, 0, "")),
		frame(msg.TypeReply, 0, 1, "a reply to a server"),
		frame(msg.TypeRequest, msg.FlagRDMA, 1, "no descriptor"),
		append(frame(msg.TypeRequest, 0, 1, "")[:8], 0xff, 0xff, 0xff, 0xff),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	} {
		f.Add(seed, uint64(0))
		f.Add(seed, uint64(3))
	}
	const maxPayload = 64 << 10
	s := startMsgServer(f, Config{MsgMaxPayload: maxPayload, LingerTimeout: time.Second})
	f.Fuzz(func(t *testing.T, data []byte, cuts uint64) {
		if len(data) > 256<<10 {
			return
		}
		answerFirst := cuts&2 != 0 // as in FuzzServeConn
		accepted, whole := msgRequests(data, maxPayload)
		fc := dialFuzz(t, s.MsgAddr().String(), data, cuts, !answerFirst || whole == 0)

		br := bufio.NewReader(fc)
		p := msg.NewParser(msg.RoleClient, msg.Limits{MaxPayload: maxPayload})
		replies := 0
		said := false // a connection error (an error reply with TxID 0), or a reply cut short
		for {
			if replies >= whole || said {
				fc.halfClose()
			}
			var h msg.Header
			err := p.ReadHead(br, &h)
			if errors.Is(err, io.EOF) || isReset(err) {
				break
			}
			if err != nil && !fc.finSent {
				t.Fatalf("%d replies to %d whole requests, then: %v", replies, whole, err)
			}
			if err != nil {
				t.Fatalf("after %d replies: %v", replies, err)
			}
			replies++
			said = said || h.Flags&msg.FlagError != 0 && h.TxID == 0
			if err := p.SkipPayload(br); err != nil {
				if _, perr := br.Peek(1); perr == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("reply %d: payload: %v", replies, err)
				}
				said = true
				break
			}
		}
		fc.Close()
		checkAnswers(t, s, replies, accepted, whole, answerFirst, said)
	})
}

// msgRequests counts the request frames a server-side parser accepts at
// the start of data, up to its first error (accepted), and how many of
// them came with all their payload (whole).
func msgRequests(data []byte, maxPayload int) (accepted, whole int) {
	p := msg.NewParser(msg.RoleServer, msg.Limits{MaxPayload: maxPayload})
	for {
		var h msg.Header
		used, err := p.Next(data, &h)
		if err != nil {
			return accepted, whole
		}
		data = data[used:]
		data = data[p.Skip(len(data)):]
		if h.Type == msg.TypeRequest {
			accepted++
			if p.Remaining() == 0 {
				whole++
			}
		}
		if p.Remaining() > 0 {
			return accepted, whole
		}
	}
}
