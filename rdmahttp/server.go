package rdmahttp

import (
	"errors"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

// Config configures the engine a Server makes for itself: the HTTP
// binding adds no settings of its own.
type Config = deliver.Config

// Stats are the engine's counters (deliver.Stats).
type Stats = deliver.Stats

// Defaults of Config, as the engine has them.
const (
	DefaultDialTimeout       = deliver.DefaultDialTimeout
	DefaultExposureTimeout   = deliver.DefaultExposureTimeout
	DefaultCompletionTimeout = deliver.DefaultCompletionTimeout
)

// Server is the server side of RDMA delivery of HTTP bodies, as a
// runtime.Module (Module): mod_rdma's insert filter and output filter on
// top of a deliver.Engine, which owns the device, the writer loops' CQs,
// the channels, the caches and every exposure.
type Server struct {
	e    *deliver.Engine
	owns bool // the engine is this Server's: attach its loops, close it
}

// NewServer makes an engine from cfg and the HTTP binding on it. Close
// the Server after the HTTP server has stopped.
func NewServer(cfg Config) (*Server, error) {
	e, err := deliver.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Server{e: e, owns: true}, nil
}

// NewBinding is the HTTP binding on an engine that other protocols share
// (the messenger's, say). The caller attaches the engine's loops
// (deliver.Engine.AttachLoop, from a writer stage's init), detaches them
// (DetachLoop, from its exit) and closes the engine; this Server's Module only adds the filter, and its Close does
// nothing.
func NewBinding(e *deliver.Engine) *Server { return &Server{e: e} }

// Engine is the delivery engine under the binding.
func (s *Server) Engine() *deliver.Engine { return s.e }

// Stats returns the engine's counters.
func (s *Server) Stats() Stats { return s.e.Stats() }

// DeviceInfo is the opened device's description.
func (s *Server) DeviceInfo() rdma.DeviceInfo { return s.e.DeviceInfo() }

// MemoryWindows reports whether exposures are memory windows (else
// per-operation registrations).
func (s *Server) MemoryWindows() bool { return s.e.MemoryWindows() }

// Module is the server module: StageInit gives each writer loop its CQ
// and StageExit takes it back (when the Server owns its engine), so
// writer loops can be added and removed while serving; InsertFilter
// reads the request's X-RDMA-* headers and adds the output filter that
// ships the body.
func (s *Server) Module() runtime.Module {
	m := runtime.Module{Name: "rdma", InsertFilter: s.insertFilter, Inline: inline}
	if s.owns {
		m.StageInit = s.stageInit
		m.StageExit = s.stageExit
	}
	return m
}

// stageInit attaches the writer loop to the engine: the loop's CQ becomes
// one of its completion sources, so completions are handled where the
// responses are written.
func (s *Server) stageInit(info runtime.StageInfo) error {
	if info.Stage != runtime.StageWriter || info.Sources == nil {
		return nil
	}
	return s.e.AttachLoop(info.Index, func(fd int, fn func()) (func() error, error) {
		id, err := info.Sources.AddSource(fd, fn)
		if err != nil {
			return nil, err
		}
		return func() error { return info.Sources.RemoveSource(id) }, nil
	})
}

// stageExit detaches the writer loop as it stops (removed while serving,
// or at shutdown), on its goroutine while its completion sources can
// still be removed: its CQ and channels are released, so the next loop
// that takes its index attaches again. What the loop's RDMA work still
// needs is settled there (deliver.Engine.DetachLoop). An error means a
// channel was still in use: the engine keeps that loop for Close, which
// reports what it cannot release, and the index is free regardless.
func (s *Server) stageExit(info runtime.StageInfo) {
	if info.Stage != runtime.StageWriter || info.Sources == nil {
		return
	}
	_ = s.e.DetachLoop(info.Index)
}

// inline is the module's word on stage fusion (runtime.Module.Inline): a
// request that does not ask for RDMA gets no filter, so nothing of the
// module's can block it; one that asks may dial the client's endpoint
// and goes through the processors.
func inline(r *stages.Request) bool {
	return r.Header(HeaderMode) == nil || !r.IsMethod("GET")
}

// insertFilter is mod_rdma's insert_filter: read the headers, and add the
// output filter when the client asked for RDMA.
func (s *Server) insertFilter(r *stages.Request, w *processor.ResponseWriter) {
	q, err := parseRequest(func(name string) string { return string(r.Header(name)) })
	if q.Mode == deliver.ModeOff && err == nil {
		return // a client that did not ask sees plain HTTP
	}
	if !r.IsMethod("GET") {
		return
	}
	if err != nil {
		s.e.CountFallback()
		w.Header().Set(HeaderFallback, deliver.ReasonBadRequest.String()+": "+err.Error())
		return
	}
	f := &bodyFilter{s: s, q: q}
	if !s.e.Permit(q.Endpoint, r.Conn.Remote.Addr()) {
		f.passReason = deliver.ReasonForeignEndpoint.String()
	}
	if err := w.AddOutputFilter(f); err != nil {
		s.e.CountFallback()
		w.Header().Set(HeaderFallback, deliver.ReasonUnsupported.String()+": "+err.Error())
	}
}

// Close closes the engine if the Server owns it: call it after the HTTP
// server's Serve has returned. It reports resources that could not be
// released.
func (s *Server) Close() error {
	if !s.owns {
		return nil
	}
	if s.e == nil {
		return errors.New("rdmahttp: no engine")
	}
	return s.e.Close()
}
