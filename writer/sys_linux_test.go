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
	// Not t.TempDir if it can be helped: /tmp may be tmpfs, whose pages
	// cannot be dropped (the last check then skips).
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
	defer f.Close()
	const size = 256 << 10
	if _, err := f.Write(pattern(9, size)); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	rng := unix.CachestatRange{Len: size}
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(fd), &rng, &st, 0); err != nil {
		t.Skipf("no cachestat here (%v): sendfile is never raw, which the other tests cover", err)
	}
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
	// Written back and dropped, the pages are no longer there.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if err := unix.Cachestat(uint(fd), &rng, &st, 0); err != nil || st.Cache == size/uint64(unix.Getpagesize()) {
		t.Skipf("the file system kept the pages (%+v, %v)", st, err)
	}
	if pageCached(fd, 0, size) {
		t.Error("the dropped file reported cached")
	}
}
