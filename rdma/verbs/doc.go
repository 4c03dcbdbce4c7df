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
// Teardown: rdma_destroy_id waits until every event of the id is acked
// and ibv_destroy_cq until every completion event is acked; this package
// acks each event as soon as it has copied what it needs, so Close never
// hangs. An error completion other than a flush records the failure on
// its QP (QP.Err), since verbs reports it only through the CQ.
package verbs
