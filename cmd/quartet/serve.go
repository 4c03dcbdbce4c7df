package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/admin"
	"github.com/quartet-server/quartet/internal/systemd"
	"github.com/quartet-server/quartet/metrics"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/protocol/msg/msgrdma"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/rdmatool"
	"github.com/quartet-server/quartet/rdmahttp"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/static"
)

//go:embed site
var sampleSite embed.FS

const serveAbout = `usage: quartet serve [flags]

Serves HTTP/1.1 on --addr (default 127.0.0.1:8080; in a systemd socket unit,
on the socket it passes). Without --root and --config it is the demo: the
embedded sample site and the load-test endpoints /hello, /sleep?ms=N,
/compute?n=N, /bytes?n=N and /echo. With --root or --config it serves only your content,
unless --bench-endpoints asks for the load-test endpoints too.

Signals: SIGINT or SIGTERM shuts down gracefully (requests in flight get
--shutdown-timeout; a second signal, 100ms or more after the first, stops
at once, cutting off the connections still open), SIGHUP reloads --config
(settings that cannot change live are named in the log), SIGUSR1 reopens
--access-log (logrotate).

Flags (each is also a key of the --config file, with the same syntax, but
a value YAML would read otherwise is quoted there: access-log: "-"; sizes
are bytes, or take a unit in powers of 1024: 64KiB, 64MiB, 1GiB, 1TiB; KB,
MB and GB are refused, being 1000s to some and 1024s to others):
`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl, configPath := defaultOptions().flagSet()
	fl.SetOutput(io.Discard)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printServeUsage(stdout)
			return nil
		}
		return usageError{err}
	}
	if fl.NArg() > 0 {
		return unexpectedArgument(fl, args)
	}
	o, given, err := loadOptions(args, *configPath)
	if err != nil {
		return err
	}
	if err := o.validate(given, *configPath); err != nil {
		if *configPath == "" {
			return usageError{err}
		}
		return err
	}
	r := &serveRun{args: args, configPath: *configPath, o: o, stdout: stdout, stderr: stderr}
	defer r.close()
	err = r.run(ctx)
	if err != nil && o.logFormat == "json" && r.logger != nil {
		// A JSON log's reader parses every line of stderr: the last one
		// too, which says why the server stopped.
		r.logger.Error("quartet serve: "+unprefixed(err, "serve"), "exit", exitError)
		return loggedError{err}
	}
	return err
}

func printServeUsage(w io.Writer) {
	fmt.Fprint(w, serveAbout)
	o := defaultOptions()
	all := append([]setting{{key: "config", value: (*text)(new(string)), help: "read settings from this YAML file; flags given too win"}}, o.settings()...)
	width := 0
	for _, s := range all {
		width = max(width, len(s.key))
	}
	for _, s := range all {
		def := s.value.String()
		if def == "" || def == "0" && s.key == "max-conns" || strings.Contains(s.help, "(default:") {
			def = ""
		}
		if def != "" {
			def = " (default " + def + ")"
		}
		fmt.Fprintf(w, "  --%-*s %s%s\n", width, s.key, s.help, def)
	}
}

// serveRun is one run of `quartet serve`: the server and everything the
// command wraps around it (logs, handler, admin listener, signals).
type serveRun struct {
	args       []string
	configPath string
	o          *serveOptions
	stdout     io.Writer
	stderr     io.Writer

	logger      *slog.Logger
	level       slog.LevelVar
	memoryLimit string    // what --memory-limit put in force, for the startup line
	started     time.Time // when the startup line was logged
	handler     swapHandler
	alog        accessLog
	notify      *systemd.Notifier
	srv         *runtime.Server
	desc        contentDesc
	dir         atomic.Pointer[static.Dir] // the directory served now, for /metrics; nil for the embedded site
	// retiring are directories a reload replaced, each closed retireGrace
	// later by its timer, or when the server stops if that comes first.
	retireMu sync.Mutex
	retiring map[*static.Dir]*time.Timer
	// retired holds the counters of the directories closed after a
	// reload, so that /metrics counts on across reloads (a rebuilt
	// directory's cache starts from zero) instead of showing a reset.
	retired static.CacheStats
}

