package main

import (
	"context"
	"io"

	"github.com/quartet-server/quartet/bench"
)

// runSweep is `quartet sweep SPEC.yaml`: an experiment matrix over stage
// sizes, connection counts and workloads; the work is in package bench.
func runSweep(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.SweepMain(ctx, args, benchEnv(stdout, stderr))
}
