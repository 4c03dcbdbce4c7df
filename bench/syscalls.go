package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// How a server's system calls are counted (CompareSpec.Syscalls).
const (
	// SyscallsPerf counts the raw_syscalls:sys_enter tracepoint with perf
	// stat, in the kernel, for every thread of the server: the server runs
	// at nearly its untraced speed, but per-syscall names are not kept.
	SyscallsPerf = "perf"
	// SyscallsStrace is strace -c -f: ptrace stops each thread at every
	// syscall, so the server runs several times slower (and may batch
	// differently), but each syscall is named.
	SyscallsStrace = "strace"
)

// SyscallCount is a server's system calls over windows of load, each
// on a load of its own, with other servers' windows between them
// (syscallsInTurn).
type SyscallCount struct {
	Method string `json:"method"`
	// Window is the windows' length together.
	Window time.Duration `json:"window_ns"`
	// Requests are the responses the generator received in the windows.
	Requests   uint64  `json:"requests"`
	Syscalls   uint64  `json:"syscalls"`
	PerRequest float64 `json:"per_request"`
	// Windows are each window's syscalls per request. They differ more
	// than the noise of counting: how many requests a server finds at each
	// wake-up, and so what one io_uring_enter or epoll_wait carries, moves
	// with how the generator's turns and the server's fall against each
	// other. On a shared machine that moves with the machine: in a noisy
	// spell the generator's requests come slower, a server meets them one
	// at a time, and every server counted in that spell counts more:
	// two Quartet processes of one build, alternating, went together
	// from 1.1 to 2.9 a request at c=1000 and back (December 2026). What
	// on the machine makes the spells is not known from inside the guest.
	Windows []float64 `json:"windows,omitempty"`
	// Top are the most frequent syscalls (strace only).
	Top []SyscallStat `json:"top,omitempty"`
	// TracedRPS and UntracedRPS are the throughput in the window and just
	// before it, with the same connections: their ratio is the method's
	// cost to the server.
	TracedRPS   float64 `json:"traced_requests_per_sec"`
	UntracedRPS float64 `json:"untraced_requests_per_sec"`
}

// Spread is the least and the most of the windows' syscalls per request.
func (s *SyscallCount) Spread() (lo, hi float64) {
	if len(s.Windows) == 0 {
		return s.PerRequest, s.PerRequest
	}
	return slices.Min(s.Windows), slices.Max(s.Windows)
}

// Slowdown is the untraced throughput over the traced one.
func (s *SyscallCount) Slowdown() float64 {
	if s.TracedRPS <= 0 {
		return 0
	}
	return s.UntracedRPS / s.TracedRPS
}

// syscallsInTurn counts each of rows windows times, window by window:
// the first window of every row, then the second of every row, and so
// on, so that a spell of noise on the machine lands on every row's
// count alike instead of on the one row counted during it (one row's
// windows one after another once put one server at 2.9 syscalls a
// request and the next at 1.3 with the same code). count counts row i
// over one window; a nil count without an error means the row has
// none (no server, or a failure it has logged), and it is not asked
// again. An error from count ends the counting: the context's.
func syscallsInTurn(rows, windows int, count func(i int) (*SyscallCount, error)) ([]*SyscallCount, error) {
	counts := make([]*SyscallCount, rows)
	dropped := make([]bool, rows)
	for range max(windows, 1) {
		for i := range rows {
			if dropped[i] {
				continue
			}
			sc, err := count(i)
			if err != nil {
				return nil, err
			}
			if sc == nil {
				counts[i], dropped[i] = nil, true
				continue
			}
			counts[i] = counts[i].add(sc)
		}
	}
	for _, c := range counts {
		if c != nil && len(c.Top) > topSyscalls {
			c.Top = c.Top[:topSyscalls]
		}
	}
	return counts, nil
}

// add returns s and o together: their windows, requests and calls
// summed, the throughputs of all the windows, the calls by name, most
// frequent first (all of them: syscallsInTurn keeps the top ones once
// every window is in). s may be nil.
func (s *SyscallCount) add(o *SyscallCount) *SyscallCount {
	if s == nil {
		c := *o
		c.Windows = slices.Clone(o.Windows)
		c.Top = slices.Clone(o.Top)
		return &c
	}
	untraced := s.UntracedRPS*float64(len(s.Windows)) + o.UntracedRPS*float64(len(o.Windows))
	s.Window += o.Window
	s.Requests += o.Requests
	s.Syscalls += o.Syscalls
	s.Windows = append(s.Windows, o.Windows...)
	s.UntracedRPS = untraced / float64(max(len(s.Windows), 1))
	if s.Window > 0 {
		s.TracedRPS = float64(s.Requests) / s.Window.Seconds()
	}
	if s.Requests > 0 {
		s.PerRequest = float64(s.Syscalls) / float64(s.Requests)
	}
	for _, st := range o.Top {
		if j := slices.IndexFunc(s.Top, func(x SyscallStat) bool { return x.Name == st.Name }); j >= 0 {
			s.Top[j].Calls += st.Calls
		} else {
			s.Top = append(s.Top, st)
		}
	}
	for j := range s.Top {
		s.Top[j].PerRequest = float64(s.Top[j].Calls) / float64(max(s.Requests, 1))
	}
	sortSyscallStats(s.Top)
	return s
}

// sortSyscallStats puts the most frequent first.
func sortSyscallStats(st []SyscallStat) {
	slices.SortStableFunc(st, func(a, b SyscallStat) int { return cmp.Compare(b.Calls, a.Calls) })
}

// SyscallStat is one syscall's count.
type SyscallStat struct {
	Name       string  `json:"name"`
	Calls      uint64  `json:"calls"`
	PerRequest float64 `json:"per_request"`
}

// topSyscalls is how many syscalls a count names.
const topSyscalls = 6

// parseStraceSummary reads strace -c's table: the total and each
// syscall's calls, most frequent first.
//
//	% time     seconds  usecs/call     calls    errors syscall
//	------ ----------- ----------- --------- --------- ----------------
//	 45.12    0.123456          12     10000       500 read
//	100.00    0.273456           9     30000       600 total
func parseStraceSummary(out []byte) (total uint64, stats []SyscallStat, err error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	found := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] == "%" || strings.HasPrefix(f[0], "---") {
			continue
		}
		if _, err := strconv.ParseFloat(f[0], 64); err != nil {
			continue
		}
		calls, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			return 0, nil, fmt.Errorf("bench: strace summary line %q: %w", sc.Text(), err)
		}
		name := f[len(f)-1]
		if name == "total" {
			total, found = calls, true
			continue
		}
		stats = append(stats, SyscallStat{Name: name, Calls: calls})
	}
	if !found {
		return 0, nil, fmt.Errorf("bench: no total in strace's summary: %q", out)
	}
	sort.SliceStable(stats, func(i, j int) bool { return stats[i].Calls > stats[j].Calls })
	return total, stats, nil
}

// parsePerfCount reads perf stat -x, output: the first field of the
// raw_syscalls:sys_enter line is its count.
func parsePerfCount(out []byte) (uint64, error) {
	for line := range bytes.Lines(out) {
		f := strings.Split(strings.TrimSpace(string(line)), ",")
		if len(f) < 3 || f[2] != "raw_syscalls:sys_enter" {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: perf counted nothing (%q): none of the traced processes ran in the window, or perf_event_paranoid is too strict", f[0])
		}
		return n, nil
	}
	return 0, fmt.Errorf("bench: no raw_syscalls:sys_enter count in perf's output: %q", out)
}
