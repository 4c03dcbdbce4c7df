package reader

import (
	"github.com/quartet-server/quartet/internal/poll"
)

// Batched reads.
//
// A turn's events name the connections with bytes to read. Read one by
// one, k events cost k read(2)s; with a ring (BatchReads) the loop
// queues a recv for each connection that will be read from its first
// byte and makes one io_uring_enter for all of them (gather), before it
// handles the events. Each connection's read then takes its result
// instead of calling read (readSome): the same bytes, the same EOF or
// error, in the same place in the same buffer. Only the system calls are
// fewer.
//
// Only what would be read first is gathered: a connection idle, or with
// a head begun and nothing buffered past what was parsed. One whose
// buffer holds bytes parses them before it reads (and may not read at
// all), and the other states read elsewhere or not at all. A turn with
// one such connection reads it as before: one recv in a ring costs no
// less than a read.

// RingEntries is the size of the ring BatchReads takes: a turn's events
// are at most 128 (stages.Loop), and a longer submission saves nothing
// more than two.
const RingEntries = 64

// gatherMin is the fewest connections gather reads together: one recv in
// a ring costs no less than a read. The reader's tests set it to 1, so
// that every read they cause at a request's start goes through the ring.
const gatherMin = 2

// BatchReads gives the loop a ring to read with (poll.NewRing, of
// RingEntries), which the loop owns from then: Run closes it as it
// returns. Call it before Run.
func (l *Loop) BatchReads(ring *poll.Ring) { l.ring = ring }

// ReadCounts is how many reads gather made, and in how many system
// calls. Any goroutine.
func (l *Loop) ReadCounts() (reads, batches uint64) {
	return l.readsGathered.Load(), l.readBatches.Load()
}

// gather reads, in one system call, for every connection among evs that
// its event will read first.
func (l *Loop) gather(evs []poll.Event) {
	if l.ring == nil || len(evs) < l.gatherMin {
		return
	}
	l.gathered = l.gathered[:0]
	for _, ev := range evs {
		slot := int32(ev.Token.Slot())
		rc := l.conn(slot)
		if ev.Token.Kind() != poll.KindConn || rc == nil || !ev.Token.Matches(rc.gen) {
			continue
		}
		if rc.state != stateIdle && rc.state != stateHeader || rc.work != nil && rc.end > rc.start {
			continue
		}
		l.gathered = append(l.gathered, slot)
	}
	if len(l.gathered) < l.gatherMin {
		return
	}
	for _, slot := range l.gathered {
		rc := l.conns[slot]
		l.takeWork(rc)
		if rc.end == len(rc.buf) {
			continue // readSome makes room first
		}
		if l.ring.Queued() == l.ring.Cap() && !l.submitGathered() {
			return // the rest read as before
		}
		l.ring.Recv(rc.c.FD, rc.buf[rc.end:], uint64(slot))
		rc.pre = preQueued
	}
	l.submitGathered()
}

// submitGathered makes the queued recvs and gives each connection its
// result. It reports false if the ring failed as a whole (not one recv):
// whether the kernel made the recvs it did not report is unknown, so
// their connections get the error, which closes them, rather than a
// stream with a hole in it; and the loop reads each from then on, as
// the send path does (writer/batch.go).
func (l *Loop) submitGathered() bool {
	if l.ring.Queued() == 0 {
		return true
	}
	made := uint64(0)
	err := l.ring.Submit(func(tag uint64, n int, err error) {
		rc := l.conns[tag]
		rc.pre, rc.preN, rc.preErr = preDone, n, err
		made++
	})
	l.readBatches.Add(1)
	l.readsGathered.Add(made) // one atomic a batch, not one a read
	if err == nil {
		return true
	}
	for _, slot := range l.gathered {
		if rc := l.conns[slot]; rc.work != nil && rc.pre == preQueued {
			rc.pre, rc.preN, rc.preErr = preDone, 0, err
		}
	}
	l.ring.Close()
	l.ring = nil
	return false
}

// A request record's gathered read (work.pre).
const (
	preNone   = iota
	preQueued // on the ring, not yet submitted
	preDone   // preN and preErr are what read would have returned
)
