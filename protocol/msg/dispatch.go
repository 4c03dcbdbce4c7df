package msg

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Dispatcher is the application's edge of the messenger, as in Ceph: the
// transport parses a request into a Message and hands it to Dispatch,
// which must see that exactly one reply is sent, with m.SendReply, now
// or later and from any goroutine.
//
// Dispatch runs on a processor and may block, but a dispatcher that
// waits on something slow does better to return and reply later: the
// processor goes back to the pool, and with FlagUnordered the reply
// overtakes earlier, slower ones.
type Dispatcher interface {
	Dispatch(m *Message)
}

// DispatcherFunc adapts a function to Dispatcher.
type DispatcherFunc func(m *Message)

// Dispatch calls f(m).
func (f DispatcherFunc) Dispatch(m *Message) { f(m) }

// Message is one request as a dispatcher sees it. The transport owns it
// and fills it with Reset; the dispatcher reads it and replies once.
type Message struct {
	// Header is the request's head as it arrived: TxID, Flags
	// (FlagUnordered: the reply may leave out of order; FlagRDMA: the
	// client asked for the reply's payload by RDMA, described by
	// Header.RDMA). A dispatcher needs none of it to reply; it is there to
	// route and to log.
	Header Header
	// Payload is the request's payload. It belongs to the transport (it
	// may alias the connection's read buffer) and stays valid until the
	// transport has finished sending this message's reply, so a reply may
	// carry it, or part of it, back without a copy. After SendReply the
	// dispatcher must neither read nor change it.
	Payload []byte

	hook  ReplyHook
	state atomic.Int32 // messageOpen, then messageReplied or messageAbandoned
}

// A Message's state: replied once, or abandoned by its transport (a
// shutdown whose grace ended before the reply came), never both.
const (
	messageOpen int32 = iota
	messageReplied
	messageAbandoned
)

// Reset prepares m for dispatch: the request's head and payload, and the
// hook that will send its reply. Transports call it (on a fresh or a
// recycled Message); dispatchers never do.
func (m *Message) Reset(h *Header, payload []byte, hook ReplyHook) {
	m.Header, m.Payload, m.hook = *h, payload, hook
	m.state.Store(messageOpen)
}

// Errors of SendReply. In each case the transport did not take the
// reply, and will not call its Done.
var (
	// ErrReplied is returned by a second SendReply on one message: a
	// request has exactly one reply.
	ErrReplied = errors.New("quartet: msg: message already replied to")

	// ErrNoHook is returned by SendReply on a Message no transport has
	// Reset, so there is nowhere to send the reply.
	ErrNoHook = errors.New("quartet: msg: message has no reply hook")

	// ErrReplyCode is returned by SendReply for a reply whose Code is a
	// connection error (below 256): those tell the client that the
	// connection is closing, and only the transport closes it.
	ErrReplyCode = errors.New("quartet: msg: reply code reserved for the transport")

	// ErrAbandoned is returned by SendReply on a message whose transport
	// gave up waiting for its reply: the server shut down, and its
	// grace ended before the reply came. The client was told
	// (CodeShutdown) and its connection closed; m.Payload is no longer
	// valid.
	ErrAbandoned = errors.New("quartet: msg: reply abandoned: the server shut down before it came")
)

// SendReply sends r as the reply to m, through the hook the transport
// set (Ceph's Messenger::send_reply and Message::reply_hook). It may be
// called from any goroutine, once; it hands the reply over and returns,
// never waiting for the network.
//
// From the call until r.Done, r.Payload belongs to the transport; with
// a nil Done it must never change again (static bytes, or m.Payload
// itself, which the transport keeps until the reply is sent anyway).
// An error means the reply was not taken (ErrReplied, ErrNoHook,
// ErrReplyCode, ErrAbandoned) or the connection is gone, as the hook reports it; Done
// is then not called and the payload is the dispatcher's again.
func (m *Message) SendReply(r Reply) error {
	if r.Code != 0 && r.Code.Fatal() {
		return fmt.Errorf("%w: %v", ErrReplyCode, r.Code)
	}
	if m.hook == nil {
		return ErrNoHook
	}
	if !m.state.CompareAndSwap(messageOpen, messageReplied) {
		if m.state.Load() == messageAbandoned {
			return ErrAbandoned
		}
		return ErrReplied
	}
	return m.hook.SendReply(m, r)
}

// answered reports whether m has had its reply, or been abandoned.
func (m *Message) answered() bool { return m.state.Load() != messageOpen }

// abandon marks m abandoned unless its reply came first, and reports
// whether it did: a SendReply after it returns ErrAbandoned.
func (m *Message) abandon() bool { return m.state.CompareAndSwap(messageOpen, messageAbandoned) }

// Reply is what a dispatcher answers a Message with.
type Reply struct {
	// Payload is the reply's payload, or with a Code the error message
	// (cut to MaxErrorMessage bytes). The transport may send it inline or,
	// when the request asked, deliver it by RDMA; the dispatcher does not
	// need to know which.
	Payload []byte
	// Code, when not 0, makes this an error reply; codes from 256 on
	// (CodeUnsupported, CodeBusy, CodeInternal, CodeTimeout, and
	// CodeApplication and above for the application's own).
	Code Code
	// Done, when set, is called exactly once, from a transport goroutine,
	// when the transport no longer needs Payload: err is nil once the
	// reply was written (inline), or once the RDMA transfer completed or
	// the client confirmed its Read; otherwise it says why the reply was
	// not delivered (the connection closed). It must not block.
	Done func(err error)
}

// ReplyHook is how one transport sends replies (Ceph's
// Message::ReplyHook, implemented per messenger). A TCP transport frames
// the reply and queues it on the connection's writer; an RDMA-capable one
// may first move the payload by RDMA and frame only the descriptor. The
// hook may be one per connection or one per message.
//
// SendReply is called at most once per Message (Message.SendReply sees
// to it), from any goroutine. It must not block on the network: it hands
// the reply to the writer and returns. It owns r.Payload until it calls
// r.Done (if set), and m.Payload until the reply has been sent; it sends
// the reply to a request without FlagUnordered only after the replies to
// every earlier request of the connection.
type ReplyHook interface {
	SendReply(m *Message, r Reply) error
}

// Echo is the built-in dispatcher for experiments: it replies to every
// request with the request's own payload. The reply aliases the request
// (the transport keeps m.Payload until the reply is sent), so an echo
// copies nothing above the transport, and a request that asked for RDMA
// gets its echo by RDMA if the transport can.
type Echo struct{}

// Immediate is a Dispatcher that promises, for every request, that
// Dispatch never blocks (no I/O that waits, no lock held long, no sleep)
// and has called m.SendReply before it returns. The transport may then
// dispatch on the reader loop that read the request, and write the reply
// there, without the hand-offs to a processor and a writer loop and back
// (as HTTP handlers that declare they never block are served), when the
// request does not ask for RDMA (its path may dial and register) and no
// other request of the connection is in flight. A dispatcher that breaks
// the promise stalls every connection of that loop.
type Immediate interface {
	Dispatcher
	RepliesImmediately()
}

// RepliesImmediately marks Echo Immediate: it replies before it returns.
func (Echo) RepliesImmediately() {}

var _ Immediate = Echo{}

// Dispatch replies to m with m.Payload.
func (Echo) Dispatch(m *Message) {
	// An error here means the connection is gone; an echo has nothing to
	// undo, and the transport has counted the failure.
	_ = m.SendReply(Reply{Payload: m.Payload})
}

var _ Dispatcher = Echo{}
