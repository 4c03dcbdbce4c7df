// Package verbs is the rdma-core provider of package rdma: libibverbs for
// devices, protection domains, memory regions and windows, completion
// queues and queue pairs, and librdmacm for connection management, both
// through cgo.
//
// It builds only with the build tag verbs (and cgo), so the default build
// and go test ./... need no RDMA libraries; with the tag it needs Debian's
// libibverbs-dev and librdmacm-dev. Without the tag this package is empty.
//
// # Design
//
// Every object wraps one rdma-core object and releases it in Close, in the
// reverse order of creation; setup functions are one straight line that
// checks each verb and names it in the error (a *rdma.VerbError with the
// errno), unwinding what was already created when a later verb fails, the
// way rdma-core's rdma_server.c does with its goto labels.
//
// Descriptors: each CQ has its own completion channel and each listener or
// connection its own rdma_cm event channel, all switched to non-blocking
// mode, so each is one fd in whatever poller the caller runs (epoll in the
// writer stage, Go's runtime poller here). A connection accepted on a
// listener is migrated to its own event channel (rdma_migrate_id) before
// it is accepted, so its DISCONNECTED event is its own.
//
// Memory: libibverbs pins and DMA-maps registered memory, so Go's heap
// must never be registered (the collector moves and frees it, and cgo
// forbids C keeping Go pointers). Work requests and scatter lists are
// built in C memory owned by the QP, so posting allocates nothing.
//
// Failure: verbs reports a QP's failure only through its completions and
// its connection's events, so CQ.Poll records the first failed completion
// on its QP (QP.Err; a flush only if nothing better is known), and each
// connected QP has one goroutine, parked in the runtime poller on its cm
// channel, that answers a peer's DISCONNECTED with rdma_disconnect: on
// InfiniBand and RoCE nothing else moves the QP to ERROR, and posted
// requests would never complete. Once a QP is known to have failed, posts
// are refused with rdma.ErrQPState (siw would accept them into its
// user-space ring and never complete them).
//
// Teardown: rdma_destroy_id waits until every event of the id is acked
// and ibv_destroy_cq until every completion event is acked; this package
// acks each event as soon as it has copied what it needs, so Close never
// hangs. And Close may race the object's other methods: a post, a poll,
// a query, a bind or a connect request's answer that comes while or
// after its object is destroyed returns rdma.ErrClosed instead of
// handing the provider freed memory (siw and rxe post into rings the
// destroy unmapped, and the process dies of SIGSEGV in their library).
// Each destroy takes the locks its object's calls already hold (a QP's
// send and receive locks, a CQ's poll lock, a listener's channel lock),
// so the check costs the hot path nothing.
//
// Setup that fails leaves no trace: a QP that Dial or Accept does not
// return is discarded, its CQs dropping the flushes of what Prepare
// posted on it, so a Dial that retries on a taken port (iWARP: rdma_cm
// picks the port without asking TCP) hands over one connection and only
// its completions.
//
// Kernel quirks handled here (Linux 6.1, see vm/README.md): siw answers
// ibv_query_qp without the state, so QP.State derives it; siw connects
// its TCP socket inside rdma_connect, where a signal (Go's preemption
// signal included) would make it drop a connection the peer had taken
// and the peer's siw close its listening socket, so Dial blocks signals
// for that call (q_connect); librdmacm keeps a context and a PD per
// device for the process's life once used.
package verbs
