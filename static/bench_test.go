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
	d := benchDir(b)
	req := benchReq()
	serve := inlineServer(b, d, req)
	serve() // opens the file into the cache
	b.ReportAllocs()
	for b.Loop() {
		d.Inline(req) // false once a second, when the file is due for a stat
		serve()
	}
}

// BenchmarkDirInlineParallel is BenchmarkDirInline on every P at once, as
// reader loops on several cores serve one hot file: what they share (the
// cache's index, the entry, the counters) is what it measures. ns/op is
// wall time per request across all of them; on n cores with nothing
// shared it would be BenchmarkDirInline's / n.
//
//	go test -run '^$' -bench DirInline -cpu 1,2 -count 6 ./static
func BenchmarkDirInlineParallel(b *testing.B) {
	d := benchDir(b)
	inlineServer(b, d, benchReq())() // opens the file into the cache
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := benchReq()
		serve := inlineServer(b, d, req)
		for pb.Next() {
			d.Inline(req)
			serve()
		}
	})
}

// benchReq asks for benchDir's file, on a connection of its own.
func benchReq() *stages.Request {
	return &stages.Request{Conn: &stages.Conn{ID: 1}, Method: []byte("GET"), Target: []byte("/4k.bin"), Path: []byte("/4k.bin"),
		Major: 1, Minor: 1, ContentLength: -1, Headers: []stages.Header{{Name: []byte("Host"), Value: []byte("localhost")}}}
}

// benchDir is a Dir with one 4 KiB file, 4k.bin.
func benchDir(b *testing.B) *static.Dir {
	root := b.TempDir()
	if err := os.WriteFile(filepath.Join(root, "4k.bin"), make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	d, err := static.NewDir(root)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

// inlineServer returns a function that serves req from d as a reader loop
// would, with a pool and a response of its own.
func inlineServer(b *testing.B, d *static.Dir, req *stages.Request) func() {
	var pool *processor.Pool
	resp := stages.NewResponse(func(*stages.Response) {}, func(r *stages.Response) {
		r.RunCleanups()
		pool.Release(r)
	})
	pool = processor.New(processor.Config{Workers: 1}, stages.NewClassQueue(2, nil), stages.NewWorkerWaker(1), d,
		func() *stages.Response { return resp }, &stages.StageCounters{})
	in := pool.NewInline(0)
	var bufs []stages.Bucket
	return func() {
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
}
