package control

import (
	"testing"
	"time"
)

// Admission limits from synthetic class measurements: how many requests
// of each class may wait so that a new one waits no longer than the
// target, by Little's law over the class's share of places.
func TestAdmissionLimits(t *testing.T) {
	const ms = time.Millisecond
	type want struct {
		queue, retry int64
	}
	for _, tc := range []struct {
		name       string
		target     time.Duration
		places     int
		history    [][]ClassSample // earlier periods, oldest first
		downstream time.Duration
		now        []ClassSample
		want       []want
	}{
		{
			// The overload: 4 places, 50 ms handlers drain 80/s,
			// so 40 may wait for 500 ms.
			name: "one class of 50 ms handlers on 4 places", target: 500 * ms, places: 4,
			now:  []ClassSample{{Queued: 40, Held: 4, Completed: 8, RunSum: 8 * 50 * ms}},
			want: []want{{queue: 40, retry: 1}},
		},
		{
			// A slow class holding every place does not starve a fast one:
			// the fast class counts on its fair half of the places.
			name: "a fast class beside a slow one", target: 500 * ms, places: 4,
			now: []ClassSample{
				{Queued: 1000, Held: 4, Completed: 8, RunSum: 8 * 50 * ms},
				{Queued: 0, Held: 0, Completed: 100, RunSum: 100 * 100 * time.Microsecond},
			},
			// slow: 4 places (the fast class holds none) / 50 ms = 80/s; its
			// queue of 1000 drains in 12.5 s. fast: 2 places / 100 µs = 20,000/s.
			want: []want{{queue: 40, retry: 13}, {queue: 10000, retry: 1}},
		},
		{
			name: "classes sharing places evenly", target: 500 * ms, places: 8,
			now: []ClassSample{
				{Queued: 5, Held: 4, Completed: 10, RunSum: 10 * 10 * ms},
				{Queued: 5, Held: 4, Completed: 10, RunSum: 10 * 10 * ms},
			},
			// each: 4 places / 10 ms = 400/s.
			want: []want{{queue: 200, retry: 1}, {queue: 200, retry: 1}},
		},
		{
			// Every place held by a backlog whose requests have not
			// finished for the whole target (5 periods): nothing frees a
			// place in time, so no request of any class may wait,
			// whatever its share says.
			name: "every place held, none coming free", target: 500 * ms, places: 4,
			history: [][]ClassSample{
				{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Completed: 100, RunSum: 100 * ms, Elapsed: 100 * ms}},
				{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Elapsed: 100 * ms}},
				{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Elapsed: 100 * ms}},
				{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Elapsed: 100 * ms}},
			},
			now:  []ClassSample{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Elapsed: 100 * ms}},
			want: []want{{queue: 0, retry: 1}, {queue: 0, retry: 1}},
		},
		{
			// Four periods are 400 ms: a place may still come free
			// within the target.
			name: "every place held, none free for less than the target", target: 500 * ms, places: 4,
			history: [][]ClassSample{
				{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Completed: 100, RunSum: 100 * ms, Elapsed: 100 * ms}},
				{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Elapsed: 100 * ms}},
				{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Elapsed: 100 * ms}},
			},
			now:  []ClassSample{{Queued: 100, Held: 4, Backlogged: true, Elapsed: 100 * ms}, {Elapsed: 100 * ms}},
			want: []want{{queue: 64, retry: 1}, {queue: 1000, retry: 1}},
		},
		{
			// The writers are behind by the whole target: every limit is
			// 1, and a full pool whose requests finish is not stuck.
			name: "every place held, requests finishing, writers behind", target: 500 * ms, places: 4, downstream: 600 * ms,
			now:  []ClassSample{{Queued: 100, Held: 4, Completed: 8, RunSum: 8 * 50 * ms, Backlogged: true, Elapsed: 100 * ms}},
			want: []want{{queue: 1, retry: 2}},
		},
		{
			// The same places held, but by requests that finish: one
			// frees every 12.5 ms, and the fast class gets it.
			name: "every place held, places coming free", target: 500 * ms, places: 4,
			now: []ClassSample{
				{Queued: 100, Held: 4, Completed: 8, RunSum: 8 * 50 * ms, Backlogged: true, Elapsed: 100 * ms},
				{Queued: 0, Held: 0, Completed: 0, Elapsed: 100 * ms},
			},
			history: [][]ClassSample{{{}, {Completed: 100, RunSum: 100 * ms, Elapsed: 100 * ms}}},
			want:    []want{{queue: 40, retry: 2}, {queue: 1000, retry: 1}},
		},
		{
			// Not another class's: classes differ, that is why they exist.
			name: "a class with no history of its own gets the unknown limit", target: 500 * ms, places: 2,
			now: []ClassSample{
				{Queued: 0, Held: 0, Completed: 10, RunSum: 10 * 10 * ms},
				{Queued: 3, Held: 0},
			},
			want: []want{{queue: 100, retry: 1}, {queue: 64, retry: 1}},
		},
		{
			// No service time to judge by: as many may wait as the pool
			// may have places (the unknown limit given, 64 here).
			name: "no history at all: the pool's most places", target: 500 * ms, places: 2,
			now:  []ClassSample{{Queued: 3, Held: 2}},
			want: []want{{queue: 64, retry: 1}},
		},
		{
			// Backlogged, yet 3 of its 4 places busy on average (they
			// waited for CPU): it drains at 3 / 50 ms, not 4 / 50 ms.
			// The use moves halfway per period: 1 → 0.875 → 0.8125.
			name: "a backlogged class that keeps 3 of 4 places busy", target: 500 * ms, places: 4,
			history: [][]ClassSample{
				{{Queued: 50, Held: 4, Completed: 6, RunSum: 300 * ms, Backlogged: true, Elapsed: 100 * ms}},
			},
			now:  []ClassSample{{Queued: 50, Held: 4, Completed: 6, RunSum: 300 * ms, Backlogged: true, Elapsed: 100 * ms}},
			want: []want{{queue: 32, retry: 1}}, // 0.5 s × 4 × 0.8125 / 50 ms
		},
		{
			// Idle places say nothing when nothing waited: the use drifts
			// back toward 1 (0.875 → 0.9).
			name: "the use recovers without a backlog", target: 500 * ms, places: 4,
			history: [][]ClassSample{
				{{Queued: 50, Held: 4, Completed: 6, RunSum: 300 * ms, Backlogged: true, Elapsed: 100 * ms}},
			},
			now:  []ClassSample{{Queued: 0, Held: 1, Completed: 2, RunSum: 100 * ms, Elapsed: 100 * ms}},
			want: []want{{queue: 36, retry: 1}}, // 0.5 s × 4 × 0.9 / 50 ms
		},
		{
			// Responses wait 300 ms in the writers' queues: a request may
			// wait only the other 200 ms for a place (80/s × 0.2 s).
			name: "the writers behind by part of the target", target: 500 * ms, places: 4, downstream: 300 * ms,
			now:  []ClassSample{{Queued: 40, Held: 4, Completed: 8, RunSum: 8 * 50 * ms}},
			want: []want{{queue: 16, retry: 1}},
		},
		{
			// Behind by more than the target: only a request that finds
			// the queue empty goes in, and the Retry-After covers the
			// writers' backlog too.
			name: "the writers behind by the whole target", target: 500 * ms, places: 4, downstream: 1500 * ms,
			now:  []ClassSample{{Queued: 40, Held: 4, Completed: 8, RunSum: 8 * 50 * ms}},
			want: []want{{queue: 1, retry: 2}},
		},
		{
			name: "off", target: 0, places: 2,
			now:  []ClassSample{{Queued: 3, Held: 2, Completed: 10, RunSum: 10 * ms}},
			want: []want{{queue: -1}},
		},
		{
			name: "handlers slower than the target: one may still wait", target: 500 * ms, places: 1,
			now:  []ClassSample{{Queued: 0, Held: 1, Completed: 1, RunSum: 2 * time.Second}},
			want: []want{{queue: 1, retry: 1}},
		},
		{
			// A period without finished requests keeps the service time
			// learnt before; one with many moves it at once.
			name: "service time is smoothed over periods", target: 500 * ms, places: 10,
			history: [][]ClassSample{
				{{Completed: 100, RunSum: 100 * 10 * ms}},
				{{Queued: 0, Held: 10}},
			},
			now:  []ClassSample{{Queued: 0, Held: 10}},
			want: []want{{queue: 500, retry: 1}}, // 10 places / 10 ms = 1000/s
		},
		{
			// The estimate says 40 may wait (80/s for 500 ms), but 10 of
			// a period's 40 requests waited past half the target: the
			// estimate is wrong somewhere (CPU it does not see), and the
			// limit is cut to 3/4 of it.
			name: "late requests cut the limit", target: 500 * ms, places: 4,
			now:  []ClassSample{{Queued: 40, Held: 4, Completed: 40, Late: 10, RunSum: 40 * 50 * ms}},
			want: []want{{queue: 30, retry: 1}},
		},
		{
			// Two periods late: 1 × 0.75 × 0.75.
			name: "cuts compound", target: 500 * ms, places: 4,
			history: [][]ClassSample{{{Queued: 40, Held: 4, Completed: 40, Late: 10, RunSum: 40 * 50 * ms}}},
			now:     []ClassSample{{Queued: 40, Held: 4, Completed: 40, Late: 10, RunSum: 40 * 50 * ms}},
			want:    []want{{queue: 22, retry: 1}},
		},
		{
			// A period with none late gives back 0.05: 0.75 → 0.8.
			name: "the limit grows back without late requests", target: 500 * ms, places: 4,
			history: [][]ClassSample{{{Queued: 40, Held: 4, Completed: 40, Late: 10, RunSum: 40 * 50 * ms}}},
			now:     []ClassSample{{Queued: 40, Held: 4, Completed: 40, RunSum: 40 * 50 * ms}},
			want:    []want{{queue: 32, retry: 1}},
		},
		{
			// One late in 200 is within the 99th percentile: held, not cut.
			name: "a few late requests hold the limit", target: 500 * ms, places: 4,
			history: [][]ClassSample{{{Queued: 40, Held: 4, Completed: 40, Late: 10, RunSum: 40 * 50 * ms}}},
			now:     []ClassSample{{Queued: 40, Held: 4, Completed: 200, Late: 1, RunSum: 200 * 50 * ms}},
			want:    []want{{queue: 30, retry: 1}},
		},
		{
			// Too few requests to tell a tail from one unlucky request.
			name: "too few requests to judge", target: 500 * ms, places: 4,
			now:  []ClassSample{{Queued: 40, Held: 4, Completed: 8, Late: 8, RunSum: 8 * 50 * ms}},
			want: []want{{queue: 40, retry: 1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAdmission(tc.target)
			var out []Limit
			for _, h := range tc.history {
				out = a.Limits(h, tc.places, tc.places, 64, tc.downstream, out)
			}
			out = a.Limits(tc.now, tc.places, tc.places, 64, tc.downstream, out)
			if len(out) != len(tc.want) {
				t.Fatalf("%d limits, want %d", len(out), len(tc.want))
			}
			for i, w := range tc.want {
				if out[i].Queue != w.queue || (w.queue >= 0 && out[i].RetryAfter != w.retry) {
					t.Errorf("class %d: queue %d, retry %d s; want %d, %d s (%+v)", i, out[i].Queue, out[i].RetryAfter, w.queue, w.retry, out[i])
				}
			}
		})
	}
}
