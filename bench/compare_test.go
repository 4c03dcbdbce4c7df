package bench

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

const wrkOutput = `Running 5s test @ http://127.0.0.1:40001/hello
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  300.12us  12.00ms   90.00%
    Req/Sec    82.11k     3.20k   88.00k    70.00%
  Latency Distribution
     50%    1.18ms
     75%    1.30ms
     90%    1.45ms
     99%    2.50ms
  408123 requests in 5.00s, 57.20MB read
  Socket errors: connect 0, read 3, write 1, timeout 12
  Non-2xx or 3xx responses: 7
Requests/sec:  81624.60
Transfer/sec:     11.44MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    WrkResult
		wantErr bool
	}{
		{name: "full", out: wrkOutput, want: WrkResult{Requests: 408123, RequestsPerSec: 81624.60,
			P50: 1180 * time.Microsecond, P99: 2500 * time.Microsecond, SocketErrors: 16, Non2xx: 7}},
		{name: "clean, microseconds", out: "  Latency Distribution\n     50%  412.00us\n     99%  901.50us\n  1000 requests in 1.00s, 1KB read\nRequests/sec:   1000.00\n",
			want: WrkResult{Requests: 1000, RequestsPerSec: 1000, P50: 412 * time.Microsecond, P99: 901500 * time.Nanosecond}},
		{name: "seconds", out: "     50%    1.50s\n     99%    2.00m\n  10 requests in 9.00s, 1KB read\nRequests/sec: 1.11\n",
			want: WrkResult{Requests: 10, RequestsPerSec: 1.11, P50: 1500 * time.Millisecond, P99: 2 * time.Minute}},
		{name: "not wrk", out: "unable to connect to 127.0.0.1:1 Connection refused\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk([]byte(tt.out))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	if _, err := parseWrkDuration("3.0parsecs"); err == nil {
		t.Error("unknown unit accepted")
	}
	for d, want := range map[time.Duration]string{0: "1s", 400 * time.Millisecond: "1s", 2600 * time.Millisecond: "3s", 5 * time.Second: "5s"} {
		if got := wrkSeconds(d); got != want {
			t.Errorf("wrkSeconds(%v) = %s, want %s", d, got, want)
		}
	}
}

func TestParseStraceSummary(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		total   uint64
		top     []string
		wantErr bool
	}{
		{name: "with errors column", out: `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 45.12    0.123456          12     10000       500 read
 30.00    0.080000           4     20000           write
 20.00    0.060000          60      1000           epoll_pwait
  4.88    0.010000          10      1000       100 futex
