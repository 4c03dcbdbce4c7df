package runtime

import (
	"io"
	"net"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// liveHeap is the heap still reachable after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// After a burst of slow clients has come and gone, the server gives the
// memory back: the reader's connection table shrinks, its stashed read
// buffers and body pipes decay, the writer's record table shrinks, the
// goroutines that stood in for parked handlers exit. Issue 16 measured
// +43 MB kept after each wave of 8,000; here 1,000 slow uploaders (a 64 KiB
// pipe each) and 3,000 clients stuck mid-header (a read buffer each) must
// leave the live heap within a few MiB of where it started.
func TestMemoryReturnsAfterABurstOfSlowClients(t *testing.T) {
	const (
		uploaders = 1000
		headers   = 3000
		bound     = 2 << 20 // generous: the point is tens of MB kept, or not
	)
	// Admission off: the 1,000 uploads arrive at once, and on a slow
	// machine (-race) many wait past the target and the rest are refused,
	// as they should be; the test is about what their memory does.
	s := startServer(t, Config{Readers: 1, Writers: 1, HeaderTimeout: time.Minute, QueueWaitTarget: -1})
	// Warm up what a server holds in any case (pools, the first buffers).
	c := dial(t, s)
	io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	io.Copy(io.Discard, c)
	baseline := liveHeap()

	conns := openClients(t, s, uploaders+headers, func(i int, c net.Conn) {
		if i < uploaders {
			io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\nx")
		} else {
			io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\n")
		}
	})
	if !eventually(30*time.Second, func() bool {
		st := s.Stats()
		return st.Open == len(conns) && st.Slow.Parked == uploaders
	}) {
		st := s.Stats()
		t.Fatalf("%d of %d connections open, %d of %d uploads parked", st.Open, len(conns), st.Slow.Parked, uploaders)
	}
	peak := liveHeap()
	for i, c := range conns {
		c.Close()
		conns[i] = nil // the client's memory is not the server's
	}
	if !eventually(30*time.Second, func() bool { return s.Stats().Open == 0 }) {
		t.Fatalf("%d connections still open", s.Stats().Open)
	}
	gone := time.Now()
	var after uint64
	if !eventually(30*time.Second, func() bool {
		after = liveHeap()
		return after < baseline+bound
	}) {
		t.Fatalf("live heap: %d KiB before the burst, %d KiB with it, %d KiB 30 s after it left (bound +%d KiB)",
			baseline>>10, peak>>10, after>>10, bound>>10)
	}
	t.Logf("live heap: %d KiB before the burst, %d KiB with %d slow clients, %d KiB %v after they left",
		baseline>>10, peak>>10, len(conns), after>>10, time.Since(gone).Round(100*time.Millisecond))
	// And the process gives it to the OS: without a return, the freed
	// heap stays with the process until Go's next forced collection
	// (minutes) and its scavenger.
	if !eventually(30*time.Second, func() bool { return s.Stats().MemoryReturns > 0 }) {
		t.Fatalf("no memory returned 30 s after the burst left (free heap kept: %d KiB)", heapFreeKept()>>10)
	}
	if kept := heapFreeKept(); kept > 16<<20 {
		t.Errorf("%d KiB of free heap kept after the return", kept>>10)
	} else {
		t.Logf("returned %v after they left; free heap kept %d KiB", time.Since(gone).Round(100*time.Millisecond), kept>>10)
	}
}

// heapFreeKept is the heap that is free but not returned to the OS.
func heapFreeKept() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
