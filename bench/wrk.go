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

// WrkConfig is one wrk run.
type WrkConfig struct {
	URL     string
	Conns   int
	Threads int
	// Duration is rounded to whole seconds (wrk takes no finer unit), at
	// least 1 s.
	Duration time.Duration
	// CPUs, if set, pins wrk to these CPUs (taskset list syntax).
	CPUs string
}

// WrkResult is what RunWrk measured of one wrk run.
type WrkResult struct {
	Requests       uint64
	RequestsPerSec float64
	// CPU is wrk's user+system time for the whole run (from wait4's
	// rusage), including its connection setup.
	CPU time.Duration
	// P50 and P99 are from wrk's --latency distribution.
	P50, P99 time.Duration
	// SocketErrors sums wrk's connect, read, write and timeout errors;
	// Non2xx counts responses outside 2xx and 3xx.
	SocketErrors uint64
	Non2xx       uint64
}

// CPUPerRequest is wrk's client CPU per request.
func (w WrkResult) CPUPerRequest() time.Duration { return perReq(w.CPU, w.Requests) }

// ErrNoWrk is returned by RunWrk when the wrk binary is not installed.
var ErrNoWrk = errors.New("bench: wrk not found in PATH (Debian package wrk)")

// wrkSeconds is d as wrk's -d argument: whole seconds, at least one.
func wrkSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))) + "s"
}

// RunWrk runs wrk: the yardstick for the generator's own CPU cost, and the
// load of `quartet bench compare` (wrk 4.1, one thread, as issue 15's table
// was measured).
func RunWrk(ctx context.Context, c WrkConfig) (WrkResult, error) {
	path, err := exec.LookPath("wrk")
	if err != nil {
		return WrkResult{}, ErrNoWrk
	}
	threads := max(1, min(c.Threads, c.Conns))
	argv := []string{path, "-c", strconv.Itoa(c.Conns), "-t", strconv.Itoa(threads),
		"-d", wrkSeconds(c.Duration), "--latency", c.URL}
	if c.CPUs != "" {
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return WrkResult{}, errors.New("bench: pinning wrk: taskset not found (Debian package util-linux)")
		}
		argv = append([]string{ts, "-c", c.CPUs}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return WrkResult{}, fmt.Errorf("bench: wrk: %w: %s", err, out.String())
	}
	res, err := parseWrk(out.Bytes())
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return res, err
}

// parseWrk reads wrk's report (with --latency).
func parseWrk(out []byte) (WrkResult, error) {
	var res WrkResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			res.Requests, _ = strconv.ParseUint(f[0], 10, 64)
		case len(f) == 2 && f[0] == "Requests/sec:":
			res.RequestsPerSec, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			res.P50, _ = parseWrkDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			res.P99, _ = parseWrkDuration(f[1])
		case strings.HasPrefix(line, "Socket errors:"):
			// "Socket errors: connect 0, read 3, write 0, timeout 12"
			for _, part := range strings.Split(strings.TrimPrefix(line, "Socket errors:"), ",") {
				kv := strings.Fields(part)
				if len(kv) == 2 {
					n, _ := strconv.ParseUint(kv[1], 10, 64)
					res.SocketErrors += n
				}
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			res.Non2xx, _ = strconv.ParseUint(f[4], 10, 64)
		}
	}
	if res.Requests == 0 {
		return res, fmt.Errorf("bench: wrk output not understood (no requests): %s", out)
	}
	return res, nil
}

// parseWrkDuration reads wrk's latency figures: "412.00us", "1.20ms",
// "2.00s", "1.50m".
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: wrk latency %q: %w", s, err)
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("bench: wrk latency %q: unknown unit", s)
}
