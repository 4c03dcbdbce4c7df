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
	"os"
	"time"

	"github.com/quartet-server/quartet/metrics"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/static"
)

//go:embed site
var sampleSite embed.FS

// shutdownGrace is how long in-flight requests get after SIGINT/SIGTERM.
const shutdownGrace = 30 * time.Second

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := runtime.DefaultConfig()
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address host:port")
	root := fl.String("root", "", "serve static files from this directory (default: the embedded sample site)")
	fl.IntVar(&cfg.Listeners, "listeners", cfg.Listeners, "accept loops (more than one uses SO_REUSEPORT)")
	fl.BoolVar(&cfg.ReusePort, "reuseport", cfg.ReusePort, "set SO_REUSEPORT on the listening socket")
	fl.IntVar(&cfg.Readers, "readers", cfg.Readers, "reader event loops (R)")
	fl.IntVar(&cfg.Processors, "processors", cfg.Processors, "handler workers (P)")
	fl.IntVar(&cfg.Writers, "writers", cfg.Writers, "writer event loops (W)")
	fl.IntVar(&cfg.QueueCapacity, "queue", cfg.QueueCapacity, "capacity of each hand-off queue")
	fl.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "open connections at most (0: no limit)")
	fl.Int64Var(&cfg.MaxBodyBytes, "max-body", cfg.MaxBodyBytes, "request body limit in bytes (413 beyond)")
	fl.DurationVar(&cfg.HeaderTimeout, "header-timeout", cfg.HeaderTimeout, "time to receive a request's headers (408 beyond)")
	fl.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "keep-alive idle timeout")
	fl.DurationVar(&cfg.WriteTimeout, "write-timeout", cfg.WriteTimeout, "drop a client that reads nothing this long")
	accessLog := fl.String("access-log", "", "access log in combined format: a file, or - for stdout (default: none)")
	metricsAddr := fl.String("metrics-addr", "", "serve Prometheus /metrics on this address (default: off)")
	pprofOn := fl.Bool("pprof", false, "also serve /debug/pprof on --metrics-addr")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	cfg.Logger = logger

	var files processor.Handler
	if *root != "" {
		d, err := static.NewDir(*root)
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

	switch *accessLog {
	case "":
	case "-":
		cfg.Log = runtime.CombinedLog(stdout)
	default:
		f, err := os.OpenFile(*accessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("--access-log: %w", err)
		}
		defer f.Close()
		cfg.Log = runtime.CombinedLog(f)
	}

	var mx *metrics.Metrics
	if *metricsAddr != "" {
		mx = metrics.New()
		cfg.Modules = append(cfg.Modules, mx.Module())
	} else if *pprofOn {
		return errors.New("--pprof needs --metrics-addr")
	}

	srv, err := runtime.New(cfg)
	if err != nil {
		return err
	}
	if mx != nil {
		mx.Attach(srv)
		admin, err := serveAdmin(*metricsAddr, mx, *pprofOn, logger)
		if err != nil {
			srv.Shutdown(context.Background())
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer admin.Close()
	}
	c := srv.Config()
	logger.Info("quartet serving", "addr", srv.Addr().String(), "readers", c.Readers,
		"processors", c.Processors, "writers", c.Writers, "queue", c.QueueCapacity)
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

// serveAdmin serves /metrics (and /debug/pprof when asked) on its own
// listener with net/http: operator traffic stays out of the pipeline it
// measures.
func serveAdmin(addr string, mx *metrics.Metrics, withPprof bool, logger *slog.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", mx.Handler())
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
	logger.Info("admin endpoint", "addr", ln.Addr().String(), "pprof", withPprof)
	return hs, nil
}
