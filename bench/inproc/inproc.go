// Package inproc runs a Quartet server inside the benchmarking process, for
// sweeps over stage sizes: each point gets a fresh server built from its
// parameters, with no process start-up or build in between.
//
// It is apart from package bench so that the generator does not depend on
// the server it measures; cmd/quartet wires Start into bench.Env.
package inproc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/quartet-server/quartet/bench"
	"github.com/quartet-server/quartet/metrics"
	"github.com/quartet-server/quartet/runtime"
)

// shutdownGrace bounds Close's graceful shutdown; after it connections are
// closed outright.
const shutdownGrace = 5 * time.Second

// server is a running in-process Quartet.
type server struct {
	srv    *runtime.Server
	url    string
	cancel context.CancelFunc
	done   chan error
	// admin serves /metrics when bench.ServerParams.Metrics asked for it.
	admin      *http.Server
	adminDone  chan error
	metricsURL string
}

var _ bench.Server = (*server)(nil)

// Start builds a server from p on 127.0.0.1:0 serving the built-in
// endpoints, and starts it.
func Start(ctx context.Context, p bench.ServerParams) (bench.Server, error) {
	cfg := runtime.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	if p.Readers > 0 {
		cfg.Readers = p.Readers
	}
	if p.Processors > 0 {
		cfg.Processors = p.Processors
	}
	if p.Writers > 0 {
		cfg.Writers = p.Writers
	}
	if p.QueueCapacity > 0 {
		cfg.QueueCapacity = p.QueueCapacity
	}
	if p.MaxConns > 0 {
		cfg.MaxConns = p.MaxConns
	}
	cfg.Handler = runtime.Builtin(nil)
	// The exporter counts every response in the writer: only when asked.
	var mx *metrics.Metrics
	if p.Metrics {
		mx = metrics.New()
		cfg.Modules = append(cfg.Modules, mx.Module())
	}
	srv, err := runtime.New(cfg)
	if err != nil {
		return nil, err
	}
	s := &server{srv: srv, url: "http://" + srv.Addr().String(), done: make(chan error, 1)}
	if mx != nil {
		mx.Attach(srv)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			srv.Shutdown(context.Background())
			return nil, err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", mx.Handler())
		s.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.adminDone = make(chan error, 1)
		s.metricsURL = "http://" + ln.Addr().String() + "/metrics"
		go func() { s.adminDone <- s.admin.Serve(ln) }()
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go func() { s.done <- srv.Serve(sctx) }()
	return s, nil
}

func (s *server) URL() string { return s.url }

// MetricsURL is the Prometheus endpoint, "" unless Metrics was asked for.
func (s *server) MetricsURL() string { return s.metricsURL }

// Params are the stage sizes the server runs with, defaults filled in.
func (s *server) Params() (bench.ServerParams, bool) {
	c := s.srv.Config()
	return bench.ServerParams{Readers: c.Readers, Processors: c.Processors, Writers: c.Writers,
		QueueCapacity: c.QueueCapacity, MaxConns: c.MaxConns}, true
}

// PID is this process: an in-process server's memory is the process's.
func (s *server) PID() int { return os.Getpid() }

// CPU is the whole process's CPU time; bench.Config.ServerInProcess tells
// Run to subtract the generator's own loop threads from it.
func (s *server) CPU() time.Duration { return bench.ProcessCPU() }

// InProcess marks the server as sharing the generator's process.
func (s *server) InProcess() bool { return true }

// Close shuts the server down gracefully, then forcibly after
// shutdownGrace, and waits for Serve to return.
func (s *server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.cancel()
	if serr := <-s.done; serr != nil && !errors.Is(serr, context.Canceled) {
		err = errors.Join(err, serr)
	}
	if s.admin != nil {
		err = errors.Join(err, s.admin.Close())
		if aerr := <-s.adminDone; !errors.Is(aerr, http.ErrServerClosed) {
			err = errors.Join(err, aerr)
		}
	}
	return err
}
