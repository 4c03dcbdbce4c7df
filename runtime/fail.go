package runtime

import (
	"net/http"
	"strconv"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// fail answers a request the reader could not dispatch (malformed, too
// large, timed out) with a short text response and Connection: close. The
// writer sends it like any other response, runs the logger, and hands the
// connection back for a lingering close, so the client reads the status
// instead of a reset. This is the error path: it may allocate.
func (s *Server) fail(c *stages.Conn, req *stages.Request, status int) {
	s.bindWriter(c)
	r := s.response()
	now := time.Now()
	r.Begin(c, req, now)
	r.Status, r.KeepAlive = status, false
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	body := text + "\n"
	head := "HTTP/1.1 " + text + "\r\n" +
		"Date: " + now.UTC().Format(http.TimeFormat) + "\r\n" +
		"Server: " + s.cfg.ServerName + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Connection: close\r\n\r\n"
	r.HeaderBytes = int64(len(head))
	_ = r.Append(stages.Bucket{Kind: stages.BucketHeap, Data: []byte(head + body)}, stages.Bucket{Kind: stages.BucketEOS})
	r.Done()
}
