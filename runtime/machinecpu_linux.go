package runtime

import (
	"bytes"

	"golang.org/x/sys/unix"
)

// machineCPU reads how busy the machine's CPUs were between two calls,
// from /proc/stat's first line. It keeps /proc/stat open from its first
// reading to close and reads it again from offset 0 (the file is made
// anew for each read from its start, as top(1) reads it), one pread a
// period: opening it each period took an openat, a read and a close, and
// os.Open's registration with the netpoller (two epoll_ctl and two fcntl
// calls, a finalizer), and was most of what an idle server spent (37% of
// its CPU at the control loop's 10 readings a second). The descriptor
// belongs to the control loop, which closes it when it ends.
// The control loop's alone; not safe for concurrent use.
type machineCPU struct {
	fd                     int // /proc/stat, when open
	buf                    [512]byte
	busy, total            uint64
	open, haveLast, failed bool
}

// busyFraction is the share of the machine's CPU time since the last call
// that was not idle (nor waiting for I/O); false the first time, or when
// /proc/stat cannot be read (it is then not tried again).
func (m *machineCPU) busyFraction() (float64, bool) {
	if m.failed {
		return 0, false
	}
	if !m.open {
		fd, err := unix.Open("/proc/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			m.failed = true
			return 0, false
		}
		m.fd, m.open = fd, true
	}
	n, err := unix.Pread(m.fd, m.buf[:], 0)
	if err != nil {
		n = 0
	}
	busy, total, ok := parseCPULine(m.buf[:max(n, 0)])
	if !ok {
		m.close()
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

// close lets /proc/stat go; a later busyFraction opens it again.
func (m *machineCPU) close() {
	if m.open {
		_ = unix.Close(m.fd)
		m.open = false
	}
}

// parseCPULine reads "cpu  user nice system idle iowait irq softirq steal
// ..." (clock ticks): busy is all but idle and iowait. Guest time is
// already inside user and nice. It allocates nothing: the control loop
// reads the line up to ten times a second.
func parseCPULine(b []byte) (busy, total uint64, ok bool) {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	name, rest, _ := bytes.Cut(line, []byte{' '})
	if string(name) != "cpu" {
		return 0, 0, false
	}
	n := 0
	for n < 8 { // guest and guest_nice are counted in user and nice
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 {
			break
		}
		var field []byte
		field, rest, _ = bytes.Cut(rest, []byte{' '})
		v, ok := parseTicks(field)
		if !ok {
			return 0, 0, false
		}
		total += v
		if n != 3 && n != 4 {
			busy += v
		}
		n++
	}
	if n < 4 {
		return 0, 0, false
	}
	return busy, total, true
}

// parseTicks reads a decimal count of clock ticks (strconv.ParseUint
// would allocate its argument's string, which its error may keep).
func parseTicks(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 { // 19 digits cannot overflow
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
