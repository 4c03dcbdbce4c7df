package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/quartet-server/quartet/internal/strictyaml"
	"github.com/quartet-server/quartet/rdmahttp"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/static"
)

// serveOptions is every setting of `quartet serve`. The server's own
// settings live in cfg, which starts as runtime.DefaultConfig(): the
// defaults are runtime's, and Config.Validate is what checks them.
type serveOptions struct {
	cfg runtime.Config

	root            string
	bench           optionalBool // the load-test endpoints; unset: on only in demo mode
	accessLog       string
	accessLogFormat string
	logFormat       string
	logLevel        string
	metricsAddr     string
	pprof           bool
	admin           bool
	rdma            string
	rdmaAddr        string
	rdmaDial        time.Duration

	// --root's static.Options, with the defaults written out and -1 for
	// off, so that -h shows the values in force.
	staticCacheEntries   int
	staticInMemory       int64
	staticInMemoryBudget int64
	staticRevalidate     time.Duration
	staticFollowSymlinks bool

	memoryLimit memoryLimit
}

func defaultOptions() *serveOptions {
	return &serveOptions{
		cfg:             runtime.DefaultConfig(),
		accessLogFormat: string(runtime.Combined),
		logFormat:       "text",
		logLevel:        "info",
		rdma:            "off",
		rdmaDial:        rdmahttp.DefaultDialTimeout,

		staticCacheEntries:   static.DefaultCacheEntries,
		staticInMemory:       static.DefaultInMemory,
		staticInMemoryBudget: static.DefaultInMemoryBudget,
		staticRevalidate:     static.DefaultRevalidate,
	}
}

// setting is one key of `quartet serve`: a flag and a key of the --config
// file, with the same name and the same syntax in both (Set parses either).
type setting struct {
	key   string
	value flag.Value
	live  bool // SIGHUP applies a changed value without a restart
	help  string
}

