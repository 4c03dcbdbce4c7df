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
	"reflect"
	"sort"
	"time"

	"github.com/quartet-server/quartet/admin"
	"github.com/quartet-server/quartet/metrics"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/rdma/rdmatool"
	"github.com/quartet-server/quartet/rdmahttp"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/static"
)

//go:embed site
var sampleSite embed.FS

// shutdownGrace is how long in-flight requests get after SIGINT/SIGTERM.
const shutdownGrace = 30 * time.Second

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := runtime.DefaultConfig()
	defaults := serveOptions{
		Addr: d.Addr, Listeners: d.Listeners, ReusePort: d.ReusePort,
		Readers: d.Readers, Processors: d.Processors, Writers: d.Writers, Queue: d.QueueCapacity,
		QueueWait: d.QueueWaitTarget,
		MaxConns:  d.MaxConns, MaxBody: d.MaxBodyBytes,
		HeaderTimeout: d.HeaderTimeout, IdleTimeout: d.IdleTimeout, WriteTimeout: d.WriteTimeout,
		RDMA: "auto", RDMADial: rdmahttp.DefaultDialTimeout,
	}
	o := defaults
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configPath := fl.String("config", "", "read settings from this YAML file (keys are the flag names); flags given too win")
	bindFlags(fl, &o)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	if *configPath != "" {
		// File first, then the flags again, so a flag on the command line
		// overrides the file and an absent one leaves the file's value.
		o = defaults
		if err := loadConfigFile(*configPath, &o); err != nil {
			return err
		}
		if err := fl.Parse(args); err != nil {
			return err
		}
	}
	if err := o.validate(); err != nil {
		if *configPath != "" {
			return fmt.Errorf("config %s: %w", *configPath, err)
		}
		return err
	}
	cfg := d
	cfg.Addr, cfg.Listeners, cfg.ReusePort = o.Addr, o.Listeners, o.ReusePort
	cfg.Readers, cfg.Processors, cfg.Writers, cfg.QueueCapacity = o.Readers, o.Processors, o.Writers, o.Queue
	cfg.ProcessorsMin, cfg.ProcessorsMax, cfg.QueueWaitTarget = o.ProcessorsMin, o.ProcessorsMax, o.QueueWait
	cfg.MaxConns, cfg.MaxBodyBytes = o.MaxConns, o.MaxBody
	cfg.HeaderTimeout, cfg.IdleTimeout, cfg.WriteTimeout = o.HeaderTimeout, o.IdleTimeout, o.WriteTimeout
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	cfg.Logger = logger

	var files processor.Handler
	if o.Root != "" {
		d, err := static.NewDir(o.Root)
		if err != nil {
			return fmt.Errorf("--root: %w", err)
		}
		defer d.Close()
		files = d
	} else {
		site, _ := fs.Sub(sampleSite, "site")
		fsys, err := static.NewFS(site)
		if err != nil {
			return err
		}
		files = fsys
	}
	cfg.Handler = runtime.Builtin(files)

	switch o.AccessLog {
	case "":
	case "-":
		cfg.Log = runtime.CombinedLog(stdout)
	default:
		f, err := os.OpenFile(o.AccessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("--access-log: %w", err)
		}
		defer f.Close()
		cfg.Log = runtime.CombinedLog(f)
	}

	var mx *metrics.Metrics
	if o.MetricsAddr != "" {
		mx = metrics.New()
		cfg.Modules = append(cfg.Modules, mx.Module())
	}

	rmod, err := rdmaModule(o, logger)
	if err != nil {
		return err
	}
	if rmod != nil {
		cfg.Modules = append(cfg.Modules, rmod.Module())
		if mx != nil {
			mx.Registry().MustRegister(metrics.RDMA(rmod.Stats))
		}
		// Runs after Serve has returned on every path below: the writer
		// loops whose CQs the module owns have stopped.
		defer func() {
			st := rmod.Stats()
			logger.Info("rdma totals", "written", st.Written, "written-bytes", st.WrittenBytes,
				"exposed", st.Exposed, "confirmed", st.Confirmed, "timed-out", st.TimedOut,
				"lost", st.Lost, "fallbacks", st.Fallbacks, "dials", st.Dials,
				"collect-time", st.CollectTime, "rdma-time", st.RDMATime, "exposure-time", st.ExposureTime)
			if err := rmod.Close(); err != nil {
				logger.Error("rdma: releasing", "err", err)
			}
		}()
	}

	srv, err := runtime.New(cfg)
	if err != nil {
		return err
	}
	if mx != nil {
		mx.Attach(srv)
		var sizes http.Handler
		if o.Admin {
			sizes = admin.Handler(srv, logger)
		}
		adminSrv, err := serveAdmin(o.MetricsAddr, mx, o.Pprof, sizes, logger)
		if err != nil {
			srv.Shutdown(context.Background())
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer adminSrv.Close()
	}
	c := srv.Config()
	logger.Info("quartet serving", "addr", srv.Addr().String(), "readers", c.Readers,
		"processors", c.Processors, "processors-min", c.ProcessorsMin, "processors-max", c.ProcessorsMax,
		"writers", c.Writers, "queue", c.QueueCapacity)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return <-done
}

