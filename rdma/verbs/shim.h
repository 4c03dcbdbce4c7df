// shim.h - C helpers for the verbs provider.  Several verbs are static
// inline functions or macros in verbs.h (cgo cannot call them), and a work
// request is easiest built on the C stack, so Go never hands C a pointer
// into Go memory.  Every helper is one verb; the Go side names the verb in
// its errors.
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

static inline int q_query_port(struct ibv_context *c, uint8_t p, struct ibv_port_attr *a) {
	return ibv_query_port(c, p, a);
}
static inline struct ibv_mr *q_reg_mr(struct ibv_pd *pd, void *buf, size_t len, int acc) {
	return ibv_reg_mr(pd, buf, len, acc);
}
// The hot-path helpers (notify, post, poll) take their C objects as
// uintptr_t: cgo checks a pointer argument whose target holds pointers
// (struct ibv_cq, struct ibv_qp) for Go memory on every call
// (cgoCheckPointer), about 9 of a 39 ns call on the host and 8% of a
// busy poller's profile in the guest; these objects are all C memory.
static inline int q_req_notify_cq(uintptr_t cq, int solicited) {
	return ibv_req_notify_cq((struct ibv_cq *)cq, solicited);
}
static inline int q_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc) {
	return ibv_poll_cq(cq, n, wc);
}
static inline struct ibv_mw *q_alloc_mw(struct ibv_pd *pd) {
	return ibv_alloc_mw(pd, IBV_MW_TYPE_2);
}
static inline int q_dealloc_mw(struct ibv_mw *mw) {
	return ibv_dealloc_mw(mw);
}
static inline struct ibv_device *q_dev_at(struct ibv_device **l, int i) { return l[i]; }
static inline struct ibv_context *q_ctx_at(struct ibv_context **l, int i) { return l[i]; }
static inline struct ibv_wc *q_wc_at(struct ibv_wc *w, int i) { return &w[i]; }
static inline struct ibv_sge *q_sge_at(struct ibv_sge *s, int i) { return &s[i]; }

// Non-blocking fds, so the completion and cm event channels can sit in any
// poller and ibv_get_cq_event / rdma_get_cm_event return EAGAIN.
static inline int q_set_nonblock(int fd) {
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// One send-queue work request (send, write, write with immediate, read).
// Returns ibv_post_send's result: 0 or an errno value.
static inline int q_post_send(uintptr_t qp, uint64_t id, int opcode, unsigned flags,
			      uintptr_t sg, int nsge, uint64_t raddr, uint32_t rkey, uint32_t imm) {
	struct ibv_send_wr wr, *bad = NULL;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = id;
	wr.opcode = opcode;
	wr.send_flags = flags;
	wr.sg_list = (struct ibv_sge *)sg;
	wr.num_sge = nsge;
	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	wr.imm_data = htonl(imm);
	return ibv_post_send((struct ibv_qp *)qp, &wr, &bad);
}

static inline int q_post_recv(uintptr_t qp, uint64_t id, uintptr_t sg, int nsge) {
	struct ibv_recv_wr wr, *bad = NULL;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = id;
	wr.sg_list = (struct ibv_sge *)sg;
	wr.num_sge = nsge;
	return ibv_post_recv((struct ibv_qp *)qp, &wr, &bad);
}

// Type 2 window bind through the send queue (IBV_WR_BIND_MW); *rkey gets
// the window's new key (the old one with its low byte incremented).
static inline int q_post_bind_mw(struct ibv_qp *qp, uint64_t id, unsigned flags, struct ibv_mw *mw,
				 struct ibv_mr *mr, uint64_t addr, uint64_t len, int access, uint32_t *rkey) {
	struct ibv_send_wr wr, *bad = NULL;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = id;
	wr.opcode = IBV_WR_BIND_MW;
	wr.send_flags = flags;
	wr.bind_mw.mw = mw;
	wr.bind_mw.rkey = ibv_inc_rkey(mw->rkey);
	wr.bind_mw.bind_info.mr = mr;
	wr.bind_mw.bind_info.addr = addr;
	wr.bind_mw.bind_info.length = len;
	wr.bind_mw.bind_info.mw_access_flags = access;
	*rkey = wr.bind_mw.rkey;
	return ibv_post_send(qp, &wr, &bad);
}

// sockaddr helpers: Go passes IPv4/IPv6 bytes and a port, C builds the
// sockaddr on its own memory.
static inline void q_sockaddr(struct sockaddr_storage *ss, int v6, const unsigned char *ip, int port) {
	memset(ss, 0, sizeof *ss);
	if (v6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, ip, 16);
		s->sin6_port = htons(port);
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)ss;
		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, ip, 4);
		s->sin_port = htons(port);
	}
}

