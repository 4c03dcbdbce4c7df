// Package reader is Quartet's second stage: R event loops that watch every
// connection that is waiting for a request, read and parse request heads
// without copying them, and hand complete requests to the processors.
//
// The loop knows no protocol's wire format: each connection's protocol
// (stages.Protocol, by Conn.Protocol; HTTP/1.1 is protocol/http1) parses
// its heads, plans its bodies (stages.BodyPlan) and frames its refusals;
// the loop reads, buffers, times out and carries the plans out.
//
// A connection lives in exactly one reader loop for its whole life, and
// that loop is the only code that closes its fd. When a request is
// dispatched the connection leaves the loop's care (the loop keeps only
// the registration, edge-triggered, so no epoll_ctl is spent per request)
// until the writer hands it back: for the next request on a keep-alive
// connection, for a lingering close, or to be closed at once. Pipelined
// requests therefore keep their order without any sequencing: the next
// request is parsed from the bytes already buffered only when the previous
// response is on the wire. A connection of a stages.Pipelined protocol
// (the messenger) is the exception (flight.go): it stays in the loop's
// care while a window of its requests runs, each dispatched request
// taking its own read buffer, and only its requests travel; the loop
// still alone closes the fd, once none of them is in flight.
//
// Request bodies: a small body (at most Config.PrereadBody bytes, and not
// one the client sends only once told to, stages.BodyPlan.Await) is read
// completely before dispatch, so a slow client never holds a processor;
// anything larger, or coded (stages.BodyDecoded), is streamed:
// the loop keeps reading the connection while the handler runs and feeds a
// bounded pipe, stopping when the pipe is full, so the body reaches the
// handler as a stream with back-pressure and a size limit. A handler
// waiting on the pipe gives its processor place back (stages.Parker), and
// a client that sends the body slower than Config.MinBodyRate after a
// grace is cut off (Apache mod_reqtimeout's MinRate): the handler's Read
// fails with ErrBodyTooSlow and the client gets a 408.
//
// While a request is out, the loop still sees its connection's events
// (edge-triggered): a FIN or reset with no further request bytes unread
// marks the client gone (stages.Conn.HangUp), which cancels a net/http
// handler's context and keeps a queued request from starting.
//
// The loop carries out the fate the writer decided (stages.Fate): the next
// request, a lingering close, a close, or a reset (SO_LINGER 0) that drops
// what the kernel still queues for a client we gave up on. A connection
// whose timer runs out with our data unacknowledged is reset too.
//
// Memory follows the connections: a free slot of the connection table
// holds no record, the table's free tail is cut, and the read buffers,
// body pipes and records kept for reuse are bounded and given back when a
// whole interval passes without use, so a burst of slow clients leaves
// nothing behind.
//
// Timeouts use one FIFO per class (idle keep-alive, header, linger), as
// Apache's event MPM does: every entry of a class has the same duration,
// so appending keeps each list sorted and expiry is a look at its head.
//
// Why not gnet's engine for these loops: gnet closes a connection's fd as
// soon as a read sees EOF, while a response for that connection may still
// be queued in another stage, and it cannot stop reading a connection whose
// handler is slow to consume a large body. Quartet's ownership rule (only
// the owning reader closes, and only when no other stage holds the
// connection) needs a loop that can leave a connection alone. So the
// reader keeps its own connection table, timers and queue, and hands the
// rest to stages.Loop, the skeleton every Quartet loop shares (drain the
// queue, serve what is ready, sleep with a re-check, wait, dispatch by
// token), built on the same primitives as gnet's (epoll, an eventfd
// wake-up) and measured against a bare gnet server in the bench package.
// Owning the poller also decides how each syscall enters the kernel: the
// loops read, write and poll their non-blocking sockets by raw syscall
// (internal/poll's Read), out of sysmon's sight: entered the ordinary
// way (as gnet and net do), they let sysmon take the loop's P at every
// 20 µs tick, and sysmon used about a tenth of the server's CPU.
// It also decides where a loop sleeps: parked in Go's network poller, so
// that its P serves the workers meanwhile (a thread blocked in
// epoll_wait keeps its P until sysmon notices). The price: the scheduler
// polls the network only when it finds nothing else to run, or every
// 10 ms, so behind workers that always find another request a parked
// loop waited up to that long, with the refusals it owed its clients
// (BenchmarkLoopBehindBusyWorkers/loop/parked in processor: 10.1 ms at
// the median). So the workers nudge the loops when they yield
// (stages.LoopNudge): a loop whose poller has events queued has its wait
// expired, which readies it next to run on the worker's P, and the
// yield runs it, once a millisecond at most (stages.nudgeEvery says why
// not more often): loop/nudged, whose events come just after a nudge,
// waits 1.2 ms. Blocking in the kernel while
// the CPU was short also cut the wait, to 0.8 ms, but halved goodput
// (the thread hand-offs left the core idle); workers that waited at a
// gate for a loop's turn kept their places while the queue grew behind
// them.
// Why readiness (epoll), but one system call for a turn's reads and one
// for its replies: io_uring as the loop's I/O model (completions,
// multishot receives into provided buffers) would replace the loop core
// for what a minimal Go server measured at 3-6% of the CPU of a
// keep-alive /hello. Batching only the calls keeps the loop as it is:
// epoll still says which connections are ready; the loop reads all of a
// turn's that start a request with one io_uring_enter before it handles
// their events (gather.go), and sends the replies it served with another
// before it polls again (writer/batch.go, where the writer loops do the
// same with the responses they start). One operation per connection, on
// non-blocking sockets with MSG_DONTWAIT, so an empty socket answers
// EAGAIN and a full one takes what it can, the rest going to the writer
// loop as before. On a two-core guest where a null system call costs
// 1.0-1.2 µs, server pinned to one CPU and wrk -t1 on the other,
// alternating rounds (December 2026): batched sends took c=100 from 12.6
// to 11.5 µs of server CPU a /hello (0.86-0.91×), c=1000 0.72-0.85×;
// batched reads then took a further 3-5% off, eight rounds each: c=100,
// 10.5 against 10.9 µs (per-round ratios 0.82-1.01, median 0.95);
// c=1000, 8.4 against 9.8 µs (0.75-1.00, median 0.97). The kernel's
// receive work is the cost left; a read is a tenth of a system call a
// request where a turn finds ten connections. Config.NoBatchedReads and
// NoBatchedSends, and a kernel that refuses io_uring (a seccomp filter),
// make a call for each.
//
// A connection is registered once, edge-triggered, under a poll.Token of
// its slot and generation, so an event for a connection that has since
// left its slot is dropped.
package reader
