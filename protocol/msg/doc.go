// Package msg is Quartet's messenger protocol: a binary, framed
// request/reply protocol beside HTTP/1.1 on the same pipeline, after
// Ceph's messenger (Messenger, Connection, Message, Dispatcher, and
// replies through a reply hook each transport implements) with RDMA
// delivery of reply payloads after RDS (an RDMA operation and the small
// message behind it are one unit; operation ids only grow; completions
// may be cumulative). docs/messenger.md is the wire format; this package
// is its codec and the application's side of it. The Go client is
// package msgclient.
//
// # Parsing a connection's bytes
//
// A reader keeps one Parser per connection and gives it the bytes it has
// read, in place:
//
//	p := msg.NewParser(msg.RoleServer, msg.Limits{})
//	...
//	n, err := p.Next(buf, &h)       // the head: 16 bytes, or 68 with FlagRDMA
//	switch {
//	case errors.Is(err, msg.ErrNeedMore):
//	        // read more, keep buf, call again
//	case err != nil:
//	        // send an error frame (msg.CodeOf(err); h.TxID when the code is
//	        // CodeTooLarge, else 0), then close: never wait for more
//	}
//	payload := p.Payload(buf[n:])   // aliased; short if not all read yet
//
// Whether to alias the payload in the read buffer or read it into a
// buffer of its own is the reader's choice per frame: h.Length is known
// before any payload byte is. Parser.ReadHead and ReadPayload do the
// same over a bufio.Reader for a goroutine per connection.
//
// # Writing a dispatcher
//
// A Dispatcher gets each request as a *Message and answers it with
// m.SendReply, once:
//
//	msg.DispatcherFunc(func(m *msg.Message) {
//	        go func() {                     // reply later, off the processor
//	                out := lookup(m.Payload)
//	                m.SendReply(msg.Reply{Payload: out})
//	        }()
//	})
//
// Replies leave in the order they are sent when the client set
// FlagUnordered on its requests (the Go client does by default): a
// dispatcher that replies later, from another goroutine, lets quick
// requests overtake slow ones, and the client matches each reply to its
// request by transaction id. For a request without FlagUnordered the
// reply hook holds the reply back until the replies to every earlier
// request of the connection are sent, so the dispatcher never orders
// anything itself. Echo is the built-in dispatcher.
//
// # Replies by RDMA, through the hook
//
// The dispatcher does not know how its reply travels. A request with
// FlagRDMA carries a Descriptor: server-writes names the client's
// registered buffer (address, key, capacity), client-reads only the
// client's endpoint. The transport's ReplyHook decides:
//
//   - server-writes: copy or register the payload, RDMA-Write it into the
//     client's buffer with the small "written" message behind it on the
//     same queue pair, then frame a reply with FlagRDMA|FlagByRDMA, the op
//     id, the channel and the bytes written, and no payload.
//   - client-reads: expose the payload read-only and frame a reply whose
//     descriptor carries address, key, length and op id; the client reads
//     it and sends a completion frame, possibly cumulative ("every op up
//     to N is done"), and the hook revokes every exposure up to N at once.
//   - neither possible: frame the payload inline with FlagRDMA and a
//     Reason in the descriptor, so the client knows why (fallback).
//
// Operation ids are the client's, strictly increasing per connection, so
// a server can keep one high-water mark of completed operations and
// reclaim staging memory and exposures in batches below it; the parser
// rejects an id that does not grow (ErrOpID). RDMA operations are not
// reliable end to end: the client that misses the written message or
// whose Read fails asks again with a new op id, or without FlagRDMA.
//
// # Who owns the bytes, when
//
//	request payload   transport: from the read until the reply has been
//	                  sent (written, or RDMA-delivered); the dispatcher
//	                  may read it until it calls SendReply
//	reply payload     dispatcher until SendReply; transport from then
//	                  until it calls Reply.Done (written to the socket;
//	                  RDMA Write completed; client-reads: the client's
//	                  completion, a timeout, or the channel's death);
//	                  dispatcher again after Done
//	Message           transport; it may recycle it once the reply is sent
//	head buffers      the caller of PutHead, PutErrorFrame, Parser.Next:
//	                  nothing here keeps a slice it is given
//
// # Fitting the stages
//
// Transport is the messenger on Quartet's stages (runtime.Config.MsgAddr,
// quartet serve --msg-addr), as a stages.Protocol: the reader gives its
// parser the connection's read buffer and reads each frame's payload
// whole into that buffer; a processor turns the frame into a Message and
// calls the Dispatcher; the reply hook frames the reply into the
// stages.Response's buckets, head then payload (aliased, never copied),
// which a writer loop sends as it sends HTTP responses. Nothing else
// here knows the stages. Package msgrdma is the hook's RDMA path
// (TransportConfig.RDMA), on the engine (rdma/deliver) that HTTP's
// binding shares, attached to the writer loops. It is a
// stages.Pipelined protocol: a connection may have a window of requests
// in flight (TransportConfig.Window), whose replies leave as they are
// ready, unless a request lacks FlagUnordered (Transport says exactly
// what it does).
package msg