// retireGrace is how long a directory a reload replaced stays open before
// it is closed. Requests that took it just before the swap enter it within
// microseconds, and Dir.Close waits for those inside; one that stalled
// longer is answered 503 with Retry-After.
const retireGrace = 2 * time.Second

// contentDesc says what the handler serves, for the logs.
type contentDesc struct {
	root  string
	bench bool
	demo  bool
}

func (r *serveRun) run(ctx context.Context) error {
	o := r.o
	r.level.Set(parseLevel(o.logLevel))
	hopts := &slog.HandlerOptions{Level: &r.level}
	if o.logFormat == "json" {
		hopts.ReplaceAttr = jsonDurations
		r.logger = slog.New(slog.NewJSONHandler(r.stderr, hopts))
	} else {
		r.logger = slog.New(slog.NewTextHandler(r.stderr, hopts))
	}
	r.notify = systemd.NewNotifier(systemd.ProcessEnv{})
	memCtx, stopMemoryLimit := context.WithCancel(ctx)
	defer stopMemoryLimit()
	var restoreMemoryLimit func()
	r.memoryLimit, restoreMemoryLimit = setMemoryLimit(memCtx, o.memoryLimit, r.logger)
	defer restoreMemoryLimit()
	cfg := o.cfg
	cfg.Logger = r.logger

	lns, names, err := systemd.Listeners(systemd.ProcessEnv{})
	if err != nil {
		return err
	}
	switch len(lns) {
	case 0:
	case 1:
		cfg.Listener = lns[0]
		r.logger.Debug("socket activation", "socket", names[0], "addr", lns[0].Addr().String())
	default:
		for _, l := range lns {
			l.Close()
		}
		return fmt.Errorf("socket activation: %d sockets passed (%s); want one", len(lns), strings.Join(names, ", "))
	}

	if err := r.setHandler(o); err != nil {
		return err
	}
	cfg.Handler = &r.handler
	r.alog.logger = r.logger
	if err := r.alog.open(o.accessLog, runtime.AccessLogFormat(o.accessLogFormat), r.stdout); err != nil {
		return fmt.Errorf("--access-log: %w", err)
	}
	cfg.Log = r.alog.log

	var mx *metrics.Metrics
	if o.metricsAddr != "" {
		mx = metrics.New()
		mx.RegisterBuildInfo(buildInfo())
		// Registered once, whatever is served now: a reload that swaps
		// the directory is followed at the next scrape.
		mx.Registry().MustRegister(metrics.Static(r.staticStats))
		cfg.Modules = append(cfg.Modules, mx.Module())
	}
	rmod, err := rdmaModule(o, r.logger)
	if err != nil {
		return err
	}
	if rmod != nil {
		cfg.Modules = append(cfg.Modules, rmod.Module())
		// The messenger's RDMA replies share HTTP's engine, whose loops
		// the module attaches to the writer loops.
		cfg.MsgRDMA = msgrdma.New(rmod.Engine()).Stages()
		if mx != nil {
			mx.Registry().MustRegister(metrics.RDMA(rmod.Stats))
		}
		// Runs after Serve has returned on every path below: the writer
		// loops whose CQs the module owns have stopped.
		defer func() {
			st := rmod.Stats()
			r.logger.Info("rdma totals", "written", st.Written, "written-bytes", st.WrittenBytes,
				"exposed", st.Exposed, "confirmed", st.Confirmed, "timed-out", st.TimedOut,
				"lost", st.Lost, "fallbacks", st.Fallbacks, "dials", st.Dials,
				"collect-time", st.CollectTime, "rdma-time", st.RDMATime, "exposure-time", st.ExposureTime)
			if err := rmod.Close(); err != nil {
				r.logger.Error("rdma: releasing", "err", err)
			}
		}()
	}

	srv, err := runtime.New(cfg)
	if err != nil {
		return err
	}
	r.srv = srv
	adminURL := "off"
	if mx != nil {
		mx.Attach(srv)
		admin, ln, err := serveAdmin(o.metricsAddr, mx, srv, o.pprof, o.admin, r.logger)
		if err != nil {
			srv.Close()
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer admin.Close()
		adminURL = "http://" + ln.Addr().String()
	}
	return r.serve(ctx, adminURL)
}

// serve runs the server and answers signals until it has stopped.
func (r *serveRun) serve(ctx context.Context, adminURL string) error {
	srv := r.srv
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx) }()
	ready := make(chan struct{})
	go func() {
		for !srv.Ready() {
			select {
			case <-serveCtx.Done():
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
		close(ready)
	}()

	var shutdown chan error // the graceful shutdown's outcome, once begun
	var forced <-chan time.Time
	var overdue <-chan time.Time // the grace, and a little for handlers to see their connections closed
	var shutdownAt time.Time
	beginShutdown := func(why string) {
		if shutdown != nil {
			return
		}
		shutdownAt = time.Now()
		overdue = time.After(srv.Config().ShutdownTimeout + handlersAfterGrace)
		r.logger.Info("shutting down: finishing requests in flight", "why", why, "grace", srv.Config().ShutdownTimeout)
		r.notifyState("STOPPING=1")
		stopServing()
		shutdown = make(chan error, 1)
		go func() { shutdown <- srv.Shutdown(context.Background()) }()
	}
	ctxDone := ctx.Done()
	var firstStop time.Time // when the first SIGINT or SIGTERM came
	var cutOff error        // what a forced stop cut off
	for {
		select {
		case err := <-done:
			if forced != nil {
				return cutOff
			}
			if shutdown != nil && errors.Is(err, runtime.ErrServerClosed) {
				err = nil // the shutdown came before Serve had started
			}
			if err == nil && shutdown != nil {
				err = <-shutdown // how the shutdown went: cut short by its grace, say
			}
			if err == nil && !r.started.IsZero() {
				// The last line: that the server stopped cleanly, and
				// what it did, for a journal read after the fact.
				st := srv.Snapshot()
				r.logger.Info("quartet stopped", "uptime", time.Since(r.started).Round(time.Millisecond),
					"shutdown_took", time.Since(shutdownAt).Round(time.Millisecond),
					"connections", st.Accepted, "responses", st.Writer.Dequeued)
			}
			return err
		case <-ready:
			ready = nil
			r.started = time.Now()
			r.logStart(adminURL)
			r.notifyState("READY=1", "STATUS=serving "+r.url())
		case <-ctxDone:
			ctxDone = nil
			beginShutdown("cancelled")
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				r.reload()
			case syscall.SIGUSR1:
				switch path, reopened, err := r.alog.reopen(); {
				case err != nil:
					r.logger.Error("SIGUSR1: reopening the access log", "path", path, "err", err)
				case reopened:
					r.logger.Info("SIGUSR1: access log reopened", "path", path)
				case path == "":
					r.logger.Info("SIGUSR1: there is no access log to reopen (--access-log is not set)")
				default:
					r.logger.Info("SIGUSR1: the access log goes to stdout; there is no file to reopen")
				}
			default:
				// Counted here, not by ctx: main's signal context sees the
				// first signal too.
				if firstStop.IsZero() {
					firstStop = time.Now()
					beginShutdown(sig.String())
					continue
				}
				if forced != nil {
					continue
				}
				if since := time.Since(firstStop); since < sameSignal {
					r.logger.Debug(sig.String()+" again "+since.Round(time.Microsecond).String()+" after the first: taken as the same one", "window", sameSignal)
					continue
				}
				st := srv.Snapshot()
				if st.Open == 0 {
					r.logger.Info("second " + sig.String() + ": no connection is open; the shutdown is finishing")
					continue
				}
				handlers := st.Busy + st.Slow.Parked
				r.logger.Warn("second "+sig.String()+": stopping now, cutting off the connections still open", "connections", st.Open, "handlers-running", handlers)
				cutOff = fmt.Errorf("stopped by a second signal: cut off %d open connection(s), %d with a handler running", st.Open, handlers)
				go srv.Close()
				// A handler that does not return would hold Close: exit
				// anyway soon after.
				forced = time.After(2 * time.Second)
			}
		case <-forced:
			return fmt.Errorf("%w; handlers still running were abandoned", cutOff)
		case <-overdue:
			// The grace is over and its connections closed, yet handlers
			// blocked on their own work (a sleep, a backend) still run,
			// and Shutdown waits for them: a service manager restarting
			// the server would wait as long, or kill it. Exit without
			// them, as --shutdown-timeout promises.
			if forced != nil {
				continue
			}
			st := srv.Snapshot()
			handlers := st.Busy + st.Slow.Parked
			r.logger.Warn("shutdown grace over: exiting, abandoning the handlers still running", "handlers-running", handlers,
				"grace", srv.Config().ShutdownTimeout)
			return fmt.Errorf("shutdown grace (%s) over: abandoned %d handler(s) still running", srv.Config().ShutdownTimeout, handlers)
		}
	}
}

