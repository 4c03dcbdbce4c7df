package bench

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/quartet-server/quartet/internal/strictyaml"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// ServerParams is the configuration of a Quartet server started by the
// tool for one measurement (a sweep point, or the Quartet column of a
// comparison). Zero fields take the server's defaults.
type ServerParams struct {
	Readers       int `json:"readers" yaml:"readers"`
	Processors    int `json:"processors" yaml:"processors"`
	Writers       int `json:"writers" yaml:"writers"`
	QueueCapacity int `json:"queue_capacity" yaml:"queue_capacity"`
	MaxConns      int `json:"max_conns" yaml:"max_conns"`
	// Metrics asks for the Prometheus exporter (Server.MetricsURL): off
	// unless an experiment scrapes it, since it counts every response.
	Metrics bool `json:"-" yaml:"-"`
}

// Server is a server under test that the tool started.
type Server interface {
	// URL is the base URL, e.g. http://127.0.0.1:40123.
	URL() string
	// CPU is the server's cumulative CPU time, for server CPU per request.
	CPU() time.Duration
	// PID is the server's process id (os.Getpid() when in-process), for
	// RSS readings.
	PID() int
	// Close stops the server and releases everything it holds.
	Close() error
}

// StartServer starts a Quartet server for p. The command wires it to the
// in-process runtime server (package bench/inproc) so that this package
// does not depend on the server it measures.
type StartServer func(ctx context.Context, p ServerParams) (Server, error)

// Env is what the commands need from their caller.
type Env struct {
	Stdout, Stderr io.Writer
	// Quartet starts an in-process Quartet server; nil when the server
	// package is not linked in, and then a URL must be given.
	Quartet StartServer
	// QuartetBinary, if set, is a quartet executable: comparisons and the
	// idle experiment run `QuartetBinary serve` as a separate process, so
	// Quartet gets its own process like the peers.
	QuartetBinary string
}

// errUsage is returned after a usage message was printed.
var errUsage = errors.New("bench: wrong arguments (usage above)")

// ErrUsage is errUsage for the command, which exits 2 on any error that
// is it (errors.Is): the bare one after a usage message, or one that
// names what in the command line is wrong (usagef).
var ErrUsage = errUsage

// usageErr is an error in the command line itself: a flag's value out of
// range, a target of no kind the tool knows.
type usageErr struct{ error }

func (e usageErr) Is(target error) bool { return target == errUsage }
func (e usageErr) Unwrap() error        { return e.error }

func usagef(format string, args ...any) error { return usageErr{fmt.Errorf(format, args...)} }

// helpIsNotAnError turns -h's flag.ErrHelp (usage already printed) into
// success, as `quartet serve -h` does.
func helpIsNotAnError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ", ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// parseInterspersed parses flags that may come before or after the
// positional arguments (Go's flag package stops at the first positional).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseOne parses args for a command of one positional argument and
// returns it. "" means the caller returns err: nil after -h (usage
// printed), errUsage or the parse error otherwise.
func parseOne(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return "", helpIsNotAnError(err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return "", errUsage
	}
	return pos[0], nil
}

// loadFlags are the flags shared by bench, bench idle and compare.
type loadFlags struct {
	cfg     Config
	mix     listFlag
	headers listFlag
	method  string
	body    int
	mixFile string
	src     string
	jsonOut bool
	csvOut  bool
}

func (f *loadFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.cfg.Conns, "c", DefaultConns, "keep-alive connections")
	fs.IntVar(&f.cfg.Loops, "t", 0, "event loops (threads); default min(2, connections)")
	fs.DurationVar(&f.cfg.Duration, "d", DefaultDuration, "measurement duration (after warm-up)")
	fs.Int64Var(&f.cfg.Requests, "n", 0, "stop after this many responses instead of after -d")
	fs.DurationVar(&f.cfg.Warmup, "w", 0, "warm-up before measuring")
	fs.Float64Var(&f.cfg.Rate, "R", 0, "open loop at this many requests/s in total, latency corrected for coordinated omission (0: closed loop)")
	fs.IntVar(&f.cfg.Pipeline, "p", 1, "requests in flight per connection (pipelining depth)")
	fs.DurationVar(&f.cfg.Timeout, "timeout", DefaultTimeout, "per-request timeout (negative: none)")
	fs.Var(&f.mix, "m", `request mix entry "[METHOD] PATH [body=N] [weight=N] [Name:Value]" (repeatable)`)
	fs.StringVar(&f.mixFile, "mix", "", "YAML file with a list of mix entries (method, path, body_size, headers, weight)")
	fs.StringVar(&f.method, "X", "", "method for the URL's request (default GET, POST with -b); not with -m/-mix")
	fs.IntVar(&f.body, "b", 0, "request body size in bytes for the URL's request (not with -m/-mix); for msg:// the payload size (default 13)")
	fs.Var(&f.headers, "H", `header "Name: value" for the URL's request (repeatable; not with -m/-mix)`)
	fs.StringVar(&f.src, "src", "", "source addresses, comma list or range 127.0.0.1-127.0.0.8 (more than ~28k connections)")
	fs.IntVar(&f.cfg.ServerPID, "server-pid", 0, "server process id, for server CPU per request")
	fs.BoolVar(&f.jsonOut, "json", false, "print the result as JSON")
	fs.BoolVar(&f.csvOut, "csv", false, "print the result as CSV: a header and one row, columns as in README.md (\"CSV columns\"); not with -json")
}

