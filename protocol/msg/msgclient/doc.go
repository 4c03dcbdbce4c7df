// Package msgclient is the Go client of Quartet's messenger protocol
// (docs/messenger.md): one TCP connection that carries many requests at
// once, each with its own transaction id, and matches replies to them in
// whatever order they come.
//
//	c, err := msgclient.Dial(ctx, "127.0.0.1:7000", msgclient.Config{})
//	...
//	defer c.Close()
//	reply, err := c.Call(ctx, []byte("hello"))      // from any number of goroutines
//
// Every call may end on its own: give it a context with a deadline or
// cancel it, and Do returns at once (see Do for the one exception, a
// frame half written). A request's error reply comes back as a
// *msg.Error. When the connection breaks (the server sent a frame that
// breaks the format, a reply to a transaction id nobody asked, a
// connection error frame, or the network failed) the client closes it,
// and every call in flight fails with an error matching ErrConnection
// and naming the cause; the Client does not redial.
//
// # One connection, multiplexed
//
// A Client is a single-connection multiplexer, not a pool. The protocol
// was made for this: transaction ids let replies come back out of order,
// so one slow request does not hold up the others the way it would on an
// HTTP/1.1 connection, which is the head-of-line blocking a pool exists
// to work around. One connection also means one reader and one writer
// goroutine however many callers there are, batched writes (the writer
// takes every frame queued before it flushes), and one place where the
// server's per-connection state lives (RDMA operation ids, the server's
// RDMA channel). To spread load over several server reader loops, open
// several Clients.
//
// # A package of its own
//
// The client lives apart from package msg so that the server side, which
// imports msg for its parser and Dispatcher, links no client goroutines,
// and so that the client uses only msg's exported codec: a second peer
// built from the documented API, which is what keeps that API complete.
//
// # RDMA
//
// With Config.Endpoint (a deliver.Endpoint, the client side of Quartet's
// RDMA engine, which rdmahttp.Client uses too) a Request with Deliver
// asks for its reply's payload by RDMA into Request.Into:
//
//	ep, _ := deliver.NewEndpoint(deliver.EndpointConfig{Provider: p, Addr: "10.0.0.2:0"})
//	into, _ := ep.NewBuffer(64 << 20)
//	c, _ := msgclient.Dial(ctx, addr, msgclient.Config{Endpoint: ep})
//	r, err := c.Do(ctx, &msgclient.Request{Payload: q, Deliver: deliver.ModeServerWrites, Into: into})
//	// r.Payload is into's first bytes when r.ByRDMA()
//
// server-writes names Into in the request; the reply counts only once
// the written message that RC ordering places behind the bytes has
// arrived (the reply frame alone proves nothing). client-reads reads the
// exposure the reply names and confirms it with a completion frame,
// cumulative ("every op of this connection up to N") when no earlier
// operation is still unread, so one frame confirms every read finished
// by the time the writer sends it. A lost operation (no written message
// in time, a failed Read, its channel's failure) is asked for again with
// a new operation id, RDMARetries times, then once without RDMA.
//
// Request.RDMA is the raw form: the client sends the descriptor and
// moves no data; the caller registers, reads and calls Complete.
package msgclient
