//go:build !linux

package soft

import "github.com/quartet-server/quartet/internal/poll"

// newEventfd: the provider signals completions on an eventfd, which is
// Linux's, so that they can join a writer loop's poller; on other
// platforms it fails, naming the platform (see internal/poll).
func newEventfd(bool) (int, error) { return -1, poll.Unsupported("rdma/soft: eventfd") }
