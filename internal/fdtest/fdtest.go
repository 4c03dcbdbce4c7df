// Package fdtest counts a test process's open file descriptors, for the
// tests that show a resource released (every fd has an owner, and a test
// that shows it is let go). It reads /proc/self/fd, and skips a test where
// that cannot be read (not Linux).
package fdtest

import (
	"os"
	"strconv"
	"testing"
)

// FD is an open descriptor and what it is open on: the target of its
// /proc/self/fd link, a path ("/proc/stat") or a name such as
// "anon_inode:[io_uring]" or "socket:[1234]".
type FD struct {
	Num    int
	Target string
}

// Count is how many descriptors the process has open, not counting the
// one that reading /proc/self/fd takes.
func Count(t testing.TB) int {
	t.Helper()
	return len(list(t)) - 1
}

// Open lists the descriptors open on what match accepts.
func Open(t testing.TB, match func(target string) bool) []FD {
	t.Helper()
	var fds []FD
	for _, e := range list(t) {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !match(target) {
			continue // closed since the listing (the listing's own, too)
		}
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, FD{n, target})
		}
	}
	return fds
}

// On is how many descriptors are open on the file at path.
func On(t testing.TB, path string) int {
	t.Helper()
	return len(Open(t, func(target string) bool { return target == path }))
}

func list(t testing.TB) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return ents
}
