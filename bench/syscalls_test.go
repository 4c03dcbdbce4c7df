package bench

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// oneWindow is one window's count as countSyscalls returns it: requests
// answered and syscalls made in a second, the untraced throughput, and
// the named calls.
func oneWindow(requests, syscalls uint64, untraced float64, top ...SyscallStat) *SyscallCount {
	return &SyscallCount{
		Method: SyscallsStrace, Window: time.Second, Requests: requests, Syscalls: syscalls,
		PerRequest: float64(syscalls) / float64(requests), Windows: []float64{float64(syscalls) / float64(requests)},
		TracedRPS: float64(requests), UntracedRPS: untraced, Top: top,
	}
}

func TestSyscallsInTurn(t *testing.T) {
	boom := errors.New("context canceled")
	for _, tc := range []struct {
		name    string
		rows    int
		windows int
		// fail says what count(i) answers at row i's w-th call (from 0):
		// "none" (the row has no count), "err", or "" (a window).
		fail      map[[2]int]string
		wantOrder []int
		wantNone  []int // rows without a count
		wantErr   bool
	}{
		{name: "each server's first window, then each one's second",
			rows: 3, windows: 2, wantOrder: []int{0, 1, 2, 0, 1, 2}},
		{name: "no windows asked is one",
			rows: 2, windows: 0, wantOrder: []int{0, 1}},
		{name: "a row without a count is not asked again",
			rows: 3, windows: 3, fail: map[[2]int]string{{1, 0}: "none"},
			wantOrder: []int{0, 1, 2, 0, 2, 0, 2}, wantNone: []int{1}},
		{name: "a row that fails later loses its earlier windows too",
			rows: 3, windows: 3, fail: map[[2]int]string{{2, 1}: "none"},
			wantOrder: []int{0, 1, 2, 0, 1, 2, 0, 1}, wantNone: []int{2}},
		{name: "an error ends the counting",
			rows: 3, windows: 2, fail: map[[2]int]string{{1, 1}: "err"},
			wantOrder: []int{0, 1, 2, 0, 1}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var order []int
			calls := map[int]int{}
			counts, err := syscallsInTurn(tc.rows, tc.windows, func(i int) (*SyscallCount, error) {
				order = append(order, i)
				w := calls[i]
				calls[i]++
				switch tc.fail[[2]int{i, w}] {
				case "none":
					return nil, nil
				case "err":
					return nil, boom
				}
				// Row i, window w: 100 requests, 100*(i+1)+w syscalls.
				return oneWindow(100, uint64(100*(i+1)+w), 1000), nil
			})
			if !slices.Equal(order, tc.wantOrder) {
				t.Errorf("counted rows in the order %v, want %v", order, tc.wantOrder)
			}
			if tc.wantErr {
				if !errors.Is(err, boom) {
					t.Fatalf("err = %v, want the count's error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(counts) != tc.rows {
				t.Fatalf("%d counts for %d rows", len(counts), tc.rows)
			}
			for i, c := range counts {
				if slices.Contains(tc.wantNone, i) {
					if c != nil {
						t.Errorf("row %d: a count (%+v), want none", i, c)
					}
					continue
				}
				n := max(tc.windows, 1)
				if c == nil || len(c.Windows) != n || c.Requests != uint64(100*n) || c.Window != time.Duration(n)*time.Second {
					t.Fatalf("row %d: %+v, want %d windows of 100 requests", i, c, n)
				}
				var sum uint64
				for w := range n {
					sum += uint64(100*(i+1) + w)
					if want := float64(100*(i+1)+w) / 100; c.Windows[w] != want {
						t.Errorf("row %d window %d: %v a request, want %v", i, w, c.Windows[w], want)
					}
				}
				if c.Syscalls != sum || c.PerRequest != float64(sum)/float64(100*n) {
					t.Errorf("row %d: %d syscalls, %v a request; want %d, %v", i, c.Syscalls, c.PerRequest, sum, float64(sum)/float64(100*n))
				}
			}
		})
	}
}

func TestSyscallCountAdd(t *testing.T) {
	stat := func(name string, calls uint64) SyscallStat { return SyscallStat{Name: name, Calls: calls} }
	var sum *SyscallCount
	sum = sum.add(oneWindow(100, 300, 1000, stat("read", 100), stat("write", 100), stat("epoll_wait", 100)))
	first := sum.Windows
	sum = sum.add(oneWindow(300, 300, 2000, stat("epoll_wait", 200), stat("read", 50), stat("futex", 50)))
	if first[0] != 3 || len(first) != 1 {
		t.Errorf("the first window's figures changed under add: %v", first)
	}
	if sum.Requests != 400 || sum.Syscalls != 600 || sum.PerRequest != 1.5 || sum.Window != 2*time.Second {
		t.Errorf("sum: %d requests, %d syscalls, %v a request over %v; want 400, 600, 1.5 over 2s", sum.Requests, sum.Syscalls, sum.PerRequest, sum.Window)
	}
	if !slices.Equal(sum.Windows, []float64{3, 1}) {
		t.Errorf("windows %v, want [3 1]", sum.Windows)
	}
	if sum.TracedRPS != 200 || sum.UntracedRPS != 1500 {
		t.Errorf("throughput traced %v, untraced %v; want 200 (400 in 2 s) and 1500 (the windows' mean)", sum.TracedRPS, sum.UntracedRPS)
	}
	var got []string
	for _, s := range sum.Top {
		got = append(got, fmt.Sprintf("%s %d %.3f", s.Name, s.Calls, s.PerRequest))
	}
	want := []string{"epoll_wait 300 0.750", "read 150 0.375", "write 100 0.250", "futex 50 0.125"}
	if !slices.Equal(got, want) {
		t.Errorf("top %v, want %v", got, want)
	}
}

// TestSyscallsInTurnKeepsTheTopCalls: the calls named are the most
// frequent over all the windows, counted in all of them: a call that is
// seventh in the first window (of six named) and first over all keeps
// its first window's calls.
func TestSyscallsInTurnKeepsTheTopCalls(t *testing.T) {
	w := 0
	counts, err := syscallsInTurn(1, 2, func(int) (*SyscallCount, error) {
		var top []SyscallStat
		for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
			top = append(top, SyscallStat{Name: n, Calls: uint64(100 - 99*w)})
		}
		top = append(top, SyscallStat{Name: "g", Calls: uint64(10 + 490*w)})
		w++
		return oneWindow(100, 1000, 1000, top...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := counts[0]
	if len(c.Top) != topSyscalls {
		t.Fatalf("%d calls named, want %d", len(c.Top), topSyscalls)
	}
	if g := c.Top[0]; g.Name != "g" || g.Calls != 510 || g.PerRequest != 2.55 {
		t.Errorf("first call %+v, want g with 510 calls (10 and 500), 2.55 a request", g)
	}
	if a := c.Top[1]; a.Calls != 101 {
		t.Errorf("second call %+v, want 101 calls", a)
	}
}
