package runtime

import (
	"bytes"
	"os"
	"strconv"
)

// machineCPU reads how busy the machine's CPUs were between two calls,
// from /proc/stat's first line. It keeps no file open between calls (an
// open, a read and a close each period, 30 syscalls a second), so the
// control loop holds no descriptor a server's owner would have to count.
// The control loop's alone; not safe for concurrent use.
type machineCPU struct {
	buf              [512]byte
	busy, total      uint64
	haveLast, failed bool
}

// busyFraction is the share of the machine's CPU time since the last call
// that was not idle (nor waiting for I/O); false the first time, or when
// /proc/stat cannot be read (it is then not tried again).
func (m *machineCPU) busyFraction() (float64, bool) {
	if m.failed {
		return 0, false
	}
	f, err := os.Open("/proc/stat")
	if err != nil {
		m.failed = true
		return 0, false
	}
	n, _ := f.Read(m.buf[:])
	_ = f.Close()
	busy, total, ok := parseCPULine(m.buf[:n])
	if !ok {
		m.failed = true
		return 0, false
	}
	prevBusy, prevTotal, had := m.busy, m.total, m.haveLast
	m.busy, m.total, m.haveLast = busy, total, true
	if !had || total <= prevTotal || busy < prevBusy {
		return 0, false
	}
	return float64(busy-prevBusy) / float64(total-prevTotal), true
}

// parseCPULine reads "cpu  user nice system idle iowait irq softirq steal
// ..." (clock ticks): busy is all but idle and iowait. Guest time is
// already inside user and nice.
func parseCPULine(b []byte) (busy, total uint64, ok bool) {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	fields := bytes.Fields(line)
	if len(fields) < 5 || string(fields[0]) != "cpu" {
		return 0, 0, false
	}
	for i, f := range fields[1:] {
		if i >= 8 { // guest and guest_nice are counted in user and nice
			break
		}
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total, true
}
