package http1

import (
	"net/http"
	"sync/atomic"
	"time"
)

// DateCache holds the Date field's value for the current second. Formatting
// a date costs a few hundred nanoseconds, the value changes once a second,
// and every response needs it, so the goroutines that frame responses
// (a processor pool's workers) share one formatted copy; the first to see
// a new second formats it (one small allocation per second, none per
// response). The zero value is ready; it must not be copied once used.
type DateCache struct {
	cur atomic.Pointer[dateValue]
}

type dateValue struct {
	sec int64
	b   [len(http.TimeFormat)]byte
}

// Get returns the IMF-fixdate (RFC 9110 §5.6.7) for now. The slice must
// not be modified. Any goroutine.
func (d *DateCache) Get(now time.Time) []byte {
	sec := now.Unix()
	old := d.cur.Load()
	if old != nil && old.sec == sec {
		return old.b[:]
	}
	v := &dateValue{sec: sec}
	now.UTC().AppendFormat(v.b[:0], http.TimeFormat)
	// Losing the race to another worker that formatted the same second is
	// harmless: both values are equal.
	d.cur.CompareAndSwap(old, v)
	return v.b[:]
}