------ ----------- ----------- --------- --------- ----------------
100.00    0.273456           9     32000       600 total
`, total: 32000, top: []string{"write", "read", "epoll_pwait", "futex"}},
		{name: "no total", out: "strace: Process 12 attached\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, stats, err := parseStraceSummary([]byte(tt.out))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				return
			}
			var names []string
			for _, s := range stats {
				names = append(names, s.Name)
			}
			if total != tt.total || strings.Join(names, ",") != strings.Join(tt.top, ",") {
				t.Fatalf("total %d, order %v; want %d, %v", total, names, tt.total, tt.top)
			}
		})
	}
}

func TestParsePerfCount(t *testing.T) {
	tests := []struct {
		out     string
		want    uint64
		wantErr bool
	}{
		{out: "# started on Thu Dec  3 17:19:14 2026\n\n171925,,raw_syscalls:sys_enter,718139602,100.00,,\n", want: 171925},
		{out: "<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n", wantErr: true},
		{out: "event syntax error\n", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parsePerfCount([]byte(tt.out))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%q: %d, %v; want %d", tt.out, got, err, tt.want)
		}
	}
}

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "1", want: "1"}, {in: "0-3,6", want: "0-3,6"}, {in: "2,0", want: "2,0"},
		{in: "", wantErr: true}, {in: "3-1", wantErr: true}, {in: "x", wantErr: true}, {in: "-1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseCPUList(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && cpuList(got) != tt.want) {
			t.Errorf("parseCPUList(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestMedianAndPairedRatio(t *testing.T) {
	for _, tt := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.xs); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
	cpu := func(s CompareSample) (float64, bool) { return float64(s.CPUPerRequest()), s.CPUKnown }
	s := func(round int, reqs uint64, cpuMs int) CompareSample {
		return CompareSample{Round: round, Requests: reqs, ServerCPU: time.Duration(cpuMs) * time.Millisecond, CPUKnown: true}
	}
	tests := []struct {
		name string
		a, b []CompareSample
		want float64
		ok   bool
	}{
		// Round 1 is slow for both (noise elsewhere): pairs cancel it.
		{name: "paired", a: []CompareSample{s(0, 1000, 12), s(1, 1000, 30), s(2, 1000, 11)},
			b: []CompareSample{s(0, 1000, 10), s(1, 1000, 25), s(2, 1000, 10)}, want: 1.2, ok: true},
		{name: "missing round", a: []CompareSample{s(0, 1000, 20), s(2, 1000, 20)}, b: []CompareSample{s(1, 1000, 10), s(2, 1000, 10)}, want: 2, ok: true},
		{name: "no common round", a: []CompareSample{s(0, 1000, 20)}, b: []CompareSample{s(1, 1000, 10)}},
		{name: "cpu unknown", a: []CompareSample{{Round: 0, Requests: 10}}, b: []CompareSample{s(0, 10, 1)}},
	}
	for _, tt := range tests {
		rs := pairedRatios(tt.a, tt.b, cpu)
		got, ok := median(rs), len(rs) > 0
		if ok != tt.ok || (ok && (got < tt.want-1e-9 || got > tt.want+1e-9)) {
			t.Errorf("%s: %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// The interval between the k-th least and k-th most of n per-round
// ratios holds their median with probability 1 - 2·P(Binomial(n, ½) < k);
// medianRange takes the narrowest with 90% or more.
func TestMedianRange(t *testing.T) {
	seq := func(n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(n - i) // descending: medianRange sorts
		}
		return xs
	}
	tests := []struct {
		n        int
		lo, hi   float64
		coverage float64
	}{
		{2, 1, 2, 0.5},       // too few for 90%: the widest, with what it has
		{3, 1, 3, 0.75},      //
		{5, 1, 5, 0.9375},    // 1 - 2/32
		{8, 2, 7, 0.9296875}, // 1 - 2·9/256; [1, 8] would be 99.2%
		{9, 2, 8, 0.9609375}, // 1 - 2·10/512; [3, 7] would be 82%
		{30, 11, 20, 0.9013}, // n=30: P(B ≤ 10) = 0.0494
	}
	for _, tt := range tests {
		rr, ok := medianRange(seq(tt.n), ratioRangeCoverage)
		if !ok || rr.Lo != tt.lo || rr.Hi != tt.hi || math.Abs(rr.Coverage-tt.coverage) > 1e-4 || rr.Rounds != tt.n {
			t.Errorf("n=%d: %+v, %v; want [%v, %v] at %v", tt.n, rr, ok, tt.lo, tt.hi, tt.coverage)
		}
	}
	if _, ok := medianRange([]float64{1.1}, ratioRangeCoverage); ok {
		t.Error("a range from one round")
	}
}

// syntheticCompare is a summarised two-mode comparison of four servers.
func syntheticCompare() *CompareResult {
	cpus := map[string][2]int{"quartet": {115, 167}, "quartet-b": {100, 150}, "gnet": {100, 114}, "fasthttp": {119, 147}}
	r := &CompareResult{Generator: GenWrk, Rounds: 2, Duration: 5 * time.Second, Warmup: time.Second,
		Modes:    []CompareMode{Pinned(0, 1), BothCores},
		Servers:  []string{"quartet", "quartet-b", "gnet", "fasthttp"},
		Subjects: []string{"quartet", "quartet-b"}}
	for _, srv := range r.Servers {
		for mi, m := range r.Modes {
			row := CompareRow{Server: srv, Mode: m.Name, Conns: 100, Path: "/hello"}
			for round := range 2 {
				// 100000 requests; CPU in tenths of µs per request. Pinned,
				// the server's CPU is busy 2 µs a request more than its
				// process, in round 1 4 µs for quartet-b alone.
				sm := CompareSample{Round: round, Requests: 100000, RequestsPerSec: 20000,
					ServerCPU: time.Duration(cpus[srv][mi]) * 10 * time.Millisecond, CPUKnown: true, P99: time.Millisecond}
				if srv == "quartet" && !m.pinned() && round == 1 {
					sm.P99 = 50*time.Millisecond + 410*time.Microsecond // one slow round
				}
				if m.pinned() {
					sm.CoreBusy, sm.CoreKnown = sm.ServerCPU+200*time.Millisecond, true
					if srv == "quartet-b" && round == 1 {
						sm.CoreBusy += 200 * time.Millisecond
					}
				}
				// wrk busy 99% of its core over 5 s against every server
				// pinned; on both cores 80% against quartet.
				sm.LoadCPU, sm.LoadWall, sm.LoadThreads = 4950*time.Millisecond, 5*time.Second, 1
				if !m.pinned() && srv == "quartet" {
					sm.LoadCPU = 4 * time.Second
				}
				row.Samples = append(row.Samples, sm)
			}
			if srv == "quartet" {
				row.Syscalls = &SyscallCount{Method: SyscallsPerf, Window: 6 * time.Second, PerRequest: 2.5, Windows: []float64{2.1, 2.5, 2.9}, TracedRPS: 90, UntracedRPS: 100}
			}
			r.Rows = append(r.Rows, row)
		}
	}
	r.summarise()
	return r
}

func TestCompareTextTable(t *testing.T) {
	r := syntheticCompare()
	r.Commits = map[string]string{"quartet-b": "0239108aaaaa+dirty", "quartet": "7bce1cf31686"}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Quartet binaries measured, by commit: quartet 7bce1cf31686, quartet-b 0239108aaaaa+dirty.",
		"server c=100 pinned c=100 both-cores",
		"quartet 11.5µs 16.7µs",
		"gnet 10.0µs 11.4µs",
		"quartet / gnet 1.15× [1.15-1.15] 1.46× [1.46-1.46]",
		"quartet / fasthttp 0.97× [0.97-0.97] 1.14× [1.14-1.14]",
		"quartet-b / quartet 0.87× [0.87-0.87] 0.90× [0.90-0.90]",
		"quartet-b / gnet 1.00× [1.00-1.00] 1.32× [1.32-1.32]",
		"In brackets, here and below: the per-round ratios that hold the median ratio between them (50% from 2 rounds,",
		"quartet 2.50 [2.10-2.90] (0.90×)",
		// Busy time: pinned only; ratios of the paired rounds' medians.
		"quartet 13.5µs",
		"gnet 12.0µs",
		"quartet / gnet 1.12×",
		"quartet-b / quartet 0.96× [0.89-1.04]", // rounds 12.0/13.5 and 14.0/13.5
		"quartet pinned c=100 /hello: 20000 20000 | 11.5µs 11.5µs | busy 13.5µs 13.5µs | p99 1ms 1ms | errors 0",
		// The load generator: CPU per request and its share of its core.
		"quartet 49.5µs (99%) 40.0µs (80%)",
		"gnet 49.5µs (99%) 49.5µs (99%)",
		"quartet both-cores c=100 /hello: 20000 20000 | 16.7µs 16.7µs | p99 1ms 50.41ms | errors 0",
	} {
		found := false
		for _, l := range strings.Split(out, "\n") {
			if strings.Join(strings.Fields(l), " ") == want || strings.HasPrefix(strings.Join(strings.Fields(l), " "), want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no line %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "gnet / quartet") || strings.Contains(out, "quartet / quartet-b") {
		t.Errorf("ratios only for subjects against references and earlier subjects:\n%s", out)
	}
	if !strings.Contains(out, "Server CPU busy per request, pinned modes") {
		t.Errorf("no busy-time table:\n%s", out)
	}
	if n := strings.Count(out, "In brackets"); n != 1 {
		t.Errorf("the brackets explained %d times, want once:\n%s", n, out)
	}
	if rr := r.row("quartet-b", cell{"pinned", 100, "/hello"}).CoreRange["quartet"]; rr.Rounds != 2 || rr.Coverage != 0.5 {
		t.Errorf("quartet-b / quartet busy range %+v, want 2 rounds at 50%%", rr)
	}
	var c bytes.Buffer
	if err := r.WriteCSV(&c); err != nil || strings.Count(c.String(), "\n") != 1+4*2*2 ||
		!strings.Contains(c.String(), "quartet,pinned,100,/hello,0,100000,20000.0,11.50,0.00,1000.00,0,0,2.500,13.50,49.50,0.990\n") {
		t.Errorf("CSV: %v\n%s", err, c.String())
	}
	// Pinned, wrk was at its core's limit against every server, so the
	// requests/s there are its own; on both cores it had room against
	// quartet.
	if w := r.loadBoundWarnings(); len(w) != 1 || w[0] != "pinned c=100 /hello: the load generator was 99-99% busy against every server: requests/s there are its limit, not the servers'" {
		t.Errorf("warnings %q, want one for the pinned cell", w)
	}

	// Without a pinned mode (or with the project's generator) no run knows
	// its server's busy time, and there is no table of it.
	for i := range r.Rows {
		r.Rows[i].CoreBusyPerRequest = 0
	}
	b.Reset()
	if err := r.WriteText(&b); err != nil || strings.Contains(b.String(), "CPU busy per request") {
		t.Errorf("busy-time table with no busy time known (%v):\n%s", err, b.String())
	}
}

// --msg starts its own servers with the project's generator: what would
// make it measure something else is refused before anything starts.
func TestCompareMsgFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"wrk", []string{"--gen", "wrk"}, "wrk speaks HTTP"},
		{"static", []string{"--static"}, "takes none of"},
		{"idle", []string{"--idle", "10"}, "takes none of"},
		{"url", []string{"http://127.0.0.1:1/hello"}, "takes none of"},
		{"no-binary", nil, "give --quartet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := Main(t.Context(), append([]string{"compare", "--msg"}, tt.args...), Env{Stdout: &out, Stderr: &errb})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestCompareRunLineOfARowWithoutRuns: a row whose server never ran has
// no figures on its run line, p99 included, only its error.
func TestCompareRunLineOfARowWithoutRuns(t *testing.T) {
	r := syntheticCompare()
	r.Rows = append(r.Rows, CompareRow{Server: "gnet", Mode: "pinned", Conns: 1000, Path: "/hello", Err: "bench: gnet exited before listening"})
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(b.String(), "\n") {
		if !strings.HasPrefix(l, "  gnet pinned c=1000 /hello:") {
			continue
		}
		if strings.Contains(l, "p99") || !strings.HasSuffix(l, "| error: bench: gnet exited before listening") {
			t.Errorf("run line %q: want no figures, and the error", l)
		}
		return
	}
	t.Errorf("no run line for the row without runs in:\n%s", b.String())
}

// What the command line alone gets wrong is a usage error (exit 2) before
// any peer is built or server started: --gen bogus once failed with exit
// 1 after the peers were built, and --rounds 0 ran nothing, silently.
func TestCompareUsageBeforeWork(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"rounds 0", []string{"--rounds", "0"}, "--rounds 0"},
		{"rounds -1", []string{"--rounds", "-1"}, "--rounds -1"},
		{"repeats 0", []string{"--repeats", "0"}, "--rounds 0"},
		{"gen", []string{"--gen", "bogus"}, `--gen "bogus"`},
		{"syscalls", []string{"--syscalls", "bogus"}, `--syscalls "bogus"`},
		{"server cpu", []string{"--server-cpu", "100000"}, "--server-cpu 100000"},
		{"load cpu", []string{"--load-cpu", "-1"}, "--load-cpu -1"},
		{"only", []string{"--only", "gnet,bogus"}, `--only "bogus"`},
		{"quartet", []string{"--quartet", "/nonexistent"}, "--quartet /nonexistent"},
		{"quartet-b", []string{"--quartet-b", "/nonexistent"}, "--quartet-b /nonexistent"},
		{"quartet is a directory", []string{"--quartet", "/"}, "--quartet /"},
		{"peer-bin", []string{"--peer-bin", "/nonexistent"}, "--peer-bin /nonexistent"},
		{"idle descending", []string{"--idle", "100,10"}, "--idle 100,10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			// --peers names no module: work that got past the checks
			// fails there, with an error that is not a usage error.
			args := append([]string{"compare", "--gen", "quartet", "--peers", "/nonexistent"}, tt.args...)
			err := Main(t.Context(), args, Env{Stdout: &out, Stderr: &errb})
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want a usage error naming %q", err, tt.want)
			}
			if strings.Contains(errb.String(), "building") {
				t.Fatalf("work started before the error:\n%s", errb.String())
			}
		})
	}
}

// A comparison in which a contender failed is a failed command (exit 1),
// naming it, whatever the table shows of the others.
func TestCompareFailedContenders(t *testing.T) {
	one := []CompareSample{{}}
	tests := []struct {
		name string
		rows []CompareRow
		idle []IdleRow
		want string // "" for success
	}{
		{name: "all measured", rows: []CompareRow{{Server: "quartet", Samples: one}, {Server: "gnet", Samples: one}}},
		{name: "a URL's pinned rows", rows: []CompareRow{{Server: "quartet", Mode: "pinned", Err: errCannotPin.Error()}, {Server: "quartet", Mode: "both-cores", Samples: one}, {Server: "gnet", Samples: one}}},
		{name: "a URL only pinned", rows: []CompareRow{{Server: "quartet", Mode: "pinned", Err: errCannotPin.Error()}, {Server: "gnet", Samples: one}},
			want: "quartet failed (first error: " + errCannotPin.Error()},
		{name: "no samples", rows: []CompareRow{{Server: "quartet", Samples: one}, {Server: "gnet"}}, want: "gnet failed (first error: nothing measured)"},
		{name: "one server", rows: []CompareRow{{Server: "quartet", Samples: one}, {Server: "gnet", Err: "bench: gnet exited before listening"}, {Server: "gnet", Err: "again"}},
			want: "gnet failed (first error: bench: gnet exited before listening)"},
		{name: "every server", rows: []CompareRow{{Server: "quartet", Err: "taskset: Invalid argument"}, {Server: "gnet", Err: "taskset: Invalid argument"}},
			want: "quartet, gnet failed"},
		{name: "idle", rows: []CompareRow{{Server: "quartet", Samples: one}}, idle: []IdleRow{{Server: "nginx", Err: "no idle start"}},
			want: "nginx failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &CompareResult{Rows: tt.rows, Idle: tt.idle}
			err := r.failed()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if errors.Is(err, ErrUsage) {
				t.Fatalf("error %v would exit 2", err)
			}
		})
	}
}
