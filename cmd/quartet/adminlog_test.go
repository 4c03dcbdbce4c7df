package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// net/http logs each failed accept it retries; the admin endpoint's log
// passes one per acceptErrorEvery, with the count held back, and every
// other line as it comes.
func TestAcceptErrorThrottle(t *testing.T) {
	var buf bytes.Buffer
	h := newAcceptErrorThrottle(slog.NewTextHandler(&buf, nil))
	logger := slog.NewLogLogger(h, slog.LevelWarn)
	for range 13 {
		logger.Print("http: Accept error: accept tcp 127.0.0.1:9090: accept4: too many open files; retrying in 1s")
	}
	logger.Print("http: TLS handshake error from 127.0.0.1:1234: EOF")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "Accept error") || !strings.Contains(lines[1], "TLS handshake") {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	// The next window's first line says how many were held back.
	h.(acceptErrorThrottle).st.last = h.(acceptErrorThrottle).st.last.Add(-acceptErrorEvery)
	logger.Print("http: Accept error: again")
	if !strings.Contains(buf.String(), "repeated=12") {
		t.Errorf("no count of the lines held back:\n%s", buf.String())
	}
}
