package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// start runs the peer on loopback for the test's life.
func start(t *testing.T, limits msg.Limits) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, "127.0.0.1:0", limits, func(a string) { addr <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the peer did not listen")
	}
	return ""
}

func frame(t *testing.T, h msg.Header, payload []byte) []byte {
	t.Helper()
	h.Length = uint32(len(payload))
	var head [msg.MaxHeadSize]byte
	n, err := msg.PutHead(head[:], &h)
	if err != nil {
		t.Fatal(err)
	}
	return append(head[:n:n], payload...)
}

func request(t *testing.T, txid uint64, payload []byte) []byte {
	return frame(t, msg.Header{Type: msg.TypeRequest, TxID: txid}, payload)
}

func reply(t *testing.T, txid uint64, payload []byte) []byte {
	return frame(t, msg.Header{Type: msg.TypeReply, TxID: txid}, payload)
}

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// The echo as Quartet's built-in dispatcher frames it, whatever the reads
// cut the frames into: one frame, several pipelined in one write, a frame
// split in its head and its payload, a payload far over a read, and a
// request that asks for RDMA, which this peer answers inline with the
// protocol's fallback (reason no-rdma), as Quartet without an engine does.
func TestEcho(t *testing.T) {
	hello := []byte("Hello, World!")
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	big = append(big, 1, 2, 3)
	rdmaReq := msg.Header{Type: msg.TypeRequest, Flags: msg.FlagRDMA | msg.FlagUnordered, TxID: 9,
		RDMA: msg.Descriptor{Mode: deliver.ModeClientReads, Op: 5, Endpoint: netip.AddrPortFrom(netip.Addr{}, 7471)}}
	rdmaReply := msg.Header{Type: msg.TypeReply, Flags: msg.FlagRDMA, TxID: 9,
		RDMA: msg.Descriptor{Mode: deliver.ModeClientReads, Op: 5, Reason: deliver.ReasonNoRDMA}}
	tests := []struct {
		name string
		in   []byte
		cuts []int // the client writes in[cuts[i-1]:cuts[i]], pausing between
		want []byte
	}{
		{"one", request(t, 1, hello), nil, reply(t, 1, hello)},
		{"pipelined", concat(request(t, 1, hello), request(t, 2, nil), request(t, 3, []byte("x"))), nil,
			concat(reply(t, 1, hello), reply(t, 2, nil), reply(t, 3, []byte("x")))},
		{"split", concat(request(t, 4, hello), request(t, 5, hello)), []int{1, 10, 16, 20, 33, 40},
			concat(reply(t, 4, hello), reply(t, 5, hello))},
		{"large", request(t, 6, big), []int{100, 70000}, reply(t, 6, big)},
		{"rdma-fallback", concat(frame(t, rdmaReq, hello), request(t, 10, hello)), []int{20},
			concat(frame(t, rdmaReply, hello), reply(t, 10, hello))},
	}
	addr := start(t, msg.Limits{MaxPayload: 2 << 20})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			from := 0
			for _, to := range append(tt.cuts, len(tt.in)) {
				if _, err := c.Write(tt.in[from:to]); err != nil {
					t.Fatal(err)
				}
				from = to
				time.Sleep(5 * time.Millisecond)
			}
			got := make([]byte, len(tt.want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got %d bytes % x…, want % x…", len(got), got[:min(len(got), 32)], tt.want[:min(len(tt.want), 32)])
			}
		})
	}
}

// A frame that breaks the format gets Quartet's error frame (the code,
// and the request's txid when it is too large), then the close; the
// frames before it are answered first.
func TestFrameErrors(t *testing.T) {
	hello := []byte("Hello, World!")
	tooLarge := request(t, 8, nil)
	tooLarge[6] = 0x10 // 4 KiB, over the limit below
	txid0 := request(t, 1, hello)
	txid0[15] = 0 // PutHead refuses to write it
	tests := []struct {
		name     string
		in       []byte
		answered []byte
		code     msg.Code
		txid     uint64
	}{
		{"http", []byte("GET /hello HTTP/1.1\r\n\r\n"), nil, msg.CodeVersion, 0},
		{"too-large", concat(request(t, 7, hello), tooLarge), reply(t, 7, hello), msg.CodeTooLarge, 8},
		{"reply-to-server", reply(t, 3, hello), nil, msg.CodeMalformed, 0},
		{"txid-0", txid0, nil, msg.CodeMalformed, 0},
	}
	addr := start(t, msg.Limits{MaxPayload: 1024})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := c.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			all, err := io.ReadAll(c) // to the close
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(all, tt.answered) {
				t.Fatalf("the frames before the bad one were not answered: % x", all)
			}
			rest := all[len(tt.answered):]
			p := msg.NewParser(msg.RoleClient, msg.Limits{})
			var h msg.Header
			n, err := p.Next(rest, &h)
			if err != nil || !h.Flags.Has(msg.FlagError) || h.TxID != tt.txid || n+int(h.Length) != len(rest) {
				t.Fatalf("not one error frame for txid %d: %+v, %v: % x", tt.txid, h, err, rest)
			}
			e, err := msg.ParseError(rest[n:])
			if err != nil || e.Code != tt.code {
				t.Fatalf("error body %+v, %v; want code %v", e, err, tt.code)
			}
		})
	}
}

// dial connects to the peer, closed at the test's end, with a deadline so
// that a missing answer fails rather than hangs.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}
