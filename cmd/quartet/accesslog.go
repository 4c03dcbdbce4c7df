package main

import (
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

// accessLog is the server's Config.Log: a file that SIGUSR1 reopens and
// SIGHUP may replace, in a format SIGHUP may change. The lines go through
// a runtime.AccessLogger, which gathers them off the writer loops and
// writes them in batches; this adds the file: opening it, reopening it
// after logrotate, closing it at the end.
type accessLog struct {
	on     atomic.Bool // checked before the logger: no log, no lock per response
	logger *slog.Logger

	mu     sync.Mutex // guards what follows
	path   string
	format runtime.AccessLogFormat
	f      *os.File // nil for stdout or none
	lines  atomic.Pointer[runtime.AccessLogger]
}

func (a *accessLog) log(r *stages.Response) {
	if !a.on.Load() {
		return
	}
	a.lines.Load().Log(r)
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
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.lines.Load(); l != nil {
		if err := l.SetOutput(w, format); err != nil {
			if f != nil {
				f.Close()
			}
			return err
		}
	} else if w != nil {
		l, err := runtime.NewAccessLogger(w, format, a.logger)
		if err != nil {
			if f != nil {
				f.Close()
			}
			return err
		}
		a.lines.Store(l)
	}
	if a.f != nil {
		a.f.Close()
	}
	a.path, a.format, a.f = path, format, f
	a.on.Store(w != nil)
	return nil
}

// reopen opens the same path again: after logrotate has moved the file.
// It returns the log's path ("" for none, "-" for stdout) and whether
// there was a file to reopen.
func (a *accessLog) reopen() (path string, reopened bool, err error) {
	a.mu.Lock()
	path, format, f := a.path, a.format, a.f
	a.mu.Unlock()
	if f == nil {
		return path, false, nil
	}
	return path, true, a.open(path, format, nil)
}

// close writes out what has gathered and closes the file; the server has
// stopped, so nothing more comes.
func (a *accessLog) close() {
	a.on.Store(false)
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.lines.Load(); l != nil {
		l.Close()
	}
	if a.f != nil {
		a.f.Close()
	}
	a.f = nil
}
