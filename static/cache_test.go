package static_test

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/static"
)

// get sends one raw request on a new connection and returns the response
// with its body.
func get(t *testing.T, addr, target string, headers ...string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	method := "GET"
	if strings.HasPrefix(target, "HEAD ") {
		method, target = "HEAD", strings.TrimPrefix(target, "HEAD ")
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n", method, target, strings.Join(headers, ""))
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func writeFile(t *testing.T, path, content string, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func TestConditionalRequestsAndRanges(t *testing.T) {
	root := t.TempDir()
	mod := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	writeFile(t, filepath.Join(root, "f.txt"), "0123456789", mod)
	d, err := static.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	addr := serve(t, d)

	first, _ := get(t, addr, "/f.txt")
	etag := first.Header.Get("ETag")
	if etag == "" || first.Header.Get("Last-Modified") != "Wed, 01 May 2024 12:00:00 GMT" || first.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("validators: %v", first.Header)
	}
	tests := []struct {
		name, target string
		headers      []string
		status       int
		body         string
		contentRange string
	}{
		{"if-none-match hit", "/f.txt", []string{"If-None-Match: " + etag + "\r\n"}, 304, "", ""},
		{"if-none-match weak hit", "/f.txt", []string{"If-None-Match: \"x\", W/" + etag + "\r\n"}, 304, "", ""},
		{"if-none-match star", "/f.txt", []string{"If-None-Match: *\r\n"}, 304, "", ""},
		{"if-none-match miss", "/f.txt", []string{"If-None-Match: \"other\"\r\n"}, 200, "0123456789", ""},
		{"if-modified-since same", "/f.txt", []string{"If-Modified-Since: Wed, 01 May 2024 12:00:00 GMT\r\n"}, 304, "", ""},
		{"if-modified-since older", "/f.txt", []string{"If-Modified-Since: Tue, 30 Apr 2024 12:00:00 GMT\r\n"}, 200, "0123456789", ""},
		{"inm wins over ims", "/f.txt", []string{"If-None-Match: \"other\"\r\n", "If-Modified-Since: Wed, 01 May 2024 12:00:00 GMT\r\n"}, 200, "0123456789", ""},
		{"if-match fails", "/f.txt", []string{"If-Match: \"other\"\r\n"}, 412, "", ""},
		{"if-match weak fails", "/f.txt", []string{"If-Match: W/" + etag + "\r\n"}, 412, "", ""},
		{"if-match ok", "/f.txt", []string{"If-Match: " + etag + "\r\n"}, 200, "0123456789", ""},
		{"if-unmodified-since fails", "/f.txt", []string{"If-Unmodified-Since: Tue, 30 Apr 2024 12:00:00 GMT\r\n"}, 412, "", ""},
		{"range", "/f.txt", []string{"Range: bytes=2-5\r\n"}, 206, "2345", "bytes 2-5/10"},
		{"range open end", "/f.txt", []string{"Range: bytes=7-\r\n"}, 206, "789", "bytes 7-9/10"},
		{"range suffix", "/f.txt", []string{"Range: bytes=-3\r\n"}, 206, "789", "bytes 7-9/10"},
		{"range past end clipped", "/f.txt", []string{"Range: bytes=8-100\r\n"}, 206, "89", "bytes 8-9/10"},
		{"range unsatisfiable", "/f.txt", []string{"Range: bytes=10-\r\n"}, 416, "", "bytes */10"},
		{"several ranges: whole file", "/f.txt", []string{"Range: bytes=0-1,4-5\r\n"}, 200, "0123456789", ""},
		{"garbage range: whole file", "/f.txt", []string{"Range: lines=1-2\r\n"}, 200, "0123456789", ""},
		{"signed range: whole file", "/f.txt", []string{"Range: bytes=+2-5\r\n"}, 200, "0123456789", ""},
		{"if-range matches", "/f.txt", []string{"Range: bytes=0-0\r\n", "If-Range: " + etag + "\r\n"}, 206, "0", "bytes 0-0/10"},
		{"if-range stale", "/f.txt", []string{"Range: bytes=0-0\r\n", "If-Range: \"old\"\r\n"}, 200, "0123456789", ""},
		{"if-range date", "/f.txt", []string{"Range: bytes=1-1\r\n", "If-Range: Wed, 01 May 2024 12:00:00 GMT\r\n"}, 206, "1", "bytes 1-1/10"},
		{"head with range", "HEAD /f.txt", []string{"Range: bytes=0-1\r\n"}, 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, addr, tt.target, tt.headers...)
			if resp.StatusCode != tt.status || body != tt.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			if got := resp.Header.Get("Content-Range"); got != tt.contentRange {
				t.Errorf("Content-Range %q, want %q", got, tt.contentRange)
			}
			if resp.StatusCode == 304 && resp.Header.Get("ETag") != etag {
				t.Errorf("304 without the ETag")
			}
		})
	}
}

