package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// quartet serve --msg-addr serves the messenger's echo beside HTTP, and
// quartet msg sends a file to it and writes back exactly its bytes, as
// two processes talking over 127.0.0.1.
func TestServeMsgAddrAndQuartetMsg(t *testing.T) {
	bin := quartetBinary(t)
	p := startQuartet(t, serveCmd(t, "--msg-addr", "127.0.0.1:0", "--msg-max-payload", "8MiB"))
	addr := p.waitLog(regexp.MustCompile(`msg-addr=(\S+)`))[1]
	if got := fetch(t, "GET", p.url+"/hello"); !strings.HasPrefix(got, "200") {
		t.Errorf("HTTP beside the messenger: %q", got)
	}
	dir := t.TempDir()
	tests := []struct {
		name  string
		size  int
		extra []string
		fails string // a pattern its error matches, when the command must fail
	}{
		{"empty", 0, nil, ""},
		{"13 bytes", 13, nil, ""},
		{"3 MiB", 3 << 20, nil, ""},
		{"the server's limit", 8 << 20, nil, ""},
		// Over the limit the command fails; whether it names the server's
		// too-large frame or the reset that follows depends on whether the
		// client was still writing when the reader's linger budget (64 KiB)
		// ran out. runtime's TestMsgPayloadOverLimit checks the frame.
		{"over the server's limit", 8<<20 + 1, nil, "too-large|connection failed"},
		{"--rdma server-writes", 10, []string{"--rdma", "server-writes", "--provider", "soft"}, "msgrdma is not wired"},
		{"--rdma client-reads", 10, []string{"--rdma", "client-reads", "--provider", "soft"}, "msgrdma is not wired"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := make([]byte, tt.size)
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for k := range in {
				in[k] = byte(r.Uint32())
			}
			src, out := filepath.Join(dir, tt.name+".in"), filepath.Join(dir, tt.name+".out")
			if err := os.WriteFile(src, in, 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, append([]string{"msg", addr, "--send", src, "-O", out}, tt.extra...)...)
			stderr, err := cmd.CombinedOutput()
			if tt.fails != "" {
				if err == nil || !regexp.MustCompile(tt.fails).Match(stderr) {
					t.Fatalf("want a failure naming %q: %v\n%s", tt.fails, err, stderr)
				}
				if _, err := os.Stat(out); err == nil {
					t.Errorf("%s written by a failed command", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("quartet msg: %v\n%s", err, stderr)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, in) {
				t.Fatalf("%d bytes back for %d sent", len(got), len(in))
			}
		})
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d:\n%s", code, p.log)
	}
}
