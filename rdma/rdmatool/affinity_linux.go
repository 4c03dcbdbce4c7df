//go:build linux

package rdmatool

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// bindThread binds the calling thread, and only it, to cpu. restore puts
// the thread's previous CPU set back and reports whether it could.
func bindThread(cpu int) (restore func() bool, err error) {
	var was, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("-cpu %d: sched_setaffinity: %w", cpu, err)
	}
	return func() bool { return unix.SchedSetaffinity(0, &was) == nil }, nil
}