// handlersAfterGrace is how long after the shutdown's grace the process
// waits for handlers still running, once their connections are closed
// and their writes fail, before it exits without them.
const handlersAfterGrace = 2 * time.Second

// sameSignal is how soon after the first a second SIGINT or SIGTERM is
// taken as the same request to stop, not as "stop now". Signals sent
// together by one sender (GNU timeout signals the child and then its
// process group; systemd's KillMode=mixed and a wrapper forwarding Ctrl-C
// to a process group do the same) arrive microseconds to a few
// milliseconds apart, tens on a loaded machine. A person asking again
// does so after seeing the first did not stop the server: a visual
// reaction and a keystroke, 200 ms at the fastest. 100 ms leaves room
// both ways.
const sameSignal = 100 * time.Millisecond

// jsonDurations writes durations as Go writes them ("30s", "1.5ms") in a
// JSON log, where slog's default is an integer of nanoseconds that every
// reader must know to divide.
func jsonDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func (r *serveRun) url() string { return "http://" + r.srv.Addr().String() }

// logStart is the startup line: where the server listens, what it
// serves, what is enabled.
func (r *serveRun) logStart(adminURL string) {
	c := r.srv.Config()
	o := r.o
	accessLog := o.accessLog
	if accessLog == "" {
		accessLog = "off"
	}
	v := buildInfo()
	// The key must not end in "addr": tools find the HTTP address by
	// the last "addr=" on this line (bench/reliability's servingRE).
	msgAddr := "off"
	if a := r.srv.MsgAddr(); a != nil {
		msgAddr = a.String()
	}
	r.warnBench() // before the startup line, which tools and tests take as "ready"
	openFiles := r.warnOpenFiles(c.MaxConns)
	r.logger.Info("quartet serving", "url", r.url(), "addr", r.srv.Addr().String(), "messenger", msgAddr, "root", r.desc.root,
		"bench-endpoints", r.desc.bench, "access-log", accessLog, "admin", adminURL,
		"rdma", o.rdma, "readers", c.Readers, "processors", c.Processors, "processors-min", c.ProcessorsMin,
		"processors-max", c.ProcessorsMax, "writers", c.Writers, "max-conns", c.MaxConns, "open-files", openFiles,
		"memory-limit", r.memoryLimit, "version", v.Version)
}