// settings is the table of every key. Adding a setting is one line here;
// one bound into cfg is checked by runtime.Config.Validate, and its errors
// are reported under the key.
func (o *serveOptions) settings() []setting {
	c := &o.cfg
	return []setting{
		{"addr", (*text)(&c.Addr), false, "listen address host:port (port 0 picks one; the startup log says which) (\"\": the default)"},
		{"root", (*text)(&o.root), true, "serve static files from this directory (default: the embedded sample site, with the load-test endpoints)"},
		{"static-cache-entries", (*countOrOff)(&o.staticCacheEntries), true, "files of --root kept open between requests, each checked against the disk at most once per --static-revalidate (0: none, every request opens its file)"},
		{"static-in-memory", (*sizeOrOff)(&o.staticInMemory), true, "files of --root up to this size are also held in memory while cached, and sent with one write instead of sendfile (0 or -1: none)"},
		{"static-in-memory-budget", (*sizeInt64)(&o.staticInMemoryBudget), true, "bytes of --root's files held in memory at most; a file that would pass it is sent from disk"},
		{"static-revalidate", (*duration)(&o.staticRevalidate), true, "how long a cached file (or a name found missing) is served before a stat checks it against the disk (nginx's open_file_cache_valid): meanwhile a file changed in place keeps its cached length and ETag, so replace files by rename (mv), not in place (cp)"},
		{"static-follow-symlinks", (*boolean)(&o.staticFollowSymlinks), true, "serve symbolic links under --root that lead out of it (default: the root is a hard boundary, links included, and such a link is 404)"},
		{"bench-endpoints", &o.bench, true, "mount the load-test endpoints /hello, /sleep, /compute, /bytes, /echo (default: only without --root and --config)"},
		{"msg-addr", (*text)(&c.MsgAddr), false, "also serve the messenger (docs/messenger.md) on this address, with the built-in echo dispatcher, on the same stages as HTTP (default: off)"},
		{"msg-max-payload", (*sizeInt)(&c.MsgMaxPayload), false, "messenger request payload limit (an error frame and a close beyond); each payload is read whole before dispatch (0: the default)"},
		{"msg-window", (*integer)(&c.MsgWindow), false, "messenger requests in flight per connection: read on while earlier ones run, replies as ready unless a request asks for order (0: 32; 1: one at a time)"},
		{"msg-window-bytes", (*sizeInt64)(&c.MsgWindowBytes), false, "bytes of messenger requests in flight per connection, beyond the one request always let through (0: 4MiB)"},
		{"listeners", (*integer)(&c.Listeners), false, "accept loops (more than one uses SO_REUSEPORT) (0: the default)"},
		{"reuseport", (*boolean)(&c.ReusePort), false, "set SO_REUSEPORT on the listening socket"},
		{"readers", (*integer)(&c.Readers), true, "reader event loops (R): alone, pins their count; with --readers-min/max, where their controller starts (0: the controller sizes them)"},
		{"readers-min", (*integer)(&c.ReadersMin), true, "the reader loop controller's lower bound (0: 1)"},
		{"readers-max", (*integer)(&c.ReadersMax), true, "the reader loop controller's upper bound (0: GOMAXPROCS)"},
		{"processors", (*integer)(&c.Processors), true, "handler places (P): alone, pins the pool at this size; with --processors-min/max, where its controller starts (0: the controller sizes it)"},
		{"processors-min", (*integer)(&c.ProcessorsMin), true, "the processor controller's lower bound (0: GOMAXPROCS)"},
		{"processors-max", (*integer)(&c.ProcessorsMax), true, "the processor controller's upper bound (0: 1024 x GOMAXPROCS)"},
		{"queue-wait-target", (*durationOrOff)(&c.QueueWaitTarget), false, "refuse at once, with 503 and Retry-After, a request that would wait longer than this for a processor (0: never refuse)"},
		{"writers", (*integer)(&c.Writers), true, "writer event loops (W): alone, pins their count; with --writers-min/max, where their controller starts (0: the controller sizes them)"},
		{"writers-min", (*integer)(&c.WritersMin), true, "the writer loop controller's lower bound (0: 1)"},
		{"writers-max", (*integer)(&c.WritersMax), true, "the writer loop controller's upper bound (0: GOMAXPROCS)"},
		{"no-inline", (*boolean)(&c.NoInline), false, "serve every request through the processors, even those whose handler declares it never blocks (/hello, cached static files); to compare the two paths"},
		{"no-batched-reads", (*boolean)(&c.NoBatchedReads), false, "read each connection a reader loop finds readable with its own system call, instead of reading a turn's connections with one io_uring_enter; to compare the two"},
		{"no-batched-sends", (*boolean)(&c.NoBatchedSends), false, "write each response served inline with its own system call, instead of sending a loop turn's replies with one io_uring_enter; to compare the two"},
		{"keep-freed-memory", (*boolean)(&c.KeepFreedMemory), false, "leave returning freed memory to Go's runtime (minutes when idle) instead of returning it once a burst of connections has gone"},
		{"queue", (*integer)(&c.QueueCapacity), false, "capacity of each hand-off queue (0: the default)"},
		{"max-conns", (*integer)(&c.MaxConns), false, "open connections at most (0: no limit)"},
		{"max-request-line", (*sizeInt)(&c.MaxRequestLine), false, "request line limit (414 beyond) (0: the default)"},
		{"max-header-bytes", (*sizeInt)(&c.MaxHeaderBytes), false, "header block limit (431 beyond) (0: the default)"},
		{"max-headers", (*integer)(&c.MaxHeaders), false, "header field count limit (431 beyond) (0: the default)"},
		{"max-body", (*sizeInt64)(&c.MaxBodyBytes), false, "request body limit (413 beyond) (0: the default)"},
		{"header-timeout", (*duration)(&c.HeaderTimeout), false, "time to receive a request's headers (408 beyond) (0: the default)"},
		{"idle-timeout", (*duration)(&c.IdleTimeout), false, "keep-alive idle timeout (0: the default)"},
		{"body-timeout", (*duration)(&c.BodyTimeout), false, "a handler waiting this long for request body bytes fails (408) (0: the default)"},
		{"write-timeout", (*duration)(&c.WriteTimeout), false, "drop a client that reads nothing this long (0: the default)"},
		{"linger-timeout", (*duration)(&c.LingerTimeout), false, "after the last response, wait this long for the client's FIN (0: the default)"},
		{"shutdown-timeout", (*duration)(&c.ShutdownTimeout), false, "on SIGINT/SIGTERM, requests in flight get this long to finish (0: the default)"},
		{"high-water", (*sizeInt64)(&c.HighWater), false, "unsent bytes per response before its handler waits for the client (0: the default)"},
		{"preread-body", (*sizeInt)(&c.PrereadBody), false, "request bodies up to this size are read whole before a handler runs, so a slow upload holds no processor (0: the default)"},
		{"max-parked", (*countOrOff)(&c.MaxParked), false, "handlers waiting on their client without holding a processor (0: none; they wait holding it)"},
		{"min-body-rate", (*rateOrOff)(&c.MinBodyRate), false, "bytes/s a client must send a request body at, after --min-body-rate-grace (0: no minimum)"},
		{"min-body-rate-grace", (*duration)(&c.MinBodyRateGrace), false, "time a request body may take before --min-body-rate applies (0: the default)"},
		{"min-response-rate", (*rateOrOff)(&c.MinResponseRate), false, "bytes/s a client must take a response at, over windows of --min-response-rate-grace, or be reset (0: no minimum)"},
		{"min-response-rate-grace", (*duration)(&c.MinResponseRateGrace), false, "window over which --min-response-rate is measured (0: the default)"},
		{"server-name", (*text)(&c.ServerName), false, "the Server header (\"\": the default)"},
		{"access-log", (*text)(&o.accessLog), true, "access log: a file (reopened on SIGUSR1), or - for stdout, quoted in the config file: access-log: \"-\" (default: none)"},
		{"access-log-format", choice(&o.accessLogFormat, string(runtime.Combined), string(runtime.CombinedIO)), true, "combined (Apache's), or combinedio (with mod_logio's %I %O wire bytes)"},
		{"memory-limit", &o.memoryLimit, false, "the Go heap's soft limit (GOMEMLIMIT, which wins if set): auto, 90% of the memory limit of the server's cgroup when it has one, followed as it changes; off; or a size"},
		{"log-format", choice(&o.logFormat, "text", "json"), false, "server log format"},
		{"log-level", choice(&o.logLevel, "debug", "info", "warn", "error"), true, "server log level"},
		{"metrics-addr", (*text)(&o.metricsAddr), false, "admin listener: Prometheus /metrics, /healthz, /readyz (default: off)"},
		{"pprof", (*boolean)(&o.pprof), false, "also serve /debug/pprof on --metrics-addr"},
		{"admin", (*boolean)(&o.admin), false, "also serve /admin/ on --metrics-addr: read and change stage sizes while serving (loopback clients only)"},
		{"rdma", choice(&o.rdma, "off", "soft", "verbs", "auto"), false, "deliver bodies by RDMA to clients that ask (docs/rdma-http.md): off, soft, verbs, or auto (verbs where a device exists, else soft)"},
		{"rdma-addr", (*text)(&o.rdmaAddr), false, "local IP whose RDMA device serves RDMA clients (default: the provider's first device)"},
		{"rdma-dial-timeout", (*duration)(&o.rdmaDial), false, "connecting to a client's RDMA endpoint may take this long before the body goes over TCP"},
	}
}

