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
	"os"
	"time"

	"github.com/quartet-server/quartet/bench"
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
	srv, err := runtime.New(cfg)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &server{srv: srv, url: "http://" + srv.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(sctx) }()
	return s, nil
}

func (s *server) URL() string { return s.url }

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
	return err
}
