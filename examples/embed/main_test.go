package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// The program runs as the README says: it serves, and Ctrl-C ends it
// cleanly.
func TestEmbedRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example")
	}
	bin := filepath.Join(t.TempDir(), "embed")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(os.Stderr, stderr)
	m := regexp.MustCompile(`serving on (http://\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("first line %q", line)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(m[1] + "/hello/reader")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "Hello, reader!\n" {
		t.Fatalf("got %q", body)
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after Ctrl-C: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not exit after Ctrl-C")
	}
}