// fewOpenFiles is the open-file limit below which a server for many
// connections is warned: every connection holds an fd.
const fewOpenFiles = 4096

// warnOpenFiles says when the open-file limit (RLIMIT_NOFILE, which Go
// raises to its hard limit at start) is what will bound the connections:
// out of fds, accepts fail and clients wait in the backlog, where
// --max-conns would have stopped accepting cleanly and kept fds for the
// files. It returns the limit for the startup line ("unknown" if it
// cannot be read).
func (r *serveRun) warnOpenFiles(maxConns int) string {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return "unknown"
	}
	cur := uint64(lim.Cur) // int64 on the BSDs
	switch {
	case maxConns > 0 && uint64(maxConns) >= cur:
		r.logger.Warn("--max-conns is at or above the open-file limit: accepts will fail on a full fd table before it is reached",
			"max-conns", maxConns, "open-files", cur, "fix", "raise the limit (ulimit -n, systemd's LimitNOFILE=) or lower --max-conns")
	case maxConns == 0 && cur < fewOpenFiles:
		r.logger.Warn("the open-file limit is low for a server of many connections: each connection holds an fd",
			"open-files", cur, "fix", "raise it (ulimit -n, systemd's LimitNOFILE=)")
	}
	if lim.Cur == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(cur, 10)
}

