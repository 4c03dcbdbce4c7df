package soft

// Completion queues (siw_cq.c) with an eventfd for notification.
//
// The CQ is a ring of rdma.Completion behind a mutex: producers are the
// QPs' transmit and receive goroutines, the consumer is the CQ's owner.
// Notification follows verbs: Arm requests one event; the next
// completion that qualifies (any, or with solicitedOnly only solicited
// receives and errors) writes 1 to the eventfd and disarms. The eventfd
// stays readable until Consume reads it, so it works level-triggered in
// any poller.

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/rdma"
)

const (
	armNone      = 0
	armAll       = 1
	armSolicited = 2
)

type cq struct {
	dev *device
	fd  int

	mu       sync.Mutex
	ring     []rdma.Completion
	head, n  int
	armed    int
	overflow bool
	closed   bool

	qps   atomic.Int32 // QPs using this CQ
	one   [8]byte      // the eventfd increment, kept here so writes allocate nothing
	reads [8]byte      // Consume's read buffer (owner goroutine only)
}

var _ rdma.CQ = (*cq)(nil)

func newCQ(d *device, depth int) (*cq, error) {
	if depth <= 0 || depth > maxCQE {
		return nil, &rdma.VerbError{Verb: "ibv_create_cq", Errno: einval}
	}
	fd, err := newEventfd(false)
	if err != nil {
		return nil, err
	}
	c := &cq{dev: d, fd: fd, ring: make([]rdma.Completion, depth)}
	binary.NativeEndian.PutUint64(c.one[:], 1)
	return c, nil
}

func (c *cq) Fd() int { return c.fd }

func (c *cq) Arm(solicitedOnly bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return rdma.ErrClosed
	}
	if solicitedOnly {
		if c.armed != armAll {
			c.armed = armSolicited
		}
	} else {
		c.armed = armAll
	}
	return nil
}

func (c *cq) Consume() (int, error) {
	n, err := unix.Read(c.fd, c.reads[:])
	if err == unix.EAGAIN {
		return 0, nil
	}
	if err != nil {
		return 0, os.NewSyscallError("read eventfd", err)
	}
	if n != 8 {
		return 0, fmt.Errorf("soft: short eventfd read (%d bytes)", n)
	}
	return int(binary.NativeEndian.Uint64(c.reads[:])), nil
}

// Poll returns the overflow as an error once the ring is drained, as a
// verbs CQ reports IBV_EVENT_CQ_ERR: completions were lost and the QPs
// using it cannot be trusted.
func (c *cq) Poll(dst []rdma.Completion) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := 0
	for k < len(dst) && c.n > 0 {
		dst[k] = c.ring[c.head]
		c.head++
		if c.head == len(c.ring) {
			c.head = 0
		}
		c.n--
		k++
	}
	if k == 0 && c.overflow {
		return 0, fmt.Errorf("%w: completion queue overflow", rdma.ErrQueueFull)
	}
	return k, nil
}

// push adds one completion and signals the eventfd if armed for it.
// solicited marks a receive of a Send with Solicited Event.
func (c *cq) push(wc rdma.Completion, solicited bool) {
	c.mu.Lock()
	if c.n == len(c.ring) {
		c.overflow = true
	} else {
		i := c.head + c.n
		if i >= len(c.ring) {
			i -= len(c.ring)
		}
		c.ring[i] = wc
		c.n++
	}
	signal := c.armed == armAll || (c.armed == armSolicited && (solicited || wc.Status != rdma.StatusSuccess))
	if signal {
		c.armed = armNone
	}
	closed := c.closed
	c.mu.Unlock()
	if signal && !closed {
		// EAGAIN only if the counter is at its maximum, which cannot
		// happen with one increment per arm.
		_, _ = unix.Write(c.fd, c.one[:])
	}
}

func (c *cq) Close() error {
	if c.qps.Load() != 0 {
		return fmt.Errorf("%w: CQ used by %d QPs", rdma.ErrBusy, c.qps.Load())
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.dev.objs.Add(-1)
	return os.NewSyscallError("close eventfd", unix.Close(c.fd))
}