// check refuses flag values the load cannot run with. Config reads a
// zero as "the default", which suits a program filling it in, but from
// the command line -c 0 or -d -1s is a mistake, not a request for the
// default: the run would measure something else than was asked for.
func (f *loadFlags) check() error {
	c := &f.cfg
	switch {
	case c.Conns < 1:
		return usagef("bench: -c %d: want at least 1 connection", c.Conns)
	case c.Loops < 0:
		return usagef("bench: -t %d: want 0 (the default) or more loops", c.Loops)
	case c.Requests < 0:
		return usagef("bench: -n %d: want 0 (run for -d) or more responses", c.Requests)
	case c.Duration < 0, c.Duration == 0 && c.Requests == 0:
		return usagef("bench: -d %v: want a duration above 0 (or -n)", c.Duration)
	case c.Warmup < 0:
		return usagef("bench: -w %v: want 0 or more", c.Warmup)
	case c.Pipeline < 1:
		return usagef("bench: -p %d: want at least 1 request in flight", c.Pipeline)
	case c.Timeout == 0:
		return usagef("bench: -timeout 0: want a duration above 0, or a negative one for none")
	case c.Rate < 0:
		return usagef("bench: -R %v: want 0 (closed loop) or a rate above 0", c.Rate)
	case f.body < 0:
		return usagef("bench: -b %d: want 0 or more bytes", f.body)
	case f.jsonOut && f.csvOut:
		// One output, one format: JSON silently won before.
		return usagef("bench: -json and -csv: give one")
	case (len(f.mix) > 0 || f.mixFile != "") && (f.method != "" || f.body > 0 || len(f.headers) > 0):
		// They shape the URL's request, which a mix replaces: they were
		// ignored without a word.
		return usagef("bench: -X, -b and -H shape the URL's request, which -m and -mix replace: give the method, body=N and headers in each mix entry")
	}
	return nil
}

// finish turns the parsed flags into f.cfg for target url.
func (f *loadFlags) finish(url string) error {
	f.cfg.URL = url
	if f.cfg.Requests > 0 {
		f.cfg.Duration = 0
	}
	if IsMsgTarget(url) {
		if len(f.mix) > 0 || f.mixFile != "" || f.method != "" || len(f.headers) > 0 {
			return fmt.Errorf("bench: %s: -m, -mix, -X and -H shape HTTP requests; a messenger run takes -b", url)
		}
		f.cfg.Payload = f.body
		return f.finishSrc()
	}
	for _, m := range f.mix {
		r, err := ParseMixEntry(m)
		if err != nil {
			return err
		}
		f.cfg.Mix = append(f.cfg.Mix, r)
	}
	if f.mixFile != "" {
		b, err := os.ReadFile(f.mixFile)
		if err != nil {
			return err
		}
		var list []RequestSpec
		if err := strictyaml.Decode(b, &list); err != nil {
			return fmt.Errorf("bench: %s: %w", f.mixFile, err)
		}
		f.cfg.Mix = append(f.cfg.Mix, list...)
	}
	if len(f.cfg.Mix) == 0 && (f.method != "" || f.body > 0 || len(f.headers) > 0) {
		t, err := parseTarget(url)
		if err != nil {
			return err
		}
		r := RequestSpec{Method: f.method, Path: t.path, BodySize: f.body}
		for _, h := range f.headers {
			k, v, ok := strings.Cut(h, ":")
			if !ok || strings.TrimSpace(k) == "" {
				return usagef("bench: -H %q: want Name: value", h)
			}
			if r.Headers == nil {
				r.Headers = map[string]string{}
			}
			r.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		f.cfg.Mix = []RequestSpec{r}
	}
	return f.finishSrc()
}

// finishSrc parses -src.
func (f *loadFlags) finishSrc() error {
	if f.src != "" {
		addrs, err := ParseSourceAddrs(f.src)
		if err != nil {
			return err
		}
		f.cfg.SourceAddrs = addrs
	}
	return nil
}

// ParseSourceAddrs parses "a,b,c" or a range "127.0.0.1-127.0.0.8".
func ParseSourceAddrs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("bench: source address: %w", err)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(hi)
		if err != nil {
			return nil, fmt.Errorf("bench: source address: %w", err)
		}
		for ; a.Compare(b) <= 0; a = a.Next() {
			out = append(out, a)
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("bench: source range %q too large", part)
			}
		}
	}
	return out, nil
}

