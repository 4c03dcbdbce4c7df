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
// The client carries RDMA requests and replies but moves no RDMA data
// itself: Request.RDMA is sent as the request's descriptor (the client
// numbers operations, strictly increasing per connection), Reply.RDMA
// and Reply.ByRDMA say how the payload went, and Complete sends the
// client-reads completion, one operation or every operation up to an id
// at once. An RDMA layer above it registers buffers and issues Reads,
// as rdmahttp.Client does for HTTP.
package msgclient