// loadOptions builds the options from the defaults, then the --config file
// if one is named, then the flags again, so that a flag given on the
// command line overrides the file. It is run again on SIGHUP.
func loadOptions(args []string, configPath string) (*serveOptions, flagsGiven, error) {
	o := defaultOptions()
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return nil, nil, fmt.Errorf("--config: %w", err)
		}
		if err := strictyaml.Decode(data, &keyTable{o.settings()}); err != nil {
			return nil, nil, fmt.Errorf("config %s: %w", configPath, loneDashHint(data, err))
		}
	}
	fl, _ := o.flagSet()
	if err := fl.Parse(args); err != nil {
		return nil, nil, err // checked by the first parse; cannot happen on a reload
	}
	given := flagsGiven{}
	fl.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return o, given, nil
}

// loneDash is a key whose value is a bare -, as --access-log - is written
// on the command line: YAML reads it as the start of a list, which cannot
// follow a key on its line, and says only that.
var loneDash = regexp.MustCompile(`^([A-Za-z0-9-]+):[ \t]+-(?:[ \t]+#.*)?[ \t]*$`)

// loneDashHint adds to YAML's error for a bare - the line and the way to
// write it, when the file has such a line, which YAML always refuses.
func loneDashHint(data []byte, err error) error {
	if !strings.Contains(err.Error(), "block sequence entries are not allowed in this context") {
		return err
	}
	for i, line := range strings.Split(string(data), "\n") {
		if m := loneDash.FindStringSubmatch(strings.TrimRight(line, "\r")); m != nil {
			return fmt.Errorf("line %d: key %q: YAML reads a bare - as a list; quote it: %s: \"-\" (%w)", i+1, m[1], m[1], err)
		}
	}
	return err
}

