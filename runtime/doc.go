// Package runtime is the Quartet server: New builds it from a Config,
// Serve runs it until its context ends and then shuts it down gracefully.
//
// # Serving
//
//	srv, err := runtime.New(runtime.Config{
//		Addr:    "127.0.0.1:8080",
//		Handler: processor.Adapt(mux), // any net/http handler, unchanged
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	if err := srv.Serve(ctx); err != nil { // returns after a graceful shutdown
//		log.Fatal(err)
//	}
//
// Every zero field of Config takes its default (DefaultConfig lists them),
// so a Config names only what it changes. Config.Listener serves a socket
// you opened instead of Addr: ":0" in a test, or a systemd socket.
// Shutdown stops the server gracefully from elsewhere, Close at once, and
// Ready is what a readiness probe asks. The module's examples/embed is a
// complete program.
//
// # Handlers
//
// A handler runs on the processor pool and may block. Either an unchanged
// net/http handler through processor.Adapt, or a native processor.Handler,
// which reads the request in place (stages.Request: Method, Path,
// QueryValue, Header, Body) and writes through the worker's
// processor.ResponseWriter without allocating; the examples show both.
// Builtin is the handler of the load-test endpoints (/hello, /sleep,
// /compute, /bytes, /echo), for experiments only: never mount it where
// clients you do not control can reach it.
//
// # Operating
//
// An AccessLogger writes Apache's combined format (or combinedio, with the
// wire bytes in and out) with the bytes that were actually sent, gathering
// the lines off the writer loops and writing them in batches. Stats reports each stage's queue depth, throughput and service
// times; package metrics exports them to Prometheus and serves /healthz
// and /readyz. Modules plug features in through hooks (Module).
//
// # How it is built
//
// Read pipeline.go first: it is the whole pipeline on one screen, from the
// listening socket to the writer that hands a keep-alive connection back
// to its reader. A connection is owned by one stage at a time and moves
// only through the bounded queues between them.
package runtime
