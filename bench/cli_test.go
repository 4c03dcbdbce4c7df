//go:build linux

package bench

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMainOutputs(t *testing.T) {
	srv, served := countingServer(t)
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, out string)
	}{
		{name: "text", args: []string{srv.URL + "/hello", "-c", "2", "-n", "100"}, check: func(t *testing.T, out string) {
			for _, want := range []string{"100 requests", "p99.99", "2xx 100", "errors: connect 0", "client CPU"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		}},
		{name: "json", args: []string{"-n", "50", "--json", "-c", "1", srv.URL + "/hello"}, check: func(t *testing.T, out string) {
			var r Result
			if err := json.Unmarshal([]byte(out), &r); err != nil || r.Requests != 50 || r.Latency.P50 <= 0 || r.Status[2] != 50 {
				t.Errorf("json %v: %s", err, out)
			}
			// Status classes are labelled, not an array to count along.
			var raw struct {
				Status map[string]uint64 `json:"status"`
			}
			if err := json.Unmarshal([]byte(out), &raw); err != nil || raw.Status["2xx"] != 50 || len(raw.Status) != 5 {
				t.Errorf("status counts %v (%v): %s", raw.Status, err, out)
			}
		}},
		{name: "csv with mix and server pid", args: []string{"--csv", "-n", "40", "-c", "2", "-m", "POST /echo body=100", "-m", "/hello weight=3",
			"--server-pid", pidString(), srv.URL}, check: func(t *testing.T, out string) {
			recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
			if err != nil || len(recs) != 2 || len(recs[0]) != len(CSVHeader()) {
				t.Fatalf("csv %v: %q", err, out)
			}
			if recs[1][7] != "40" || recs[1][len(recs[1])-1] == "" {
				t.Errorf("requests %q, server CPU/req %q", recs[1][7], recs[1][len(recs[1])-1])
			}
		}},
		{name: "method body header", args: []string{"-X", "POST", "-b", "10", "-H", "X-A: b", "-n", "10", "-c", "1", srv.URL + "/echo"}, check: func(t *testing.T, out string) {
			if !strings.Contains(out, "2xx 10") {
				t.Errorf("output:\n%s", out)
			}
		}},
		{name: "open loop", args: []string{"-R", "500", "-d", "300ms", "-c", "2", srv.URL + "/hello"}, check: func(t *testing.T, out string) {
			if !strings.Contains(out, "open loop at 500 req/s") || !strings.Contains(out, "uncorrected") {
				t.Errorf("output:\n%s", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := Main(t.Context(), tt.args, Env{Stdout: &out, Stderr: &errb}); err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			tt.check(t, out.String())
		})
	}
	if served.Load() == 0 {
		t.Fatal("server saw nothing")
	}
	t.Run("usage", func(t *testing.T) {
		var out, errb bytes.Buffer
		if err := Main(t.Context(), nil, Env{Stdout: &out, Stderr: &errb}); !errors.Is(err, errUsage) || !strings.Contains(errb.String(), "usage") {
			t.Fatalf("err %v, stderr %q", err, errb.String())
		}
		for _, args := range [][]string{{"-h"}, {"idle", "-h"}, {"compare", "-h"}} {
			errb.Reset()
			if err := Main(t.Context(), args, Env{Stdout: &out, Stderr: &errb}); err != nil || !strings.Contains(errb.String(), "usage") {
				t.Errorf("%v: err %v, stderr %q", args, err, errb.String())
			}
		}
		if err := SweepMain(t.Context(), []string{"-h"}, Env{Stdout: &out, Stderr: &errb}); err != nil {
			t.Errorf("sweep -h: %v", err)
		}
	})
}

func pidString() string { return strconv.Itoa(os.Getpid()) }

func TestProgressCallback(t *testing.T) {
	srv, _ := countingServer(t)
	var got []Progress
	_, err := Run(t.Context(), Config{URL: srv.URL + "/hello", Conns: 2, Duration: 350 * time.Millisecond,
		ProgressEvery: 100 * time.Millisecond, Progress: func(p Progress) { got = append(got, p) }})
	if err != nil {
		t.Fatal(err)
	}
	rated := false
	for _, p := range got {
		rated = rated || p.Rate > 0
	}
	if len(got) < 2 || got[len(got)-1].Requests == 0 || !rated {
		t.Fatalf("progress %+v", got)
	}
	var b bytes.Buffer
	progressPrinter(&b)(got[0])
	if !strings.Contains(b.String(), "req/s") || isTerminal(&b) {
		t.Fatalf("progress line %q", b.String())
	}
}

// TestPeersServeEndpoints starts each peer and checks it answers the whole
// endpoint set, pipelined, the way Quartet's built-in handler does.
func TestPeersServeEndpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the peers module")
	}
	wd, _ := os.Getwd()
	dir, err := FindPeersDir(filepath.Dir(wd))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildPeers(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bin)
	mix := []RequestSpec{{Path: "/hello"}, {Path: "/sleep?ms=2"}, {Path: "/bytes?n=100000"},
		{Method: "POST", Path: "/echo", BodySize: 5000}}
	for _, name := range peerNames {
		t.Run(name, func(t *testing.T) {
			srv, err := StartProcess(t.Context(), name, []string{filepath.Join(bin, name), "-addr", "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			res, err := Run(t.Context(), Config{URL: srv.URL() + "/", Conns: 3, Pipeline: 4, Requests: 400, Mix: mix})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status[2] != 400 || res.ErrorTotal() != 0 {
				t.Fatalf("status %v, errors %+v", res.Status, res.Errors)
			}
			// 100 of each: /hello 13 bytes, /sleep 13, /bytes 100000, /echo 5000.
			if min := uint64(100 * (13 + 13 + 100000 + 5000)); res.BytesRead < min {
				t.Errorf("read %d bytes, want at least %d of bodies", res.BytesRead, min)
			}
		})
	}
	// sendfile serves -root's files and /hello, not the endpoint set:
	// files whole and pipelined, HEAD, and 404 and 405 for the rest.
	t.Run(sendfilePeer, func(t *testing.T) {
		root := t.TempDir()
		body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		if err := os.WriteFile(filepath.Join(root, "f.bin"), body, 0o644); err != nil {
			t.Fatal(err)
		}
		srv, err := StartProcess(t.Context(), sendfilePeer, []string{filepath.Join(bin, sendfilePeer), "-addr", "127.0.0.1:0", "-root", root})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		res, err := Run(t.Context(), Config{URL: srv.URL() + "/", Conns: 3, Pipeline: 2, Requests: 60,
			Mix: []RequestSpec{{Path: "/f.bin"}, {Path: "/hello"}}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status[2] != 60 || res.ErrorTotal() != 0 {
			t.Fatalf("status %v, errors %+v", res.Status, res.Errors)
		}
		if min := uint64(30 * (len(body) + 13)); res.BytesRead < min {
			t.Errorf("read %d bytes, want at least %d of bodies", res.BytesRead, min)
		}
		for _, tt := range []struct {
			method, path string
			status       int
			body         []byte
		}{
			{"GET", "/f.bin", 200, body},
			{"HEAD", "/f.bin", 200, nil},
			{"GET", "/hello", 200, []byte("Hello, World!")},
			{"GET", "/missing", 404, nil},
			{"GET", "/", 404, nil},
			{"POST", "/f.bin", 405, nil},
		} {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL()+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tt.status || !bytes.Equal(got, tt.body) {
				t.Errorf("%s %s: %d, %d bytes (%v); want %d, %d bytes", tt.method, tt.path, resp.StatusCode, len(got), err, tt.status, len(tt.body))
			}
			if tt.method == "HEAD" && resp.ContentLength != int64(len(body)) {
				t.Errorf("HEAD %s: Content-Length %d, want %d", tt.path, resp.ContentLength, len(body))
			}
		}
	})
}

// A command line the tool cannot run as given is a usage error (the
// command exits 2) that names what is wrong, before anything starts: a
// zero or negative count is not taken for "the default". A target that
// cannot be reached is not a usage error.
func TestUsageErrors(t *testing.T) {
	const url = "http://127.0.0.1:1/hello" // never reached: the checks come first
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-c", "0", url}, "-c 0: want at least 1 connection"},
		{[]string{"-c", "-5", url}, "-c -5: want at least 1 connection"},
		{[]string{"-t", "-1", url}, "-t -1: want 0 (the default) or more loops"},
		{[]string{"-n", "-1", url}, "-n -1: want 0 (run for -d) or more responses"},
		{[]string{"-d", "-1s", url}, "-d -1s: want a duration above 0 (or -n)"},
		{[]string{"-d", "0", url}, "-d 0s: want a duration above 0 (or -n)"},
		{[]string{"-w", "-1s", url}, "-w -1s: want 0 or more"},
		{[]string{"-p", "0", url}, "-p 0: want at least 1 request in flight"},
		{[]string{"-timeout", "0", url}, "-timeout 0: want a duration above 0, or a negative one for none"},
		{[]string{"-R", "-3", url}, "-R -3: want 0 (closed loop) or a rate above 0"},
		{[]string{"-b", "-1", url}, "-b -1: want 0 or more bytes"},
		{[]string{"foo"}, `target "foo": want http://HOST:PORT/PATH, inproc:/PATH or msg://HOST:PORT`},
		{[]string{"--msg-rdma", "sideways", "msg://127.0.0.1:1"}, `--msg-rdma: deliver: unknown mode "sideways"`},
		{[]string{"--msg-provider", "carrier-pigeon", "msg://127.0.0.1:1"}, `--msg-provider "carrier-pigeon": want soft, verbs or auto`},
		{[]string{"idle", "-n", "abc"}, `count "abc": want a whole number above 0`},
		{[]string{"idle", "-n", "100,0"}, `count "0": want a whole number above 0`},
		{[]string{"compare", "--modes", "sideways"}, `compare: mode "sideways": want pinned or both-cores`},
		{[]string{"compare", "--conns", "0"}, `count "0": want a whole number above 0`},
		{[]string{"compare", "-d", "0"}, "-d 0s: want a duration above 0 (or -n)"},
		{[]string{"overload", "-n", "5", url}, "overload: runs last -d, not -n responses"},
		{[]string{"overload", "-c", "0", url}, "-c 0: want at least 1 connection"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			err := Main(t.Context(), tt.args, Env{Stdout: &out, Stderr: &errb})
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v (usage: %t), want a usage error saying %q", err, errors.Is(err, ErrUsage), tt.want)
			}
		})
	}
	// Nor is a negative -timeout, which Config reads as none.
	for _, args := range [][]string{{"-d", "100ms", url}, {"-d", "100ms", "-timeout", "-1s", url}} {
		err := Main(t.Context(), args, Env{Stdout: io.Discard, Stderr: io.Discard})
		if err == nil || errors.Is(err, ErrUsage) {
			t.Errorf("%v, unreachable target: error %v, want one that is not a usage error", args, err)
		}
	}
}

