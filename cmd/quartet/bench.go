package main

import (
	"context"
	"io"

	"github.com/quartet-server/quartet/bench"
)

// runBench is `quartet bench`: the load generator, the idle-connection
// experiment and the peer comparison; the work is in package bench.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Main(ctx, args, benchEnv(stdout, stderr))
}

// benchEnv is the environment bench and sweep run in: the in-process
// Quartet server is wired here so package bench stays independent of it.
func benchEnv(stdout, stderr io.Writer) bench.Env {
	return bench.Env{Stdout: stdout, Stderr: stderr}
}
