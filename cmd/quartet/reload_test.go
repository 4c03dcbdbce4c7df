package main

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reloader drives SIGHUP reloads of a running `quartet serve --config`.
type reloader struct {
	t    *testing.T
	p    *proc
	path string
	keys []string // in the order first set
	vals map[string]string
}

// reloadOutcome is the line a reload ends with, whatever it did.
var reloadOutcome = regexp.MustCompile(`(?m)^.*msg="SIGHUP: (?:configuration reloaded|no change could be applied)[^\n]*$`)

func (rl *reloader) write() {
	var b strings.Builder
	for _, k := range rl.keys {
		b.WriteString(k + ": " + rl.vals[k] + "\n")
	}
	if err := os.WriteFile(rl.path, []byte(b.String()), 0o644); err != nil {
		rl.t.Fatal(err)
	}
}

func (rl *reloader) set(key, value string) {
	if _, ok := rl.vals[key]; !ok {
		rl.keys = append(rl.keys, key)
	}
	rl.vals[key] = value
	rl.write()
}

// hup sends SIGHUP and returns the line the reload ended with.
func (rl *reloader) hup() string {
	rl.t.Helper()
	before := len(reloadOutcome.FindAllString(rl.p.log.String(), -1))
	rl.p.signal(syscall.SIGHUP)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if all := reloadOutcome.FindAllString(rl.p.log.String(), -1); len(all) > before {
			return all[before]
		}
		if time.Now().After(deadline) {
			rl.t.Fatalf("reload not logged:\n%s", rl.p.log)
		}
	}
}

// Every setting the table marks live is put in force by SIGHUP, and a
// second SIGHUP of the same file finds nothing changed: a live setting
// that is reported but not taken into the running configuration is
// reported again on every reload (static-revalidate was). Each step
// changes one key, from its default or the step before.
func TestReloadAppliesEveryLiveSetting(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, "page"), []byte("from "+filepath.Base(d)), 0o644)
	}
	os.Symlink(filepath.Join(a, "page"), filepath.Join(b, "outside")) // out of root b
	steps := []struct {
		key, value string
		check      func(t *testing.T, p *proc) // the change's effect, where a request shows it
	}{
		{"root", b, func(t *testing.T, p *proc) {
			if got := fetch(t, "GET", p.url+"/page"); got != "200 from b" {
				t.Errorf("after the new root: %q", got)
			}
			if got := fetch(t, "GET", p.url+"/outside"); !strings.HasPrefix(got, "404") {
				t.Errorf("a link out of the root, by default: %q", got)
			}
		}},
		{"static-revalidate", "30s", func(t *testing.T, p *proc) {
			// Cached now, then replaced on disk: for 30 s the cached one
			// is served; at the default 1 s the new one would be by now.
			fetch(t, "GET", p.url+"/page")
			tmp := filepath.Join(b, ".page")
			os.WriteFile(tmp, []byte("edited"), 0o644)
			os.Rename(tmp, filepath.Join(b, "page"))
			time.Sleep(1500 * time.Millisecond)
			if got := fetch(t, "GET", p.url+"/page"); got != "200 from b" {
				t.Errorf("a file replaced 1.5 s ago with static-revalidate 30s: %q", got)
			}
		}},
		{"static-follow-symlinks", "true", func(t *testing.T, p *proc) {
			if got := fetch(t, "GET", p.url+"/outside"); got != "200 from a" {
				t.Errorf("a link out of the root with static-follow-symlinks: %q", got)
			}
		}},
		{"static-cache-entries", "16", nil},
		{"static-in-memory", "1KiB", nil},
		{"static-in-memory-budget", "2MiB", nil},
		{"bench-endpoints", "true", func(t *testing.T, p *proc) {
			if got := fetch(t, "GET", p.url+"/hello"); got != "200 Hello, World!" {
				t.Errorf("/hello with bench-endpoints: %q", got)
			}
		}},
		{"readers", "2", nil},
		{"readers-min", "1", nil},
		{"readers-max", "2", nil},
		{"writers", "2", nil},
		{"writers-min", "1", nil},
		{"writers-max", "2", nil},
		{"processors", "4", nil},
		{"processors-min", "2", nil},
		{"processors-max", "16", nil},
		{"access-log", filepath.Join(dir, "access.log"), func(t *testing.T, p *proc) {
			fetch(t, "GET", p.url+"/page")
			waitLines(t, filepath.Join(dir, "access.log"), 1)
		}},
		{"access-log-format", "combinedio", nil},
		{"log-level", "debug", nil},
	}
	var live, covered []string
	for _, s := range defaultOptions().settings() {
		if s.live {
			live = append(live, s.key)
		}
	}
	for _, st := range steps {
		covered = append(covered, st.key)
	}
	sort.Strings(live)
	sort.Strings(covered)
	if strings.Join(live, " ") != strings.Join(covered, " ") {
		t.Fatalf("the steps cover %v; the live settings are %v", covered, live)
	}

	rl := &reloader{t: t, path: filepath.Join(dir, "q.yaml"), vals: map[string]string{}}
	rl.set("root", a)
	rl.p = startQuartet(t, serveCmd(t, "--config", rl.path))
	for _, st := range steps {
		rl.set(st.key, st.value)
		if got := rl.hup(); !strings.Contains(got, `changed="`+st.key+": ") || strings.Contains(got, "; ") {
			t.Errorf("%s: %s, want it alone changed", st.key, got)
		}
		if st.check != nil {
			st.check(t, rl.p)
		}
		if got := rl.hup(); !strings.Contains(got, "nothing that can change live changed") {
			t.Errorf("%s: reloading the same file again: %s", st.key, got)
		}
	}
	rl.p.signal(syscall.SIGTERM)
	if code := rl.p.wait(); code != 0 {
		t.Errorf("exit %d:\n%s", code, rl.p.log)
	}
}

