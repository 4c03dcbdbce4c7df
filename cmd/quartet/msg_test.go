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
// separate processes over 127.0.0.1: by TCP, and by RDMA in both modes
// from a server with --rdma soft (the software provider, on loopback); a
// server without RDMA answers a request for it inline, and says why.
func TestServeMsgAddrAndQuartetMsg(t *testing.T) {
	bin := quartetBinary(t)
	msgAddr := regexp.MustCompile(`messenger=(\S+)`)
	plain := startQuartet(t, serveCmd(t, "--msg-addr", "127.0.0.1:0", "--msg-max-payload", "8MiB"))
	withRDMA := startQuartet(t, serveCmd(t, "--msg-addr", "127.0.0.1:0", "--rdma", "soft"))
	addrs := map[*proc]string{plain: plain.waitLog(msgAddr)[1], withRDMA: withRDMA.waitLog(msgAddr)[1]}
	if got := fetch(t, "GET", plain.url+"/hello"); !strings.HasPrefix(got, "200") {
		t.Errorf("HTTP beside the messenger: %q", got)
	}
	dir := t.TempDir()
	tests := []struct {
		name   string
		server *proc
		size   int
		extra  []string
		how    string // the summary's "by ..." when it succeeds
		fails  string // a pattern its error matches, when the command must fail
	}{
		{"empty", plain, 0, nil, "by TCP", ""},
		{"13 bytes", plain, 13, nil, "by TCP", ""},
		{"3 MiB", plain, 3 << 20, nil, "by TCP", ""},
		{"the server's limit", plain, 8 << 20, nil, "by TCP", ""},
		// Over the limit the command fails; whether it names the server's
		// too-large frame or the reset that follows depends on whether the
		// client was still writing when the reader's linger budget (64 KiB)
		// ran out. runtime's TestMsgPayloadOverLimit checks the frame.
		{"over the server's limit", plain, 8<<20 + 1, nil, "", "too-large|connection failed"},
		{"--rdma to a server without", plain, 1000, []string{"--rdma", "server-writes", "--provider", "soft"}, `by TCP \(server fell back: no-rdma\)`, ""},
		{"--rdma server-writes", withRDMA, 3 << 20, []string{"--rdma", "server-writes", "--provider", "soft"}, "by server-writes", ""},
		{"--rdma client-reads", withRDMA, 3 << 20, []string{"--rdma", "client-reads", "--provider", "soft"}, "by client-reads", ""},
		{"--rdma server-writes, 13 bytes", withRDMA, 13, []string{"--rdma", "server-writes", "--provider", "soft"}, "by server-writes", ""},
		{"--rdma nonsense", withRDMA, 13, []string{"--rdma", "nonsense"}, "", "unknown mode"},
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
			cmd := exec.Command(bin, append([]string{"msg", addrs[tt.server], "--send", src, "-O", out}, tt.extra...)...)
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
			if !regexp.MustCompile(tt.how).Match(stderr) {
				t.Errorf("summary %q does not say %q", stderr, tt.how)
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
	for _, p := range []*proc{plain, withRDMA} {
		p.signal(syscall.SIGTERM)
		if code := p.wait(); code != 0 {
			t.Errorf("exit %d:\n%s", code, p.log)
		}
	}
	if !strings.Contains(withRDMA.log.String(), "rdma totals") {
		t.Errorf("the RDMA server logged no totals:\n%s", withRDMA.log)
	}
}