// serveAdmin serves /metrics (and /debug/pprof and /admin/ when asked) on
// its own listener with net/http: operator traffic stays out of the
// pipeline it measures.
func serveAdmin(addr string, mx *metrics.Metrics, withPprof bool, sizes http.Handler, logger *slog.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", mx.Handler())
	if sizes != nil {
		mux.Handle("/admin/", sizes)
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
		return nil, err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin endpoint stopped", "err", err)
		}
	}()
	logger.Info("admin endpoint", "addr", ln.Addr().String(), "pprof", withPprof, "admin", sizes != nil)
	return hs, nil
}

// bindFlags makes a flag of every serveOptions field, named by its yaml key.
func bindFlags(fl *flag.FlagSet, o *serveOptions) {
	v := reflect.ValueOf(o).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		name, help := f.Tag.Get("yaml"), f.Tag.Get("help")
		switch p := v.Field(i).Addr().Interface().(type) {
		case *string:
			fl.StringVar(p, name, *p, help)
		case *bool:
			fl.BoolVar(p, name, *p, help)
		case *int:
			fl.IntVar(p, name, *p, help)
		case *int64:
			fl.Int64Var(p, name, *p, help)
		case *time.Duration:
			fl.DurationVar(p, name, *p, help)
		}
	}
}

func sortStrings(s []string) { sort.Strings(s) }

// rdmaModule opens the RDMA provider --rdma names; nil with --rdma off.
// auto that finds no usable device logs and serves without RDMA; an
// explicit provider that fails is an error.
func rdmaModule(o serveOptions, logger *slog.Logger) (*rdmahttp.Server, error) {
	if o.RDMA == "off" {
		return nil, nil
	}
	cfg := rdmahttp.Config{DialTimeout: o.RDMADial}
	if o.RDMAAddr != "" {
		ip, err := netip.ParseAddr(o.RDMAAddr)
		if err != nil {
			return nil, fmt.Errorf("--rdma-addr: %w", err)
		}
		cfg.Addr = ip
	}
	p, err := rdmatool.NewRegistry().Get(o.RDMA)
	if err == nil {
		cfg.Provider = p
		var m *rdmahttp.Server
		if m, err = rdmahttp.NewServer(cfg); err == nil {
			info := m.DeviceInfo()
			logger.Info("rdma delivery", "provider", p.Name(), "device", info.Name,
				"transport", info.Transport.String(), "memory-windows", m.MemoryWindows())
			return m, nil
		}
	}
	if o.RDMA == "auto" {
		logger.Warn("rdma delivery off", "err", err)
		return nil, nil
	}
	return nil, fmt.Errorf("--rdma %s: %w", o.RDMA, err)
}
