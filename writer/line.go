package writer

import "github.com/quartet-server/quartet/stages"

// One response of a connection at a time (Config.Serialize).
//
// A pipelined protocol's connection may have several responses kicked to
// its writer loop at once, by different processors, in any order. The
// loop writes them one after another, each whole: the first to arrive
// takes the connection's turn, the others wait in its line (their record
// stages.InLine) and start, in arrival order, as the one ahead ends. The
// order in which requests may be answered is the reader's business (it
// dispatches a request that may not overtake only once the earlier ones
// are answered); the loop keeps only the wire whole.
//
// A response waiting in line was kicked once and not taken out: its
// queued mark stays set, so its later kicks coalesce into nothing and no
// queue entry for it is left behind when its turn comes, at which the
// loop takes it out itself.

// line is a connection's response being written and those waiting.
type line struct {
	owner   *stages.Response
	waiting []*stages.Response
}

// myTurn reports whether r, not started, may be written now; if not, it
// puts r in its connection's line.
func (l *Loop) myTurn(r *stages.Response) bool {
	if l.lines == nil {
		l.lines = make(map[*stages.Conn]*line)
	}
	ln := l.lines[r.Conn]
	if ln == nil {
		if n := len(l.spareLine); n > 0 {
			ln = l.spareLine[n-1]
			l.spareLine = l.spareLine[:n-1]
		} else {
			ln = new(line)
		}
		ln.owner = r
		l.lines[r.Conn] = ln
		return true
	}
	if ln.owner == r {
		return true
	}
	ln.waiting = append(ln.waiting, r)
	r.SetRecord(stages.InLine)
	return false
}

// passTurn ends the turn of c's response being written: the next one in
// line starts in the loop's next turn.
func (l *Loop) passTurn(c *stages.Conn) {
	ln := l.lines[c]
	if ln == nil {
		return
	}
	if len(ln.waiting) == 0 {
		delete(l.lines, c)
		ln.owner = nil
		l.spareLine = append(l.spareLine, ln)
		return
	}
	next := ln.waiting[0]
	copy(ln.waiting, ln.waiting[1:])
	ln.waiting[len(ln.waiting)-1] = nil
	ln.waiting = ln.waiting[:len(ln.waiting)-1]
	ln.owner = next
	next.SetRecord(stages.NoRecord)
	l.turns = append(l.turns, next)
}

// serveTurns starts the responses whose turn has come; those whose turn
// comes meanwhile (a response that is written at once) start too.
func (l *Loop) serveTurns() {
	for i := 0; i < len(l.turns); i++ {
		l.take(l.turns[i])
		l.turns[i] = nil
	}
	l.turns = l.turns[:0]
}