// A run in which nothing succeeded fails the command (exit 1), with the
// result still printed, and one in which most requests failed says so:
// 100% 5xx, resets or 4xx once exited 0 without a word.
func TestBenchFailedRunExitStatus(t *testing.T) {
	status := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, "ok")
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	tests := []struct {
		name      string
		url       func() string
		args      []string
		noSuccess bool // ErrNoSuccess
		warning   bool // the "most failed" line
		usage     bool
	}{
		{name: "2xx", url: func() string { return status(200) }},
		{name: "5xx", url: func() string { return status(500) }, noSuccess: true, warning: true},
		{name: "4xx", url: func() string { return status(404) }, noSuccess: true, warning: true},
		{name: "resets", url: func() string { return resettingServer(t) }, noSuccess: true, warning: true},
		{name: "never answers", url: func() string { return silentServer(t) }, args: []string{"-timeout", "-1s"}, noSuccess: true, warning: true},
		{name: "5xx json", url: func() string { return status(500) }, args: []string{"-json"}, noSuccess: true, warning: true},
		{name: "header without a name", url: func() string { return status(200) }, args: []string{"-H", ": v"}, usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"-c", "2", "-d", "200ms"}, tt.args...)
			err := Main(t.Context(), append(args, tt.url()+"/"), Env{Stdout: &stdout, Stderr: &stderr})
			if tt.usage {
				if !errors.Is(err, ErrUsage) {
					t.Fatalf("error %v, want a usage error", err)
				}
				return
			}
			if errors.Is(err, ErrNoSuccess) != tt.noSuccess || err != nil && !tt.noSuccess {
				t.Fatalf("error %v, want ErrNoSuccess %v", err, tt.noSuccess)
			}
			if errors.Is(err, ErrUsage) {
				t.Fatalf("error %v is a usage error: it would exit 2", err)
			}
			if stdout.Len() == 0 {
				t.Fatal("no result printed")
			}
			out := stdout.String() + stderr.String()
			if got := strings.Contains(out, "warning: "); got != tt.warning {
				t.Fatalf("warning %v, want %v:\n%s", got, tt.warning, out)
			}
		})
	}
}