// q_addr_parts reads family, address bytes (4 or 16 into ip) and port.
static inline int q_addr_parts(struct sockaddr *sa, unsigned char *ip, int *port) {
	if (!sa)
		return 0;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)sa;
		memcpy(ip, &s->sin_addr, 4);
		*port = ntohs(s->sin_port);
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)sa;
		memcpy(ip, &s->sin6_addr, 16);
		*port = ntohs(s->sin6_port);
		return 16;
	}
	return 0;
}

static inline struct sockaddr *q_src_addr(struct rdma_cm_id *id) { return rdma_get_local_addr(id); }
static inline struct sockaddr *q_dst_addr(struct rdma_cm_id *id) { return rdma_get_peer_addr(id); }

// q_wc is a completion with the fields Go needs, flattened: ibv_wc keeps
// imm_data in an anonymous union that cgo cannot name.
struct q_wc {
	uint64_t wr_id;
	uint32_t qp_num, byte_len, imm, vendor_err;
	uint8_t status, opcode, has_imm;
};

// q_poll polls up to n completions (ibv_poll_cq) and flattens them into out.
static inline int q_poll(uintptr_t cqh, int n, uintptr_t wch, uintptr_t outh) {
	struct ibv_wc *wc = (struct ibv_wc *)wch;
	struct q_wc *out = (struct q_wc *)outh;
	int got = ibv_poll_cq((struct ibv_cq *)cqh, n, wc);
	for (int i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].qp_num = wc[i].qp_num;
		out[i].byte_len = wc[i].byte_len;
		out[i].vendor_err = wc[i].vendor_err;
		out[i].status = wc[i].status;
		out[i].opcode = wc[i].opcode;
		out[i].has_imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) != 0;
		out[i].imm = out[i].has_imm ? ntohl(wc[i].imm_data) : 0;
	}
	return got;
}

// q_ev is a cm event with what Go needs, flattened (param is a union).
struct q_ev {
	int event, status;
	struct rdma_cm_id *id, *listen_id;
	const void *priv;
	int priv_len;
	int responder_resources, initiator_depth;
};

static inline void q_ev_read(struct rdma_cm_event *e, struct q_ev *o) {
	o->event = e->event;
	o->status = e->status;
	o->id = e->id;
	o->listen_id = e->listen_id;
	o->priv = e->param.conn.private_data;
	o->priv_len = e->param.conn.private_data_len;
	o->responder_resources = e->param.conn.responder_resources;
	o->initiator_depth = e->param.conn.initiator_depth;
}

static inline struct ibv_context *q_id_verbs(struct rdma_cm_id *id) { return id->verbs; }
static inline struct ibv_qp *q_id_qp(struct rdma_cm_id *id) { return id->qp; }

// q_connect is rdma_connect with the thread's asynchronous signals
// blocked. siw connects its TCP socket inside the call, blocking and
// interruptibly. A signal then (Go's preemption signal, SIGURG, sent to
// the thread as its goroutine enters the call; any signal sent to the
// process) makes siw drop a connection the peer has already accepted at
// the TCP level, and the peer's siw, which has not yet taken it off its
// listening socket, closes that listening socket instead (Linux 6.1
// siw): the Dial, or the next, is refused. Blocked, the signals wait
// until the call returns. Faults stay unblocked, so that a crash in the
// library still reaches Go's handler.
static inline int q_connect(struct rdma_cm_id *id, struct rdma_conn_param *param) {
	sigset_t block, old;
	sigfillset(&block);
	sigdelset(&block, SIGSEGV);
	sigdelset(&block, SIGBUS);
	sigdelset(&block, SIGFPE);
	sigdelset(&block, SIGILL);
	sigdelset(&block, SIGTRAP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	int rc = rdma_connect(id, param);
	int saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return rc;
}
