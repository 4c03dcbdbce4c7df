package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// freeAddr returns a loopback address nothing listens on, for commands
// that take --addr and print nothing back.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runBackground runs a quartet command until the test ends, then stops it
// and requires it to exit cleanly.
func runBackground(t *testing.T, addr string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, io.Discard, &stderr) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("%s did not come up: %s", args[0], stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case rc := <-done:
			if rc != 0 || strings.Contains(stderr.String(), "level=ERROR") {
				t.Errorf("%s exited %d: %s", args[0], rc, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s did not stop", args[0])
		}
	})
}

// TestServeGetProxy: quartet serve --rdma soft, then quartet get in both
// modes and over TCP, and quartet proxy in front, all byte-exact.
func TestServeGetProxy(t *testing.T) {
	root := t.TempDir()
	body := make([]byte, 3<<20+17)
	rand.Read(body)
	os.WriteFile(filepath.Join(root, "b.bin"), body, 0o644)
	addr := freeAddr(t)
	runBackground(t, addr, "serve", "--addr", addr, "--root", root, "--rdma", "soft", "--writers", "2")
	url := "http://" + addr + "/b.bin"
	for _, mode := range []string{"server-writes", "client-reads", "off"} {
		out := filepath.Join(t.TempDir(), "out")
		var stderr bytes.Buffer
		if rc := run(context.Background(), []string{"get", url, "-O", out, "--rdma", mode, "--provider", "soft"}, io.Discard, &stderr); rc != 0 {
			t.Fatalf("get --rdma %s: %s", mode, stderr.String())
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, body) {
			t.Fatalf("get --rdma %s: %d bytes differ", mode, len(got))
		}
		want := "by " + mode
		if mode == "off" {
			want = "by TCP"
		}
		if !strings.Contains(stderr.String(), want) || (mode != "off" && !strings.Contains(stderr.String(), "sha256 verified")) {
			t.Errorf("get --rdma %s said %q", mode, stderr.String())
		}
	}
	paddr := freeAddr(t)
	runBackground(t, paddr, "proxy", "--listen", paddr, "--upstream", "http://"+addr, "--provider", "soft", "--clients", "2")
	// A Range is not honoured (the body is fetched whole), and the proxy
	// does not offer ranges, though its upstream does.
	req, _ := http.NewRequest(http.MethodGet, "http://"+paddr+"/b.bin", nil)
	req.Header.Set("Range", "bytes=0-9")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, body) || resp.Header.Get("X-Quartet-Proxy-Via") != "client-reads" {
		t.Fatalf("proxy: %d bytes, via %q", len(got), resp.Header.Get("X-Quartet-Proxy-Via"))
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Accept-Ranges") != "none" {
		t.Errorf("proxy: %s, Accept-Ranges %q; want 200 and none", resp.Status, resp.Header.Get("Accept-Ranges"))
	}
}

// quartet proxy's help is its own: its usage line, only the flags it
// reads (none of get's output flags), and its own default delivery.
func TestProxyUsage(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"proxy", "-h"}, &stdout, &stderr); code != 0 || stderr.Len() > 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "usage: quartet proxy --upstream http://HOST:PORT") {
		t.Errorf("usage starts %q", strings.SplitN(out, "\n", 2)[0])
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -(\S+)`).FindAllStringSubmatch(out, -1) {
		flags = append(flags, m[1])
	}
	if got, want := strings.Join(flags, " "), "addr buffer clients listen op-timeout provider rdma retries upstream"; got != want {
		t.Errorf("flags %s, want %s", got, want)
	}
	for _, want := range []string{`(default "client-reads")`, `(default "127.0.0.1:8081")`} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in:\n%s", want, out)
		}
	}
}