// flagsGiven is the set of keys given on the command line.
type flagsGiven map[string]bool

// flagSet makes a flag of every setting, plus --config. (--version is
// quartet's, before any command.)
func (o *serveOptions) flagSet() (*flag.FlagSet, *string) {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fl.String("config", "", "read settings from this YAML file (every flag is a key, with the same syntax); flags given too win; SIGHUP reloads it")
	for _, s := range o.settings() {
		fl.Var(s.value, s.key, s.help)
	}
	return fl, configPath
}

// validate checks the whole configuration. The server's settings are
// checked by runtime.Config.Validate, whose error is given back under the
// key; only the command's own settings are checked here.
func (o *serveOptions) validate(given flagsGiven, configPath string) error {
	where := func(key string) string {
		if given[key] || configPath == "" {
			return "--" + key
		}
		return "config " + configPath + ": " + key
	}
	if err := o.cfg.Validate(); err != nil {
		var ce *runtime.ConfigError
		if errors.As(err, &ce) {
			if key := o.keyOf(ce.Field); key != "" {
				return fmt.Errorf("%s = %v: %s", where(key), ce.Value, o.inKeys(ce.Reason, given, configPath))
			}
		}
		return err
	}
	if o.pprof && o.metricsAddr == "" {
		return fmt.Errorf("%s needs --metrics-addr", where("pprof"))
	}
	if o.admin && o.metricsAddr == "" {
		return fmt.Errorf("%s needs --metrics-addr", where("admin"))
	}
	if o.rdmaDial <= 0 {
		return fmt.Errorf("%s = %v: must be positive", where("rdma-dial-timeout"), o.rdmaDial)
	}
	if o.staticInMemoryBudget <= 0 {
		// 0 could be read as "no limit" as well as "nothing": refused,
		// and the way to hold nothing named.
		return fmt.Errorf("%s = %v: must be positive (--static-in-memory 0 holds no file in memory)", where("static-in-memory-budget"), o.staticInMemoryBudget)
	}
	if o.staticRevalidate <= 0 {
		return fmt.Errorf("%s = %v: must be positive (--static-cache-entries 0 checks every request against the disk)", where("static-revalidate"), o.staticRevalidate)
	}
	return nil
}

// contentOptions are the settings that say what the handler serves: a
// reload rebuilds it when one of them changes.
type contentOptions struct {
	root   string
	bench  optionalBool
	static static.Options
}

func (o *serveOptions) content() contentOptions {
	return contentOptions{root: o.root, bench: o.bench, static: o.staticOptions()}
}

// setContent is content's inverse: a reload takes what the handler serves
// from c as one piece, or keeps the running one whole.
func (o *serveOptions) setContent(c contentOptions) {
	o.root, o.bench = c.root, c.bench
	o.staticCacheEntries, o.staticInMemory, o.staticInMemoryBudget = c.static.CacheEntries, c.static.InMemory, c.static.InMemoryBudget
	o.staticRevalidate = c.static.Revalidate
	o.staticFollowSymlinks = c.static.FollowSymlinks
}

// staticOptions are the options --root's directory is opened with.
func (o *serveOptions) staticOptions() static.Options {
	return static.Options{CacheEntries: o.staticCacheEntries, InMemory: o.staticInMemory, InMemoryBudget: o.staticInMemoryBudget,
		Revalidate: o.staticRevalidate, FollowSymlinks: o.staticFollowSymlinks}
}

// goName is a word that may be a runtime.Config field's name.
var goName = regexp.MustCompile(`\b[A-Z][A-Za-z]+\b`)

// inKeys rewrites the Config fields a ConfigError's reason names (must be
// at most ReadersMax) as the keys the user wrote: --readers-max where it
// was given as a flag or there is no config file, readers-max where the
// file set it.
func (o *serveOptions) inKeys(reason string, given flagsGiven, configPath string) string {
	return goName.ReplaceAllStringFunc(reason, func(w string) string {
		key := o.keyOf(w)
		switch {
		case key == "":
			return w
		case given[key] || configPath == "":
			return "--" + key
		}
		return key
	})
}

