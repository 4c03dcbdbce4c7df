package stages

import "github.com/quartet-server/quartet/internal/poll"

// OpenLoop returns what every event loop sleeps on: a poller, and a
// LoopWaker whose eventfd is registered in it under wakeToken, so that a
// hand-off into the loop's queue wakes it. The caller owns both and closes
// the waker, then the poller.
func OpenLoop(wakeToken poll.Token) (*poll.Poller, *LoopWaker, error) {
	p, err := poll.New()
	if err != nil {
		return nil, nil, err
	}
	w, err := NewLoopWaker()
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	if err := p.Add(w.Fd(), poll.Readable, wakeToken); err != nil {
		w.Close()
		p.Close()
		return nil, nil, err
	}
	return p, w, nil
}

// wakerToken is the waker's registration in the tests' pollers.
var wakerToken = poll.MakeToken(poll.KindWaker, 0, 0)
