package runtime

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/static"
)

// byteCounter is a sample module written only against the public API: it
// adds a response header in its insert-filter hook and counts, through an
// output filter, the body bytes each response carries (heap and file
// buckets alike), reporting the total in a header when nothing has been
// sent yet, and in a counter always.
type byteCounter struct {
	bodyBytes atomic.Int64
	responses atomic.Int64
}

func (m *byteCounter) module() Module {
	return Module{
		Name: "bytecounter",
		InsertFilter: func(r *stages.Request, w *processor.ResponseWriter) {
			w.Header().Set("X-Counted-By", "bytecounter")
			w.AddOutputFilter(processor.OutputFilterFunc(m.filter))
		},
	}
}

func (m *byteCounter) filter(c *processor.FilterChain, bs []stages.Bucket) error {
	for i := range bs {
		m.bodyBytes.Add(bs[i].Size())
		if bs[i].Kind == stages.BucketEOS {
			m.responses.Add(1)
		}
	}
	return c.Pass(bs...)
}

func TestSampleModuleAddsHeaderAndCountsBytes(t *testing.T) {
	dir := t.TempDir()
	file := bytes.Repeat([]byte("file-bytes;"), 10000)
	os.WriteFile(filepath.Join(dir, "f.bin"), file, 0o644)
	files, err := static.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { files.Close() })
	m := &byteCounter{}
	s := startServer(t, Config{Handler: Builtin(files), Modules: []Module{m.module()}})

	c := dial(t, s)
	br := bufio.NewReader(c)
	want := int64(0)
	for _, tc := range []struct {
		target string
		size   int
	}{
		{"/hello", 13},
		{"/bytes?n=200000", 200000}, // several chunks, back-pressure through the filter
		{"/f.bin", len(file)},       // a file bucket: sendfile after the filter
	} {
		resp, body := exchange(t, c, br, "GET "+tc.target+" HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
		if resp.StatusCode != 200 || len(body) != tc.size {
			t.Fatalf("%s: %d, %d bytes", tc.target, resp.StatusCode, len(body))
		}
		if resp.Header.Get("X-Counted-By") != "bytecounter" {
			t.Errorf("%s: module header missing: %v", tc.target, resp.Header)
		}
		if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(tc.size) {
			t.Errorf("%s: Content-Length %q", tc.target, cl)
		}
		want += int64(tc.size)
	}
	if !eventually(2*time.Second, func() bool { return m.responses.Load() == 3 }) || m.bodyBytes.Load() != want {
		t.Fatalf("filter counted %d bytes over %d responses, want %d over 3", m.bodyBytes.Load(), m.responses.Load(), want)
	}
}

// shipAside is what an RDMA module does with a body: it takes the body
// buckets itself, and lets only a header announcing them go over TCP, held
// until its (here simulated) transfer completes.
func TestFilterTakesOverTheBodyAndHoldsTheHeader(t *testing.T) {
	var shipped bytes.Buffer
	released := make(chan time.Time, 1)
	mod := Module{
		Name: "ship-aside",
		InsertFilter: func(r *stages.Request, w *processor.ResponseWriter) {
			if r.Header("X-Ship-Aside") == nil {
				return
			}
			var n int64
			w.AddOutputFilter(processor.OutputFilterFunc(func(c *processor.FilterChain, bs []stages.Bucket) error {
				for _, b := range bs {
					switch b.Kind {
					case stages.BucketHeap:
						shipped.Write(b.Data) // copied: Data dies when we return
						n += int64(len(b.Data))
					case stages.BucketEOS:
						c.Header().Del("Content-Length")
						c.Header().Set("X-Shipped-Bytes", strconv.FormatInt(n, 10))
						c.SetStatus(200)
						h := c.NewHold()
						time.AfterFunc(100*time.Millisecond, func() {
							released <- time.Now()
							h.Release()
						})
						// Hold first: not even the header leaves before the release.
						return c.Pass(stages.Bucket{Kind: stages.BucketHold, Hold: h}, b)
					}
				}
				return nil
			}))
		},
	}
	s := startServer(t, Config{Modules: []Module{mod}})
	c := dial(t, s)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /bytes?n=70000 HTTP/1.1\r\nHost: x\r\nX-Ship-Aside: 1\r\n\r\n")
	resp, body := exchange(t, c, br, "", "GET")
	got := time.Now()
	rel := <-released
	if got.Before(rel) {
		t.Fatalf("the header arrived before the hold was released")
	}
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Shipped-Bytes") != "70000" || resp.ContentLength != 0 {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if shipped.Len() != 70000 || !strings.HasPrefix(shipped.String(), "abcdef") {
		t.Fatalf("the filter shipped %d bytes", shipped.Len())
	}
	// The connection is still good for a plain request.
	resp, body = exchange(t, c, br, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	if body != "Hello, World!" {
		t.Fatalf("after: %d %q", resp.StatusCode, body)
	}
}

func TestFilterCanTransformAndChangeStatus(t *testing.T) {
	upper := Module{
		Name: "upper",
		InsertFilter: func(r *stages.Request, w *processor.ResponseWriter) {
			w.AddOutputFilter(processor.OutputFilterFunc(func(c *processor.FilterChain, bs []stages.Bucket) error {
				for i := range bs {
					if bs[i].Kind == stages.BucketHeap {
						bs[i].Data = bytes.ToUpper(bs[i].Data)
					}
				}
				if c.Status() == 404 {
					c.SetStatus(410)
					c.Header().Set("X-Was", "404")
				}
				return c.Pass(bs...)
			}))
		},
	}
	s := startServer(t, Config{Modules: []Module{upper}})
	c := dial(t, s)
	br := bufio.NewReader(c)
	_, body := exchange(t, c, br, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	if body != "HELLO, WORLD!" {
		t.Fatalf("transformed body %q", body)
	}
	resp, body := exchange(t, c, br, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	if resp.StatusCode != 410 || resp.Header.Get("X-Was") != "404" || !strings.Contains(body, "404 PAGE NOT FOUND") {
		t.Fatalf("status change: %d %v %q", resp.StatusCode, resp.Header, body)
	}
}
