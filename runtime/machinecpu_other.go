//go:build !linux

package runtime

// machineCPU has no machine-wide reading here: the controllers go by the
// process's own CPU time.
type machineCPU struct{}

func (m *machineCPU) busyFraction() (float64, bool) { return 0, false }

func (m *machineCPU) close() {}