func TestOpenFileCacheSharesAndRevalidates(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "v.txt")
	writeFile(t, path, "version one", time.Now().Add(-time.Hour))
	d, err := static.NewDirOptions(root, static.Options{Revalidate: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, d)

	// Concurrent first requests open the file once, and all get it.
	var wg sync.WaitGroup
	bodies := make(chan string, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, b := get(t, addr, "/v.txt")
			bodies <- b
		}()
	}
	wg.Wait()
	close(bodies)
	for b := range bodies {
		if b != "version one" {
			t.Fatalf("got %q", b)
		}
	}
	if n := d.Opens(); n != 1 {
		t.Errorf("32 concurrent requests opened the file %d times, want 1", n)
	}
	// Those that waited for the one open are hits: every request is one or
	// the other.
	if st := d.CacheStats(); st.Hits+st.Opens != 32 {
		t.Errorf("32 requests: %d hits and %d opens", st.Hits, st.Opens)
	}
	if open := openUnder(t, root); len(open) != 1 {
		t.Errorf("cached: %d fds open under the root, want 1", len(open))
	}

	// The file is replaced: after the revalidation interval the new content
	// is served, and the old file is closed.
	writeFile(t, path+".new", "version two!", time.Now())
	os.Rename(path+".new", path)
	time.Sleep(80 * time.Millisecond)
	if _, b := get(t, addr, "/v.txt"); b != "version two!" {
		t.Fatalf("after the change: %q", b)
	}
	if n := d.Opens(); n != 2 {
		t.Errorf("opens %d after one change, want 2", n)
	}
	if open := openUnder(t, root); len(open) != 1 {
		t.Errorf("after the change: fds %v, want only the new file", open)
	}
	// A deleted file is not served from the cache after revalidation.
	os.Remove(path)
	time.Sleep(80 * time.Millisecond)
	if resp, _ := get(t, addr, "/v.txt"); resp.StatusCode != 404 {
		t.Errorf("deleted file: %d, want 404", resp.StatusCode)
	}
	// Close releases every cached file.
	d.Close()
	waitOpen(t, root, 0)
}

func TestSymlinksOutOfRootOnlyWhenAllowed(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret"), "outside the root", time.Now())
	root := t.TempDir()
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "link")); err != nil {
		t.Skip(err)
	}
	strict, _ := static.NewDir(root)
	t.Cleanup(func() { strict.Close() })
	if resp, body := get(t, serve(t, strict), "/link"); resp.StatusCode == 200 || strings.Contains(body, "outside") {
		t.Fatalf("strict root served a symlink out of it: %d %q", resp.StatusCode, body)
	}
	loose, _ := static.NewDirOptions(root, static.Options{FollowSymlinks: true})
	t.Cleanup(func() { loose.Close() })
	if resp, body := get(t, serve(t, loose), "/link"); resp.StatusCode != 200 || body != "outside the root" {
		t.Fatalf("FollowSymlinks: %d %q", resp.StatusCode, body)
	}
	// Dot-dot stays refused even when symlinks may lead out.
	if resp, _ := get(t, serve(t, loose), "/../"+filepath.Base(outside)+"/secret"); resp.StatusCode != 404 {
		t.Fatalf("dot-dot with FollowSymlinks: %d", resp.StatusCode)
	}
}

// step is one request of TestCacheStats.
type step struct {
	target string            // GET this; "" for none
	status int               // and expect this
	then   func(root string) // after the request
}

// missingSteps asks for n names that do not exist.
func missingSteps(n int) []step {
	steps := make([]step, n)
	for i := range steps {
		steps[i] = step{fmt.Sprintf("/missing-%d", i), 404, nil}
	}
	return steps
}