// Flags that would be ignored, or outvoted, are refused: -csv with -json
// printed JSON, and -H, -X and -b did nothing beside -m.
func TestBenchConflictingFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"json and csv", []string{"-json", "-csv"}, "-json and -csv"},
		{"-H with -m", []string{"-m", "/a", "-H", "X-A: b"}, "-X, -b and -H"},
		{"-X with -m", []string{"-m", "/a", "-X", "POST"}, "-X, -b and -H"},
		{"-b with -mix", []string{"-mix", "examples/mix.yaml", "-b", "10"}, "-X, -b and -H"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			// Port 1: a run that got past the flags would fail to connect.
			err := Main(t.Context(), append(tt.args, "http://127.0.0.1:1/"), Env{Stdout: &stdout, Stderr: &stderr})
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want a usage error naming %q", err, tt.want)
			}
		})
	}
}

// Each command's help names only the flags it has: sweep's warnings sent
// users to a --server-pid it does not take, and compare's --conns showed
// two defaults.
func TestHelpAndHintsNameRealFlags(t *testing.T) {
	local := urlServer{url: "http://127.0.0.1:1"}
	tests := []struct {
		name, text, want, not string
	}{
		{"sweep's shared-CPU hint", sharedCPUWarning(local, sweepPIDHint), "taskset", "--server-pid"},
		{"compare's shared-CPU hint", sharedCPUWarning(local, "give --server-pid"), "--server-pid", ""},
		{"phase run without metrics", noMetricsWarning, "--metrics", ""},
		{"compare -h", helpOf(t, "compare"), "connection counts, a comma list", `(default 100 with --static) (default`},
		{"bench -h", helpOf(t), "Exit status:", ""},
		{"idle -h", helpOf(t, "idle"), "Exit status:", ""},
		{"compare exit status", helpOf(t, "compare"), "Exit status:", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tt.text, tt.want) || tt.not != "" && strings.Contains(tt.text, tt.not) {
				t.Fatalf("want %q and not %q in:\n%s", tt.want, tt.not, tt.text)
			}
		})
	}
}

// helpOf is `quartet bench SUB... -h`'s output.
func helpOf(t *testing.T, sub ...string) string {
	var stdout, stderr bytes.Buffer
	if err := Main(t.Context(), append(sub, "-h"), Env{Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatal(err)
	}
	return stderr.String()
}
