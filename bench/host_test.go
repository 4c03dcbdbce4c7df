package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVCSCommit(t *testing.T) {
	tests := []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"no stamp", nil, ""},
		{"clean", []debug.BuildSetting{{Key: "vcs.revision", Value: "7bce1cf31686a469e05a3c66857ba470c6debeed"}, {Key: "vcs.modified", Value: "false"}}, "7bce1cf31686"},
		{"local changes", []debug.BuildSetting{{Key: "vcs.revision", Value: "7bce1cf31686a469"}, {Key: "vcs.modified", Value: "true"}}, "7bce1cf31686+dirty"},
		{"short revision", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}, "abc"},
		{"modified, no revision", []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := vcsCommit(&debug.BuildInfo{Settings: tt.settings}); got != tt.want {
				t.Errorf("vcsCommit = %q, want %q", got, tt.want)
			}
		})
	}
}

// binaryCommit reads the stamp of another binary: here one built from a
// throwaway checkout, clean and then with a change, against git's own
// answer. A test binary and a file that is no binary have none.
func TestBinaryCommit(t *testing.T) {
	if got := binaryCommit(os.Args[0]); got != "" {
		t.Errorf("the test binary (no stamp under go test): %q", got)
	}
	notBinary := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(notBinary, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := binaryCommit(notBinary); got != "" {
		t.Errorf("a script: %q", got)
	}
	if testing.Short() {
		t.Skip("builds a binary")
	}
	for _, tool := range []string{"git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	dir := t.TempDir()
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module stamped\n\ngo 1.21\n")
	write("main.go", "package main\n\nfunc main() {}\n")
	git := []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_GLOBAL=/dev/null"}
	run(git, "git", "init", "-q")
	run(git, "git", "add", ".")
	run(git, "git", "commit", "-q", "-m", "x")
	rev := run(git, "git", "rev-parse", "HEAD")[:12]
	build := []string{"GOFLAGS=-buildvcs=true", "GOTOOLCHAIN=local", "GOWORK=off"}
	bin := filepath.Join(dir, "bin")
	run(build, "go", "build", "-o", bin, ".")
	if got := binaryCommit(bin); got != rev {
		t.Errorf("clean checkout: %q, want %q", got, rev)
	}
	write("main.go", "package main\n\nfunc main() { println() }\n")
	run(build, "go", "build", "-o", bin, ".")
	if got := binaryCommit(bin); got != rev+"+dirty" {
		t.Errorf("changed checkout: %q, want %q", got, rev+"+dirty")
	}
}
