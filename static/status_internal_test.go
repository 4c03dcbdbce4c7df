package static

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"syscall"
	"testing"
)

// Each way a file can fail to open gets the status that tells the client
// the truth: gone (404), forbidden (403), try again (503), or the
// server's fault (500). A full fd table must never read as "not found".
func TestOpenStatus(t *testing.T) {
	pathErr := func(errno syscall.Errno) error { return &fs.PathError{Op: "openat", Path: "a/b.txt", Err: errno} }
	for _, tt := range []struct {
		err  error
		want int
	}{
		{pathErr(syscall.ENOENT), http.StatusNotFound},
		{pathErr(syscall.ENOTDIR), http.StatusNotFound},
		{pathErr(syscall.ENAMETOOLONG), http.StatusNotFound},
		{pathErr(syscall.ELOOP), http.StatusNotFound},
		{pathErr(syscall.ENXIO), http.StatusNotFound}, // a unix socket
		{fs.ErrNotExist, http.StatusNotFound},         // the Dir's verdict on a FIFO or a device
		{&fs.PathError{Op: "openat", Path: "../x", Err: errors.New("path escapes from parent")}, http.StatusNotFound},
		{pathErr(syscall.EACCES), http.StatusForbidden},
		{pathErr(syscall.EPERM), http.StatusForbidden},
		{pathErr(syscall.EMFILE), http.StatusServiceUnavailable},
		{pathErr(syscall.ENFILE), http.StatusServiceUnavailable},
		{pathErr(syscall.ENOMEM), http.StatusServiceUnavailable},
		{fmt.Errorf("stat: %w", os.NewSyscallError("fstatat", syscall.EMFILE)), http.StatusServiceUnavailable},
		{pathErr(syscall.EAGAIN), http.StatusServiceUnavailable}, // a lease, with O_NONBLOCK
		{pathErr(syscall.EIO), http.StatusInternalServerError},
		{pathErr(syscall.ESTALE), http.StatusInternalServerError},
	} {
		if got := openStatus(tt.err); got != tt.want {
			t.Errorf("openStatus(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
