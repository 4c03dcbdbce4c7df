package reader

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestChunkedDecode(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		body   string
		rest   string // bytes left unconsumed after done
		status int    // 0: decodes; -1: needs more input
		err    error
	}{
		{"empty body", "0\r\n\r\n", "", "", 0, nil},
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", "", 0, nil},
		{"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", "", 0, nil},
		{"uppercase hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", "", 0, nil},
		{"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello", "", 0, nil},
		{"extensions", "5;a=b;c=\"d e\"\r\nhello\r\n0;z\r\n\r\n", "hello", "", 0, nil},
		{"BWS before extension", "5 ;a\r\nhello\r\n0\t;b\r\n\r\n", "hello", "", 0, nil},
		{"BWS before CRLF", "5 \r\nhello\r\n0\r\n\r\n", "hello", "", 0, nil},
		{"trailer fields", "1\r\na\r\n0\r\nX-A: 1\r\nX-B:\r\n\r\n", "a", "", 0, nil},
		{"pipelined bytes stay", "1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "a", "GET / HTTP/1.1\r\n", 0, nil},

		{"truncated data", "5\r\nhel", "hel", "", -1, nil},
		{"truncated trailer", "0\r\nX: y\r\n", "", "", -1, nil},

		{"empty size", "\r\nhello\r\n0\r\n\r\n", "", "", 400, ErrMalformedChunk},
		{"non-hex size", "g\r\n", "", "", 400, ErrMalformedChunk},
		{"negative size", "-1\r\n", "", "", 400, ErrMalformedChunk},
		{"0x prefix", "0x5\r\nhello\r\n", "", "", 400, ErrMalformedChunk},
		{"space inside size", "1 0\r\n", "", "", 400, ErrMalformedChunk},
		{"bare LF after size", "5\nhello\r\n0\r\n\r\n", "", "", 400, ErrMalformedChunk},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n", "hello", "", 400, ErrMalformedChunk},
		{"data longer than size", "3\r\nhello\r\n0\r\n\r\n", "hel", "", 400, ErrMalformedChunk},
		{"CTL in extension", "5;a\x00\r\nhello\r\n", "", "", 400, ErrMalformedChunk},
		{"bare CR in extension", "5;a\rb\r\nhello\r\n", "", "", 400, ErrMalformedChunk},
		{"trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", "", "", 400, ErrMalformedChunk},
		{"trailer space before colon", "0\r\nX : a\r\n\r\n", "", "", 400, ErrMalformedChunk},
		{"trailer without colon", "0\r\nX\r\n\r\n", "", "", 400, ErrMalformedChunk},
		{"trailer CTL", "0\r\nX: a\x01\r\n\r\n", "", "", 400, ErrMalformedChunk},
		{"trailer bare LF", "0\r\nX: a\n\r\n", "", "", 400, ErrMalformedChunk},
		{"final bare LF", "0\r\n\n", "", "", 400, ErrMalformedChunk},
		{"long extension", "1;" + strings.Repeat("x", maxChunkLine) + "\r\na\r\n0\r\n\r\n", "", "", 400, ErrMalformedChunk},

		{"17 hex digits", "00000000000000001\r\na\r\n", "", "", 413, ErrChunkSizeOverflow},
		{"over int64", "8000000000000000\r\n", "", "", 413, ErrChunkSizeOverflow},

		{"trailer too large", "0\r\nX: " + strings.Repeat("v", DefaultMaxTrailerBytes) + "\r\n\r\n", "", "", 431, ErrTrailerTooLarge},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d/%s", tc.status, tc.name), func(t *testing.T) {
			for _, mode := range []string{"one-shot", "in-place", "bytewise"} {
				var d ChunkedDecoder
				var body []byte
				var consumed int
				var done bool
				var err error
				switch mode {
				case "one-shot":
					out := make([]byte, len(tc.in))
					var p int
					consumed, p, done, err = d.Decode(out, []byte(tc.in))
					body = out[:p]
				case "in-place":
					buf := []byte(tc.in)
					var p int
					consumed, p, done, err = d.Decode(buf, buf)
					body = buf[:p]
				case "bytewise":
					// One input byte and one output byte at a time.
					var out [1]byte
					for consumed < len(tc.in) && !done && err == nil {
						var c, p int
						c, p, done, err = d.Decode(out[:], []byte(tc.in[consumed:consumed+1]))
						body = append(body, out[:p]...)
						consumed += c
						if c == 0 && p == 0 && !done && err == nil {
							t.Fatalf("%s: no progress at %d", mode, consumed)
						}
					}
				}
				switch {
				case tc.status == 0:
					if err != nil || !done {
						t.Fatalf("%s: done=%v err=%v", mode, done, err)
					}
					if rest := tc.in[consumed:]; rest != tc.rest {
						t.Fatalf("%s: left %q, want %q", mode, rest, tc.rest)
					}
				case tc.status == -1:
					if err != nil || done {
						t.Fatalf("%s: done=%v err=%v, want more input", mode, done, err)
					}
				default:
					if !errors.Is(err, tc.err) || StatusOf(err) != tc.status {
						t.Fatalf("%s: err=%v (status %d), want %v (%d)", mode, err, StatusOf(err), tc.err, tc.status)
					}
				}
				if string(body) != tc.body {
					t.Fatalf("%s: body %q, want %q", mode, body, tc.body)
				}
			}
		})
	}
}