func progressPrinter(w io.Writer) func(Progress) {
	return func(p Progress) {
		phase := ""
		if p.Warmup {
			phase = " (warm-up)"
		}
		fmt.Fprintf(w, "\r\033[K%6.1fs  %10.0f req/s  %d responses  %d errors%s",
			p.Elapsed.Seconds(), p.Rate, p.Requests, p.Errors, phase)
	}
}

// Main is `quartet bench`: one load run, or the subcommands `idle`,
// `compare` (also spelled --compare) and `overload`.
func Main(ctx context.Context, args []string, env Env) error {
	if len(args) > 0 {
		switch args[0] {
		case "idle":
			return idleMain(ctx, args[1:], env)
		case "compare":
			return compareMain(ctx, args[1:], env)
		case "overload":
			return overloadMain(ctx, args[1:], env)
		}
	}
	for i, a := range args {
		if a == "--compare" || a == "-compare" {
			return compareMain(ctx, append(args[:i:i], args[i+1:]...), env)
		}
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var f loadFlags
	f.register(fs)
	vsWrk := fs.Bool("vs-wrk", false, "then run wrk with the same -c, -t, -d and compare client CPU per request")
	msgRDMA := fs.String("msg-rdma", "off", "msg:// only: ask for every reply's payload by RDMA, server-writes or client-reads (closed loop, through the messenger's client); the summary counts the replies that fell back to TCP")
	fs.StringVar(&f.cfg.MsgProvider, "msg-provider", "", "RDMA provider for --msg-rdma: soft, verbs or auto (default auto: verbs when this binary has it and a device exists, else soft)")
	var sp ServerParams
	fs.IntVar(&sp.Readers, "readers", 0, "in-process server (URL inproc:/PATH): reader loops")
	fs.IntVar(&sp.Processors, "processors", 0, "in-process server: processors")
	fs.IntVar(&sp.Writers, "writers", 0, "in-process server: writer loops")
	fs.IntVar(&sp.QueueCapacity, "queue", 0, "in-process server: queue capacity")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "usage: quartet bench [flags] URL          (URL inproc:/hello runs an in-process Quartet; msg://HOST:PORT a messenger echo)\n       quartet bench idle [flags] URL\n       quartet bench compare [flags] [QUARTET-URL]\n       quartet bench overload [flags] URL")
		fs.PrintDefaults()
		fmt.Fprintln(env.Stderr, "\n"+benchExitStatus)
	}
	target, err := parseOne(fs, args)
	if target == "" {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "inproc:") && !IsMsgTarget(target) {
		return usagef("bench: target %q: want http://HOST:PORT/PATH, inproc:/PATH or msg://HOST:PORT", target)
	}
	if f.cfg.MsgRDMA, err = deliver.ParseMode(*msgRDMA); err != nil {
		return usagef("bench: --msg-rdma: %w", err)
	}
	switch f.cfg.MsgProvider {
	case "", "soft", "verbs", "auto":
	default:
		return usagef("bench: --msg-provider %q: want soft, verbs or auto", f.cfg.MsgProvider)
	}
	if f.cfg.MsgRDMA != deliver.ModeOff && !IsMsgTarget(target) {
		return usagef("bench: --msg-rdma: replies by RDMA are the messenger's; %s is not a msg:// target", target)
	}
	if IsMsgTarget(target) {
		if *vsWrk {
			return usagef("bench: --vs-wrk: wrk speaks HTTP, not the messenger")
		}
		if !flagGiven(fs, "b") {
			f.body = DefaultMsgPayload
		}
	}
	inproc := strings.HasPrefix(target, "inproc:")
	if inproc {
		if env.Quartet == nil {
			return errors.New("bench: no in-process Quartet linked in")
		}
		if _, err := RaiseFDLimit(2*uint64(f.cfg.Conns) + 64); err != nil {
			return err
		}
		srv, err := env.Quartet(ctx, sp)
		if err != nil {
			return err
		}
		defer srv.Close()
		target = srv.URL() + strings.TrimPrefix(target, "inproc:")
		f.cfg.ServerInProcess = true
	}
	if err := f.finish(target); err != nil {
		return err
	}
	if !f.jsonOut && !f.csvOut && isTerminal(env.Stdout) {
		f.cfg.Progress = progressPrinter(env.Stdout)
	}
	if pid := f.cfg.ServerPID; pid != 0 {
		if _, err := ProcCPU(pid); err != nil || pid < 0 {
			return usagef("bench: --server-pid %d: cannot read its CPU time (%v)", pid, cmp.Or(err, errors.New("not a process id")))
		}
	}
	if !inproc {
		if err := checkReachable(ctx, f.cfg.URL, f.cfg.withDefaults().Timeout); err != nil {
			return err
		}
		spareProcs(f.cfg.withDefaults().Loops)
	}
	res, err := Run(ctx, f.cfg)
	if f.cfg.Progress != nil {
		fmt.Fprint(env.Stdout, "\r\033[K")
	}
	if res != nil {
		if werr := writeResult(env.Stdout, res, f.jsonOut, f.csvOut); werr != nil {
			return werr
		}
		if w := res.FailureWarning(); w != "" && (f.jsonOut || f.csvOut) {
			// The text report has it; JSON and CSV must stay parseable.
			fmt.Fprintf(env.Stderr, "bench: %s\n", w)
		}
	}
	if err != nil {
		return err
	}
	if res != nil && res.Good() == 0 {
		// A script running the benchmark must not take a run of refusals,
		// error pages or silence for a measurement.
		return fmt.Errorf("bench: %s: %w in the measurement (%s)", f.cfg.URL, ErrNoSuccess, successMeaning(res))
	}
	if *vsWrk {
		return vsWrkMain(ctx, f.cfg, res, env.Stdout)
	}
	return nil
}

