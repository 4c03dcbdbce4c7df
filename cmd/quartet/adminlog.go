package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// acceptErrorEvery is how often the admin endpoint logs that its accepts
// fail, as the main listener does: net/http retries a failed accept
// (EMFILE: the fd table is full) after at most a second and logs every
// retry, 13 lines in 25 s of exhaustion, the noise that hides the one
// line an operator needs.
const acceptErrorEvery = 10 * time.Second

// acceptErrorThrottle passes net/http's "http: Accept error" lines to next
// at most once per acceptErrorEvery, each with the count of those it
// held back since the last; every other record goes through.
type acceptErrorThrottle struct {
	slog.Handler
	st *throttleState
}

type throttleState struct {
	mu     sync.Mutex
	last   time.Time
	held   int
	period time.Duration
}

func newAcceptErrorThrottle(next slog.Handler) slog.Handler {
	return acceptErrorThrottle{Handler: next, st: &throttleState{period: acceptErrorEvery}}
}

func (h acceptErrorThrottle) Handle(ctx context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "http: Accept error") {
		return h.Handler.Handle(ctx, r)
	}
	st := h.st
	st.mu.Lock()
	if !st.last.IsZero() && r.Time.Sub(st.last) < st.period {
		st.held++
		st.mu.Unlock()
		return nil
	}
	held := st.held
	st.last, st.held = r.Time, 0
	st.mu.Unlock()
	if held > 0 {
		r.AddAttrs(slog.Int("repeated", held))
	}
	return h.Handler.Handle(ctx, r)
}

func (h acceptErrorThrottle) WithAttrs(as []slog.Attr) slog.Handler {
	return acceptErrorThrottle{Handler: h.Handler.WithAttrs(as), st: h.st}
}

func (h acceptErrorThrottle) WithGroup(name string) slog.Handler {
	return acceptErrorThrottle{Handler: h.Handler.WithGroup(name), st: h.st}
}
