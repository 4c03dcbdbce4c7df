package bench

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// silentServer listens on 127.0.0.1 and reads every connection's
// requests without ever answering: the server that stalls for good. It
// returns the base URL; everything is closed at the end of the test.
func silentServer(t *testing.T) string { return stallingServer(t, 0) }

// stallingServer answers each GET with a 200 for answerFor after it
// starts listening, then reads on without answering: a server that stops
// answering in the middle of a run. Requests must have no body.
func stallingServer(t *testing.T, answerFor time.Duration) string {
	t.Helper()
	start := time.Now()
	return serveEach(t, func(c net.Conn) { answerUntil(c, start.Add(answerFor)) })
}

// serveEach listens on 127.0.0.1 and runs handle on each connection it
// accepts, on a goroutine of its own. It returns the base URL; at the end
// of the test it stops accepting, closes every connection, and waits for
// the handlers.
func serveEach(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// answerUntil answers every request head on c until the deadline, and
// reads whatever comes after it without a word.
func answerUntil(c net.Conn, deadline time.Time) {
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	buf := make([]byte, 4096)
	var pending []byte
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if time.Now().After(deadline) {
			continue
		}
		pending = append(pending, buf[:n]...)
		var out []byte
		for {
			i := bytes.Index(pending, []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			pending = pending[i+4:]
			out = append(out, resp...)
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// resettingServer accepts every connection, reads its first request and
// resets it (SO_LINGER 0), never answering.
func resettingServer(t *testing.T) string {
	t.Helper()
	return serveEach(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
}
