package fdtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file opened is counted, by Count and on its path, and no longer once
// closed.
func TestCountsAFileOpenAndClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	before := Count(t)
	if n := On(t, path); n != 0 {
		t.Fatalf("%d descriptors on %s before opening it", n, path)
	}
	f1, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := Count(t); n != before+2 {
		t.Errorf("%d descriptors open with two files, want %d", n, before+2)
	}
	if n := On(t, path); n != 2 {
		t.Errorf("%d descriptors on the file, want 2", n)
	}
	under := Open(t, func(target string) bool { return strings.HasPrefix(target, filepath.Dir(path)+"/") })
	want := []FD{{int(f1.Fd()), path}, {int(f2.Fd()), path}}
	if len(under) != 2 || under[0] != want[0] && under[0] != want[1] || under[1] != want[0] && under[1] != want[1] {
		t.Errorf("descriptors under the directory %v, want %v", under, want)
	}
	f1.Close()
	f2.Close()
	if n := Count(t); n != before {
		t.Errorf("%d descriptors open after closing both, want %d", n, before)
	}
	if n := On(t, path); n != 0 {
		t.Errorf("%d descriptors on the file after closing it", n)
	}
}
