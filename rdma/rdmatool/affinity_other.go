//go:build !linux

package rdmatool

import "github.com/quartet-server/quartet/internal/poll"

// bindThread needs sched_setaffinity, which is Linux's.
func bindThread(int) (func() bool, error) { return nil, poll.Unsupported("rdmatool: -cpu") }
