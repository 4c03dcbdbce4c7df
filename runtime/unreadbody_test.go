package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAnswerToAnUnreadUploadArrives: a handler that answers a large upload
// without reading it (an early 401, 405 or 413 of its own) leaves the
// client still sending when the response is written. The reader throws a
// small rest away and keeps the connection; a large one it will not read,
// and closing the connection with the client's bytes unread answers them
// with a reset, which can reach the client before it has read the
// response: Go's client then reports "connection reset by peer" for a
// request the server answered (14 of 20 times for 5 MiB, when the reader
// closed at once after reading 256 KiB). The response must arrive every
// time, and it says "Connection: close" whenever the rest may be more
// than the reader discards (net/http's rule: a chunked rest is unknown), so
// that the client does not count on the connection.
func TestAnswerToAnUnreadUploadArrives(t *testing.T) {
	// The connections the client gives up while still sending linger for
	// the whole timeout (its FIN waits behind the bytes we do not read).
	s := startServer(t, Config{Handler: overheadHandler(), LingerTimeout: 300 * time.Millisecond})
	url := "http://" + s.Addr().String() + "/ignore"
	tests := []struct {
		name    string
		size    int
		chunked bool
		close   bool // the response announces the close
	}{
		{"small: drained, kept", 100 << 10, false, false},
		{"400 KiB", 400 << 10, false, true},
		{"1 MiB", 1 << 20, false, true},
		{"5 MiB", 5 << 20, false, true},
		{"5 MiB chunked", 5 << 20, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			body := bytes.Repeat([]byte("x"), tt.size)
			for i := range 20 {
				var r io.Reader = bytes.NewReader(body)
				if tt.chunked {
					r = io.MultiReader(r) // no length: Go's client sends it chunked
				}
				resp, err := client.Post(url, "application/octet-stream", r)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(got) != "ignored" {
					t.Fatalf("request %d: %d %q %v", i, resp.StatusCode, got, err)
				}
				if resp.Close != tt.close {
					t.Fatalf("request %d: Connection: close is %v, want %v", i, resp.Close, tt.close)
				}
			}
		})
	}
}

// TestLingerOutlastsAnUploadThatGoesOn: once the reader has said goodbye
// (FIN after the response) to a client that goes on sending, it stops
// reading after maxLingerBytes and closes only when the client does or
// the linger timeout passes, so that the reset its close may cause comes
// after the client has had its time to read the response.
func TestLingerOutlastsAnUploadThatGoesOn(t *testing.T) {
	const linger = time.Second
	s := startServer(t, Config{Handler: overheadHandler(), LingerTimeout: linger})
	c := dial(t, s)
	head := fmt.Sprintf("POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 64<<20)
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	// Send the body until the server stops taking it: it has answered, and
	// stopped reading.
	sent := make(chan error, 1)
	go func() {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(chunk); err != nil {
				sent <- err
				return
			}
		}
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(got) != "ignored" || !resp.Close {
		t.Fatalf("response %d %q close=%v: %v", resp.StatusCode, got, resp.Close, err)
	}
	answered := time.Now()
	// The writer stops, blocked on a closed window, then fails when the
	// linger timeout closes the connection: no sooner.
	select {
	case err := <-sent:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server neither read on nor closed the connection: %v", err)
		}
		if waited := time.Since(answered); waited < linger/4 {
			t.Errorf("the server closed %v after answering (%v); the linger timeout is %v", waited, err, linger)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upload went on for 5 s after the response")
	}
}