// keyOf finds the key bound to the runtime.Config field named field.
func (o *serveOptions) keyOf(field string) string {
	f := reflect.ValueOf(&o.cfg).Elem().FieldByName(field)
	if !f.IsValid() {
		return ""
	}
	addr := f.Addr().Pointer()
	for _, s := range o.settings() {
		if v := reflect.ValueOf(s.value); v.Kind() == reflect.Pointer && v.Pointer() == addr {
			return s.key
		}
	}
	return ""
}

// keyTable decodes a --config file: each key is looked up in the table and
// its scalar value parsed by the setting's Set, as the flag would be.
type keyTable struct{ settings []setting }

func (t *keyTable) UnmarshalYAML(root *strictyaml.Node) error {
	if root.Kind != strictyaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping of key: value", root.Line)
	}
	byKey := map[string]setting{}
	for _, s := range t.settings {
		byKey[s.key] = s
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		s, ok := byKey[k.Value]
		if !ok {
			return fmt.Errorf("line %d: unknown key %q (known: %s)", k.Line, k.Value, t.known())
		}
		if seen[k.Value] {
			return fmt.Errorf("line %d: key %q given twice", k.Line, k.Value)
		}
		seen[k.Value] = true
		if v.Kind != strictyaml.ScalarNode {
			return fmt.Errorf("line %d: key %q: want a single value", v.Line, k.Value)
		}
		if err := s.value.Set(v.Value); err != nil {
			return fmt.Errorf("line %d: key %q: %v", v.Line, k.Value, err)
		}
	}
	return nil
}

func (t *keyTable) known() string {
	var ks []string
	for _, s := range t.settings {
		ks = append(ks, s.key)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// The value types of the table. Each is a flag.Value; its errors say what
// was expected, and the caller adds which key.

type text string

func (v *text) String() string     { return string(*v) }
func (v *text) Set(s string) error { *v = text(s); return nil }

type integer int

func (v *integer) String() string { return strconv.Itoa(int(*v)) }
func (v *integer) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v = integer(n)
	return nil
}

type boolean bool

func (v *boolean) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolean) IsBoolFlag() bool { return true }
func (v *boolean) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*v = boolean(b)
	return nil
}

// optionalBool is a boolean that knows whether it was given.
type optionalBool struct{ on, set bool }

func (v *optionalBool) String() string {
	if v == nil || !v.set {
		return "auto"
	}
	return strconv.FormatBool(v.on)
}
func (v *optionalBool) IsBoolFlag() bool { return true }
func (v *optionalBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	v.on, v.set = b, true
	return nil
}

type duration time.Duration

func (v *duration) String() string { return time.Duration(*v).String() }
func (v *duration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (like 30s, 1m30s, 500ms)", s)
	}
	*v = duration(d)
	return nil
}

type oneOf struct {
	v       *string
	options []string
}

func choice(v *string, options ...string) *oneOf { return &oneOf{v, options} }

func (c *oneOf) String() string {
	if c == nil || c.v == nil {
		return ""
	}
	return *c.v
}
func (c *oneOf) Set(s string) error {
	for _, o := range c.options {
		if s == o {
			*c.v = s
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", s, strings.Join(c.options, ", "))
}

// sizeInt and sizeInt64 are byte counts, written with a unit or without:
// 65536, 64KiB, 64MiB, 1GiB (powers of 1024; B, bytes, too). KB, MB, GB
// and the bare K, M, G are refused, naming both readings: KB is 1000
// bytes to SI and to disk makers, 1024 to JEDEC, Windows and nginx's k
// and m, and a limit silently read the other way
// is off by 2.4% at K and 10% at T, where an error costs one edit.
type (
	sizeInt   int
	sizeInt64 int64
)

// sizeUnits are the units a size takes, largest first.
var sizeUnits = []struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
}

func (v *sizeInt) String() string   { return formatSize(int64(*v)) }
func (v *sizeInt64) String() string { return formatSize(int64(*v)) }

func (v *sizeInt) Set(s string) error {
	n, err := parseSize(s)
	if err == nil && int64(int(n)) != n {
		err = fmt.Errorf("%q is too large", s)
	}
	if err == nil {
		*v = sizeInt(n)
	}
	return err
}

func (v *sizeInt64) Set(s string) error {
	n, err := parseSize(s)
	if err == nil {
		*v = sizeInt64(n)
	}
	return err
}

// durationOrOff fills a runtime.Config duration in which 0 takes the
// default and a negative value turns the feature off; here 0 means off.
type durationOrOff time.Duration

func (v *durationOrOff) String() string {
	if *v < 0 {
		return "0"
	}
	return time.Duration(*v).String()
}

func (v *durationOrOff) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (like 500ms, 2s; 0 for off)", s)
	}
	if d <= 0 {
		d = -1
	}
	*v = durationOrOff(d)
	return nil
}

