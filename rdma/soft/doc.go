// Package soft is Quartet's pure-Go software iWARP provider: the
// rdma.Provider API spoken as MPA (RFC 5044, with the enhanced
// connection setup of RFC 6581), DDP (RFC 5041) and RDMAP (RFC 5040)
// over an ordinary TCP connection, wire-compatible with the Linux
// kernel's soft-iWARP (siw) and with iWARP NICs.
//
// # Why
//
// mod_rdma's argument: a server with an RDMA NIC gains only if its
// clients speak RDMA too, and most cannot. Software iWARP lets any host
// be the other end — a client on a laptop RDMA-reads a response body
// from a server whose NIC does the work — and lets a Quartet server run
// its RDMA path with no hardware at all (the "auto" provider falls back
// to this one).
//
// # Layout
//
// The files follow siw (drivers/infiniband/sw/siw) concern by concern:
//
//	wire.go   header layouts, opcodes, Terminate codes     (iwarp.h)
//	cm.go     MPA request/reply, IRD/ORD, private data    (siw_cm.c)
//	qp.go     queues, states, completion order, flush     (siw_qp.c)
//	rx.go     receive state loop with an opcode table     (siw_qp_rx.c)
//	tx.go     segmentation and transmit                   (siw_qp_tx.c)
//	cq.go     completion queue with an eventfd            (siw_cq.c)
//	mem.go    STags, MRs, MWs, access checks              (siw_mem.c)
//	verbs.go  Provider and Device entry points            (siw_verbs.c)
//
// # Concurrency and ownership
//
// A connected QP owns its TCP connection and two goroutines, rx and tx.
// Posting from the application only queues and wakes tx. rx places
// inbound data straight into registered memory (readv from the socket
// into the region) after checking the STag, PD, window binding, rights
// and bounds; tx writes FPDUs with writev straight from registered
// memory. When the QP fails or is closed, tx reaps: it sends a pending
// Terminate, closes the connection, waits for rx, and only then flushes
// the queues, so a buffer is never touched after its flushed completion
// is visible. MR.Close waits for transfers using the region, so after it
// returns the memory may be unmapped; a transfer stalled by its peer for
// longer than 100 ms fails its QP instead of holding the Close.
//
// # Semantics a verbs programmer should know
//
//   - A Send or RDMA Write completes when its last FPDU is handed to TCP,
//     as on siw: iWARP has no acknowledgement. A Write refused by the
//     peer (bad STag, rights, bounds) therefore completes successfully;
//     the peer's Terminate then moves the QP to ERROR (QP.Err matches
//     rdma.ErrRemoteAccess) and flushes what is outstanding. A Read the
//     peer refuses completes with StatusRemAccessErr.
//   - Send-queue completions come in posting order; nothing completes
//     before an earlier RDMA Read has been placed (RFC 5040 ordering).
//   - A Send that finds no posted receive is fatal (no RNR retry): post
//     receives in QPConfig.Prepare.
//   - No RDMA Write with immediate (RDMAP has none), no atomics. Memory
//     windows (type 2) and Send with Invalidate of a window are
//     supported.
//
// # Wire quirks of siw we accommodate
//
// siw lays out the Terminate control word through little-endian
// bitfields (layer and type nibbles swapped, M/D/R in the low bits);
// we send the RFC layout and recognise both. siw requests CRC only when
// its mpa_crc_required parameter is set; if either side asks, both use
// it (Config.CRC). Markers are refused, as siw refuses them.
package soft
