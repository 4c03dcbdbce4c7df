package main

import (
	"bufio"
	"bytes"
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

// The README shows this program and the native handler of runtime's
// Example_native verbatim, so that its code is the code that is tested.
func TestREADMEShowsTheTestedCode(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 2 {
		t.Fatalf("%d Go blocks in the README, want the program and the native handler", len(blocks))
	}
	prog, _ := os.ReadFile("main.go")
	if i := bytes.Index(prog, []byte("package main")); i < 0 || !bytes.Equal(blocks[0][1], prog[i:]) {
		t.Errorf("the README's first Go block is not examples/embed/main.go (from its package line)")
	}
	examples, _ := os.ReadFile("../../runtime/example_test.go")
	if !bytes.Contains(examples, blocks[1][1]) {
		t.Errorf("the README's native handler is not in runtime/example_test.go:\n%s", blocks[1][1])
	}
}
