package rdmatest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
)

// Drive makes exactly total calls over its workers, each passing an
// index below workers, and counts the failures.
func TestDrive(t *testing.T) {
	tests := []struct {
		name           string
		workers, total int
		failEvery      int64 // the nth, 2nth... call fails; 0: none
		wantErrs       int64
	}{
		{name: "none", workers: 4, total: 0},
		{name: "fewer calls than workers", workers: 8, total: 3},
		{name: "all succeed", workers: 4, total: 1000},
		{name: "every third fails", workers: 3, total: 300, failEvery: 3, wantErrs: 100},
		{name: "one worker", workers: 1, total: 10, failEvery: 1, wantErrs: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			errs := Drive(tt.workers, tt.total, func(w int) error {
				if w < 0 || w >= tt.workers {
					t.Errorf("worker index %d of %d", w, tt.workers)
				}
				if n := calls.Add(1); tt.failEvery > 0 && n%tt.failEvery == 0 {
					return errors.New("failed on purpose")
				}
				return nil
			})
			if calls.Load() != int64(tt.total) || errs != tt.wantErrs {
				t.Errorf("%d calls, %d errors; want %d, %d", calls.Load(), errs, tt.total, tt.wantErrs)
			}
		})
	}
}

const envChildTest = "QUARTET_RDMATEST_CHILD_TEST"

// TestChildProcess: a child started by StartChild gets its arguments,
// answers each command and ends when its stdin closes.
func TestChildProcess(t *testing.T) {
	tests := []struct {
		name string
		n    int
		want string
	}{
		{"sum of one", 1, "1"},
		{"sum of ten", 10, "55"},
	}
	c := StartChild(t, "TestChildHelper", envChildTest, "sum,x")
	c.Expect("ready")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.Send("sum %d", tt.n)
			if got := c.Expect("done"); got != tt.want {
				t.Errorf("done %q, want %q", got, tt.want)
			}
		})
	}
}

// TestChildHelper is TestChildProcess's child; it skips unless started
// by it.
func TestChildHelper(t *testing.T) {
	f := ChildArgs(t, envChildTest, 2)
	if f[0] != "sum" || f[1] != "x" {
		t.Fatalf("arguments %q", f)
	}
	fmt.Println("noise before the answer")
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var n int
		if _, err := fmt.Sscanf(in.Text(), "sum %d", &n); err != nil {
			t.Fatalf("command %q: %v", in.Text(), err)
		}
		fmt.Println("done " + strconv.Itoa(n*(n+1)/2))
	}
}