// A live change that cannot be applied is logged with its error and named
// as not applied; the reload's report lists only the changes in force.
func TestReloadReportsOnlyWhatItApplied(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "page"), []byte("a page"), 0o644)
	tests := []struct {
		key, bad, good string
		err            string // the error line for the change refused
	}{
		{"root", "/nonexistent", dir, "SIGHUP: new content root; keeping the old one"},
		{"access-log", filepath.Join(dir, "no-such-dir", "access.log"), `""`, "SIGHUP: new access log; keeping the old one"},
	}
	rl := &reloader{t: t, path: filepath.Join(dir, "q.yaml"), vals: map[string]string{}}
	rl.set("root", dir)
	rl.set("log-level", "info")
	rl.p = startQuartet(t, serveCmd(t, "--config", rl.path))
	level := map[string]string{"info": "debug", "debug": "info"}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			rl.t = t
			errors := regexp.MustCompile(regexp.QuoteMeta(tt.err))
			before := len(errors.FindAllString(rl.p.log.String(), -1))
			rl.set(tt.key, tt.bad)
			rl.set("log-level", level[rl.vals["log-level"]])
			got := rl.hup()
			if !strings.Contains(got, `changed="log-level: `) || strings.Contains(got, "; ") ||
				!strings.Contains(got, `not-applied="`+tt.key+": ") {
				t.Errorf("with %s refused: %s", tt.key, got)
			}
			if n := len(errors.FindAllString(rl.p.log.String(), -1)); n != before+1 {
				t.Errorf("%d lines %q, want 1:\n%s", n-before, tt.err, rl.p.log)
			}
			// Alone, the refused change makes a reload that applies nothing.
			if got := rl.hup(); !strings.Contains(got, "no change could be applied") || !strings.Contains(got, `not-applied="`+tt.key+": ") {
				t.Errorf("with only %s, refused: %s", tt.key, got)
			}
			if got := fetch(t, "GET", rl.p.url+"/page"); got != "200 a page" {
				t.Errorf("after the refused change: %q", got)
			}
			rl.set(tt.key, tt.good)
			if got := rl.hup(); !strings.Contains(got, "nothing that can change live changed") {
				t.Errorf("back to the running value: %s", got)
			}
		})
	}
	rl.t = t
	rl.p.signal(syscall.SIGTERM)
	if code := rl.p.wait(); code != 0 {
		t.Errorf("exit %d:\n%s", code, rl.p.log)
	}
}
