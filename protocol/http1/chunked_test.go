package http1

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

		{"17 hex digits, leading zeros", "00000000000000001\r\na\r\n000000000000000000000\r\n\r\n", "a", "", 0, nil},
		{"17 significant hex digits", "10000000000000000\r\n", "", "", 413, ErrChunkSizeOverflow},
		{"over int64", "8000000000000000\r\n", "", "", 413, ErrChunkSizeOverflow},

		// Overhead (RFC 9112 §7.1.1, net/http's CVE-2023-39326 rule): the
		// issue's reproducer is refused at its fifth chunk line, where
		// 5 × (4,002 + 2 - 18) unpaid bytes pass 16 KiB.
		{"extension flood", extensionFlood(64, 4000), "AAAA", "", 400, ErrChunkOverhead},
		{"overhead exactly at the limit", overheadAt(maxChunkOverhead), "AAAAA", "", 0, nil},
		{"overhead one byte over", overheadAt(maxChunkOverhead + 1), "AAAA", "", 400, ErrChunkOverhead},
		{"a large chunk banks no credit", "186a0\r\n" + strings.Repeat("d", 100000) + "\r\n" + extensionFlood(5, 4000),
			strings.Repeat("d", 100000) + "AAAA", "", 400, ErrChunkOverhead},
		{"one byte per chunk is fine", strings.Repeat("1\r\nX\r\n", 20000) + "0\r\n\r\n", strings.Repeat("X", 20000), "", 0, nil},
		{"long extensions on large chunks are fine", strings.Repeat("1000;"+strings.Repeat("e", 4000)+"\r\n"+strings.Repeat("d", 4096)+"\r\n", 20) + "0\r\n\r\n",
			strings.Repeat("d", 4096*20), "", 0, nil},

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

// extensionFlood is the reproducer: n chunks of one data byte "A",
// each size line carrying an extension of ext bytes, then the last chunk.
func extensionFlood(n, ext int) string {
	return strings.Repeat("1;"+strings.Repeat("x", ext)+"\r\nA\r\n", n) + "0\r\n\r\n"
}

// overheadAt builds a body of one-byte chunks whose unpaid overhead peaks
// at exactly excess bytes (excess > 4 × 4,079), then ends.
func overheadAt(excess int) string {
	// A one-byte chunk whose size line is L bytes long (CRLF excluded)
	// leaves L + 2 - 18 bytes unpaid.
	var b strings.Builder
	for range 4 {
		line := maxChunkLine - 1 // the longest line allowed
		b.WriteString("1;" + strings.Repeat("x", line-2) + "\r\nA\r\n")
		excess -= line - 16
	}
	b.WriteString("1;" + strings.Repeat("x", excess+16-2) + "\r\nA\r\n")
	b.WriteString("0\r\n\r\n")
	return b.String()
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
