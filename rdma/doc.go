// Package rdma is Quartet's provider-neutral RDMA API: the OpenFabrics
// verbs and rdma_cm model (devices, protection domains, memory regions
// and windows, completion queues, reliable-connected queue pairs) as Go
// interfaces, implemented one-to-one by the rdma-core provider
// (rdma/verbs, cgo, build tag verbs) and by a pure-Go software iWARP
// provider (rdma/soft) that speaks MPA/DDP/RDMAP over TCP to the
// kernel's siw or an iWARP NIC.
//
// # Why verbs-shaped
//
// mod_rdma chose the OpenFabrics verbs because every RDMA device
// implements them; Quartet keeps that shape so the cgo provider is a thin
// layer with no second model of its own, and so the software provider is
// forced to honour the same contracts a NIC does (keys, rights, queue
// depths, completion order). Nothing here hides a cost: posting is
// asynchronous, every result arrives as a Completion on a CQ, and memory
// that a device may touch is never Go-heap memory (Alloc, MapFile).
//
// # Completions and the poller
//
// Each CQ is one fd (a completion channel for verbs, an eventfd for
// soft) that goes into whatever poller the caller already runs; see CQ
// for the arm/consume/poll order. Waiter (and Wait) block a goroutine on
// that fd through Go's runtime poller, for tools, tests and simple
// clients. Work-request ids are opaque 64-bit values: the HTTP writer
// packs (slot, generation) into them and drops completions whose
// generation is stale.
//
// # Teardown
//
// A QP that fails or disconnects moves to QPStateError and every work
// request still outstanding completes with StatusWRFlushErr: that status
// means teardown, not a fault of its own. Close objects in reverse order
// of creation (QPs, then MRs and MWs, then CQs and PDs, then the Device,
// then Free the Memory); closing something still in use returns ErrBusy.
//
// # Choosing a provider
//
// No provider registers itself: a program builds a Registry from the
// providers it was compiled with, and Registry.Get("auto") takes the
// first that has a device.
package rdma
