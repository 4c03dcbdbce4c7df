//go:build !linux

package stages

import "github.com/quartet-server/quartet/internal/poll"

// newEventfd: eventfd is Linux's; see internal/poll for why there is no
// second implementation.
func newEventfd() (int, error) { return -1, poll.Unsupported("eventfd") }
