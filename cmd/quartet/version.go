package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	goruntime "runtime"

	"github.com/quartet-server/quartet/metrics"
)

// version and commit are stamped by the linker at release builds:
//
//	go build -ldflags "-X main.version=v0.3.0 -X main.commit=$(git rev-parse --short HEAD)" ./cmd/quartet
//
// Without them, the module's build information fills in (the version of a
// go install module@version, the VCS revision of a go build in a
// checkout). Nothing else writes them.
var version, commit string

func buildInfo() metrics.BuildInfo {
	return metrics.ReadBuildInfo(metrics.BuildInfo{Version: version, Commit: commit})
}

const versionAbout = `usage: quartet version      (or quartet --version)

Prints the version, commit and Go version the binary was built with, and
its platform; /metrics exports them as quartet_build_info.`

// runVersion is `quartet version` (and `quartet --version`). It has no
// flags, but takes -h as every command does.
func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("version", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, versionAbout)
			return nil
		}
		return usageError{err}
	}
	if fl.NArg() > 0 {
		return unexpectedArgument(fl, args)
	}
	b := buildInfo()
	fmt.Fprintf(stdout, "quartet %s (commit %s, %s, %s/%s)\n", b.Version, b.Commit, b.GoVersion, goruntime.GOOS, goruntime.GOARCH)
	return nil
}
