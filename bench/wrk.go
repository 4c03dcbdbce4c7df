package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WrkResult is what RunWrk measured of one wrk run.
type WrkResult struct {
	Requests       uint64
	RequestsPerSec float64
	// CPU is wrk's user+system time for the whole run (from wait4's
	// rusage), including its connection setup.
	CPU time.Duration
}

// CPUPerRequest is wrk's client CPU per request.
func (w WrkResult) CPUPerRequest() time.Duration { return perReq(w.CPU, w.Requests) }

// ErrNoWrk is returned by RunWrk when the wrk binary is not installed.
var ErrNoWrk = errors.New("bench: wrk not found in PATH (Debian package wrk)")

// RunWrk runs wrk against url with the given connections, threads and
// duration, as the yardstick for the generator's own CPU cost.
func RunWrk(ctx context.Context, url string, conns, threads int, d time.Duration) (WrkResult, error) {
	path, err := exec.LookPath("wrk")
	if err != nil {
		return WrkResult{}, ErrNoWrk
	}
	threads = max(1, min(threads, conns))
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, path, "-c", strconv.Itoa(conns), "-t", strconv.Itoa(threads),
		"-d", strconv.Itoa(secs)+"s", url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return WrkResult{}, fmt.Errorf("bench: wrk: %w: %s", err, out.String())
	}
	var res WrkResult
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[1] == "requests" && len(f) >= 3 && f[2] == "in":
			res.Requests, _ = strconv.ParseUint(f[0], 10, 64)
		case len(f) == 2 && f[0] == "Requests/sec:":
			res.RequestsPerSec, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if res.Requests == 0 {
		return res, fmt.Errorf("bench: wrk output not understood: %s", out.String())
	}
	return res, nil
}
