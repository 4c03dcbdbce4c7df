package main

import (
	"context"
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

// runVersion is `quartet version` (and `quartet --version`).
func runVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", args[0])}
	}
	b := buildInfo()
	fmt.Fprintf(stdout, "quartet %s (commit %s, %s, %s/%s)\n", b.Version, b.Commit, b.GoVersion, goruntime.GOOS, goruntime.GOARCH)
	return nil
}
