package stages

import (
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// OpenLoop returns what every event loop sleeps on: a poller, and a
// LoopWaker whose eventfd is registered in it under wakeToken, so that a
// hand-off into the loop's queue wakes it. The caller owns both and closes
// the waker, then the poller.
func OpenLoop(wakeToken uint64) (*poll.Poller, *LoopWaker, error) {
	p, err := poll.New()
	if err != nil {
		return nil, nil, err
	}
	w, err := NewLoopWaker()
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	if err := p.Add(w.Fd(), unix.EPOLLIN, wakeToken); err != nil {
		w.Close()
		p.Close()
		return nil, nil, err
	}
	return p, w, nil
}
