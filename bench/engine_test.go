//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
)

// countingServer answers /hello, /echo and /bytes and counts requests by
// method.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		switch r.URL.Path {
		case "/echo":
			_, _ = io.Copy(w, r.Body)
		case "/bytes":
			k, _ := strconv.Atoi(r.URL.Query().Get("n"))
			// Flush first so large bodies go out chunked.
			w.(http.Flusher).Flush()
			_, _ = w.Write(make([]byte, k))
		case "/missing":
			http.NotFound(w, r)
		default:
			_, _ = w.Write([]byte("Hello, World!"))
		}
	}))
	t.Cleanup(s.Close)
	return s, &n
}

// checkReleased fails t if goroutines or fds leak past the test body. The
// server's own connections close asynchronously, so it retries briefly.
func checkReleased(t *testing.T, f func()) {
	t.Helper()
	fds, gs := fdtest.Count(t), runtime.NumGoroutine()
	f()
	deadline := time.Now().Add(3 * time.Second)
	for {
		nf, ng := fdtest.Count(t), runtime.NumGoroutine()
		if nf <= fds && ng <= gs {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leak: fds %d -> %d, goroutines %d -> %d", fds, nf, gs, ng)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunCountsExactly(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "1-conn", cfg: Config{Conns: 1, Requests: 500}},
		{name: "16-conns-2-loops", cfg: Config{Conns: 16, Loops: 2, Requests: 3001}},
		{name: "pipeline-8", cfg: Config{Conns: 4, Pipeline: 8, Requests: 2000}},
		{name: "mix", cfg: Config{Conns: 8, Requests: 1500, Mix: []RequestSpec{
			{Path: "/hello", Weight: 3}, {Method: "POST", Path: "/echo", BodySize: 10000},
			{Path: "/bytes?n=70000"}, {Method: "HEAD", Path: "/hello"}, {Path: "/missing"}}}},
		{name: "source-addrs", cfg: Config{Conns: 6, Requests: 600, SourceAddrs: []netip.Addr{
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}}},
		{name: "open-loop", cfg: Config{Conns: 4, Requests: 400, Rate: 2000}},
		{name: "warm-up excluded", cfg: Config{Conns: 2, Requests: 300, Warmup: 100 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, served := countingServer(t)
			cfg := tt.cfg
			cfg.URL = srv.URL + "/hello"
			var res *Result
			checkReleased(t, func() {
				var err error
				res, err = Run(t.Context(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				srv.CloseClientConnections()
			})
			if res.Requests != uint64(cfg.Requests) {
				t.Errorf("measured %d responses, want %d", res.Requests, cfg.Requests)
			}
			sent := res.Status[1] + res.Status[2] + res.Status[3] + res.Status[4] + res.Status[5]
			if sent != uint64(cfg.Requests) {
				t.Errorf("%d responses by status, want %d", sent, cfg.Requests)
			}
			if got := served.Load(); cfg.Warmup == 0 && got != int64(sent) || got < int64(sent) {
				t.Errorf("server received %d requests, generator got %d responses", got, sent)
			}
			if e := res.ErrorTotal(); e != 0 || res.Lost != 0 {
				t.Errorf("errors %+v, lost %d", res.Errors, res.Lost)
			}
			if res.RequestsPerSec <= 0 || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
				t.Errorf("implausible result %+v", res)
			}
		})
	}
}

// TestWarmupExcludedFromEveryFigure checks that every figure of a run with
// a warm-up covers the same requests (issue: bytes, transfer/s and status
// counts once included the warm-up while requests did not).
func TestWarmupExcludedFromEveryFigure(t *testing.T) {
	srv, served := countingServer(t)
	url := srv.URL + "/bytes?n=100"
	// One response's and one request's size on the wire: every response of
	// this server to this request has the same length.
	one, err := Run(t.Context(), Config{URL: url, Conns: 1, Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	if one.BytesRead == 0 || one.BytesWritten == 0 {
		t.Fatalf("one request: read %d, wrote %d bytes", one.BytesRead, one.BytesWritten)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "closed", cfg: Config{Conns: 4, Warmup: 150 * time.Millisecond, Duration: 150 * time.Millisecond}},
		{name: "pipelined", cfg: Config{Conns: 2, Pipeline: 8, Warmup: 150 * time.Millisecond, Duration: 150 * time.Millisecond}},
		{name: "open loop", cfg: Config{Conns: 4, Rate: 2000, Warmup: 150 * time.Millisecond, Duration: 150 * time.Millisecond}},
		{name: "request count", cfg: Config{Conns: 3, Warmup: 150 * time.Millisecond, Requests: 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := served.Load()
			cfg := tt.cfg
			cfg.URL = url
			// The server's busy time is sampled where its CPU is, at the
			// end of the warm-up and of the run: both read here the
			// requests the server has answered (a nanosecond each).
			answered := func() time.Duration { return time.Duration(served.Load()) }
			cfg.ServerCPU, cfg.ServerBusy = answered, answered
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			srv.CloseClientConnections()
			n := res.Requests
			if got := uint64(served.Load() - before); got <= n {
				t.Fatalf("server answered %d requests, %d measured: no warm-up happened", got, n)
			}
			if res.Status[2] != n {
				t.Errorf("2xx %d, requests %d", res.Status[2], n)
			}
			inFlight := int64(cfg.Conns * max(cfg.Pipeline, 1)) // may be answered between the two reads
			busy, cpu := int64(res.ServerBusy), int64(res.ServerCPU)
			if !res.ServerBusyKnown || busy < cpu-inFlight || busy > cpu+inFlight || busy >= served.Load()-before {
				t.Errorf("server busy %d, CPU %d, known %v; want them equal give or take %d, and the warm-up's %d answers left out",
					busy, cpu, res.ServerBusyKnown, inFlight, served.Load()-before-busy)
			}
			if res.BytesRead != n*one.BytesRead {
				t.Errorf("read %d bytes for %d responses of %d bytes", res.BytesRead, n, one.BytesRead)
			}
			if res.BytesWritten != n*one.BytesWritten {
				t.Errorf("wrote %d bytes for %d requests of %d bytes", res.BytesWritten, n, one.BytesWritten)
			}
			if want := float64(res.BytesRead) / res.Elapsed.Seconds(); res.BytesPerSec != want {
				t.Errorf("transfer %v/s, want bytes read over the measured window, %v/s", res.BytesPerSec, want)
			}
		})
	}
}

// TestWarmupErrorsSetApart: failures during the warm-up are reported as
// such, not as the measurement's.
func TestWarmupErrorsSetApart(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 5 {
			// The first requests, early in the warm-up, lose their
			// connection without an answer.
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		_, _ = w.Write([]byte("Hello, World!"))
	}))
	defer srv.Close()
	res, err := Run(t.Context(), Config{URL: srv.URL + "/hello", Conns: 1, Warmup: 500 * time.Millisecond, Requests: 50})
	if err != nil {
		t.Fatal(err)
	}
	if res.WarmupErrors != 5 || res.ErrorTotal() != 0 || res.Lost != 0 || res.Reconnects != 0 || res.Requests != 50 {
		t.Fatalf("warm-up errors %d, errors %+v, lost %d, reconnects %d, requests %d; want 5 warm-up errors and a clean measurement",
			res.WarmupErrors, res.Errors, res.Lost, res.Reconnects, res.Requests)
	}
}

// TestOpenLoopShowsStall is the coordinated-omission test: the server
// stalls every request for 1 s in the middle of a 3 s open-loop run. The
// generator would have sent ~1/3 of its requests during the stall, so the
// corrected p90 must sit deep in the stall while the uncorrected one (from
// the actual send, one stalled request per connection) stays small.
func TestOpenLoopShowsStall(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s run")
	}
	var mu sync.Mutex
	var stallUntil time.Time
	var once sync.Once
	start := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if time.Since(start) > time.Second {
			once.Do(func() {
				mu.Lock()
				stallUntil = time.Now().Add(time.Second)
				mu.Unlock()
			})
		}
		mu.Lock()
		until := stallUntil
		mu.Unlock()
		time.Sleep(time.Until(until))
		_, _ = w.Write([]byte("Hello, World!"))
	}))
	defer srv.Close()
	res, err := Run(t.Context(), Config{URL: srv.URL + "/hello", Conns: 10, Rate: 500, Duration: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("corrected p50 %v p90 %v p99 %v max %v; uncorrected p90 %v max %v",
		res.Latency.P50, res.Latency.P90, res.Latency.P99, res.Latency.Max, res.Uncorrected.P90, res.Uncorrected.Max)
	if res.Latency.P90 < 400*time.Millisecond {
		t.Errorf("corrected p90 %v does not show the 1 s stall", res.Latency.P90)
	}
	if res.Latency.Max < 900*time.Millisecond {
		t.Errorf("corrected max %v, want about 1 s", res.Latency.Max)
	}
	if res.Uncorrected.P90 > 100*time.Millisecond {
		t.Errorf("uncorrected p90 %v; expected it to hide the stall", res.Uncorrected.P90)
	}
	if res.Requests < 1300 {
		t.Errorf("%d requests; the schedule asked for ~1500", res.Requests)
	}
}

func TestRunDurationAndCancel(t *testing.T) {
	srv, _ := countingServer(t)
	t.Run("duration", func(t *testing.T) {
		begin := time.Now()
		res, err := Run(t.Context(), Config{URL: srv.URL + "/hello", Conns: 4, Duration: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(begin); took > 2*time.Second || res.Requests == 0 {
			t.Fatalf("took %v for %d requests", took, res.Requests)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		res, err := Run(ctx, Config{URL: srv.URL + "/hello", Conns: 4, Duration: time.Hour})
		if err == nil || res == nil {
			t.Fatalf("want a context error and a partial result, got %v", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		l := httptest.NewServer(http.NotFoundHandler())
		url := l.URL
		l.Close()
		_, err := Run(t.Context(), Config{URL: url, Conns: 2, Requests: 10})
		if err == nil {
			t.Fatal("want a connect error")
		}
	})
	t.Run("bad url", func(t *testing.T) {
		for _, u := range []string{"", "https://127.0.0.1/", "http://example.invalid/"} {
			if _, err := Run(t.Context(), Config{URL: u}); err == nil {
				t.Errorf("%q: want an error", u)
			}
		}
	})
}

// TestRunIntervals checks that per-interval figures add up to the run's
// and that runs sharing a base continue one time line.
func TestRunIntervals(t *testing.T) {
	srv, _ := countingServer(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "closed", cfg: Config{Conns: 3, Duration: 450 * time.Millisecond}},
		{name: "open", cfg: Config{Conns: 2, Rate: 1000, Duration: 450 * time.Millisecond}},
		{name: "requests", cfg: Config{Conns: 2, Requests: 2000, Pipeline: 4}},
	}
	base := time.Now()
	last := int64(-1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []IntervalSample
			cfg := tt.cfg
			cfg.URL = srv.URL + "/hello"
			cfg.Interval, cfg.IntervalBase = 100*time.Millisecond, base
			cfg.OnInterval = func(s IntervalSample) { got = append(got, s) }
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			var sum Counts
			for i, s := range got {
				sum.add(s.Counts)
				if i > 0 && s.Index <= got[i-1].Index {
					t.Errorf("interval %d after %d", s.Index, got[i-1].Index)
				}
				if (s.Requests > 0) != (s.Latency != nil) || s.Latency != nil && s.Latency.P99 < s.Latency.P50 {
					t.Errorf("interval %d: %d requests, latency %+v", s.Index, s.Requests, s.Latency)
				}
				if want := base.Add(time.Duration(s.Index) * 100 * time.Millisecond); !s.Start.Equal(want) {
					t.Errorf("interval %d starts at %v, want %v", s.Index, s.Start, want)
				}
			}
			// A run may share its first interval with the end of the one
			// before it, never go back. A timed run spans several intervals;
			// a run of a number of requests may finish within one.
			if len(got) == 0 || (cfg.Duration > 0 && len(got) < 2) || got[0].Index < last {
				t.Fatalf("%d intervals (%+v); the previous run ended at %d", len(got), got, last)
			}
			last = got[len(got)-1].Index
			if sum.Requests != res.Requests || sum.Status != res.Status || sum.BytesRead != res.BytesRead || sum.Errors != res.Errors {
				t.Errorf("intervals sum to %+v, the run to %+v", sum, res.Counts)
			}
		})
	}
}

// A server that sheds: the 503s' latency is reported apart from the
// other responses', and each counts its own responses.
func TestShedLatencyApart(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
			return
		}
		time.Sleep(20 * time.Millisecond) // the admitted are slow, the refused fast
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"closed loop", Config{URL: srv.URL + "/x", Conns: 4, Requests: 200}},
		// Open loop also gives them from the actual send.
		{"open loop", Config{URL: srv.URL + "/x", Conns: 8, Rate: 200, Duration: time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Run(t.Context(), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Shed == nil || res.Answered == nil {
				t.Fatalf("no separate latencies with %d 503s", res.Status503)
			}
			if res.Status503 == 0 || res.Status503 == res.Requests {
				t.Fatalf("%d 503s of %d", res.Status503, res.Requests)
			}
			if res.Shed.P50 >= 20*time.Millisecond || res.Answered.P50 < 20*time.Millisecond {
				t.Errorf("503s p50 %v, the others' %v", res.Shed.P50, res.Answered.P50)
			}
			open := tt.cfg.Rate > 0
			if (res.ShedUncorrected != nil) != open || (res.AnsweredUncorrected != nil) != open {
				t.Fatalf("uncorrected 503 and other latencies: %v %v in %s", res.ShedUncorrected, res.AnsweredUncorrected, tt.name)
			}
			if open && (res.ShedUncorrected.P50 >= 20*time.Millisecond || res.AnsweredUncorrected.P50 < 20*time.Millisecond) {
				t.Errorf("from the send: 503s p50 %v, the others' %v", res.ShedUncorrected.P50, res.AnsweredUncorrected.P50)
			}
			var out strings.Builder
			res.WriteText(&out)
			if !strings.Contains(out.String(), "503s ") || !strings.Contains(out.String(), "not 503s") ||
				open != strings.Contains(out.String(), "503s, sent→") {
				t.Errorf("the summary does not show them:\n%s", out.String())
			}
		})
	}
	clean, _ := Run(t.Context(), Config{URL: srv.URL + "/x", Conns: 1, Requests: 1})
	if clean != nil && clean.Status503 == 0 && (clean.Shed != nil || clean.Answered != nil) {
		t.Errorf("separate latencies without a 503")
	}
}

// A negative duration, warm-up or count is refused by name: read as "the
// default", or added to the end of the run, it made a run without an end.
func TestRunRefusesNegatives(t *testing.T) {
	url := silentServer(t) + "/hello"
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"warm-up", Config{Duration: 500 * time.Millisecond, Warmup: -time.Second}, "Warmup"},
		{"duration", Config{Duration: -time.Second}, "Duration"},
		{"requests", Config{Requests: -1}, "Requests"},
		{"conns", Config{Conns: -1, Duration: 100 * time.Millisecond}, "Conns"},
		{"pipeline", Config{Pipeline: -1, Duration: 100 * time.Millisecond}, "Pipeline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			tt.cfg.URL = url
			_, err := Run(ctx, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// Requests a server never answers are counted, and the window is the
// duration asked for: cut at the last response, it once reported a
// server that stopped answering halfway as twice as fast, with the
// requests it left open in no figure.
func TestUnansweredRequestsCounted(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name      string
		answerFor time.Duration // then the server goes silent
		cfg       Config
		// The requests of the measurement: answered, unanswered and
		// unsent add up to about this many in open loop.
		scheduled uint64
	}{
		{name: "closed, never answers", cfg: Config{Conns: 2, Duration: 300 * ms}},
		{name: "closed, stops answering", answerFor: 150 * ms, cfg: Config{Conns: 2, Duration: 400 * ms}},
		{name: "open, never answers", cfg: Config{Conns: 2, Rate: 100, Duration: 400 * ms}, scheduled: 40},
		{name: "open, stops answering", answerFor: 200 * ms, cfg: Config{Conns: 4, Rate: 200, Duration: 400 * ms}, scheduled: 80},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each waits out a drain on an idle server
			cfg := tt.cfg
			cfg.URL = stallingServer(t, tt.answerFor) + "/hello"
			cfg.Timeout = -1 // the drain, not a timeout, ends the wait
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Elapsed != cfg.Duration {
				t.Errorf("elapsed %v, want the window asked for, %v", res.Elapsed, cfg.Duration)
			}
			if want := float64(res.Requests) / cfg.Duration.Seconds(); res.RequestsPerSec != want {
				t.Errorf("requests/s %v, want %v", res.RequestsPerSec, want)
			}
			if !res.Stalled() || !strings.Contains(textOf(t, res), "the server stopped answering") {
				t.Errorf("silent for %v at the end of %v, not reported as a stall", res.SilentAtEnd, res.Elapsed)
			}
			// Each connection holds one request the server never answers.
			if res.Unanswered != uint64(cfg.Conns) {
				t.Errorf("unanswered %d, want %d", res.Unanswered, cfg.Conns)
			}
			if tt.scheduled > 0 {
				total := res.Requests + res.Unanswered + res.Unsent
				if total+uint64(cfg.Conns) < tt.scheduled || total > tt.scheduled+uint64(cfg.Conns) {
					t.Errorf("%d answered + %d unanswered + %d unsent = %d, want about %d scheduled",
						res.Requests, res.Unanswered, res.Unsent, total, tt.scheduled)
				}
			} else if res.Unsent != 0 {
				t.Errorf("closed loop: unsent %d", res.Unsent)
			}
			var text bytes.Buffer
			if err := res.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text.String(), "warning: "+strconv.FormatUint(res.Unfinished(), 10)+" requests unanswered") {
				t.Errorf("report does not warn of the unanswered requests:\n%s", text.String())
			}
		})
	}
}

