//go:build !linux

package writer

import (
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// writev: the raw syscall is Linux's way; the writer does not run
// elsewhere (see internal/poll), and never gets here.
func writev(int, []unix.Iovec, bool) (int, error) { return -1, poll.Unsupported("writev") }

// cork: TCP_CORK is Linux's; the writer does not run elsewhere.
func cork(int, bool) bool { return false }

// sendfile: Linux's; the writer does not run elsewhere.
func sendfile(int, int, *int64, int, bool) (int, error) { return -1, poll.Unsupported("sendfile") }

// pageCached: cachestat(2) is Linux's; the writer does not run elsewhere.
func pageCached(int, int64, int) bool { return false }