// rateOrOff (bytes per second) and countOrOff fill runtime.Config fields in
// which 0 takes the default and a negative value turns the check off: on the
// command line and in the config file 0 means off, which is what a person
// writing 0 means.
type (
	rateOrOff  int64
	countOrOff int
)

func (v *rateOrOff) String() string {
	if *v < 0 {
		return "0"
	}
	return formatSize(int64(*v))
}

func (v *rateOrOff) Set(s string) error {
	n, err := parseSize(s)
	if err == nil {
		if n <= 0 {
			n = -1
		}
		*v = rateOrOff(n)
	}
	return err
}

func (v *countOrOff) String() string {
	if *v < 0 {
		return "0"
	}
	return strconv.Itoa(int(*v))
}

func (v *countOrOff) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v = countOrOff(n)
	if n <= 0 {
		*v = -1
	}
	return nil
}

// sizeOrOff is a byte count for a static.Options field in which a
// negative value turns the feature off: 0 turns it off too, as it does
// for rateOrOff, whose syntax it shares.
type sizeOrOff int64

func (v *sizeOrOff) String() string     { return (*rateOrOff)(v).String() }
func (v *sizeOrOff) Set(s string) error { return (*rateOrOff)(v).Set(s) }

// memoryLimit is --memory-limit: a size, or one of the two words.
type memoryLimit int64

const (
	memoryLimitAuto memoryLimit = 0 // from the cgroup, when it has a limit
	memoryLimitOff  memoryLimit = -1
)

func (v *memoryLimit) String() string {
	switch *v {
	case memoryLimitAuto:
		return "auto"
	case memoryLimitOff:
		return "off"
	}
	return formatSize(int64(*v))
}

func (v *memoryLimit) Set(s string) error {
	switch s {
	case "auto":
		*v = memoryLimitAuto
		return nil
	case "off":
		*v = memoryLimitOff
		return nil
	}
	n, err := parseSize(s)
	if err == nil && n <= 0 {
		err = fmt.Errorf("%q: want auto, off or a size above 0", s)
	}
	if err == nil {
		*v = memoryLimit(n)
	}
	return err
}

func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.TrimSpace(t[i:])
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (like 65536, 64KiB, 64MiB, 1GiB)", s)
	}
	mult := int64(1)
	switch u := strings.ToLower(unit); u {
	case "", "b":
	case "kib", "mib", "gib", "tib":
		for _, su := range sizeUnits {
			if strings.EqualFold(su.name, u) {
				mult = su.mult
			}
		}
	case "k", "kb", "m", "mb", "g", "gb", "t", "tb":
		p := strings.ToUpper(u[:1])
		exp := strings.Index("KMGT", p) + 1
		bin, dec := n, n
		for range exp {
			bin, dec = bin*1024, dec*1000
		}
		return 0, fmt.Errorf("%q: say %d%siB (%d bytes), or %d: sizes are bytes or binary units (KiB, MiB, GiB, TiB); %sB means 1000s to some and 1024s to others", s, n, p, bin, dec, p)
	default:
		return 0, fmt.Errorf("%q is not a size (like 65536, 64KiB, 64MiB, 1GiB)", s)
	}
	if n > (1<<63-1)/mult || n < -(1<<63-1)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// formatSize writes n in the largest power-of-1024 unit that divides it.
func formatSize(n int64) string {
	if n != 0 {
		for _, u := range sizeUnits {
			if n%u.mult == 0 {
				return strconv.FormatInt(n/u.mult, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(n, 10)
}
