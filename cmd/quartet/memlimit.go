package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memoryLimitRefresh is how often --memory-limit auto reads the cgroup's
// limit again: a container's limit can be changed while it runs.
const memoryLimitRefresh = time.Minute

// setMemoryLimit applies --memory-limit to Go's runtime until ctx ends,
// and says for the startup line what is in force.
//
// Go's collector does not know the container's memory limit: it lets the
// heap grow to twice what is live before it collects, and a burst of
// connections that takes a server near its cgroup's limit gets it killed
// where collecting harder would have kept it alive. auto sets the soft
// limit (GOMEMLIMIT) to 90% of the cgroup's limit, as
// github.com/KimMachineGun/automemlimit does for many Go servers, whose
// cgroup v1 and v2 reading this uses; with no limit, or none readable, it
// changes nothing. GOMEMLIMIT in the environment wins, as it does for any
// Go program (and AUTOMEMLIMIT, the library's, changes the 90% or turns
// auto off).
//
// restore puts back the limit there was before, for the tests that run
// the command in their own process.
func setMemoryLimit(ctx context.Context, v memoryLimit, logger *slog.Logger) (inForce string, restore func()) {
	before := debug.SetMemoryLimit(-1)
	restore = func() { debug.SetMemoryLimit(before) }
	if env := os.Getenv("GOMEMLIMIT"); env != "" {
		return "GOMEMLIMIT=" + env, restore
	}
	switch v {
	case memoryLimitOff:
		return "off", restore
	case memoryLimitAuto:
	default:
		debug.SetMemoryLimit(int64(v))
		return v.String(), restore
	}
	// Read once here to tell "no limit" from "could not read one" in the
	// startup line; after, an unreadable cgroup counts as no limit (Go's
	// default) rather than an error logged every minute.
	var unreadable error
	if _, err := memlimit.FromCgroup(); err != nil && !errors.Is(err, memlimit.ErrNoLimit) {
		unreadable = err
	}
	fromCgroup := func() (uint64, error) {
		limit, err := memlimit.FromCgroup()
		if err != nil && !errors.Is(err, memlimit.ErrNoLimit) {
			err = memlimit.ErrNoLimit
		}
		return limit, err
	}
	limit, err := memlimit.Set(memlimit.WithProvider(fromCgroup), memlimit.WithLogger(logger),
		memlimit.WithRefreshInterval(ctx, memoryLimitRefresh))
	switch {
	case err != nil: // a bad AUTOMEMLIMIT; memlimit has logged it
		return "auto: not set", restore
	case unreadable != nil:
		return fmt.Sprintf("auto: none (cgroup: %v)", unreadable), restore
	case limit == math.MaxInt64:
		return "auto: none (the cgroup has no limit)", restore
	}
	return fmt.Sprintf("auto: %.1fMiB (from the cgroup's limit)", float64(limit)/(1<<20)), restore
}
