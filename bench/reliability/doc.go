// Package reliability is Quartet's reliability tier: trials that run the
// real `quartet serve` binary as a separate process, the way an operator
// runs it, and treat it as hostile and careless clients would. The package
// holds tests only; `go test ./...` runs them.
//
//	go test ./bench/reliability                                  the tier as CI runs it (about 2 minutes)
//	go test ./bench/reliability -run Soak -soak 10m -timeout 20m the long soak (or QUARTET_SOAK=10m)
//	go test ./bench/reliability -quartet /path/to/quartet        trials against another build
//
// TestMain builds ./cmd/quartet once per run (go build, into a temporary
// directory it removes). Every trial starts its own server on 127.0.0.1:0,
// with short timeouts where the trial is about them, and learns the
// addresses from the line the server logs when it starts ("quartet
// serving", with addr= and admin=).
//
// What every trial asserts, besides its own outcome:
//
//   - GET /hello on a fresh connection keeps being answered while the trial
//     runs: a probe every 100 ms, each with a generous bound (the trial's
//     probeBound); p50, p99 and the maximum go to the test log.
//   - The server's resources come back: open fds (/proc/PID/fd), goroutines
//     (the goroutine profile's total, /debug/pprof/goroutine; not
//     go_goroutines, which counts the scrape's own collectors) and
//     connections (quartet_connections)
//     return to their baseline, and resident memory (VmRSS) to within
//     rssSlack of it, once the trial's clients are gone. Baseline and peak
//     go to the log.
//   - The server logged no error (a handler panic) and exits 0 on SIGTERM.
//
// Bounds are generous on purpose: the machine is shared and has two cores,
// and a tier that flakes teaches people to ignore it. Latency targets
// belong to benchmarks; here a bound only catches a server that stopped
// answering.
//
// Client and server are separate processes, each under the 20,000
// open-file cap; no trial opens more than 8,000 connections at once.
package reliability