// TestCacheStats: each counter of Dir.CacheStats counts its event once,
// in the place it happens, and what the cache holds is given back on
// Close.
func TestCacheStats(t *testing.T) {
	const revalidate = 50 * time.Millisecond
	pastRevalidate := func() { time.Sleep(revalidate + 30*time.Millisecond) }
	tests := []struct {
		name  string
		opts  static.Options
		steps []step
		want  static.CacheStats
	}{
		{"an open, then a hit",
			static.Options{},
			[]step{{"/a.txt", 200, nil}, {"/a.txt", 200, nil}},
			static.CacheStats{Opens: 1, Hits: 1, Entries: 1, InMemoryFiles: 1, InMemoryBytes: 5}},
		{"a directory's index is one entry",
			static.Options{},
			[]step{{"/", 200, nil}, {"/", 200, nil}, {"/index.html", 200, nil}},
			static.CacheStats{Opens: 2, Hits: 1, Entries: 2, InMemoryFiles: 2, InMemoryBytes: 2 * 13}},
		{"a missing file is remembered, neither hit nor open",
			static.Options{},
			[]step{{"/missing", 404, nil}, {"/missing", 404, nil}},
			static.CacheStats{NotFoundHits: 1, Missing: 1}},
		{"a missing file still missing after its check",
			static.Options{Revalidate: revalidate},
			[]step{{"/missing", 404, func(string) { pastRevalidate() }}, {"/missing", 404, nil}},
			static.CacheStats{Revalidations: 1, Missing: 1}},
		{"a missing file that appears is served after its check",
			static.Options{Revalidate: revalidate},
			[]step{{"/new.txt", 404, func(root string) {
				writeFile(t, filepath.Join(root, "new.txt"), "newer", time.Now())
				pastRevalidate()
			}}, {"/new.txt", 200, nil}},
			static.CacheStats{Opens: 1, Revalidations: 1, Invalidations: 1, Entries: 1, InMemoryFiles: 1, InMemoryBytes: 5}},
		{"missing names are bounded apart from files",
			static.Options{CacheEntries: 1},
			append(append([]step{{"/a.txt", 200, nil}}, missingSteps(20)...), step{"/a.txt", 200, nil}),
			static.CacheStats{Opens: 1, Hits: 1, Missing: 16, Entries: 1, InMemoryFiles: 1, InMemoryBytes: 5}},
		{"a revalidation finds the file unchanged",
			static.Options{Revalidate: revalidate},
			[]step{{"/a.txt", 200, func(string) { pastRevalidate() }}, {"/a.txt", 200, nil}},
			static.CacheStats{Opens: 1, Hits: 1, Revalidations: 1, Entries: 1, InMemoryFiles: 1, InMemoryBytes: 5}},
		{"a revalidation finds the file changed",
			static.Options{Revalidate: revalidate},
			[]step{{"/a.txt", 200, func(root string) {
				writeFile(t, filepath.Join(root, "a.txt"), "alpha, longer", time.Now())
				pastRevalidate()
			}}, {"/a.txt", 200, nil}},
			static.CacheStats{Opens: 2, Revalidations: 1, Invalidations: 1, Entries: 1, InMemoryFiles: 1, InMemoryBytes: 13}},
		{"a revalidation finds the file gone",
			static.Options{Revalidate: revalidate},
			[]step{{"/a.txt", 200, func(root string) {
				os.Remove(filepath.Join(root, "a.txt"))
				pastRevalidate()
			}}, {"/a.txt", 404, nil}},
			static.CacheStats{Opens: 1, Revalidations: 1, Invalidations: 1, Missing: 1}},
		{"a full cache evicts",
			static.Options{CacheEntries: 1},
			[]step{{"/a.txt", 200, nil}, {"/b.txt", 200, nil}, {"/a.txt", 200, nil}},
			static.CacheStats{Opens: 3, Evictions: 2, Entries: 1, InMemoryFiles: 1, InMemoryBytes: 5}},
		{"over the budget: cached, not in memory",
			static.Options{InMemoryBudget: 10},
			[]step{{"/a.txt", 200, nil}, {"/b.txt", 200, nil}},
			static.CacheStats{Opens: 2, Entries: 2, InMemoryFiles: 1, InMemoryBytes: 5}},
		{"nothing in memory",
			static.Options{InMemory: -1},
			[]step{{"/a.txt", 200, nil}, {"/a.txt", 200, nil}},
			static.CacheStats{Opens: 1, Hits: 1, Entries: 1}},
		{"no cache: nothing counted",
			static.Options{CacheEntries: -1},
			[]step{{"/a.txt", 200, nil}, {"/a.txt", 200, nil}},
			static.CacheStats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			old := time.Now().Add(-time.Hour)
			writeFile(t, filepath.Join(root, "a.txt"), "alpha", old)
			writeFile(t, filepath.Join(root, "b.txt"), "bravo, bravo", old)
			writeFile(t, filepath.Join(root, "index.html"), "<h1>root</h1>", old)
			opts := tt.opts
			if opts.Revalidate == 0 {
				opts.Revalidate = time.Hour // no revalidation however slow the test runs
			}
			d := newDir(t, root, opts)
			addr := serve(t, d)
			for _, s := range tt.steps {
				if r := do(t, addr, "GET", s.target); r.status != s.status {
					t.Fatalf("GET %s: %d, want %d", s.target, r.status, s.status)
				}
				if s.then != nil {
					s.then(root)
				}
			}
			// The settings in force are the options with defaults applied.
			want := tt.want
			if tt.opts.CacheEntries >= 0 {
				want.EntriesMax = cmp.Or(tt.opts.CacheEntries, static.DefaultCacheEntries)
				want.InMemoryBudget = cmp.Or(tt.opts.InMemoryBudget, static.DefaultInMemoryBudget)
				want.InMemoryFileMax = max(cmp.Or(tt.opts.InMemory, static.DefaultInMemory), 0)
			}
			if got := d.CacheStats(); got != want {
				t.Errorf("stats\n got %+v\nwant %+v", got, want)
			}
			if files, bytes := d.InMemoryFiles(); files != want.InMemoryFiles || bytes != want.InMemoryBytes {
				t.Errorf("InMemoryFiles() = %d, %d; CacheStats says %d, %d", files, bytes, want.InMemoryFiles, want.InMemoryBytes)
			}
			if n := d.Opens(); n != want.Opens {
				t.Errorf("Opens() = %d; CacheStats says %d", n, want.Opens)
			}
			d.Close()
			got := d.CacheStats()
			if got.Entries != 0 || got.InMemoryFiles != 0 || got.InMemoryBytes != 0 {
				t.Errorf("after Close: %d entries, %d files, %d bytes still held", got.Entries, got.InMemoryFiles, got.InMemoryBytes)
			}
			if got.Opens != want.Opens || got.Hits != want.Hits {
				t.Errorf("after Close the counters went back: %+v", got)
			}
		})
	}
}

