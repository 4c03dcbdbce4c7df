package main

import (
	"context"
	"io"
	"os"

	"github.com/quartet-server/quartet/bench"
	"github.com/quartet-server/quartet/bench/inproc"
)

// runBench is `quartet bench`: the load generator, the idle-connection
// experiment and the peer comparison; the work is in package bench.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Main(ctx, args, benchEnv(stdout, stderr))
}

// benchEnv is what bench and sweep run with: the in-process Quartet server
// and this executable (for `quartet serve` as a separate process) are
// wired here so that package bench does not depend on the server.
func benchEnv(stdout, stderr io.Writer) bench.Env {
	exe, _ := os.Executable()
	return bench.Env{Stdout: stdout, Stderr: stderr, Quartet: inproc.Start, QuartetBinary: exe}
}
