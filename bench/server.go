package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// What a Server may also tell about itself; each is optional, found by a
// type assertion, so that a URL the tool did not start needs none of them.

// isInProcess reports whether s runs inside this process (see package
// bench/inproc), whose CPU cannot be read apart from the generator's.
func isInProcess(s Server) bool {
	ip, ok := s.(interface{ InProcess() bool })
	return ok && ip.InProcess()
}

// serverParams are the stage sizes s runs with, if it says.
func serverParams(s Server) (ServerParams, bool) {
	if p, ok := s.(interface{ Params() (ServerParams, bool) }); ok {
		return p.Params()
	}
	return ServerParams{}, false
}

// serverRSS reads s's resident memory: its own way (several processes)
// when it has one, else its process's VmRSS.
func serverRSS(s Server) func() (uint64, error) {
	if r, ok := s.(interface{ RSS() (uint64, error) }); ok {
		return r.RSS
	}
	return func() (uint64, error) { return ProcRSS(s.PID()) }
}

// serverMetricsURL is s's Prometheus endpoint, "" if unknown.
func serverMetricsURL(s Server) string {
	if m, ok := s.(interface{ MetricsURL() string }); ok {
		return m.MetricsURL()
	}
	return ""
}

// sharedCPUWarning says when the generator and server s compete for the
// same CPUs, which makes the server's throughput depend on the client's
// cost (and, in-process, its CPU per request an estimate); "" when they
// are pinned apart. pidHint says how the calling command is told the
// server's process, for a server it did not start: each command has its
// own way (a flag, or none), and naming another's sent users looking for
// a flag that is not there.
func sharedCPUWarning(s Server, pidHint string) string {
	if isInProcess(s) {
		return fmt.Sprintf("client and server share the machine's CPUs (%s): the server runs inside the load generator's process, so the generator's work takes CPU from it, its CPU per request is an estimate, and its loops share the generator's Go scheduler, which makes loop counts shares of its Ps (server: process in the spec runs quartet serve apart)", cpuList(cpuSet(0)))
	}
	pid := s.PID()
	if pid <= 0 {
		if strings.Contains(s.URL(), "//127.") || strings.Contains(s.URL(), "//[::1]") {
			return "client and server may share CPUs: the server is on this machine and its process is unknown (" + pidHint + ")"
		}
		return ""
	}
	both := sharedCPUs(cpuSet(os.Getpid()), cpuSet(pid))
	if len(both) == 0 {
		return ""
	}
	return fmt.Sprintf("client and server share CPUs %s: the generator's work takes CPU from the server (pin them apart with taskset for figures free of it)", cpuList(both))
}

// sharedCPUs are the CPUs in both sets.
func sharedCPUs(a, b []int) []int {
	var both []int
	for _, c := range a {
		if slices.Contains(b, c) {
			both = append(both, c)
		}
	}
	return both
}

// cpuList prints CPUs as taskset does: "0-3,6".
func cpuList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", cpus[i], cpus[j])
		} else {
			fmt.Fprintf(&b, "%d", cpus[i])
		}
		i = j + 1
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

// parseCPUList reads taskset's list syntax: "1", "0-3,6".
func parseCPUList(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return nil, fmt.Errorf("bench: CPU list %q: want e.g. 1 or 0-3,6", s)
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}