func TestChunkedErrorIsSticky(t *testing.T) {
	var d ChunkedDecoder
	if _, _, _, err := d.Decode(make([]byte, 8), []byte("zz\r\n")); err == nil {
		t.Fatal("want error")
	}
	if c, p, done, err := d.Decode(make([]byte, 8), []byte("0\r\n\r\n")); c != 0 || p != 0 || done || !errors.Is(err, ErrMalformedChunk) {
		t.Fatalf("after an error: %d %d %v %v", c, p, done, err)
	}
	d.Reset()
	if _, _, done, err := d.Decode(make([]byte, 8), []byte("0\r\n\r\n")); !done || err != nil || !d.Done() {
		t.Fatalf("after Reset: done=%v err=%v Done()=%v", done, err, d.Done())
	}
	// Once done, further input is not the body's: nothing is consumed.
	if c, p, done, err := d.Decode(make([]byte, 8), []byte("GET")); c != 0 || p != 0 || !done || err != nil {
		t.Fatalf("after done: %d %d %v %v", c, p, done, err)
	}
}

func TestChunkedMaxTrailerBytes(t *testing.T) {
	d := ChunkedDecoder{MaxTrailerBytes: 8}
	// The trailer section "X: 1234\r\n\r\n" is 11 bytes.
	if _, _, _, err := d.Decode(nil, []byte("0\r\nX: 1234\r\n\r\n")); !errors.Is(err, ErrTrailerTooLarge) {
		t.Fatalf("err = %v, want ErrTrailerTooLarge", err)
	}
	d.Reset()
	if d.MaxTrailerBytes != 8 {
		t.Fatal("Reset must keep MaxTrailerBytes")
	}
	if _, _, done, err := d.Decode(nil, []byte("0\r\nX: 1\r\n\r\n")); !done || err != nil {
		t.Fatalf("small trailer: done=%v err=%v", done, err)
	}
}

func TestChunkedFullDst(t *testing.T) {
	var d ChunkedDecoder
	in := []byte("a\r\n0123456789\r\n0\r\n\r\n")
	out := make([]byte, 4)
	c, p, done, err := d.Decode(out, in)
	if c != 7 || p != 4 || done || err != nil || string(out) != "0123" {
		t.Fatalf("c=%d p=%d done=%v err=%v out=%q", c, p, done, err, out)
	}
}

func BenchmarkChunkedDecode(b *testing.B) {
	var in bytes.Buffer
	chunk := strings.Repeat("x", 4096)
	for range 16 {
		fmt.Fprintf(&in, "%x\r\n%s\r\n", len(chunk), chunk)
	}
	in.WriteString("0\r\n\r\n")
	src := in.Bytes()
	dst := make([]byte, len(src))
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		var d ChunkedDecoder
		if _, _, done, err := d.Decode(dst, src); !done || err != nil {
			b.Fatal(done, err)
		}
	}
}
