package main

import (
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/internal/ratelog"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

// The access log's buffering: what nginx's access_log buffer= and flush=
// do, on by default.
const (
	// accessLogFlushBytes hands the lines to the flusher once this much
	// has gathered.
	accessLogFlushBytes = 64 << 10
	// accessLogFlushEvery writes what has gathered at least this often,
	// so that a quiet server's lines are in the file within a moment.
	accessLogFlushEvery = 100 * time.Millisecond
	// accessLogMaxPending bounds the lines waiting for a disk that does
	// not take them: beyond it lines are dropped, counted and reported,
	// rather than the server's memory growing with the stall.
	accessLogMaxPending = 4 << 20
)

// accessLog is the server's Config.Log: a file that SIGUSR1 reopens and
// SIGHUP may replace, in a format SIGHUP may change.
//
// The writer loops only append each line to a buffer; a goroutine of the
// log's own writes them out, when accessLogFlushBytes have gathered or
// accessLogFlushEvery has passed. A slow or stalled disk never holds a
// writer loop (whose other connections would wait behind it), and a busy
// server makes one write(2) for hundreds of lines instead of one a
// response: logging /hello (pinned, wrk -t1 -c100, server CPU from /proc)
// cost 1.3-4.3 µs a request on 10-11 µs unbuffered, and 0.0-0.2 µs so.
// Lines that the file will not take (a full disk) or that a stalled disk
// leaves to pile up past accessLogMaxPending are lost, and logged: the
// first at once and then every ratelog.DefaultEvery with the count. A
// clean stop writes everything out before the file is closed.
type accessLog struct {
	on     atomic.Bool // checked before the lock: no log, no lock per response
	mu     sync.Mutex  // guards what follows, up to flushMu
	path   string
	format runtime.AccessLogFormat
	w      io.Writer
	f      *os.File // nil for stdout
	// pending are the lines not yet taken by a flush, lines their number;
	// dropped are those refused since the last flush (pending was full).
	pending        []byte
	lines, dropped int

	flushMu sync.Mutex // one flush at a time; guards spare and lostLines
	spare   []byte     // the buffer pending becomes at the next flush
	// lostLines are the lines lost since the last report.
	lostLines int

	kick    chan struct{} // a flush is due: pending passed accessLogFlushBytes
	stop    chan struct{} // closed by close: the flusher's last flush
	stopped chan struct{} // closed by the flusher once it is done
	started bool          // the flusher runs (mu)

	logger *slog.Logger
	lost   ratelog.Limiter
}

func (a *accessLog) log(r *stages.Response) {
	if !a.on.Load() {
		return
	}
	now := time.Now()
	a.mu.Lock()
	if a.w == nil {
		a.mu.Unlock()
		return
	}
	if len(a.pending) >= accessLogMaxPending {
		a.dropped++
		a.mu.Unlock()
		return
	}
	a.pending = runtime.AppendAccessLog(a.pending, a.format, r, now)
	a.lines++
	due := len(a.pending) >= accessLogFlushBytes
	a.mu.Unlock()
	if due {
		select {
		case a.kick <- struct{}{}:
		default: // a kick is waiting already
		}
	}
}

// flusher writes the lines out until close.
func (a *accessLog) flusher() {
	defer close(a.stopped)
	t := time.NewTicker(accessLogFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-a.kick:
		case <-t.C:
		case <-a.stop:
			a.flush()
			return
		}
		a.flush()
	}
}

// flush writes what has gathered to the file it gathered for, and reports
// lines lost.
func (a *accessLog) flush() {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	buf, lines, dropped, w, path := a.pending, a.lines, a.dropped, a.w, a.path
	a.pending, a.lines, a.dropped = a.spare[:0], 0, 0
	a.mu.Unlock()
	var err error
	if len(buf) > 0 && w != nil {
		_, err = w.Write(buf)
	}
	a.spare = buf[:0]
	a.lostLines += dropped
	if err != nil {
		a.lostLines += lines
	} else if dropped > 0 {
		err = errAccessLogStalled
	}
	if err != nil && a.logger != nil {
		if log, _ := a.lost.Allow(time.Now()); log {
			a.logger.Error("quartet: access log: lines lost", "path", path, "err", err, "lines", a.lostLines)
			a.lostLines = 0
		}
	}
}

// errAccessLogStalled is why lines were dropped without a failed write.
var errAccessLogStalled = stalledError{}

type stalledError struct{}

func (stalledError) Error() string {
	return "the file took no lines while 4 MiB of them gathered (a stalled disk)"
}

// open points the log at path ("" for none, "-" for stdout): the new file
// is opened before the old one is closed, so a failure changes nothing,
// and the lines gathered before go to the old one.
func (a *accessLog) open(path string, format runtime.AccessLogFormat, stdout io.Writer) error {
	var w io.Writer
	var f *os.File
	switch path {
	case "":
	case "-":
		w = stdout
	default:
		var err error
		if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
			return err
		}
		w = f
	}
	a.flush()
	a.mu.Lock()
	old := a.f
	a.path, a.format, a.w, a.f = path, format, w, f
	a.on.Store(w != nil)
	if w != nil && !a.started {
		a.started = true
		a.kick, a.stop, a.stopped = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		go a.flusher()
	}
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// reopen opens the same path again: after logrotate has moved the file.
func (a *accessLog) reopen() error {
	a.mu.Lock()
	path, format, w, f := a.path, a.format, a.w, a.f
	a.mu.Unlock()
	if f == nil {
		return nil // stdout or none: nothing to reopen
	}
	return a.open(path, format, w)
}

// close writes out what has gathered and closes the file; the server has
// stopped, so nothing more comes.
func (a *accessLog) close() {
	a.mu.Lock()
	started := a.started
	a.started = false
	a.mu.Unlock()
	if started {
		close(a.stop)
		<-a.stopped
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f != nil {
		a.f.Close()
	}
	a.w, a.f = nil, nil
	a.on.Store(false)
}
