package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/static"
)

func TestConfigFileErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // all must appear in the error
	}{
		{"unknown key", "readers: 2\nreaderz: 3\n", []string{`unknown key "readerz"`, "line 2", "known: "}},
		{"wrong type", "processors: many\n", []string{`key "processors"`, `"many" is not a whole number`}},
		{"bad duration", "idle-timeout: forever\n", []string{`key "idle-timeout"`, `"forever"`, "duration"}},
		{"size without a clear unit", "max-body: 64M\n", []string{`key "max-body"`, "64MiB (67108864 bytes)", "64000000"}},
		{"size in a decimal unit", "max-body: 64MB\n", []string{`key "max-body"`, "64MiB (67108864 bytes)", "64000000"}},
		{"out of range", "writers: -1\n", []string{"config ", ": writers = -1: must be 0..1024"}},
		{"negative", "max-conns: -5\n", []string{"max-conns = -5"}},
		{"twice", "readers: 1\nreaders: 2\n", []string{`"readers" given twice`}},
		{"not a mapping", "- readers\n", []string{"want a mapping"}},
		{"a list value", "readers: [1, 2]\n", []string{`key "readers": want a single value`}},
		{"pprof alone", "pprof: true\n", []string{"pprof needs --metrics-addr"}},
		{"admin alone", "admin: true\n", []string{"admin needs --metrics-addr"}},
		{"processor bounds crossed", "processors-min: 8\nprocessors-max: 4\n", []string{": processors-min = 8: must be at most processors-max (4)"}},
		{"a queue-wait target that is not a duration", "queue-wait-target: soon\n", []string{`key "queue-wait-target"`, `"soon" is not a duration`}},
		{"unknown choice", "log-format: xml\n", []string{`key "log-format"`, `"xml" is not one of text, json`}},
		{"two documents", "readers: 1\n---\nreaders: 2\n", []string{"more than one YAML document"}},
		{"static-in-memory not a size", "static-in-memory: abc\n", []string{`key "static-in-memory"`, `"abc" is not a size`}},
		{"static-in-memory-budget of nothing", "static-in-memory-budget: 0\n", []string{": static-in-memory-budget = 0: must be positive", "--static-in-memory 0"}},
		{"static-cache-entries not a number", "static-cache-entries: many\n", []string{`key "static-cache-entries"`, `"many" is not a whole number`}},
		{"static-revalidate of nothing", "static-revalidate: 0s\n", []string{": static-revalidate = 0s: must be positive"}},
		{"a bare dash", "log-level: info\naccess-log: -\n", []string{`line 2: key "access-log"`, `quote it: access-log: "-"`, "block sequence entries"}},
		{"a bare dash and a comment", "access-log: -   # stdout\nlog-level: info\n", []string{`line 1: key "access-log"`, `quote it: access-log: "-"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.yaml")
			os.WriteFile(path, []byte(tt.yaml), 0o644)
			err := runServe(context.Background(), []string{"--config", path, "--addr", "127.0.0.1:0"}, io.Discard, io.Discard)
			if err == nil {
				t.Fatal("bad config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Every server setting a user may need is a key, checked when a field is
// added to runtime.Config: only the fields that hold code or a socket are
// not.
func TestEverySettingIsAKey(t *testing.T) {
	notSettings := map[string]bool{"Listener": true, "MsgListener": true, "MsgDispatcher": true, "MsgRDMA": true, "Handler": true, "Log": true, "Logger": true, "Modules": true}
	o := defaultOptions()
	typ := reflect.TypeOf(o.cfg)
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if notSettings[name] {
			continue
		}
		if o.keyOf(name) == "" {
			t.Errorf("runtime.Config.%s has no key in quartet serve's settings table", name)
		}
	}
}

// Defaults live in runtime.DefaultConfig; the command adds none of its own
// for the server's settings.
func TestDefaultsAreTheRuntimes(t *testing.T) {
	o, _, err := loadOptions(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.cfg, runtime.DefaultConfig()) {
		t.Fatalf("serve's defaults %+v differ from runtime's %+v", o.cfg, runtime.DefaultConfig())
	}
}

func TestSizes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{"65536", 65536, ""}, {"64KiB", 64 << 10, ""}, {"64MiB", 64 << 20, ""}, {"1GiB", 1 << 30, ""},
		{"2 MiB", 2 << 20, ""}, {"64kib", 64 << 10, ""}, {"512B", 512, ""}, {"-1", -1, ""},
		// A decimal unit is refused, with both readings: 64KB silently
		// read as 64,000 was a limit 2.4% short of the 64 KiB meant.
		{"64KB", 0, "say 64KiB (65536 bytes), or 64000: "}, {"64kB", 0, "say 64KiB"}, {"64kb", 0, "say 64KiB"},
		{"10MB", 0, "say 10MiB (10485760 bytes), or 10000000"}, {"1GB", 0, "say 1GiB"}, {"1TB", 0, "say 1TiB"},
		{"64M", 0, "say 64MiB"}, {"1g", 0, "say 1GiB"}, {"lots", 0, "not a size"}, {"1.5GiB", 0, "not a size"},
		{"9999999TiB", 0, "too large"},
	}
	for _, tt := range tests {
		var v sizeInt64
		err := v.Set(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || int64(v) != tt.want {
			t.Errorf("%q: %d, %v; want %d", tt.in, v, err, tt.want)
		}
	}
	for n, want := range map[int64]string{64 << 20: "64MiB", 1 << 30: "1GiB", 1000: "1000", 0: "0", 3 << 10: "3KiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %s, want %s", n, got, want)
		}
	}
}

// startServe runs `quartet serve args` in this process on a free port,
// and stops it at cleanup.
func startServe(t *testing.T, args ...string) (base string, log *lockedWriter) {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log = &lockedWriter{w: &bytes.Buffer{}}
	go func() { done <- runServe(ctx, append(args, "--addr", addr), io.Discard, log) }()
	base = "http://" + addr
	// Ready means the startup line is out, as for systemd's READY=1:
	// the listener takes connections a few milliseconds earlier, and a
	// test that reads the startup warnings must not race it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if strings.Contains(log.String(), "quartet serving") {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", log)
		}
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop")
		}
	})
	return base, log
}

func TestServeRunsFromConfigFileAndFlagsWin(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f.txt"), []byte("from root"), 0o644)
	path := filepath.Join(dir, "q.yaml")
	os.WriteFile(path, []byte("addr: 127.0.0.1:1\nreaders: 1\nwriters: 1\nprocessors: 2\nroot: "+dir+"\nidle-timeout: 5s\nmax-body: 1MiB\n"), 0o644)
	base, _ := startServe(t, "--config", path) // --addr given too: the flag wins
	if got := fetch(t, "GET", base+"/f.txt"); got != "200 from root" {
		t.Fatalf("got %q from the configured root", got)
	}
}

// fetch returns "STATUS BODY".
func fetch(t *testing.T, method, url string) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.Status[:3] + " " + string(b)
}

// The load-test endpoints are on only in the demo (no --root, no
// --config) or when asked for. In production mode nothing a client can
// reach pins a worker or amplifies traffic: with two workers, eight
// /sleep?ms=4000 requests are answered at once (404), /bytes?n=1GB is a
// short 404, and the site's own /hello is not shadowed.
func TestBenchEndpointsOnlyInDemoModeOrWhenAsked(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "hello"), []byte("my own hello"), 0o644)
	cfg := filepath.Join(t.TempDir(), "q.yaml")
	os.WriteFile(cfg, []byte("processors: 2\n"), 0o644)
	tests := []struct {
		name  string
		args  []string
		bench bool
		hello string
	}{
		{"demo", []string{"--processors", "2"}, true, "200 Hello, World!"},
		{"root", []string{"--processors", "2", "--root", root}, false, "200 my own hello"},
		{"config file", []string{"--config", cfg}, false, "404 404 page not found\n"},
		{"root and asked for", []string{"--processors", "2", "--root", root, "--bench-endpoints"}, true, "200 Hello, World!"},
		{"demo, turned off", []string{"--processors", "2", "--bench-endpoints=false"}, false, "404 404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, log := startServe(t, tt.args...)
			if got := fetch(t, "GET", base+"/hello"); got != tt.hello {
				t.Errorf("/hello: %q, want %q", got, tt.hello)
			}
			if !tt.bench {
				results := make(chan string, 8)
				for range 8 {
					go func() { results <- fetch(t, "GET", base+"/sleep?ms=4000") }()
				}
				for range 8 {
					if got := <-results; !strings.HasPrefix(got, "404 ") {
						t.Errorf("/sleep in production mode: %q", got)
					}
				}
				for _, probe := range []struct{ method, path string }{{"GET", "/bytes?n=1000000000"}, {"POST", "/echo"}} {
					got := fetch(t, probe.method, base+probe.path)
					if !strings.HasPrefix(got, "404 ") && !strings.HasPrefix(got, "405 ") || len(got) > 100 {
						t.Errorf("%s %s in production mode: %.100q", probe.method, probe.path, got)
					}
				}
			} else if got := fetch(t, "GET", base+"/bytes?n=5"); got != "200 abcde" {
				t.Errorf("/bytes: %q", got)
			}
			warned := strings.Contains(log.String(), "load-test endpoints /hello /sleep /compute /bytes /echo are on")
			if warned != tt.bench {
				t.Errorf("startup warning %v with the endpoints %v:\n%s", warned, tt.bench, log)
			}
		})
	}
}

// --admin puts /admin/ on the metrics listener, with the processor
// bounds and the queue-wait target given by the flags.
func TestServeAdmin(t *testing.T) {
	admin := freeAddr(t)
	startServe(t, "--metrics-addr", admin, "--admin", "--processors-min", "2", "--processors-max", "8",
		"--queue-wait-target", "250ms")
	// startServe waits for the HTTP listener; the admin one may open a
	// moment later.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", admin); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the admin listener did not open")
		}
	}
	get := func(path string) string {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	if body := get("/admin/stages"); !strings.Contains(body, "processor  2     2    8    on") {
		t.Fatalf("/admin/stages:\n%s", body)
	}
	resp, err := http.PostForm("http://"+admin+"/admin/stages/processor", url.Values{"size": {"6"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "processor  6     2    8    off") {
		t.Errorf("setting the size: %d\n%s", resp.StatusCode, b)
	}
	if body := get("/admin/control"); !strings.Contains(body, "queue-wait target 250ms") {
		t.Errorf("/admin/control:\n%s", body)
	}
}

// 0 turns admission control off on the command line, as it does the
// other checks.
func TestQueueWaitTargetZeroIsOff(t *testing.T) {
	o, _, err := loadOptions([]string{"--queue-wait-target", "0"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.QueueWaitTarget >= 0 {
		t.Errorf("--queue-wait-target 0 gives %v, want negative (off)", o.cfg.QueueWaitTarget)
	}
}

// The --static-* settings reach static.Options: 0 and negative values
// turn the cache or the in-memory files off (-1 in Options), sizes take
// units, and the defaults are static's own.
func TestStaticOptions(t *testing.T) {
	tests := []struct {
		args []string
		want static.Options
	}{
		{nil, static.Options{CacheEntries: static.DefaultCacheEntries, InMemory: static.DefaultInMemory, InMemoryBudget: static.DefaultInMemoryBudget, Revalidate: static.DefaultRevalidate}},
		{[]string{"--static-in-memory", "64KiB", "--static-in-memory-budget", "1GiB", "--static-cache-entries", "100000"},
			static.Options{CacheEntries: 100000, InMemory: 64 << 10, InMemoryBudget: 1 << 30, Revalidate: static.DefaultRevalidate}},
		{[]string{"--static-revalidate", "1m"}, static.Options{CacheEntries: static.DefaultCacheEntries, InMemory: static.DefaultInMemory, InMemoryBudget: static.DefaultInMemoryBudget, Revalidate: time.Minute}},
		{[]string{"--static-in-memory", "0"}, static.Options{CacheEntries: static.DefaultCacheEntries, InMemory: -1, InMemoryBudget: static.DefaultInMemoryBudget, Revalidate: static.DefaultRevalidate}},
		{[]string{"--static-in-memory", "-1"}, static.Options{CacheEntries: static.DefaultCacheEntries, InMemory: -1, InMemoryBudget: static.DefaultInMemoryBudget, Revalidate: static.DefaultRevalidate}},
		{[]string{"--static-cache-entries", "0"}, static.Options{CacheEntries: -1, InMemory: static.DefaultInMemory, InMemoryBudget: static.DefaultInMemoryBudget, Revalidate: static.DefaultRevalidate}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, given, err := loadOptions(tt.args, "")
			if err == nil {
				err = o.validate(given, "")
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := o.staticOptions(); got != tt.want {
				t.Errorf("static.Options %+v, want %+v", got, tt.want)
			}
		})
	}
}

// With --root, /metrics has the directory's cache with the settings the
// flags gave and counts that agree with the requests made; the embedded
// sample site has no cache and no such series. A bad value is refused
// before anything starts, naming the flag and what was wrong.
func TestServeStaticMetrics(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "small.txt"), []byte("ten bytes!"), 0o644)
	os.WriteFile(filepath.Join(root, "large.txt"), bytes.Repeat([]byte("x"), 100), 0o644)
	t.Run("root", func(t *testing.T) {
		admin := freeAddr(t)
		base, _ := startServe(t, "--root", root, "--metrics-addr", admin,
			"--static-in-memory", "64", "--static-in-memory-budget", "1MiB", "--static-cache-entries", "8")
		for _, path := range []string{"/small.txt", "/small.txt", "/small.txt", "/large.txt", "/missing"} {
			if got := fetch(t, "GET", base+path); strings.HasPrefix(got, "error") {
				t.Fatalf("GET %s: %s", path, got)
			}
		}
		got := staticSeries(t, "http://"+admin+"/metrics")
		for name, want := range map[string]float64{
			"quartet_static_files_opened_total":        2,
			"quartet_static_cache_hits_total":          2,
			"quartet_static_cache_evictions_total":     0,
			"quartet_static_cache_invalidations_total": 0,
			"quartet_static_cache_entries":             2,
			"quartet_static_cache_entries_max":         8,
			"quartet_static_in_memory_files":           1, // large.txt is over 64 bytes
			"quartet_static_in_memory_bytes":           10,
			"quartet_static_in_memory_budget_bytes":    1 << 20,
			"quartet_static_in_memory_file_max_bytes":  64,
		} {
			if v, ok := got[name]; !ok || v != want {
				t.Errorf("%s = %v (exported: %v), want %v", name, v, ok, want)
			}
		}
		if _, ok := got["quartet_static_revalidations_total"]; !ok {
			t.Error("quartet_static_revalidations_total missing")
		}
	})
	t.Run("embedded site", func(t *testing.T) {
		admin := freeAddr(t)
		base, _ := startServe(t, "--metrics-addr", admin)
		fetch(t, "GET", base+"/")
		if got := staticSeries(t, "http://"+admin+"/metrics"); len(got) != 0 {
			t.Errorf("static cache series without a directory: %v", got)
		}
	})
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--static-in-memory", "abc"}, []string{"-static-in-memory", `"abc" is not a size`}},
		{[]string{"--static-in-memory", "32K"}, []string{"-static-in-memory", "say 32KiB"}},
		{[]string{"--static-in-memory-budget", "0"}, []string{"--static-in-memory-budget = 0: must be positive"}},
		{[]string{"--static-in-memory-budget", "-1"}, []string{"--static-in-memory-budget = -1: must be positive"}},
		{[]string{"--static-cache-entries", "lots"}, []string{"-static-cache-entries", `"lots" is not a whole number`}},
		{[]string{"--static-revalidate", "0s"}, []string{"--static-revalidate = 0s: must be positive"}},
		{[]string{"--static-revalidate", "often"}, []string{"-static-revalidate", `"often" is not a duration`}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			err := runServe(context.Background(), append([]string{"--root", root, "--addr", "127.0.0.1:0"}, tt.args...), io.Discard, io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// staticSeries scrapes url and returns the value of every
// quartet_static_* series, waiting for the admin listener, which opens a
// moment after the server's.
func staticSeries(t *testing.T, url string) map[string]float64 {
	t.Helper()
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if resp, err = http.Get(url); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scraping %s: %v", url, err)
		}
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the scrape does not parse: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		if !strings.HasPrefix(name, "quartet_static_") {
			continue
		}
		if len(f.GetMetric()) != 1 {
			t.Errorf("%s: %d series, want 1", name, len(f.GetMetric()))
			continue
		}
		m := f.GetMetric()[0]
		if m.GetCounter() != nil {
			out[name] = m.GetCounter().GetValue()
		} else {
			out[name] = m.GetGauge().GetValue()
		}
	}
	return out
}

// A setting whose 0 (or "") runtime replaces with its default says so in
// its help, as the ones whose 0 means off or none say that: otherwise
// --idle-timeout 0 reads as "no idle timeout".
func TestHelpSaysWhatZeroMeans(t *testing.T) {
	def := reflect.ValueOf(runtime.DefaultConfig())
	for _, s := range defaultOptions().settings() {
		t.Run(s.key, func(t *testing.T) {
			o := defaultOptions()
			var field reflect.Value
			cfg := reflect.ValueOf(&o.cfg).Elem()
			var value flag.Value // s's, bound into o
			for _, os2 := range o.settings() {
				if os2.key == s.key {
					value = os2.value
				}
			}
			for i := range cfg.NumField() {
				if v := reflect.ValueOf(value); v.Kind() == reflect.Pointer && v.Pointer() == cfg.Field(i).Addr().Pointer() {
					field = cfg.Field(i)
					if def.Field(i).IsZero() {
						t.Skip("0 is the default itself")
					}
				}
			}
			if !field.IsValid() {
				t.Skip("not a runtime.Config field")
			}
			zero := "0"
			if field.Kind() == reflect.String {
				zero = ""
			}
			if err := value.Set(zero); err != nil || !field.IsZero() {
				t.Skip("0 is not runtime's zero here (it means off, or is refused)")
			}
			want := "(0: the default)"
			if zero == "" {
				want = `("": the default)`
			}
			if !strings.Contains(s.help, want) {
				t.Errorf("help %q does not say %s", s.help, want)
			}
		})
	}
}

// Quoted, - is stdout in the config file as on the command line.
func TestQuotedDashIsStdout(t *testing.T) {
	for _, yaml := range []string{`access-log: "-"`, `access-log: '-'`, `access-log: "-"   # stdout`} {
		path := filepath.Join(t.TempDir(), "q.yaml")
		os.WriteFile(path, []byte(yaml+"\n"), 0o644)
		o, _, err := loadOptions(nil, path)
		if err != nil {
			t.Errorf("%s: %v", yaml, err)
		} else if o.accessLog != "-" {
			t.Errorf("%s: access log %q, want -", yaml, o.accessLog)
		}
	}
}

// An error about two settings names both as the user wrote them: flags on
// the command line, keys from the file, never runtime.Config's fields.
func TestConflictingSettingsNameTheirKeys(t *testing.T) {
	tests := []struct {
		args []string
		yaml string
		want string
	}{
		{[]string{"--readers-min", "8", "--readers-max", "2"}, "", "--readers-min = 8: must be at most --readers-max (2)"},
		{[]string{"--writers-min", "3", "--writers-max", "1"}, "", "--writers-min = 3: must be at most --writers-max (1)"},
		{[]string{"--processors", "10", "--processors-max", "4"}, "", "--processors = 10: must be at most --processors-max (4)"},
		{[]string{"--processors", "1", "--processors-min", "4"}, "", "--processors = 1: must be at least --processors-min (4)"},
		{nil, "readers-min: 8\nreaders-max: 2\n", ": readers-min = 8: must be at most readers-max (2)"},
		{[]string{"--readers-min", "8"}, "readers-max: 2\n", "--readers-min = 8: must be at most readers-max (2)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " ")+" "+tt.yaml, func(t *testing.T) {
			args := tt.args
			if tt.yaml != "" {
				path := filepath.Join(t.TempDir(), "q.yaml")
				os.WriteFile(path, []byte(tt.yaml), 0o644)
				args = append([]string{"--config", path}, args...)
			}
			var stdout, stderr strings.Builder
			if code := run(context.Background(), append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), &stdout, &stderr); code == 0 {
				t.Fatal("accepted")
			}
			if got := stderr.String(); !strings.Contains(got, tt.want) {
				t.Errorf("error %q, want %q", got, tt.want)
			}
		})
	}
}
