package runtime

import (
	"fmt"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// Module plugs a feature into the server through hooks, never by editing
// the core: the shape of Apache's modules, and of mod_rdma in particular
// (post-config, child-init, pre-connection with a connection clean-up,
// insert-filter, output filter). Every hook is optional. Modules run in the
// order of Config.Modules, which is the only ordering there is: explicit,
// in one place.
type Module struct {
	// Name identifies the module in errors and logs.
	Name string

	// PostConfig runs once in New, after defaults are filled in; it may
	// adjust the configuration or refuse it.
	PostConfig func(cfg *Config) error

	// StageInit runs once per event loop or worker when it starts
	// (Apache's child_init): for each reader loop and each writer loop on
	// the loop's own goroutine, and for each processor worker before it
	// takes requests. A writer loop comes with its completion sources,
	// where a module registers the fds (RDMA completion channels, say)
	// whose readiness finishes its responses.
	StageInit func(StageInfo) error

	// PreConnection runs in the reader loop when a connection arrives,
	// before its first request. It may attach per-connection state with
	// c.SetValue(ModuleKey, v) and register a clean-up with c.OnClose. An
	// error closes the connection.
	PreConnection func(c *stages.Conn) error

	// StageExit mirrors StageInit: it runs once per reader and writer loop
	// as the loop stops, on the loop's goroutine, while a writer loop's
	// completion sources can still be removed.
	StageExit func(StageInfo)

	// InsertFilter runs in the processor before any handler, with the
	// request's headers; it may add output filters with
	// w.AddOutputFilter (mod_rdma's insert_filter).
	InsertFilter func(r *stages.Request, w *processor.ResponseWriter)

	// Inline reports whether InsertFilter, and any filter it adds, never
	// blocks for r, so that r may be served on its reader loop if its
	// handler declares the same (processor.Inliner). It runs on the
	// reader loop for every request and must be quick. A module with an
	// InsertFilter and no Inline keeps every request on the processors
	// (the safe default); a module without an InsertFilter needs none (a
	// Handler wrapper answers for itself by implementing Inliner).
	Inline func(r *stages.Request) bool

	// Handler wraps the handler chain: the first module's wrapper is the
	// outermost.
	Handler func(next processor.Handler) processor.Handler

	// Logger runs in the writer after each response's last byte (or its
	// abort), with the exact bytes sent; after Config.Log.
	Logger func(*stages.Response)
}

// Stage names a pipeline stage.
type Stage string

// The stages, by the names Stats and the metrics use.
const (
	StageReader    Stage = "reader"
	StageProcessor Stage = "processor"
	StageWriter    Stage = "writer"
)

// StageInfo tells StageInit which loop is starting.
type StageInfo struct {
	Stage Stage
	Index int
	// Sources is the writer loop's completion-source registry; nil for
	// other stages.
	Sources writer.Sources
}

// modules is the assembled hook lists, built once in New.
type modules struct {
	list []Module
}

func (m *modules) postConfig(cfg *Config) error {
	for _, mod := range m.list {
		if mod.PostConfig != nil {
			if err := mod.PostConfig(cfg); err != nil {
				return fmt.Errorf("quartet: module %s: post-config: %w", mod.Name, err)
			}
		}
	}
	return nil
}

// stageInit runs the modules' StageInit in order. When one fails, a loop's
// StageExit never runs (the loop does not start), so the modules before
// it, whose init succeeded, are unwound here: otherwise what they set up
// for the loop (an RDMA completion queue attached at this index, say)
// would outlive it and refuse the next loop given the same index.
func (m *modules) stageInit(info StageInfo) error {
	for i, mod := range m.list {
		if mod.StageInit != nil {
			if err := mod.StageInit(info); err != nil {
				if info.Stage != StageProcessor { // workers have no StageExit
					m.unwind(info, i)
				}
				return fmt.Errorf("quartet: module %s: %s %d init: %w", mod.Name, info.Stage, info.Index, err)
			}
		}
	}
	return nil
}

func (m *modules) stageExit(info StageInfo) { m.unwind(info, len(m.list)) }

// unwind runs the StageExit of the first n modules, in reverse order, as
// clean-ups unwind.
func (m *modules) unwind(info StageInfo, n int) {
	for i := n - 1; i >= 0; i-- {
		if m.list[i].StageExit != nil {
			m.list[i].StageExit(info)
		}
	}
}

// preConnection is nil when no module has the hook, so the reader skips it.
func (m *modules) preConnection() func(*stages.Conn) error {
	var hooks []func(*stages.Conn) error
	for _, mod := range m.list {
		if mod.PreConnection != nil {
			hooks = append(hooks, mod.PreConnection)
		}
	}
	if len(hooks) == 0 {
		return nil
	}
	return func(c *stages.Conn) error {
		for _, h := range hooks {
			if err := h(c); err != nil {
				return err
			}
		}
		return nil
	}
}

func (m *modules) handler(h processor.Handler) processor.Handler {
	for i := len(m.list) - 1; i >= 0; i-- {
		if m.list[i].Handler != nil {
			h = m.list[i].Handler(h)
		}
	}
	var inserts []func(*stages.Request, *processor.ResponseWriter)
	for _, mod := range m.list {
		if mod.InsertFilter != nil {
			inserts = append(inserts, mod.InsertFilter)
		}
	}
	if len(inserts) == 0 {
		return h
	}
	return insertFilters{inserts, h}
}

// insertFilters runs the insert-filter hooks, in module order, before the
// handler chain.
type insertFilters struct {
	hooks []func(*stages.Request, *processor.ResponseWriter)
	next  processor.Handler
}

// Inline answers for the handler chain; the hooks answer through
// Module.Inline (modules.inline).
func (f insertFilters) Inline(r *stages.Request) bool { return processor.ServesInline(f.next, r) }

func (f insertFilters) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	for _, h := range f.hooks {
		h(r, w)
	}
	f.next.ServeQuartet(w, r)
}

// inline returns the check that r may be served inline with h (the whole
// chain, modules' wrappers included), or nil when no request may be: h
// declares nothing, or a module's InsertFilter may block and says nothing.
func (m *modules) inline(h processor.Handler) func(*stages.Request) bool {
	in, ok := h.(processor.Inliner)
	if !ok {
		return nil
	}
	var gates []func(*stages.Request) bool
	for _, mod := range m.list {
		switch {
		case mod.Inline != nil:
			gates = append(gates, mod.Inline)
		case mod.InsertFilter != nil:
			return nil
		}
	}
	return func(r *stages.Request) bool {
		for _, g := range gates {
			if !g(r) {
				return false
			}
		}
		return in.Inline(r)
	}
}

// logger chains Config.Log and the modules' loggers; nil when there are none.
func (m *modules) logger(first func(*stages.Response)) func(*stages.Response) {
	var hooks []func(*stages.Response)
	if first != nil {
		hooks = append(hooks, first)
	}
	for _, mod := range m.list {
		if mod.Logger != nil {
			hooks = append(hooks, mod.Logger)
		}
	}
	switch len(hooks) {
	case 0:
		return nil
	case 1:
		return hooks[0]
	}
	return func(r *stages.Response) {
		for _, h := range hooks {
			h(r)
		}
	}
}