func (r *serveRun) warnBench() {
	switch {
	case r.desc.bench && r.desc.demo:
		r.logger.Warn("demo mode: load-test endpoints /hello /sleep /compute /bytes /echo are on; --root or --config turns them off")
	case r.desc.bench:
		r.logger.Warn("load-test endpoints /hello /sleep /compute /bytes /echo are on (--bench-endpoints): any client can hold workers with /sleep and ask for up to 1 GiB")
	}
}

func (r *serveRun) notifyState(state ...string) {
	if err := r.notify.Notify(state...); err != nil {
		r.logger.Warn("sd_notify", "err", err)
	}
}

// setHandler builds the handler o asks for and puts it in place.
func (r *serveRun) setHandler(o *serveOptions) error {
	var files processor.Handler
	var dir *static.Dir
	desc := contentDesc{root: o.root, demo: o.root == "" && r.configPath == ""}
	if o.root != "" {
		opts := o.staticOptions()
		opts.Logger = r.logger
		d, err := static.NewDirOptions(o.root, opts)
		if err != nil {
			return fmt.Errorf("--root: %w", err)
		}
		files, dir = d, d
	} else {
		site, _ := fs.Sub(sampleSite, "site")
		fsys, err := static.NewFS(site)
		if err != nil {
			return err
		}
		files = fsys
		desc.root = "(embedded sample site)"
	}
	desc.bench = desc.demo
	if o.bench.set {
		desc.bench = o.bench.on
	}
	h := files
	if desc.bench {
		h = runtime.Builtin(files)
	}
	r.handler.set(h)
	if old := r.dir.Swap(dir); old != nil {
		r.retire(old)
	}
	r.desc = desc
	return nil
}

// retire closes old, a directory no longer served, after retireGrace:
// its open files and held bytes go, and its root once the last request
// inside it is out.
func (r *serveRun) retire(old *static.Dir) {
	r.retireMu.Lock()
	defer r.retireMu.Unlock()
	if r.retiring == nil {
		r.retiring = map[*static.Dir]*time.Timer{}
	}
	r.retiring[old] = time.AfterFunc(retireGrace, func() {
		old.Close()
		r.retireMu.Lock()
		defer r.retireMu.Unlock()
		if _, ok := r.retiring[old]; ok { // not already taken by close
			delete(r.retiring, old)
			r.retired.AddCounters(old.CacheStats())
		}
	})
}

// staticStats is the open-file cache of the directory served now; none
// for the embedded sample site, which has no cache (static.FS reads every
// file into memory when it starts).
//
// Its counters are those of every directory served since the start:
// the one served now, those a reload replaced and still open, and those
// closed since.
func (r *serveRun) staticStats() (static.CacheStats, bool) {
	d := r.dir.Load()
	if d == nil {
		return static.CacheStats{}, false
	}
	s := d.CacheStats()
	r.retireMu.Lock()
	defer r.retireMu.Unlock()
	s.AddCounters(r.retired)
	for old := range r.retiring {
		s.AddCounters(old.CacheStats())
	}
	return s, true
}

