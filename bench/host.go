package bench

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os/exec"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Host describes the machine and build a measurement ran on, so that a
// report read later says what its figures belong to.
type Host struct {
	CPU    string `json:"cpu"`    // model name
	Cores  int    `json:"cores"`  // logical CPUs the OS reports
	Usable int    `json:"usable"` // logical CPUs this process may run on
	Kernel string `json:"kernel"`
	// Congestion is the kernel's default TCP congestion control, which
	// every server measured gets. It moves static-file figures by a
	// third: with bbr the kernel paces each connection's segments with a
	// timer (loopback has no fq qdisc to do it), so a 1 MiB response goes
	// out in timer interrupts rather than in the sendfile call, at more
	// CPU a request for every server (pinned, wrk -t1 -c100, December
	// 2026: 100-110 µs a request under bbr, 67-74 under cubic, for
	// Quartet, nginx and the Go floor alike).
	Congestion string `json:"tcp_congestion_control"`
	Go         string `json:"go"`
	// Commit is this executable's Quartet revision ("+dirty" with local
	// changes), from the build's VCS stamp or, failing that, git. The
	// tool's, that is: a Quartet binary it measures (compare's --quartet,
	// --quartet-b) has its own stamp (CompareResult.Commits).
	Commit string `json:"commit"`
}

// String is the one-line form for logs and report headers.
func (h Host) String() string {
	usable := ""
	if h.Usable > 0 && h.Usable != h.Cores {
		usable = fmt.Sprintf(" (%d usable)", h.Usable)
	}
	return fmt.Sprintf("%s, %d cores%s, Linux %s (TCP %s), %s, commit %s", h.CPU, h.Cores, usable, h.Kernel, h.Congestion, h.Go, h.Commit)
}

// HostInfo collects Host for this process.
func HostInfo(ctx context.Context) Host {
	h := Host{CPU: cpuModel(), Cores: goruntime.NumCPU(), Usable: len(cpuSet(0)), Kernel: kernelRelease(), Congestion: congestionControl(), Go: goruntime.Version()}
	h.Commit = buildCommit()
	if h.Commit == "" {
		h.Commit = gitCommit(ctx)
	}
	if h.Commit == "" {
		h.Commit = "unknown"
	}
	return h
}

// buildCommit reads the VCS stamp `go build` puts in a binary built from a
// checkout (absent under `go test` and `go run`).
func buildCommit() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return vcsCommit(bi)
}

// binaryCommit is the VCS stamp of the Go binary at path: "" when it has
// none (built by go run, with -buildvcs=false, or outside a checkout) or
// is not a Go binary.
func binaryCommit(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	return vcsCommit(bi)
}

// vcsCommit is bi's revision, shortened to 12 digits, "+dirty" when the
// checkout had local changes; "" without a stamp.
func vcsCommit(bi *debug.BuildInfo) string {
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return ""
	}
	return rev + dirty
}

// gitCommit asks git about the working directory's checkout.
func gitCommit(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rev, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(rev))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		s += "+dirty"
	}
	return s
}
