// Package rdmahttp delivers HTTP response bodies by RDMA, as OSC's
// mod_rdma did for Apache: the request and the status travel over the
// client's TCP connection, the body by RDMA Write into the client's
// buffer (server-writes) or RDMA Read from the server's memory
// (client-reads). docs/rdma-http.md is the protocol; this comment is
// about how the server side sits in Quartet's pipeline.
//
// # Where each step runs
//
//	processor (insert-filter)  parse X-RDMA-*, add the output filter
//	processor (output filter)  collect the body: heap bytes copied into
//	                           registered staging memory (a heap bucket
//	                           dies when the filter returns), file
//	                           regions mapped and registered once in the
//	                           file cache; at EOS post the Writes and the
//	                           "written" message (or bind a window), and
//	                           pass a Hold ahead of EOS
//	writer loop (CQ source)    the completion releases the Hold, so the
//	                           200 leaves from the loop that saw it; a
//	                           failed (or never completed) server-writes
//	                           transfer diverts it instead, onto the same
//	                           200 with the body over TCP
//
// Each writer loop has its own CQ, registered with the loop through
// runtime.StageInfo.Sources; RDMA connections are cached per (writer
// loop, client endpoint), so a connection's completions always land in
// the loop that writes that client's responses.
//
// # Why the server dials
//
// mod_rdma's server connected back to the client in both modes. It keeps
// the number of server QPs under the server's control, needs no server
// RDMA address in the protocol, and makes a memory window (bound to one
// QP) a per-client capability. A client may only name an endpoint on the
// host its HTTP request came from, unless Config.AllowForeignEndpoints.
//
// # Loss
//
// After RDS: RDMA operations are not reliable end to end, the requester
// detects loss and asks again with a new, higher operation id. The
// server's Send completion only means the message was handed to the
// transport (iWARP has no acknowledgement), so in server-writes the
// client trusts the "written" message, which RC ordering places after
// the Writes, not the 200. In client-reads the server trusts only the
// client's "read-done" message and revokes the exposure on it, on a
// timeout, or when the channel dies.
//
// # Ownership
//
// Server owns the device, PD, the file cache, one CQ per writer loop,
// the channels (QP + message area) and exposures (window or per-operation
// MR, staging memory, cache references). Work in flight is owned by its
// op until the completion (or the flush after a channel dies). Close,
// after the HTTP server has stopped, releases all of it; the provider's
// busy checks turn any leak into an error from Close. Client owns the
// same on its side plus two goroutines (accept, completions).
package rdmahttp
