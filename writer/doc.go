// Package writer is Quartet's fourth stage: W event loops that own every
// write to a client socket.
//
// A processor appends a response's buckets and kicks the response's writer;
// the loop takes what was appended and puts it on the wire: runs of heap
// buckets go out in one writev, file regions with sendfile, and when the
// socket is full the loop arms a one-shot EPOLLOUT and moves on to other
// connections. The processor meanwhile keeps producing until the response's
// unsent bytes pass the high-water mark, and then waits: a slow client
// pushes back on its handler instead of growing the server's memory.
//
// Why the writer finishes requests (Pane, 2002): when the last byte of a
// response is written the loop runs the logger with the exact number of
// bytes that reached the socket, lets the response's memory be recycled,
// and gives the connection back to its reader, for the next request on a
// keep-alive connection or for a lingering close. A response aborted
// half-way is logged with what was really sent.
//
// The same poller also watches completion sources: any fd with a callback
// that runs in the loop when the fd is readable. RDMA completion queues
// plug in here, so an RDMA transfer and the HTTP response that reports it
// complete in one place: the callback releases a Hold bucket and the loop
// writes the rest of the response in the same turn.
//
// Slow clients: a response whose client takes nothing for the write
// timeout, or less than a minimum rate over a grace window while the loop
// is blocked on it, is cut off with a reset (stages.FateReset). What the
// client took is measured in the socket's send queue (SIOCOUTQ) once a
// second, because a full send buffer signals writable only after a third
// of it has drained: a client reading 1 KiB/s behind a megabyte of buffer
// makes steady progress that no write would show for minutes.
//
// A reader loop that serves a request inline writes its reply itself
// (Direct), and only what the socket does not take comes here. Small
// whole replies it queues instead, and sends a turn's worth with one
// io_uring_enter before it polls again (batch.go): on a guest where a
// system call costs a microsecond, that is a tenth of a /hello's CPU.
// A writer loop does the same with the small whole responses it starts
// in a turn; what a full socket refuses waits for EPOLLOUT as before.
//
// Ownership: the writer never closes a connection's fd. Only the reader
// that owns the connection does, after the writer has handed it back, so a
// response can never be written into a new connection that reuses the fd
// number of one that has gone.
package writer
