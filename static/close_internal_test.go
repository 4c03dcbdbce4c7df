package static

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quartet-server/quartet/internal/fdtest"
)

// A Dir closed while a request is inside its root (a reload replacing it
// mid-request) keeps the root open for that request, serves its miss from
// a file opened uncached, and closes the root and the file when the
// request lets go.
func TestDirClosedWhileARequestIsInside(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts Options
	}{
		{"cache, file in memory", Options{}},
		{"cache, file by sendfile", Options{InMemory: -1}},
		{"no cache", Options{CacheEntries: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			file := filepath.Join(root, "a.txt")
			if err := os.WriteFile(file, []byte(strings.Repeat("a", 1000)), 0o644); err != nil {
				t.Fatal(err)
			}
			d, err := NewDirOptions(root, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			get := func() (*entry, error) {
				if d.cache != nil {
					return d.cache.get("a.txt", false)
				}
				return d.openEntry("a.txt", false)
			}
			if e, err := get(); err != nil {
				t.Fatal(err)
			} else {
				e.release() // the response's reference; the cache keeps its own
			}

			if !d.enter() {
				t.Fatal("enter refused before Close")
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if n := fdtest.On(t, file); n != 0 {
				t.Fatalf("%d fds on the file after Close with no response holding it", n)
			}
			if n := fdtest.On(t, root); n != 1 {
				t.Fatalf("%d fds on the root after Close with a request inside, want 1", n)
			}
			e, err := get()
			if err != nil {
				t.Fatalf("a miss inside the closed Dir: %v", err)
			}
			if s := d.CacheStats(); s.Entries != 0 || s.InMemoryBytes != 0 || s.InMemoryFiles != 0 {
				t.Fatalf("the closed cache took the entry: %+v", s)
			}
			if n := fdtest.On(t, file); n != 1 {
				t.Fatalf("%d fds on the file while its response holds it, want 1", n)
			}
			e.release()
			if n := fdtest.On(t, file); n != 0 {
				t.Fatalf("%d fds on the file after its response let go", n)
			}
			d.leave()
			if n := fdtest.On(t, root); n != 0 {
				t.Fatalf("%d fds on the root after its last user left", n)
			}
			if d.enter() {
				t.Fatal("enter admitted a request after Close")
			}
			if err := d.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}
