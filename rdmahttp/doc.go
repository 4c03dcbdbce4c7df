// Package rdmahttp delivers HTTP response bodies by RDMA, as OSC's
// mod_rdma did for Apache: the request and the status travel over the
// client's TCP connection, the body by RDMA Write into the client's
// buffer (server-writes) or RDMA Read from the server's memory
// (client-reads). docs/rdma-http.md is the protocol; this comment is
// about how the server side sits in Quartet's pipeline.
//
// The machinery under it (device, the writer loops' CQs, channels,
// units with their sequence numbers, exposures, staging memory, the file
// cache, loss detection, the client's endpoint) is package
// rdma/deliver's, shared with the messenger; this package is the HTTP
// binding: the X-RDMA-* headers, the insert filter and the output filter
// with its Hold and Divert.
//
// # Where each step runs
//
//	processor (insert-filter)  parse X-RDMA-*, add the output filter
//	processor (output filter)  collect the body into a deliver.Body; at
//	                           EOS hand it to the engine (Deliver) and
//	                           pass a Hold ahead of EOS where the engine
//	                           says the reply waits (every reply's
//	                           completion, or a window's bind)
//	writer loop (CQ source)    the engine's completion releases the Hold,
//	                           so the 200 leaves from the loop that saw
//	                           it; a failed (or never completed)
//	                           server-writes transfer diverts it instead,
//	                           onto the same 200 with the body over TCP
//
// With the engine's sparse signalling (deliver.SignalSparse) a
// server-writes 200 is not held: it goes out at once, and the client,
// which trusts only the written message, detects a loss and retries.
//
// # Ownership
//
// Server owns its engine when NewServer made it (NewBinding shares one
// another owner closes). A body that waits for its completion keeps a
// second reference for its TCP alternative, released when the response
// is recycled. Client owns its deliver.Endpoint and buffer.
package rdmahttp
