package runtime

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/quartet-server/quartet/internal/ratelog"
	"github.com/quartet-server/quartet/stages"
)

// The access logger's buffering: what nginx's access_log buffer= and
// flush= do.
const (
	// AccessLogFlushBytes hands the lines to the flusher once this much
	// has gathered.
	AccessLogFlushBytes = 64 << 10
	// AccessLogFlushEvery writes what has gathered at least this often,
	// so that a quiet server's lines are in the file within a moment.
	AccessLogFlushEvery = 100 * time.Millisecond
	// AccessLogMaxPending bounds the lines waiting for an output that does
	// not take them: beyond it lines are dropped, counted and reported,
	// rather than the server's memory growing with the stall.
	AccessLogMaxPending = 4 << 20
)

// An AccessLogger is an access log for a busy server: its Log, the
// server's Config.Log, only appends the line to a buffer, and a goroutine
// of the logger's own writes the lines out when AccessLogFlushBytes have
// gathered or AccessLogFlushEvery has passed.
//
// Config.Log runs on the writer loop that sent the response, so a Write
// there (AccessLog's) holds that loop and every connection on it for as
// long as the disk takes, and costs a system call a response: logging
// /hello to a file (pinned, wrk -t1 -c100, server CPU from /proc) cost
// 1.3-4.3 µs a request on 10-11 µs written line by line, and 0.0-0.2 µs
// batched. Lines the output will not take (a full disk) or that a stalled
// one leaves to pile up past AccessLogMaxPending are lost, and logged
// through the logger given to NewAccessLogger: the first at once, then
// one line every 10 s with the count.
//
// Call Close after Server.Serve returns: it writes out the last lines.
// SetOutput moves the log (a reopen after logrotate) without losing or
// splitting a line.
type AccessLogger struct {
	mu     sync.Mutex // guards what follows, up to flushMu
	format AccessLogFormat
	w      io.Writer // nil: lines are not kept
	// pending are the lines not yet taken by a flush, lines their number;
	// dropped are those refused since the last flush (pending was full).
	pending        []byte
	lines, dropped int
	closed         bool

	flushMu sync.Mutex // one flush at a time; guards what follows
	spare   []byte     // the buffer pending becomes at the next flush
	// lostLines are the lines lost since the last report.
	lostLines int
	lost      ratelog.Limiter
	logger    *slog.Logger

	kick    chan struct{} // a flush is due: pending passed AccessLogFlushBytes
	stop    chan struct{} // closed by Close
	stopped chan struct{} // closed by the flusher once it has stopped
}

// NewAccessLogger starts an access log writing lines in format f to w (nil:
// none until SetOutput gives one). Lost lines are reported to logger
// (slog.Default() if nil). An unknown format is an error naming the known
// ones. The logger's goroutine runs until Close.
func NewAccessLogger(w io.Writer, f AccessLogFormat, logger *slog.Logger) (*AccessLogger, error) {
	if err := checkAccessLogFormat(f); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	l := &AccessLogger{
		format: f, w: w, logger: logger,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	go l.flusher()
	return l, nil
}

func checkAccessLogFormat(f AccessLogFormat) error {
	if f != Combined && f != CombinedIO {
		return fmt.Errorf("quartet: access log format %q: want %q or %q", f, Combined, CombinedIO)
	}
	return nil
}

// Log gathers r's line; it is the server's Config.Log. It never waits for
// the output, only for another writer loop appending its own line.
func (l *AccessLogger) Log(r *stages.Response) {
	now := time.Now()
	l.mu.Lock()
	if l.w == nil || l.closed {
		l.mu.Unlock()
		return
	}
	if len(l.pending) >= AccessLogMaxPending {
		l.dropped++
		l.mu.Unlock()
		return
	}
	l.pending = AppendAccessLog(l.pending, l.format, r, now)
	l.lines++
	due := len(l.pending) >= AccessLogFlushBytes
	l.mu.Unlock()
	if due {
		select {
		case l.kick <- struct{}{}:
		default: // a kick is waiting already
		}
	}
}

// flusher writes the lines out until Close, which makes the last flush.
func (l *AccessLogger) flusher() {
	defer close(l.stopped)
	t := time.NewTicker(AccessLogFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.kick:
		case <-t.C:
		case <-l.stop:
			return
		}
		l.Flush()
	}
}

// Flush writes what has gathered to the output it gathered for, and
// returns the output's error, if any (the lines are lost then, and
// reported).
func (l *AccessLogger) Flush() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	return l.flushLocked()
}

func (l *AccessLogger) flushLocked() error {
	l.mu.Lock()
	buf, lines, dropped, w := l.pending, l.lines, l.dropped, l.w
	l.pending, l.lines, l.dropped = l.spare[:0], 0, 0
	l.mu.Unlock()
	var err error
	if len(buf) > 0 && w != nil {
		_, err = w.Write(buf)
	}
	l.spare = buf[:0]
	l.lostLines += dropped
	why := err
	if err != nil {
		l.lostLines += lines
	} else if dropped > 0 {
		why = errAccessLogStalled
	}
	if why != nil {
		if log, _ := l.lost.Allow(time.Now()); log {
			l.logger.Error("quartet: access log: lines lost", "output", outputName(w), "err", why, "lines", l.lostLines)
			l.lostLines = 0
		}
	}
	return err
}

// outputName names w in the report of lost lines: a file's name.
func outputName(w io.Writer) string {
	if n, ok := w.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fmt.Sprintf("%T", w)
}

// errAccessLogStalled is why lines were dropped without a failed write.
var errAccessLogStalled = fmt.Errorf("the output took no lines while %d MiB of them gathered (a stalled disk)", AccessLogMaxPending>>20)

// SetOutput moves the log to w (nil: no log) in format f: the lines
// gathered before go to the old output first. The caller closes the old
// output after SetOutput returns, if it is a file to close. An unknown
// format is an error, and changes nothing.
func (l *AccessLogger) SetOutput(w io.Writer, f AccessLogFormat) error {
	if err := checkAccessLogFormat(f); err != nil {
		return err
	}
	// No flush may come between this one and the swap: it would write to
	// the old output after the caller has closed it. Lines gathered after
	// this flush go to w: each is logged once, whole, in one of the two.
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.flushLocked()
	l.mu.Lock()
	l.w, l.format = w, f
	l.mu.Unlock()
	return nil
}

// Close writes out what has gathered and stops the logger's goroutine;
// lines logged after it are not kept. It does not close the output. It
// returns the last flush's error.
func (l *AccessLogger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.stopped
	return l.Flush()
}
