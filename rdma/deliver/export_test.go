package deliver

import (
	"fmt"

	"github.com/quartet-server/quartet/rdma"
)

// BreakChannels makes every post on the channels writer loop w holds now
// fail as a post on a QP that failed before its loop heard of it does
// (rdma.ErrQPState), and returns how many it broke: the state a
// Terminate still on its way to the CQ leaves a channel in.
func (e *Engine) BreakChannels(w int) int {
	lp := e.loopAt(w)
	lp.mu.Lock()
	chans := make([]*channel, 0, len(lp.chans))
	for _, ch := range lp.chans {
		chans = append(chans, ch)
	}
	lp.mu.Unlock()
	for _, ch := range chans {
		ch.postMu.Lock()
		lp.mu.Lock()
		ch.qp = brokenQP{ch.qp}
		lp.mu.Unlock()
		ch.postMu.Unlock()
	}
	return len(chans)
}

type brokenQP struct{ rdma.QP }

var errBroken = fmt.Errorf("%w: broken by the test", rdma.ErrQPState)

func (brokenQP) PostSend(uint64, []rdma.SGE, rdma.SendFlags) error { return errBroken }
func (brokenQP) PostWrite(uint64, []rdma.SGE, uint64, uint32, rdma.SendFlags) error {
	return errBroken
}
func (brokenQP) BindMW(uint64, rdma.MW, rdma.MR, rdma.SGE, rdma.Access, rdma.SendFlags) (uint32, error) {
	return 0, errBroken
}
