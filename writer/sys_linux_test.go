package writer

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkSmallWrite is the kernel's cost of a small response (147
// bytes, /hello's) in one buffer, by write and by a one-element writev,
// over loopback TCP with a client draining it: why writev sends a single
// buffer by write (writev first copies and checks the iovec array).
//
//	go test -run '^$' -bench SmallWrite -count 6 ./writer
func BenchmarkSmallWrite(b *testing.B) {
	msg := pattern(3, 147)
	for _, bc := range []struct {
		name string
		call func(fd int, iov []unix.Iovec) (uintptr, unix.Errno)
	}{
		{"write", func(fd int, iov []unix.Iovec) (uintptr, unix.Errno) {
			n, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(iov[0].Base)), uintptr(iov[0].Len))
			return n, e
		}},
		{"writev", func(fd int, iov []unix.Iovec) (uintptr, unix.Errno) {
			n, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			return n, e
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fd, client := tcpPair(b, 0, 0)
			go func() { _, _ = io.Copy(io.Discard, client) }()
			iov := []unix.Iovec{{Base: &msg[0]}}
			iov[0].SetLen(len(msg))
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				for {
					_, e := bc.call(fd, iov)
					if e == 0 {
						break
					}
					if e != unix.EAGAIN && e != unix.EINTR {
						b.Fatal(e)
					}
				}
			}
		})
	}
}

// TestPageCached: the look-up that lets sendfile go raw says yes only when
// every page of the region is in the page cache.
func TestPageCached(t *testing.T) {
	const size = 256 << 10
	f := cacheFile(t, size)
	fd := int(f.Fd())
	tests := []struct {
		name   string
		off    int64
		n      int
		cached bool
	}{
		{"whole file, just written", 0, size, true},
		{"a page-unaligned middle", 5000, 100 << 10, true},
		{"past the end", size - 4096, 64 << 10, false},
	}
	for _, tt := range tests {
		if got := pageCached(fd, tt.off, tt.n); got != tt.cached {
			t.Errorf("%s: pageCached(%d, %d) = %v", tt.name, tt.off, tt.n, got)
		}
	}
	if pageCached(-1, 0, size) {
		t.Error("a bad fd reported cached")
	}
	dropPages(t, f, size)
	if pageCached(fd, 0, size) {
		t.Error("the dropped file reported cached")
	}
}

// cacheFile writes size bytes to a new file, whose pages are then in the
// page cache, and opens it; it skips the test where cachestat(2) is
// missing. Not in t.TempDir if it can be helped: /tmp may be tmpfs, whose
// pages cannot be dropped (dropPages).
func cacheFile(t *testing.T, size int) *os.File {
	t.Helper()
	dir, err := os.MkdirTemp(".", "cachestat-")
	if err != nil {
		dir = t.TempDir() // a read-only source tree
	} else {
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	f, err := os.Create(filepath.Join(dir, "region"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(pattern(9, size)); err != nil {
		t.Fatal(err)
	}
	rng := unix.CachestatRange{Len: uint64(size)}
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &rng, &st, 0); err != nil {
		t.Skipf("no cachestat here (%v): sendfile is never raw, which the other tests cover", err)
	}
	return f
}

// dropPages writes f back and drops its pages from the page cache, or
// skips the rest of the test where the file system keeps them.
func dropPages(t *testing.T, f *os.File, size int) {
	t.Helper()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	rng := unix.CachestatRange{Len: uint64(size)}
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(fd), &rng, &st, 0); err != nil || st.Cache == uint64(size/unix.Getpagesize()) {
		t.Skipf("the file system kept the pages (%+v, %v)", st, err)
	}
}

// TestResidentMemo: a region found in the page cache is not looked up
// again within residentFor, whatever part of it is sent; past that, or
// for another file or a region it does not cover, it is; and a region
// not in the page cache is looked up at every send.
func TestResidentMemo(t *testing.T) {
	const size = 256 << 10
	f := cacheFile(t, size)
	var m residentMemo
	check := func(what string, f *os.File, off int64, n int, cached bool, lookups int) {
		t.Helper()
		if got := m.cached(f, off, n); got != cached || m.lookups != lookups {
			t.Errorf("%s: cached %v after %d look-ups, want %v after %d", what, got, m.lookups, cached, lookups)
		}
	}
	check("first send", f, 0, size, true, 1)
	for range 100 {
		check("sent again", f, 0, size, true, 1)
	}
	check("the rest of a send cut short", f, 64<<10, size-64<<10, true, 1)
	check("a region past the one remembered", f, 64<<10, size, false, 2)

	// More hot files than the memo holds: the oldest is looked up again.
	others := make([]*os.File, residentRegions)
	for i := range others {
		others[i] = cacheFile(t, 64<<10)
		check("another file", others[i], 0, 64<<10, true, 3+i)
	}
	check("the file pushed out", f, 0, size, true, 3+residentRegions)
	check("the newest other file", others[residentRegions-1], 0, 64<<10, true, 3+residentRegions)

	// Past residentFor the answer is not trusted: a file dropped from the
	// page cache meanwhile is found out, and looked up at every send.
	for i := range m.regions {
		m.regions[i].at = m.regions[i].at.Add(-residentFor)
	}
	dropPages(t, f, size)
	check("expired, and dropped", f, 0, size, false, 4+residentRegions)
	check("dropped, sent again", f, 0, size, false, 5+residentRegions)
}
