//go:build linux

package reliability

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	soakFlag    = flag.Duration("soak", 0, "length of TestSoak (default 20s, 5s with -short; QUARTET_SOAK=10m sets it too)")
	quartetFlag = flag.String("quartet", "", "run the trials against this quartet binary instead of building ./cmd/quartet")
	scaleFlag   = flag.Float64("scale", 1, "multiply the trials' client counts: -scale 2.5 runs issue 16's 500 slow readers and uploaders (mind the host's open-file limit)")
)

// tier is what TestMain prepares once for every trial.
var tier struct {
	binary         string // the quartet command under test
	benchEndpoints bool   // serve knows --bench-endpoints (the load-test endpoints are opt-in)
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "quartet-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tier.binary = *quartetFlag
	if tier.binary == "" {
		tier.binary = filepath.Join(dir, "quartet")
		start := time.Now()
		build := exec.Command("go", "build", "-o", tier.binary, "github.com/quartet-server/quartet/cmd/quartet")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "reliability: go build ./cmd/quartet: %v\n%s", err, out)
			return 1
		}
		if testing.Verbose() {
			fmt.Printf("reliability: built quartet in %v\n", time.Since(start).Round(time.Millisecond))
		}
	}
	// The load-test endpoints (/bytes, /sleep, /echo) become opt-in with
	// --bench-endpoints; a build without that flag serves them always.
	help, _ := exec.Command(tier.binary, "serve", "-h").CombinedOutput()
	tier.benchEndpoints = strings.Contains(string(help), "-bench-endpoints")
	return m.Run()
}

// soakDuration is TestSoak's length: -soak, else QUARTET_SOAK, else 20 s
// (5 s with -short).
func soakDuration(t *testing.T) time.Duration {
	if *soakFlag > 0 {
		return *soakFlag
	}
	if v := os.Getenv("QUARTET_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("QUARTET_SOAK=%q: want a duration like 10m", v)
		}
		return d
	}
	if testing.Short() {
		return 5 * time.Second
	}
	return 20 * time.Second
}

// scaled is n for the full tier and n/10 under -short.
func scaled(n int) int {
	if *scaleFlag > 0 {
		n = int(float64(n) * *scaleFlag)
	}
	if testing.Short() {
		return max(1, n/10)
	}
	return max(1, n)
}