// reload is SIGHUP: read the configuration again and apply what can
// change while serving. It is never fatal: a file that does not load is
// reported and the running configuration stays.
func (r *serveRun) reload() {
	r.notifyState("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
	defer r.notifyState("READY=1")
	if r.configPath == "" {
		r.logger.Info("SIGHUP: no --config file to reload")
		return
	}
	next, given, err := loadOptions(r.args, r.configPath)
	if err == nil {
		err = next.validate(given, r.configPath)
	}
	if err != nil {
		r.logger.Error("SIGHUP: reload failed; the running configuration stays", "err", err)
		return
	}
	wanted, restart := changes(r.o, next)
	if len(restart) > 0 {
		r.logger.Warn("SIGHUP: these settings change only on a restart; still running with the old values", "settings", strings.Join(restart, "; "))
	}
	if len(wanted) == 0 {
		r.logger.Info("SIGHUP: configuration reloaded; nothing that can change live changed")
		return
	}
	live := *r.o // the running values, with the live ones from next
	live.setContent(next.content())
	live.accessLog, live.accessLogFormat, live.logLevel = next.accessLog, next.accessLogFormat, next.logLevel
	// The handler is rebuilt only when what it serves changed: otherwise
	// the open-file cache stays warm and its counters keep counting.
	if live.content() != r.o.content() {
		if err := r.setHandler(&live); err != nil {
			r.logger.Error("SIGHUP: new content root; keeping the old one", "err", err)
			live.setContent(r.o.content())
		}
	}
	if err := r.alog.open(live.accessLog, runtime.AccessLogFormat(live.accessLogFormat), r.stdout); err != nil {
		r.logger.Error("SIGHUP: new access log; keeping the old one", "err", err)
		live.accessLog, live.accessLogFormat = r.o.accessLog, r.o.accessLogFormat
	}
	r.level.Set(parseLevel(live.logLevel))
	// A stage's settings are taken when the stage has them in force, which
	// includes a change that leaves its sizing as it was (a bound written
	// out equal to its default): otherwise each reload would find it
	// changed again.
	if r.resize(runtime.StageProcessor, next.cfg.ProcessorSizing(), r.o.cfg.ProcessorSizing(), "processor sizes") {
		live.cfg.Processors, live.cfg.ProcessorsMin, live.cfg.ProcessorsMax = next.cfg.Processors, next.cfg.ProcessorsMin, next.cfg.ProcessorsMax
	}
	if r.resize(runtime.StageReader, next.cfg.LoopSizing(runtime.StageReader), r.o.cfg.LoopSizing(runtime.StageReader), "reader loop counts") {
		live.cfg.Readers, live.cfg.ReadersMin, live.cfg.ReadersMax = next.cfg.Readers, next.cfg.ReadersMin, next.cfg.ReadersMax
	}
	if r.resize(runtime.StageWriter, next.cfg.LoopSizing(runtime.StageWriter), r.o.cfg.LoopSizing(runtime.StageWriter), "writer loop counts") {
		live.cfg.Writers, live.cfg.WritersMin, live.cfg.WritersMax = next.cfg.Writers, next.cfg.WritersMin, next.cfg.WritersMax
	}
	// What is reported is what the running options now hold: a change
	// whose application failed was logged with its error above, and is
	// named here only as not applied.
	changed, _ := changes(r.o, &live)
	var failed []string
	for _, w := range wanted {
		if !slices.Contains(changed, w) {
			failed = append(failed, w)
		}
	}
	*r.o = live
	if len(changed) == 0 {
		r.logger.Warn("SIGHUP: no change could be applied; the running configuration stays", "not-applied", strings.Join(failed, "; "))
		return
	}
	attrs := []any{"changed", strings.Join(changed, "; ")}
	if len(failed) > 0 {
		attrs = append(attrs, "not-applied", strings.Join(failed, "; "))
	}
	r.logger.Info("SIGHUP: configuration reloaded", append(attrs, "root", r.desc.root, "bench-endpoints", r.desc.bench)...)
	r.warnBench()
}

// changes lists the settings that differ from was to now, as "key: old ->
// new", the live ones apart from those that need a restart.
func changes(was, now *serveOptions) (live, restart []string) {
	a, b := was.settings(), now.settings()
	for i := range a {
		old, cur := a[i].value.String(), b[i].value.String()
		if old == cur {
			continue
		}
		change := a[i].key + ": " + old + " -> " + cur
		if a[i].live {
			live = append(live, change)
		} else {
			restart = append(restart, change)
		}
	}
	return live, restart
}

// resize puts a stage's sizing from a reload in force, through the same
// door as the admin's, logged with this cause. It reports whether the
// stage now runs with next (true when it already did).
func (r *serveRun) resize(st runtime.Stage, next, was runtime.StageSize, what string) bool {
	if next == was {
		return true
	}
	if _, err := r.srv.ChangeStage(st, runtime.StageChange{Size: next.Size,
		Min: next.Min, Max: next.Max, Auto: &next.Auto, Cause: "config (SIGHUP)"}); err != nil {
		r.logger.Error("SIGHUP: new "+what+"; keeping the old ones", "err", err)
		return false
	}
	return true
}

// close releases the directories, the one served and any retiring.
func (r *serveRun) close() {
	if d := r.dir.Swap(nil); d != nil {
		d.Close()
	}
	r.retireMu.Lock()
	retiring := r.retiring
	r.retiring = nil
	r.retireMu.Unlock()
	for d, t := range retiring {
		t.Stop()
		d.Close() // idempotent, should its timer have fired meanwhile
	}
	r.alog.close()
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1e3
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s)) // the option's choices are all valid levels
	return l
}

