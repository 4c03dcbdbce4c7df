package main

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// Every command, and every command of a command, answers -h, -help and
// --help with its usage on stdout and exit 0: help asked for is never an
// error, even from a command without flags.
func TestEveryCommandTakesHelp(t *testing.T) {
	type cmd struct {
		args  []string
		usage string // how the help begins
	}
	var cmds []cmd
	for name := range commands() {
		cmds = append(cmds, cmd{[]string{name}, "usage: quartet " + name})
	}
	for _, sub := range []string{"devices", "ping", "perf"} {
		cmds = append(cmds, cmd{[]string{"rdma", sub}, "Usage of quartet rdma " + sub})
	}
	for _, sub := range []string{"idle", "compare", "overload"} {
		cmds = append(cmds, cmd{[]string{"bench", sub}, "usage: quartet bench " + sub})
	}
	sort.Slice(cmds, func(i, j int) bool { return strings.Join(cmds[i].args, " ") < strings.Join(cmds[j].args, " ") })
	for _, c := range cmds {
		for _, h := range []string{"-h", "-help", "--help"} {
			args := append(slices.Clone(c.args), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var stdout, stderr strings.Builder
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if code := run(ctx, args, &stdout, &stderr); code != 0 || stderr.Len() > 0 {
					t.Errorf("exit %d, want 0; stderr %q", code, stderr.String())
				}
				if !strings.HasPrefix(stdout.String(), c.usage) {
					t.Errorf("stdout %q, want it to begin %q", stdout.String(), c.usage)
				}
			})
		}
	}
}

// quartet serve -h says what each flag does, and no more than it does.
func TestServeHelpLines(t *testing.T) {
	var out strings.Builder
	printServeUsage(&out)
	lines := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[0], "--") {
			lines[f[0]] = l
		}
	}
	tests := []struct {
		flag     string
		want     []string
		wantNone []string
	}{
		{"--static-cache-entries", []string{"at most once per --static-revalidate"}, []string{"once a second"}},
		{"--bench-endpoints", []string{"/hello, /sleep, /compute, /bytes, /echo", "(default: only without --root and --config)"}, []string{"(default auto)"}},
		{"--idle-timeout", []string{"(0: the default) (default 1m0s)"}, nil},
		{"--server-name", []string{`("": the default) (default quartet)`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			l, ok := lines[tt.flag]
			if !ok {
				t.Fatalf("no line for %s in:\n%s", tt.flag, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(l, w) {
					t.Errorf("%q does not say %q", l, w)
				}
			}
			for _, w := range tt.wantNone {
				if strings.Contains(l, w) {
					t.Errorf("%q says %q", l, w)
				}
			}
		})
	}
}
