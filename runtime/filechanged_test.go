package runtime

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/static"
)

// A file cut short in place while the static file cache holds it open (cp
// over a live file) cannot be sent as its response was framed: the
// response ends early and its connection closes, which the client sees as
// a short body. The operator is told, with what to do instead; before,
// only quartet_responses_aborted_total moved.
func TestFileCutShortWhileServedIsLogged(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f.bin")
	if err := os.WriteFile(name, bytes.Repeat([]byte("x"), 200<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := static.NewDirOptions(dir, static.Options{Revalidate: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { files.Close() })
	var logged syncBuffer
	s := startServer(t, Config{Handler: files, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	url := "http://" + s.Addr().String() + "/f.bin"
	get := func() (int, error) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return len(b), err
	}
	if n, err := get(); n != 200<<10 || err != nil {
		t.Fatalf("first GET: %d bytes, %v", n, err)
	}
	if err := os.Truncate(name, 50<<10); err != nil {
		t.Fatal(err)
	}
	if n, err := get(); err == nil {
		t.Fatalf("GET of the truncated file: %d bytes, no error; want a short body", n)
	}
	if !eventually(5*time.Second, func() bool {
		return strings.Contains(logged.String(), "a file changed while it was served") &&
			strings.Contains(logged.String(), "f.bin")
	}) {
		t.Fatalf("nothing logged:\n%s", logged.String())
	}
}