// An open loop the server cannot keep up with says so: past capacity,
// half the schedule never left and the report said nothing, with
// corrected percentiles over the half that did.
func TestOpenLoopWarnsWhenRateMissed(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name  string
		delay time.Duration // per response
		cfg   Config
		warn  bool
	}{
		{name: "within capacity", cfg: Config{Conns: 2, Rate: 100, Duration: 300 * ms}},
		// 2 connections × 1 request per 50 ms is 40 req/s at most.
		{name: "past capacity", delay: 50 * ms, cfg: Config{Conns: 2, Rate: 200, Duration: 400 * ms}, warn: true},
		{name: "closed loop", delay: 50 * ms, cfg: Config{Conns: 2, Duration: 200 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(tt.delay)
				io.WriteString(w, "ok")
			}))
			defer srv.Close()
			cfg := tt.cfg
			cfg.URL = srv.URL + "/"
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.RateMissed() != tt.warn {
				t.Errorf("RateMissed %v, want %v (sent %.1f/s of %.0f, %d unsent)", res.RateMissed(), tt.warn, res.SentPerSec(), res.Rate, res.Unsent)
			}
			var text bytes.Buffer
			if err := res.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(text.String(), "not reached"); got != tt.warn {
				t.Errorf("warning printed %v, want %v:\n%s", got, tt.warn, text.String())
			}
			if res.Stalled() {
				t.Errorf("a server that answered throughout reported stalled (silent %v of %v)", res.SilentAtEnd, res.Elapsed)
			}
			if w := res.FailureWarning(); w != "" {
				// Every request sent was answered 200: those never sent
				// are the rate's shortfall, not the server's failures.
				t.Errorf("%s", w)
			}
			if tt.warn && res.Unsent < 40 {
				t.Errorf("unsent %d: want the ~65 of 80 scheduled requests that never left", res.Unsent)
			}
		})
	}
}

