package reader

import (
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// The census follows one connection through every state a plain HTTP/1.1
// connection passes: new and silent, its request out, idle, a streamed
// body left unread and drained, lingering after its last response, and
// gone. The loop keeps its counts by state as they change rather than
// counting its table (a pass over a million idle connections a second);
// the test loop also checks those counts against its table every turn
// (checkCounts), so a state change that bypasses them fails here.
func TestCensusFollowsAConnection(t *testing.T) {
	dispatched := make(chan *stages.Request, 1)
	loop := startLoop(t, func(r *stages.Request) bool { dispatched <- r; return true })
	client, fd := acceptedConn(t)
	loop.Adopt(&stages.Conn{ID: 1, FD: fd})
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(client, s); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(step string, want Census) {
		t.Helper()
		if !waitFor(func() bool { return loop.Census() == want }) {
			t.Fatalf("%s: census %+v, want %+v", step, loop.Census(), want)
		}
	}

	expect("new and silent", Census{Reading: 1})

	send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	r := next(t, dispatched)
	expect("request out", Census{Queued: 1})
	loop.Return(r.Conn, stages.FateKeepAlive)
	expect("keep-alive", Census{Idle: 1})

	// A body past PrereadBody is streamed: dispatched before it is in.
	const size = DefaultPrereadBody + 1000
	send("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n" + strings.Repeat("x", 100))
	r = next(t, dispatched)
	expect("streamed request out", Census{Queued: 1})
	loop.Return(r.Conn, stages.FateKeepAlive) // its body unread
	expect("draining the unread body", Census{Reading: 1})
	send(strings.Repeat("x", size-100))
	expect("drained", Census{Idle: 1})

	send("GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	r = next(t, dispatched)
	loop.Return(r.Conn, stages.FateLinger)
	expect("lingering", Census{Lingering: 1})

	client.Close()
	expect("closed", Census{})
	if n := loop.withWork.Load(); n != 0 {
		t.Errorf("%d connections hold a request record after the last closed", n)
	}
}
