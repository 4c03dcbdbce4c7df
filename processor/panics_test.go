package processor

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/ratelog"
	"github.com/quartet-server/quartet/stages"
)

//go:noinline
func panicA() { panic("bug A") }

//go:noinline
func panicB() { panic(fmt.Errorf("bug B")) }

//go:noinline
func writeNilMap(m map[string]int) { m["x"] = 1 }

//go:noinline
func indexPast(s []int, i int) int { return s[i] }

// A handler that panics on every request writes one line (and one stack)
// for each place in its code that panicked, not one a request; every panic
// is counted, and every request still gets its 500.
func TestPanicsAreLoggedOncePerSite(t *testing.T) {
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		switch string(r.Path) {
		case "/a":
			panicA()
		case "/b":
			panicB()
		case "/map":
			writeNilMap(nil)
		case "/index":
			indexPast(nil, 3)
		}
		hello(w, r)
	})
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	requests := map[string]int{"/a": 5, "/b": 3, "/map": 2, "/index": 4}
	total := 0
	for path, n := range requests {
		for range n {
			p := parse(t, hs.do(newRequest("GET", path, 1, "")), "GET")
			if p.resp.StatusCode != 500 {
				t.Fatalf("%s: %d, want 500", path, p.resp.StatusCode)
			}
			total++
		}
	}
	if got := hs.counters.Failed.Load(); got != uint64(total) {
		t.Errorf("Failed = %d, want %d", got, total)
	}
	log := hs.log.String()
	lines := regexp.MustCompile(`(?m)^.*msg="quartet: handler panic".*$`).FindAllString(log, -1)
	if len(lines) != len(requests) {
		t.Fatalf("%d lines for %d panics at %d places, want one a place:\n%s", len(lines), total, len(requests), log)
	}
	for _, want := range []struct{ target, panic, frame string }{
		{"/a", `panic="bug A"`, "processor.panicA"},
		{"/b", `panic="bug B"`, "processor.panicB"},
		{"/map", `panic="assignment to entry in nil map"`, "processor.writeNilMap"},
		{"/index", `panic="runtime error: index out of range [3] with length 0"`, "processor.indexPast"},
	} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, "target="+want.target+" ") {
				found = true
				if !strings.Contains(l, want.panic) || !strings.Contains(l, "panics_here=1 ") || !strings.Contains(l, want.frame) {
					t.Errorf("%s: %s\nwant %s, panics_here=1 and a stack through %s", want.target, l, want.panic, want.frame)
				}
			}
		}
		if !found {
			t.Errorf("no line for %s", want.target)
		}
	}
}

func TestPanicSitesAllow(t *testing.T) {
	t0 := time.Now()
	var s panicSites
	type step struct {
		site uintptr
		at   time.Duration
		log  bool
		n    int
	}
	for i, st := range []step{
		{1, 0, true, 1},
		{1, time.Second, false, 0},
		{2, time.Second, true, 1}, // another place: its own first line
		{1, 2 * time.Second, false, 0},
		{1, ratelog.DefaultEvery, true, 3}, // the interval over: the count since
		{2, ratelog.DefaultEvery + time.Second, true, 1},
	} {
		log, n := s.allow(st.site, t0.Add(st.at))
		if log != st.log || n != st.n {
			t.Errorf("step %d (site %d at %v): %v %d, want %v %d", i, st.site, st.at, log, n, st.log, st.n)
		}
	}
	// Past maxPanicSites distinct places, the rest share one limiter: the
	// map stays bounded, and their first panic is still logged.
	var many panicSites
	logged := 0
	for site := uintptr(1); site <= 2*maxPanicSites; site++ {
		if log, _ := many.allow(site, t0); log {
			logged++
		}
	}
	if logged != maxPanicSites+1 || len(many.sites) != maxPanicSites+1 {
		t.Errorf("%d places: %d logged, %d limiters; want %d and %d", 2*maxPanicSites, logged, len(many.sites), maxPanicSites+1, maxPanicSites+1)
	}
}

// BenchmarkHandlerPanic is a handler that panics on every request, as a
// bad deploy's would, beside one that answers: the cost of the panic and
// its 500, with the log written to a buffer (a file's write would add to
// it).
func BenchmarkHandlerPanic(b *testing.B) {
	for _, bm := range []struct {
		name string
		h    HandlerFunc
	}{
		{"panics", func(w *ResponseWriter, r *stages.Request) { panicA() }},
		{"answers", hello},
	} {
		b.Run(bm.name, func(b *testing.B) {
			hs := newHarness(b, Config{Workers: 1}, bm.h, writerOpts{})
			req := newRequest("GET", "/a", 1, "")
			b.ReportAllocs()
			for b.Loop() {
				hs.do(req)
			}
			b.ReportMetric(float64(len(hs.log.String()))/float64(b.N), "log-bytes/op")
		})
	}
}
