package runtime

import (
	"time"

	"github.com/quartet-server/quartet/listener"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/writer"
)

// episode follows, for the log, a condition that comes and goes while the
// server serves: admission control refusing requests, the listeners
// paused at the connection limit. Its lines are a WARN when it begins, a
// reminder once a minute while it goes on, and an INFO when it has not
// been seen for episodeQuiet, each with its counts: three lines for an
// episode of any size, where before there was nothing in the log (the
// metrics and the access log had it) and a line per event would flood it.
type episode struct {
	since, last, reported time.Time // zero since: none going on
	events, other         uint64    // since it began: what it counts (refusals), and the count its lines carry beside (admissions)
	eventsReported        uint64    // events at the last line
}

// An episode's turn: what its log should say after a period.
type episodeTurn uint8

const (
	episodeQuietly episodeTurn = iota
	episodeBegan
	episodeGoesOn // a reminder is due
	episodeEnded
)

const (
	// episodeQuiet ends an episode: long enough that a load hovering at
	// a limit is one episode, not a line every few periods.
	episodeQuiet = 5 * time.Second
	// episodeReminder is how often an episode that goes on is reported.
	episodeReminder = time.Minute
)

// note takes one period's events and other count at now, and returns
// what the log should say and the episode as that line reports it.
func (e *episode) note(now time.Time, events, other uint64) (episodeTurn, episode) {
	return e.noteQuiet(now, events, other, episodeQuiet)
}

// noteQuiet is note for an episode that ends after quiet without events.
func (e *episode) noteQuiet(now time.Time, events, other uint64, quiet time.Duration) (episodeTurn, episode) {
	if e.since.IsZero() {
		if events == 0 {
			return episodeQuietly, *e
		}
		*e = episode{since: now, last: now, reported: now, events: events, other: other, eventsReported: events}
		return episodeBegan, *e
	}
	e.events += events
	e.other += other
	if events > 0 {
		e.last = now
	}
	was := *e
	switch {
	case now.Sub(e.last) >= quiet:
		*e = episode{}
		return episodeEnded, was
	case now.Sub(e.reported) >= episodeReminder:
		e.reported, e.eventsReported = now, e.events
		return episodeGoesOn, was
	}
	return episodeQuietly, was
}

// end ends the episode going on, if one is: the server stops.
func (e *episode) end() (episode, bool) {
	was := *e
	*e = episode{}
	return was, !was.since.IsZero()
}

// lasted is from the episode's first event to its last.
func (e episode) lasted() time.Duration { return e.last.Sub(e.since).Round(time.Millisecond) }

// noteOverload logs admission control's refusals (shed) as episodes.
func (s *Server) noteOverload(now time.Time, shed, admitted uint64) {
	turn, e := s.tuner.overload.note(now, shed, admitted)
	switch turn {
	case episodeBegan:
		s.cfg.Logger.Warn("quartet: overloaded: refusing with 503 the requests that would wait longer than the queue-wait target",
			"queue_wait_target", s.cfg.QueueWaitTarget, "refused", e.events, "admitted", e.other)
	case episodeGoesOn:
		s.cfg.Logger.Warn("quartet: still overloaded", "for", now.Sub(e.since).Round(time.Second),
			"refused", e.events, "refused_since_last_line", e.events-e.eventsReported, "admitted", e.other)
	case episodeEnded:
		s.overloadOver(e, "")
	}
}

func (s *Server) overloadOver(e episode, why string) {
	s.cfg.Logger.Info("quartet: overload over"+why, "lasted", e.lasted(), "refused", e.events, "admitted", e.other)
}

// noteConnLimit logs the listeners' stops at MaxConns as episodes: new
// clients wait in the backlog meanwhile, which from outside looks like a
// server that has stopped answering. A period counts if a listener
// paused in it or is paused at its end: at the limit with no connection
// closing, an accept loop pauses once and stays paused.
func (s *Server) noteConnLimit(now time.Time) {
	if s.cfg.MaxConns <= 0 {
		return
	}
	var pauses uint64
	atLimit := false
	for _, ln := range [...]*listener.Listener{s.ln, s.msgLn} {
		if ln != nil {
			pauses += ln.Paused.Load()
			atLimit = atLimit || ln.AtLimit()
		}
	}
	t := &s.tuner
	seen := pauses - t.prevPauses
	t.prevPauses = pauses
	if atLimit && seen == 0 {
		seen = 1
	}
	turn, e := t.atLimit.note(now, seen, 0)
	switch turn {
	case episodeBegan:
		s.cfg.Logger.Warn("quartet: at the connection limit: new clients wait in the backlog until connections close",
			"max_conns", s.cfg.MaxConns)
	case episodeGoesOn:
		s.cfg.Logger.Warn("quartet: still at the connection limit", "for", now.Sub(e.since).Round(time.Second), "max_conns", s.cfg.MaxConns)
	case episodeEnded:
		s.connLimitOver(e, "")
	}
}