// swapHandler is the server's handler, replaced on a reload. Requests
// already running keep the handler they started with.
type swapHandler struct {
	h atomic.Pointer[processor.Handler]
}

func (s *swapHandler) set(h processor.Handler) { s.h.Store(&h) }

// Inline asks the handler in place. A reload between the question and
// ServeQuartet may answer with the next handler; both are built the same
// way (setHandler), so at worst one request opens a file the old cache
// had open.
func (s *swapHandler) Inline(r *stages.Request) bool {
	return processor.ServesInline(*s.h.Load(), r)
}

func (s *swapHandler) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	(*s.h.Load()).ServeQuartet(w, r)
}

// serveAdmin serves /metrics, /healthz, /readyz (and /debug/pprof and
// /admin/ when asked) on their own listener with net/http: operator
// traffic stays out of the pipeline it measures, and a probe still gets an
// answer when the pipeline is saturated.
func serveAdmin(addr string, mx *metrics.Metrics, srv *runtime.Server, withPprof, withAdmin bool, logger *slog.Logger) (*http.Server, net.Listener, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", mx.Handler())
	mux.Handle("/healthz", metrics.Live())
	mux.Handle("/readyz", metrics.Ready(srv))
	if withAdmin {
		mux.Handle("/admin/", admin.Handler(srv, logger))
	}
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	// net/http's own complaints (an accept failing on a full fd table,
	// retried) go to the server's log in its format, not bare to stderr,
	// and the accept failures at most once per acceptErrorEvery.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(newAcceptErrorThrottle(logger.Handler().WithAttrs([]slog.Attr{slog.String("endpoint", "admin")})), slog.LevelWarn)}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin endpoint stopped", "err", err)
		}
	}()
	return hs, ln, nil
}

// hiddenDevices warns when auto chose another provider over verbs while
// the kernel has RDMA devices this process cannot open (a container
// without /dev/infiniband): "auto" would otherwise pass over the
// hardware in silence.
func hiddenDevices(asked, chosen string, logger *slog.Logger) {
	if asked != "auto" || chosen == "verbs" || !slices.Contains(rdmatool.NewRegistry().Names(), "verbs") {
		return
	}
	if err := rdma.ExplainNoDevice(nil); err != nil {
		logger.Warn("rdma: the kernel's RDMA devices are out of reach; serving RDMA with the "+chosen+" provider", "err", err)
	}
}

// rdmaModule opens the RDMA provider --rdma names; nil with --rdma off.
// auto that finds no usable device logs and serves without RDMA; an
// explicit provider that fails is an error.
func rdmaModule(o *serveOptions, logger *slog.Logger) (*rdmahttp.Server, error) {
	if o.rdma == "off" {
		return nil, nil
	}
	cfg := rdmahttp.Config{DialTimeout: o.rdmaDial}
	if o.rdmaAddr != "" {
		ip, err := netip.ParseAddr(o.rdmaAddr)
		if err != nil {
			return nil, fmt.Errorf("--rdma-addr: %w", err)
		}
		cfg.Addr = ip
	}
	p, err := rdmatool.NewRegistry().Get(o.rdma)
	if err == nil {
		cfg.Provider = p
		var m *rdmahttp.Server
		if m, err = rdmahttp.NewServer(cfg); err == nil {
			info := m.DeviceInfo()
			logger.Info("rdma delivery", "provider", p.Name(), "device", info.Name,
				"transport", info.Transport.String(), "memory-windows", m.MemoryWindows())
			hiddenDevices(o.rdma, p.Name(), logger)
			return m, nil
		}
	}
	if o.rdma == "auto" {
		logger.Warn("rdma delivery off", "err", err)
		return nil, nil
	}
	return nil, fmt.Errorf("--rdma %s: %w", o.rdma, err)
}
