package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

func logResponse() *stages.Response {
	return &stages.Response{Req: &stages.Request{Method: []byte("GET"), Target: []byte("/x"), Minor: 1}, Status: 200}
}

// Every line the writer loops log reaches a file, whole and once, while
// logrotate moves the file and SIGUSR1 reopens it under them: the lines
// gathered before a reopen go to the old file, the rest to the new.
func TestAccessLogKeepsEveryLineAcrossReopens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	var a accessLog
	if err := a.open(path, runtime.Combined, nil); err != nil {
		t.Fatal(err)
	}
	const loops, each = 8, 3000
	var wg sync.WaitGroup
	for range loops {
		wg.Go(func() {
			r := logResponse()
			for range each {
				a.log(r)
			}
		})
	}
	for i := range 3 {
		if err := os.Rename(path, filepath.Join(dir, "access.log."+string(rune('1'+i)))); err != nil {
			t.Fatal(err)
		}
		if err := a.reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	a.close()
	files, _ := filepath.Glob(filepath.Join(dir, "access.log*"))
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l == "" {
				continue
			}
			if !strings.Contains(l, `"GET /x HTTP/1.1" 200 - "-" "-"`) {
				t.Fatalf("%s: a broken line %q", f, l)
			}
			total++
		}
	}
	if total != loops*each {
		t.Errorf("%d lines in %d files, want %d", total, len(files), loops*each)
	}
}

// A file that takes nothing (a stalled disk) never holds the writer
// loops: log returns at once, the lines past accessLogMaxPending are
// dropped, and the log says how many once the flusher gets a word in.
func TestAccessLogStalledDiskDropsAndSays(t *testing.T) {
	stall := &stalledWriter{release: make(chan struct{})}
	logged := &lockedWriter{w: &strings.Builder{}}
	a := accessLog{logger: slog.New(slog.NewTextHandler(logged, nil))}
	if err := a.open("-", runtime.Combined, stall); err != nil {
		t.Fatal(err)
	}
	r := logResponse()
	line := len(runtime.AppendAccessLog(nil, runtime.Combined, r, time.Now()))
	// Enough for the flusher to take one buffer into the stalled Write,
	// and for the next to fill and overflow.
	n := 2*(accessLogMaxPending/line) + 1000
	for range n {
		a.log(r) // must not block: the test would hang here
	}
	close(stall.release)
	a.close()
	if !strings.Contains(logged.String(), `msg="quartet: access log: lines lost" path=- err="the file took no lines while 4 MiB of them gathered (a stalled disk)" lines=`) {
		t.Errorf("no line about the dropped lines:\n%s", logged.String())
	}
	written := bytes.Count(stall.got.Bytes(), []byte("\n"))
	if written == 0 || written >= n {
		t.Errorf("%d of %d lines written: want some, and fewer than all", written, n)
	}
}

type stalledWriter struct {
	release chan struct{}
	got     bytes.Buffer
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.got.Write(p)
}