// Server CPU from a pid that cannot be read is an error at the start, or
// "unavailable" when the process goes away during the run: a failed
// reading was once taken for 0 s, "server CPU: 0s/request".
func TestServerPIDReadable(t *testing.T) {
	srv, _ := countingServer(t)
	exited := func() int {
		cmd := exec.Command("sleep", "0.1")
		if err := cmd.Start(); err != nil {
			t.Skip(err)
		}
		go cmd.Wait() // reaped, so /proc forgets it
		return cmd.Process.Pid
	}
	tests := []struct {
		name        string
		pid         func() int
		startErr    bool
		known       bool
		unavailable bool
	}{
		{name: "this process", pid: os.Getpid, known: true},
		{name: "no such process", pid: func() int { return 1<<22 + 1 }, startErr: true}, // above any pid_max
		{name: "exits during the run", pid: exited, unavailable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid := tt.pid()
			res, err := Run(t.Context(), Config{URL: srv.URL + "/", Conns: 1, Duration: 400 * time.Millisecond, ServerPID: pid})
			if tt.startErr {
				if err == nil || res != nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(pid)) {
					t.Fatalf("result %v, error %v: want an error naming pid %d and no run", res, err, pid)
				}
				var stdout, stderr bytes.Buffer
				err := Main(t.Context(), []string{"-d", "1s", "--server-pid", strconv.Itoa(pid), srv.URL + "/"}, Env{Stdout: &stdout, Stderr: &stderr})
				if !errors.Is(err, ErrUsage) || stdout.Len() > 0 {
					t.Fatalf("bench --server-pid %d: error %v, output %q: want a usage error before any run", pid, err, stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			if err := res.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if res.ServerCPUKnown != tt.known || (res.ServerCPUUnavailable != "") != tt.unavailable ||
				tt.unavailable && !strings.Contains(text.String(), "server CPU: unavailable (server pid "+strconv.Itoa(pid)) {
				t.Fatalf("known %v, unavailable %q:\n%s", res.ServerCPUKnown, res.ServerCPUUnavailable, text.String())
			}
		})
	}
}

// textOf is res's text report.
func textOf(t *testing.T, res *Result) string {
	t.Helper()
	var b bytes.Buffer
	if err := res.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
