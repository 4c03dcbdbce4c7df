//go:build linux

package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times. It is 100 on
// every Linux architecture Go supports (sysconf(_SC_CLK_TCK) without cgo).
const clockTicks = 100

// ProcCPU returns the user+system CPU time of process pid from
// /proc/PID/stat (10 ms resolution).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: no ')'", pid)
	}
	f := bytes.Fields(b[i+1:])
	// After ')', field 3 (state) is f[0]; utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// CoreBusy is the time cpus have spent not idle since boot, from
// /proc/stat: user, nice, system, irq and softirq (not steal, the time
// the hypervisor ran something else, nor iowait). On a CPU given to one
// server (a pinned comparison) it is the server's process and the
// kernel's work done there in its idle time too, such as the softirq
// that frees the buffers its client consumed on another CPU, which
// /proc/PID/stat does not charge to any process. Whatever else runs on
// those CPUs counts as well: the figure is the server's on a quiet
// machine only.
func CoreBusy(cpus []int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return coreBusy(b, cpus)
}

// coreBusy is CoreBusy over stat, the text of /proc/stat.
func coreBusy(stat []byte, cpus []int) (time.Duration, error) {
	var ticks uint64
	for _, cpu := range cpus {
		prefix := []byte("cpu" + strconv.Itoa(cpu) + " ")
		found := false
		for line := range bytes.Lines(stat) {
			rest, ok := bytes.CutPrefix(line, prefix)
			if !ok {
				continue
			}
			// user nice system idle iowait irq softirq steal ...
			f := bytes.Fields(rest)
			if len(f) < 7 {
				return 0, fmt.Errorf("bench: /proc/stat cpu%d: %d fields", cpu, len(f))
			}
			for _, i := range []int{0, 1, 2, 5, 6} {
				v, err := strconv.ParseUint(string(f[i]), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("bench: /proc/stat cpu%d: %w", cpu, err)
				}
				ticks += v
			}
			found = true
			break
		}
		if !found {
			return 0, fmt.Errorf("bench: /proc/stat: no cpu%d", cpu)
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// ProcRSS returns the resident set size of process pid in bytes, from
// VmRSS in /proc/PID/status.
func ProcRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(v) // "1234", "kB"
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseUint(string(f[0]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: /proc/%d/status VmRSS: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("bench: /proc/%d/status: no VmRSS", pid)
}

// isTerminal reports whether w is a terminal, for the live progress line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range bytes.Lines(b) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
			return string(bytes.TrimSpace(v))
		}
	}
	return "unknown"
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// congestionControl is the kernel's default TCP congestion control.
func congestionControl() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		return "unknown"
	}
	return string(bytes.TrimSpace(b))
}

// cpuSet lists the CPUs process (or thread) pid may run on; 0 means the
// calling thread. It is nil when the affinity cannot be read (the process
// has gone).
func cpuSet(pid int) []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &set); err != nil {
		return nil
	}
	var out []int
	for i := range 1024 {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	return out
}

// ProcTreeCPU is the CPU time of process pid and of its descendants
// alive now: a server made of processes (nginx's master and workers).
func ProcTreeCPU(pid int) (time.Duration, error) { return procTreeSum(pid, ProcCPU) }

// ProcTreeRSS is the resident memory of pid and its descendants alive
// now. Pages they share (a forked worker's copy-on-write heap) count once
// per process, which overstates the total but not its growth.
func ProcTreeRSS(pid int) (uint64, error) { return procTreeSum(pid, ProcRSS) }

// procTreeSum adds up read over pid and its descendants; a descendant
// that exits meanwhile counts nothing.
func procTreeSum[T time.Duration | uint64](pid int, read func(int) (T, error)) (T, error) {
	total, err := read(pid)
	if err != nil {
		return 0, err
	}
	for _, child := range procChildren(pid) {
		if v, err := procTreeSum(child, read); err == nil {
			total += v
		}
	}
	return total, nil
}

// procTree is pid and its descendants alive now, pid first.
func procTree(pid int) []int {
	out := []int{pid}
	for _, child := range procChildren(pid) {
		out = append(out, procTree(child)...)
	}
	return out
}

// signalTree sends sig to pid and then to its descendants alive now (a
// forked server's workers with their master). A descendant that exits
// meanwhile is no error; pid's own error is returned. For SIGSTOP it
// returns once every thread of the tree has stopped (or stopWait has
// passed): the signal only marks them, and each stops when it is next
// scheduled, which on a busy CPU can be after a run has begun.
func signalTree(pid int, sig unix.Signal) error {
	err := unix.Kill(pid, sig)
	tree := procTree(pid)
	for _, p := range tree[1:] {
		_ = unix.Kill(p, sig)
	}
	if err != nil || sig != unix.SIGSTOP {
		return err
	}
	for deadline := time.Now().Add(stopWait); !treeStopped(tree) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return nil
}

// stopWait bounds signalTree's wait for a tree to stop.
const stopWait = time.Second

// treeStopped reports whether every thread of pids that is still alive
// is stopped.
func treeStopped(pids []int) bool {
	for _, pid := range pids {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			continue // gone
		}
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
			if err != nil {
				continue
			}
			if st := statState(b); st != 'T' && st != 't' && st != 'Z' && st != 'X' && st != 0 {
				return false
			}
		}
	}
	return true
}

// statState is the state letter of a /proc stat line, 0 if it has none.
func statState(stat []byte) byte {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0
	}
	return stat[i+2]
}

// procChildren lists pid's child processes from each of its threads'
// /proc/PID/task/TID/children.
func procChildren(pid int) []int {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			if c, err := strconv.Atoi(string(f)); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// pinSelf moves every thread of this process onto cpus (threads the Go
// runtime creates later inherit the mask of the thread that creates them)
// and returns a function that puts each back on the process's former CPUs.
// The load generator pins itself so in a pinned comparison; children it
// starts get their own CPUs through taskset.
func pinSelf(cpus []int) (restore func(), err error) {
	var want, was unix.CPUSet
	for _, c := range cpus {
		want.Set(c)
	}
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return nil, os.NewSyscallError("sched_getaffinity", err)
	}
	setAll := func(set *unix.CPUSet) error {
		// Threads started while we iterate are caught by the next pass.
		done := map[int]bool{}
		for {
			tasks, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return err
			}
			fresh := 0
			for _, t := range tasks {
				tid, _ := strconv.Atoi(t.Name())
				if tid == 0 || done[tid] {
					continue
				}
				fresh++
				done[tid] = true
				if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
					return os.NewSyscallError("sched_setaffinity", err)
				}
			}
			if fresh == 0 {
				return nil
			}
		}
	}
	if err := setAll(&want); err != nil {
		_ = setAll(&was)
		return nil, err
	}
	return func() { _ = setAll(&was) }, nil
}
