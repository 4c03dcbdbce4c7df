//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// procState is the state letter of /proc/PID/stat ('T': stopped), or 0
// when the process is gone.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return statState(b)
}

// TestPauseStopsTheProcessTree: Pause stops a server and its children (a
// forked server's workers), Resume continues them, and Close ends a
// paused server with SIGTERM, as it does a running one, not with the
// SIGKILL a stopped process would wait for.
func TestPauseStopsTheProcessTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &procServer{name: "sh", cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	var child int
	for deadline := time.Now().Add(5 * time.Second); child == 0; {
		if c := procChildren(p.PID()); len(c) > 0 {
			child = c[0]
		} else if time.Now().After(deadline) {
			t.Fatal("sh started no child")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })

	// states reads both processes' states: at once after a pause, which
	// returns when they have stopped; after a resume, once the kernel
	// has run them (SIGCONT wakes them, and they leave 'T' when next
	// scheduled).
	states := func(want byte) string {
		var got string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			s, c := procState(p.PID()), procState(child)
			got = string([]byte{s, c})
			if want == 'T' || s != 'T' && c != 'T' || time.Now().After(deadline) {
				return got
			}
		}
	}
	steps := []struct {
		name string
		do   func() error
		want byte
	}{
		{"pause", p.Pause, 'T'},
		{"pause again", p.Pause, 'T'},
		{"resume", p.Resume, 'S'},
		{"resume again", p.Resume, 'S'},
		{"pause before close", p.Pause, 'T'},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := states(s.want)
		if stopped := got == "TT"; stopped != (s.want == 'T') {
			t.Fatalf("after %s: states %q (sh, its child), want both stopped: %v", s.name, got, s.want == 'T')
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p.err == nil || !strings.Contains(p.err.Error(), "terminated") {
		t.Errorf("the paused server ended with %v, want SIGTERM's \"signal: terminated\"", p.err)
	}
}

// watchedServer is a peer whose CPU, which a run reads as it begins and
// ends, checks that every other server is stopped.
type watchedServer struct {
	*procServer
	check func(self int)
}

func (w watchedServer) CPU() time.Duration {
	w.check(w.PID())
	return w.procServer.CPU()
}

// TestCompareRunsOneServerAtATime: while Compare measures one server,
// the other servers it started are stopped, in both modes and in the
// syscall counts, and all are gone when it returns.
func TestCompareRunsOneServerAtATime(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the peers, runs load")
	}
	peers := buildPeers(t)
	var (
		mu      sync.Mutex
		servers []*procServer
		checks  int
		faults  []string
	)
	check := func(self int) {
		mu.Lock()
		defer mu.Unlock()
		checks++
		for _, s := range servers {
			st := procState(s.PID())
			if s.PID() == self && st == 'T' || s.PID() != self && st != 'T' {
				faults = append(faults, fmt.Sprintf("measuring pid %d: pid %d in state %q", self, s.PID(), st))
			}
		}
	}
	contender := func(name string) Contender {
		peer := PeerProcess("gnet", peers)
		return Contender{Name: name, Start: func(ctx context.Context, m CompareMode) (Server, error) {
			s, err := peer.Start(ctx, m)
			if err != nil {
				return nil, err
			}
			p := s.(*procServer)
			mu.Lock()
			servers = append(servers, p)
			mu.Unlock()
			return watchedServer{p, check}, nil
		}}
	}
	spec := CompareSpec{Paths: []string{"/hello"}, Conns: []int{2}, Rounds: 2, Duration: 200 * time.Millisecond,
		Generator: GenQuartet, Modes: []CompareMode{{Name: "a"}, {Name: "b"}}}
	res, err := Compare(t.Context(), spec, []Contender{contender("x"), contender("y")})
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range res.Rows {
		if len(row.Samples) != 2 || row.Err != "" {
			t.Errorf("%s %s: %d samples, error %q", row.Server, row.Mode, len(row.Samples), row.Err)
		}
	}
	if len(servers) != 4 || checks < 2*2*2*2 {
		t.Fatalf("%d servers started, %d CPU readings checked; want 4 and at least 16", len(servers), checks)
	}
	for _, f := range faults {
		t.Error(f)
	}
	for _, s := range servers {
		select {
		case <-s.done:
			if s.err != nil && strings.Contains(s.err.Error(), "killed") {
				t.Errorf("pid %d was killed, not stopped by SIGTERM: a server left paused", s.PID())
			}
		default:
			t.Errorf("pid %d still runs after Compare", s.PID())
		}
	}
}
