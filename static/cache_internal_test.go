package static

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A request that looked for a name just before another request's open of
// it installed the file, and asks for an open only after that one has
// returned (singleflight joins only the calls in flight together), is
// served the installed entry: the file is opened once. Under load this
// was a second open of a file 32 concurrent requests asked for. One that
// found the entry itself stale (the file changed) still opens anew.
func TestMissJustAfterAnOpenTakesItsEntry(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "a.txt"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := NewDirOptions(root, Options{Revalidate: time.Hour, InMemory: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := d.cache
	e, err := c.get("a.txt", false)
	if err != nil {
		t.Fatal(err)
	}
	e.release() // the response's reference; the cache keeps its own
	ne, opened, _, err := c.openOnce("a.txt", "a.txt", false, nil)
	if err != nil || opened || ne != e || c.opens.Load() != 1 {
		t.Errorf("a miss after the open: entry %p (installed %p), opened %v, %v; opens %d, want 1", ne, e, opened, err, c.opens.Load())
	}
	ne, opened, _, err = c.openOnce("a.txt", "a.txt", false, e)
	if err != nil || !opened || ne == e || c.opens.Load() != 2 {
		t.Errorf("the installed entry found stale: opened %v, %v; opens %d, want 2", opened, err, c.opens.Load())
	}
}
