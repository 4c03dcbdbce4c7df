package rdma

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Memory is memory that Go's heap does not own, so it can be registered
// with a device: the garbage collector never moves or frees it and cgo
// may hand it to C. It comes from an anonymous mapping (Alloc) or a file
// mapping (MapFile). The owner must call Free after every MR over it is
// closed; Memory has no finalizer, so a leak is a leak, and tests prove
// none.
type Memory struct {
	b    []byte // the caller's view: exactly the requested length
	full []byte // the whole mapping, page aligned, for munmap
}

// Alloc maps n bytes of zeroed, page-aligned anonymous memory.
func Alloc(n int) (*Memory, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: Alloc(%d)", ErrInvalid, n)
	}
	size := roundPage(n)
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return &Memory{b: b[:n], full: b}, nil
}

// MapFile maps n bytes of f starting at off read-only, for zero-copy
// response bodies: register it with AccessRemoteRead only (a peer
// RDMA-reads the file pages) or use it as the source of RDMA Writes. off
// need not be page aligned.
//
// The mapping is MAP_PRIVATE: Linux (6.1, measured on siw and rxe)
// refuses to pin read-only MAP_SHARED file pages for ibv_reg_mr (EFAULT),
// while a read-only private mapping registers and, never written, still
// maps the page cache itself, so no copy is made and changes to the file
// show through. Truncating the file under it makes access fault
// (SIGBUS), as with any mmap: serve files that are not truncated in
// place.
func MapFile(f *os.File, off int64, n int) (*Memory, error) {
	if n <= 0 || off < 0 {
		return nil, fmt.Errorf("%w: MapFile(off=%d, n=%d)", ErrInvalid, off, n)
	}
	pg := int64(os.Getpagesize())
	base := off &^ (pg - 1)
	skip := int(off - base)
	b, err := unix.Mmap(int(f.Fd()), base, roundPage(skip+n), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return &Memory{b: b[skip : skip+n], full: b}, nil
}

// Bytes is the memory; it dies with Free.
func (m *Memory) Bytes() []byte { return m.b }

// Len is the usable length (what was asked for).
func (m *Memory) Len() int { return len(m.b) }

// Free unmaps the memory. Using Bytes afterwards faults. Free is
// idempotent.
func (m *Memory) Free() error {
	if m.full == nil {
		return nil
	}
	err := unix.Munmap(m.full)
	m.full, m.b = nil, nil
	if err != nil {
		return os.NewSyscallError("munmap", err)
	}
	return nil
}

func roundPage(n int) int {
	pg := os.Getpagesize()
	return (n + pg - 1) &^ (pg - 1)
}
