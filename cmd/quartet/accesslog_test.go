package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
		if _, _, err := a.reopen(); err != nil {
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
