package static_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/static"
)

// BenchmarkDirInline is a cached 4 KiB file served as a reader loop serves
// it: Dir.Inline, then the handler through an InlineServer, which builds
// the head and copies the body after it from memory (a file this small is
// held there, Options.InMemory: 800 ns without the copy, with a file
// bucket for sendfile), and the response taken and recycled as
// writer.Direct would (without its syscalls). Steady state allocates
// nothing.
//
//	go test -run '^$' -bench DirInline -count 6 ./static
func BenchmarkDirInline(b *testing.B) {
	root := b.TempDir()
	if err := os.WriteFile(filepath.Join(root, "4k.bin"), make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	d, err := static.NewDir(root)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var pool *processor.Pool
	resp := stages.NewResponse(func(*stages.Response) {}, func(r *stages.Response) {
		r.RunCleanups()
		pool.Release(r)
	})
	pool = processor.New(processor.Config{Workers: 1}, stages.NewClassQueue(2, nil), stages.NewWorkerWaker(1), d,
		func() *stages.Response { return resp }, &stages.StageCounters{})
	in := pool.NewInline()
	req := &stages.Request{Conn: &stages.Conn{ID: 1}, Method: []byte("GET"), Target: []byte("/4k.bin"), Path: []byte("/4k.bin"),
		Major: 1, Minor: 1, ContentLength: -1, Headers: []stages.Header{{Name: []byte("Host"), Value: []byte("localhost")}}}
	var bufs []stages.Bucket
	serve := func() {
		r := in.Serve(req)
		var eos bool
		bufs, eos = r.TakeOut(bufs[:0])
		for i := range bufs {
			if n := bufs[i].Size(); n > 0 {
				r.Sent(n, pool.LowWater())
			}
		}
		clear(bufs)
		if !eos || r.Status != 200 {
			b.Fatalf("status %d, eos %v", r.Status, eos)
		}
		r.MarkQueued()
		r.Finish()
	}
	serve() // opens the file into the cache
	b.ReportAllocs()
	for b.Loop() {
		d.Inline(req) // false once a second, when the file is due for a stat
		serve()
	}
}