func (s *Server) connLimitOver(e episode, why string) {
	s.cfg.Logger.Info("quartet: below the connection limit again"+why, "lasted", e.lasted(), "max_conns", s.cfg.MaxConns)
}

// noteSlowClients logs as episodes the cut-offs of clients slower than
// the server's limits (HeaderTimeout for a request partly received,
// MinBodyRate, MinResponseRate, WriteTimeout), from
// the loops' counts now (loopSums): one such client is a client's
// problem, a stream of them is a slow network, a misjudged limit, or an
// attack holding connections open, and an operator should not have to
// be watching /metrics to learn of it.
func (s *Server) noteSlowClients(now time.Time, counts loopCounts) {
	t := &s.tuner
	prev := t.slowSeen
	t.slowSeen = counts
	seen := cutOff(counts) - cutOff(prev) // loopSums never go back
	turn, e := t.slow.noteQuiet(now, seen, 0, slowQuiet)
	switch turn {
	case episodeBegan:
		t.slowBase = prev
		s.cfg.Logger.Warn("quartet: cutting off slow clients", s.slowAttrs(e, counts)...)
	case episodeGoesOn:
		s.cfg.Logger.Warn("quartet: still cutting off slow clients", append([]any{"for", now.Sub(e.since).Round(time.Second),
			"cut_off_since_last_line", e.events - e.eventsReported}, s.slowAttrs(e, counts)...)...)
	case episodeEnded:
		s.slowClientsOver(e, counts, "")
	}
}

// slowQuiet ends an episode of slow clients. Longer than episodeQuiet:
// a server on the open internet cuts off a slow client now and then
// (a phone that lost its signal), and a trickle of one every half a
// minute is one episode, reminded of once a minute, rather than a WARN
// and an INFO for each: at most two lines a minute however they come.
const slowQuiet = time.Minute

// cutOff is how many clients the loops cut off for being slow.
func cutOff(c loopCounts) uint64 { return c.slowHeaders + c.slowBodies + c.tooSlow + c.timedOut }

// slowAttrs are a slow-client line's counts since the episode began, by
// cause, with the limit each was measured against.
func (s *Server) slowAttrs(e episode, counts loopCounts) []any {
	base := s.tuner.slowBase
	bodyRate, _ := rateInForce(s.cfg.MinBodyRate, s.cfg.MinBodyRateGrace, reader.DefaultMinBodyRate, reader.DefaultMinBodyRateGrace)
	respRate, _ := rateInForce(s.cfg.MinResponseRate, s.cfg.MinResponseRateGrace, writer.DefaultMinRate, writer.DefaultMinRateGrace)
	return []any{"cut_off", e.events,
		"slow_headers", counts.slowHeaders - base.slowHeaders, "header_timeout", orDefaultDuration(s.cfg.HeaderTimeout, reader.DefaultHeaderTimeout),
		"slow_bodies", counts.slowBodies - base.slowBodies, "min_body_rate", bodyRate,
		"slow_readers", counts.tooSlow - base.tooSlow, "min_response_rate", respRate,
		"write_timeouts", counts.timedOut - base.timedOut, "write_timeout", orDefaultDuration(s.cfg.WriteTimeout, writer.DefaultWriteTimeout)}
}

func orDefaultDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (s *Server) slowClientsOver(e episode, counts loopCounts, why string) {
	s.cfg.Logger.Info("quartet: no slow clients cut off for "+slowQuiet.String()+why,
		append([]any{"lasted", e.lasted()}, s.slowAttrs(e, counts)...)...)
}

// endEpisodes reports the episodes going on when the control loop stops.
func (s *Server) endEpisodes() {
	t := &s.tuner
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.overload.end(); ok {
		s.overloadOver(e, " (at shutdown)")
	}
	if e, ok := t.atLimit.end(); ok {
		s.connLimitOver(e, " (at shutdown)")
	}
	if e, ok := t.slow.end(); ok {
		s.slowClientsOver(e, t.slowSeen, " (at shutdown)")
	}
}
