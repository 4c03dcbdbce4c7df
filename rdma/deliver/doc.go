// Package deliver is Quartet's RDMA delivery engine: it moves a reply's
// body to a client by RDMA, in OSC's mod_rdma's two modes, with RDS's
// semantics, for any request/reply protocol. rdmahttp binds it to HTTP
// (X-RDMA-* headers, an output filter), msgrdma to the messenger (the
// RDMA descriptor of docs/messenger.md); one Engine serves both, on the
// same writer loops. The client side, Endpoint, is shared the same way
// by rdmahttp.Client and msgclient.
//
// # Using it (a protocol binding)
//
//	e, _ := deliver.New(deliver.Config{Provider: p})
//	// each writer loop, as it starts: its CQ becomes a completion source
//	e.AttachLoop(i, func(fd int, fn func()) (func() error, error) { ... })
//	// and as it stops (removed while serving, or at shutdown), on its
//	// goroutine: its work settles, its CQ and channels go, i is free
//	e.DetachLoop(i)
//
//	// per reply that asked for RDMA, in the processor:
//	if !e.Permit(t.Endpoint, conn.RemoteAddr) { ... ReasonForeignEndpoint }
//	b := e.NewBody()
//	b.AddHeap(p) / b.AddFile(f, off, n)
//	if e.WillWait(&t, b) { ... prepare to hold the reply until Ready }
//	r, err := e.Deliver(conn.Writer, t, b, deliver.Notify{Ready: ..., Done: ...})
//	if err != nil { ... send b inline (b.Each), then b.Release(); err is a *Fallback }
//	... frame the reply from r (Channel, Written or Exposure) now, or at
//	    Ready when r.Wait
//
//	// client-reads: the client's confirmation (the messenger's completion
//	// frame; HTTP's read-done message arrives on the QP and needs nothing)
//	e.Confirm(conn.Writer, conn.RemoteAddr, channel, op, cumulative)
//
// # Who does what, where
//
//	caller's goroutine (a processor)  collect the body (heap bytes copied
//	                                  into registered staging memory; file
//	                                  regions mapped and registered once in
//	                                  the file cache), dial the client's
//	                                  endpoint once per (loop, endpoint),
//	                                  post the unit
//	writer loop (the CQ source)       completions: retire units up to the
//	                                  high-water mark (Ready, Done, memory
//	                                  back to the pool); read-done messages
//	                                  revoke exposures
//	timers                            a unit with no completion in time;
//	                                  an idle channel's barrier; an
//	                                  exposure never confirmed
//
// Each writer loop has its own CQ and its own channels, so a channel's
// completions always land in the loop that writes that connection's
// replies.
//
// # Units and the barrier (RDS)
//
// A unit is one delivery's work requests on a channel: server-writes'
// Writes and the 16-byte written message behind them, or client-reads'
// window bind. The client sees it whole or not at all: it trusts the
// written message, which RC ordering places after the bytes, never the
// reply that names it nor a completion alone. Units are numbered per
// channel in posting order (the server's monotonically increasing
// operation ids; the client's own ids travel in the message and name
// exposures), and every work request carries its unit's number. A queue
// pair completes in order, so one successful completion of unit S says
// every unit up to S is done: the channel's high-water mark, from which
// the loop retires them in one batch (RDS's barrier).
//
// With SignalEveryReply each unit asks for its completion and its reply
// waits for it (Receipt.Wait), so a failure seen in time still replaces
// the reply with the body inline. With SignalSparse the server "blasts":
// it posts and replies at once, asks for a completion only every
// SignalInterval units, at SignalBytes, before half the send queue is
// unsignalled, or by a barrier message after ReclaimDelay of quiet, and
// reclaims staging memory and cache references from the high-water mark.
// An error completion fails the units up to it and kills the channel.
//
// # Loss
//
// RDMA operations are not reliable end to end: iWARP completes a Write
// when TCP takes it, so a Write the client refuses still completes at
// the server. The requester detects loss (no written message in time, a
// failed Read, its channel's failure: a flushed receive) and asks again
// with a new, higher op id, or without RDMA. The server never waits for a
// client (exposures time out) nor for its device (a unit with no
// completion in CompletionTimeout is told it failed, and its channel is
// killed; its memory stays until the QP is destroyed, since the device
// may still read it). A writer loop that leaves while serving gives its
// work at most Config.DetachTimeout to end by itself (a barrier reclaims
// sparsely signalled units, clients confirm their Reads), then fails the
// rest in the same ways: nothing of a loop's can move to another, since
// its QPs complete on its CQ (Engine.DetachLoop).
//
// # Why the server dials
//
// mod_rdma's server connected back to the client in both modes. It keeps
// the number of server QPs under the server's control, needs no server
// RDMA address in any protocol, and makes a memory window (bound to one
// QP) a per-client capability. Permit allows only an endpoint on the
// host the request came from, unless Config.AllowForeignEndpoints.
//
// # Ownership
//
//	Engine      device, PD, file cache, staging pool, one loop per writer
//	            loop (CQ, channels, exposures); DetachLoop releases a
//	            loop's, Close all of it, and the provider's busy checks
//	            turn a leak into an error
//	Body        the caller's until Deliver succeeds, then the engine's
//	            until its unit retires (server-writes) or its exposure
//	            ends (client-reads); Retain/Release for a second holder
//	Notify      callbacks run in the loop (or on a timer's goroutine for a
//	            unit that never completed); they must not block
//	Endpoint    the client's device, PD, CQ, listener, the QPs servers
//	            dialed, every Buffer it made, two goroutines; Close
package deliver