// AddCounters adds every counter and no gauge: a field added to
// CacheStats must be sorted into one or the other here.
func TestCacheStatsAddCounters(t *testing.T) {
	counters := map[string]bool{"Hits": true, "Opens": true, "Revalidations": true, "Invalidations": true,
		"Evictions": true, "NotFoundHits": true, "Errors": true}
	gauges := map[string]bool{"Missing": true, "Entries": true, "EntriesMax": true, "InMemoryFiles": true,
		"InMemoryBytes": true, "InMemoryFileMax": true, "InMemoryBudget": true}
	var s, o static.CacheStats
	sv, ov := reflect.ValueOf(&s).Elem(), reflect.ValueOf(&o).Elem()
	for i := range sv.NumField() {
		sv.Field(i).SetInt(int64(i + 1))
		ov.Field(i).SetInt(100)
	}
	s.AddCounters(o)
	for i := range sv.NumField() {
		name, got := sv.Type().Field(i).Name, sv.Field(i).Int()
		switch {
		case counters[name] && got != int64(i+101):
			t.Errorf("counter %s = %d, want %d", name, got, i+101)
		case gauges[name] && got != int64(i+1):
			t.Errorf("gauge %s = %d, want %d (unchanged)", name, got, i+1)
		case !counters[name] && !gauges[name]:
			t.Errorf("field %s is neither a counter nor a gauge in this test", name)
		}
	}
}
