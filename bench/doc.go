// Package bench is Quartet's load generator and experiment runner: the code
// behind `quartet bench` and `quartet sweep`.
//
// # Why another load generator
//
// On a small machine the generator competes with the server for the same
// cores, so every microsecond it spends per request is a microsecond taken
// from the thing being measured. The generator is therefore built like the
// server: a few event loops (one epoll instance each, locked to an OS thread),
// each owning a slice of the connections, with no goroutine per connection,
// no allocation per request in steady state, requests serialised once up
// front, and responses parsed in place from one read buffer per loop. Its
// client CPU per request is measured against wrk's in the same run (see
// RunWrk) so that claim stays checked.
//
// # Two protocols
//
// A connection speaks HTTP/1.1 or, for a msg://HOST:PORT target, the
// messenger (protocol/msg) to an echo dispatcher; the loops, the ring of
// requests in flight, the schedule and every figure are shared, and only a
// small per-connection speaker differs: the bytes of the request in each
// ring slot, and the parser of what comes back. A messenger connection
// builds its frame heads once (one per ring slot, differing in the
// transaction id) and shares the run's payload; each reply is parsed in
// place with msg.Parser and checked against its request, the id and the
// payload byte for byte (errors reply and mismatch, per reply).
//
// # Closed and open loop
//
// In closed loop (Config.Rate == 0) each connection keeps Config.Pipeline
// requests in flight and sends the next as soon as a response arrives: it
// measures capacity. In open loop (Config.Rate > 0) requests are scheduled at
// a constant aggregate rate, each connection taking every Conns-th slot, and
// latency is measured from the intended send time, not the actual one, as in
// wrk2. A server that stalls therefore cannot hide the requests the generator
// would have sent during the stall ("coordinated omission", Gil Tene): a 1 s
// stall at 1000 req/s shows up as 1000 requests with latencies spread over
// 0–1 s, not as one slow request per connection. The uncorrected latencies
// (from the actual send) are kept in a second histogram for comparison.
//
// # Phases
//
// A run is warm-up (responses are not recorded), measurement (until
// Config.Duration passes or Config.Requests responses arrive), then drain:
// no new requests, in-flight ones are awaited for at most drainGrace; those
// still unanswered then, and in open loop the requests the schedule called
// for that never left, are counted (Counts.Unanswered, Counts.Unsent) and
// the report warns of them first, since no latency figure holds them. The
// rate is over Config.Duration, not up to the last response. Loops
// derive the phase from the clock, so they never coordinate with each other.
// Every figure covers the same requests: responses, their bytes and status
// classes, and the bytes of requests, count only requests sent after the
// warm-up (the parser sizes each response, so a read that straddles the
// boundary is split exactly); failures count from the end of the warm-up,
// those before it apart (Result.WarmupErrors).
//
// # Commands
//
//	quartet bench -c 100 -d 10s http://127.0.0.1:8080/hello     closed loop
//	quartet bench -c 100 -R 20000 -d 10s URL                    open loop, CO-corrected
//	quartet bench -n 100000 -p 16 -m "/hello weight=9" -m "POST /echo body=1024" URL
//	quartet bench --server-pid PID --json URL                   server CPU/request, JSON
//	quartet bench --vs-wrk -c 100 -d 5s URL                     client CPU/request against wrk's
//	quartet bench compare                                       issue 15's table: Quartet vs gnet, fasthttp, net/http
//	quartet bench compare --quartet OLD --quartet-b NEW         before/after in one run
//	quartet bench compare --static --idle 1000,10000            static files vs nginx; idle memory
//	quartet bench idle -n 10000,100000                          server RSS per idle connection
//	quartet sweep bench/examples/stages.yaml                    matrix, CSV/JSON, SVG, HTML report
//	quartet sweep bench/examples/phases.yaml                    phases over time, server /metrics, HTML report; with against:
//	                                                            self-sizing vs static stage sizes
//
// # Experiments
//
// Beyond single runs the package holds the idle-connection memory experiment
// (Idle), the peer comparison (Compare, with the peers in the separate module
// bench/peers so their dependencies stay out of Quartet's go.mod) and sweeps
// over a matrix of server configurations and workloads (Sweep), which write
// CSV, JSON, SVG plots and a self-contained HTML report.
//
// # Phases over time
//
// A spec with phases (PhaseRun) runs one server through a workload that
// changes, phase after phase (connections, open-loop rate, requests), on
// one time line: the generator reports each interval's responses, p50/p99
// and failures (Config.Interval), and the server's Prometheus endpoint is
// read at every interval's end. Every series whose family matches
// DefaultMetricsMatch (quartet_stage_*, anything about shedding or
// admission, connections, responses) is kept, whatever the server exports
// at the time: gauges as read, counters as rates, histograms as means. The
// report plots each over time with the phase boundaries marked, so that a
// controller resizing a stage can be seen reacting to a change of load.
//
// A spec's against list (static stage configurations, each giving
// readers, processors and writers, which pins every stage and turns its
// controller off) runs the same phases once more per configuration, each
// against a server started afresh, and the run checks on each server's
// quartet_stage_auto and quartet_stage_size that it stayed static. The
// output compares, phase by phase, the first run (the spec's own stages,
// self-sizing by default) with the best static configuration for that
// phase (PhaseComparison): throughput at the objective's p99 bound (good,
// non-5xx, responses per second averaged over the phase's intervals from
// 5 s after its start, an interval above the bound counting 0), the ratio,
// and how soon after the phase's start the self-sized run first reached
// 90% of the best's figure. A phase passes at a ratio of 0.9 or more,
// reached within 5 s: issue 14's criterion.
//
// # Comparing servers
//
// Compare is the project's measuring instrument for CPU per request: each
// contender (Quartet, a second Quartet binary, bare gnet, fasthttp,
// net/http, nginx for static files) runs as a process of its own, started
// once per mode: "pinned" puts the server on one CPU with GOMAXPROCS=1 and
// the load on another (taskset), "both-cores" pins nothing. Servers take
// turns under load within each cell (mode, connections, path), one at a
// time, and each round starts the turn one server later. The load is wrk
// with one thread by default, the method of issue 15's table. Server CPU
// is utime+stime from /proc/PID/stat around each run; pinned, the
// server's CPU is also read whole from /proc/stat (its time not idle),
// which adds what the kernel did there in the server's idle time and
// charged to no process: on loopback, the softirq that frees the buffers
// the client consumed on the other CPU, and the TCP timers (a quarter of
// the server CPU's busy time for 1 MiB files, almost none for /hello). Ratios
// between servers are medians of per-round ratios, so that a noisy round
// on a shared machine counts once, in both; beside each, in brackets, the
// two per-round ratios that hold the true median between them with 90%
// or more (the sign test's interval, which assumes nothing of the
// rounds' spread; with fewer than five rounds, the least and the most,
// and less coverage). Where the brackets hold 1.00, the rounds did not
// tell the two servers apart: run more. The load generator's own CPU
// per request and its share of its core are reported too: where it runs
// at its core's limit for every server (1 MiB files, where the client
// copies each response), the requests/s are its limit, and a warning says
// so. Syscalls per request are counted
// apart, after the rounds, over a window of load by this package's
// generator on connections opened beforehand: with perf stat on the
// raw_syscalls:sys_enter tracepoint (in-kernel, little overhead) or with
// strace -c -f (each syscall named, the server several times slower); the
// server's throughput while counted and just before is reported beside.
package bench