// successMeaning says what counted as success for res, for the error.
func successMeaning(res *Result) string {
	if res.Protocol == protoMsg {
		return "no reply passed its check"
	}
	return "no 2xx or 3xx response"
}

// benchExitStatus is the exit status part of the commands' help.
const benchExitStatus = `Exit status: 0 when the run measured at least one successful response
(HTTP 2xx or 3xx; for msg://, a reply that passed its check); 1 when the
run failed or none succeeded (the result is still printed; a warning
line says when most requests failed); 2 for a usage error.`

// DefaultMsgPayload is a messenger run's payload size without -b: the
// 13 bytes of /hello's "Hello, World!", so the two compare like for like.
const DefaultMsgPayload = 13

// flagGiven reports whether the command line set the flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// spareProcs raises GOMAXPROCS to loops+2 in a process that only
// generates load (never with an in-process server, whose stages it would
// change). Each loop holds a P while its thread runs and gives it up while
// it blocks in epoll; with no spare P, sysmon retakes Ps and every wake-up
// pays a hand-off: ~20% more client CPU per request, measured on 2 cores.
func spareProcs(loops int) {
	if want := loops + 2; goruntime.GOMAXPROCS(0) < want {
		goruntime.GOMAXPROCS(want)
	}
}

func writeResult(w io.Writer, res *Result, jsonOut, csvOut bool) error {
	switch {
	case jsonOut:
		return res.WriteJSON(w)
	case csvOut:
		return res.WriteCSV(w)
	}
	return res.WriteText(w)
}

func vsWrkMain(ctx context.Context, cfg Config, ours *Result, w io.Writer) error {
	cfg = cfg.withDefaults()
	wr, err := RunWrk(ctx, WrkConfig{URL: cfg.URL, Conns: cfg.Conns, Threads: cfg.Loops, Duration: cfg.Duration})
	if err != nil {
		return err
	}
	ourCPU := ours.ClientCPUPerRequest()
	fmt.Fprintf(w, "wrk: %d requests, %.1f req/s, client CPU %v/request (%v total)\n",
		wr.Requests, wr.RequestsPerSec, wr.CPUPerRequest(), wr.CPU.Round(time.Millisecond))
	if wr.CPUPerRequest() > 0 {
		fmt.Fprintf(w, "quartet bench client CPU per request / wrk's: %.2f\n", float64(ourCPU)/float64(wr.CPUPerRequest()))
	}
	return nil
}
