//go:build linux

package rdmatool

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPinPoller(t *testing.T) {
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for i := 0; i < 1024 && cpu < 0; i++ {
		if before.IsSet(i) {
			cpu = i
		}
	}
	done := make(chan error)
	go func() {
		unpin, err := pinPoller(false, cpu)
		if err != nil {
			done <- err
			return
		}
		var on unix.CPUSet
		if err := unix.SchedGetaffinity(0, &on); err != nil || on.Count() != 1 || !on.IsSet(cpu) {
			done <- fmt.Errorf("pinned thread's CPU set has %d CPUs (err %v), want only %d", on.Count(), err, cpu)
			return
		}
		unpin()
		var after unix.CPUSet
		if err := unix.SchedGetaffinity(0, &after); err != nil || after != before {
			done <- fmt.Errorf("CPU set not restored: %d CPUs, had %d (err %v)", after.Count(), before.Count(), err)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Error(err)
	}
	if _, err := pinPoller(true, 1<<20); err == nil || !strings.Contains(err.Error(), "-cpu") {
		t.Errorf("pinning to CPU %d: err = %v, want one naming -cpu", 1<<20, err)
	}
}
