/* uring.c - the io_uring backend: ops become SQEs (deadlines as linked
 * absolute timeouts), one io_uring_enter per loop pass submits them all and
 * waits, and CQEs are dispatched back through rn__op_complete. */
#include "rn.h"

#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Valgrind's memcheck does not see the kernel write into a recv buffer
 * through the ring (it sees syscalls only): without this, every byte an
 * io_uring recv delivers looks uninitialised to it. A no-op outside
 * Valgrind (a few instructions). */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

#define SQ_ENTRIES 1024u
#define CQ_ENTRIES (SQ_ENTRIES * 8u) /* completions can outnumber one pass's submissions */

/* user_data tags: ops are at least 8-aligned, so the low bits are free. */
#define UD_IGNORE    0ull /* linked timeouts and cancels: their op's CQE decides */
#define UD_ACCEPT_MS 1ull /* | rn__fd*: the multishot accept of a listener */
#define UD_RECV_MS   2ull /* | rn__fd*: the multishot recv of a connection */
#define UD_TAG_MASK  7ull

RN_STATIC_ASSERT(_Alignof(struct rn__op) >= 8, "op pointers carry tags in their low bits");
RN_STATIC_ASSERT(_Alignof(struct rn__fd) >= 8, "fd pointers carry tags in their low bits");

/* A provided-buffer ring: the kernel picks one of its buffers only when
 * bytes arrive, so a task waiting to read holds none. Mapped on first use
 * (one mapping: the ring entries, then the buffers); tried once. */
struct pring {
    struct io_uring_buf_ring *br; /* NULL until set up (or if that failed) */
    char *bufs;                   /* entries * size bytes */
    size_t map_len;
    unsigned entries, size; /* entries: a power of two */
    unsigned short bgid;
    bool tried;
};

/* Lent reads (rn_conn_read_lent) that go one-shot to the kernel: 64 buffers
 * of RN__LEND_SIZE bytes; when all are out, the recv fails with -ENOBUFS and
 * is sent again into a heap buffer (rn__lend_alloc). */
#define LEND_ENTRIES 64u
#define LEND_BGID    0

/* Stream reads. A connection whose last read emptied the socket and took
 * no more than a stream buffer holds (request/response traffic) gets one
 * multishot recv that
 * stays in the kernel across reads; each arrival fills a buffer of the
 * stream ring and queues on the connection (linked through sbuf), and
 * reads are served from that queue: copied out (rn_conn_read) or lent
 * (rn_conn_read_lent). One SQE per connection instead of one per read.
 *  - Backpressure: once a queue holds SR_CAP bytes the multishot is
 *    cancelled and the next read after the queue is one-shot, so a reader
 *    that stops reading stops the kernel taking bytes for it (TCP's window
 *    closes as before); a one-shot read of more than SR_SIZE bytes, or
 *    one that left bytes in the socket, keeps it one-shot (bulk).
 *  - The ring running dry ends multishots with -ENOBUFS: their readers go
 *    one-shot once, then may re-arm.
 *  - A read parked on the queue is outside the kernel, so its deadline is
 *    the loop's (loop_timed, a timed park, uring_expire).
 *  - Ordering: a multishot is armed only with an empty queue and no
 *    one-shot recv in flight, and a one-shot recv goes out only with no
 *    multishot armed and an empty queue.
 *  - RN_URING_RECV_MULTISHOT=0 turns it off (comparisons); a kernel that
 *    refuses it (before 6.0: -EINVAL) turns it off for the loop. */
/* 256 buffers of 16 KiB (a lent read may take RN_LENT_MAX bytes at once):
 * 4 MiB per loop, kept for the loop's life once written (the soak's check
 * of RSS after 10,000 connections counts it). Enough for the arrivals of
 * one loop pass at 1,000 busy connections; past that a connection meets
 * -ENOBUFS and reads one-shot. */
#define SR_ENTRIES 256u
#define SR_SIZE    RN__LEND_SIZE
#define SR_BGID    1
#define SR_CAP     (64u * 1024u)

struct sbuf {
    uint32_t len, off; /* bytes the kernel put there; bytes read already */
    uint16_t next;     /* the next queued buffer's id + 1; 0: last */
};

struct uring {
    struct io_uring ring;
    struct pring lend; /* one-shot lent reads */
    struct pring sr;   /* stream reads */
    bool rms_off;      /* no multishot recv: refused by the kernel or RN_URING_RECV_MULTISHOT=0 */
    struct sbuf sm[SR_ENTRIES];
};

/* Setup flags, best first. SINGLE_ISSUER|DEFER_TASKRUN (6.1) runs completion
 * work only when we enter the ring, on this thread; COOP_TASKRUN (5.19)
 * avoids IPIs; older kernels get the plain ring. */
static const unsigned setup_chain[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_SUBMIT_ALL,
    0,
};

static const struct {
    int op;
    const char *name;
} needed_ops[] = {
    {IORING_OP_CONNECT, "CONNECT"},
    {IORING_OP_ACCEPT, "ACCEPT"},
    {IORING_OP_RECV, "RECV"},
    {IORING_OP_SEND, "SEND"},
    {IORING_OP_POLL_ADD, "POLL_ADD"},
    {IORING_OP_TIMEOUT, "TIMEOUT"},
    {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    /* Not used itself: it came in 5.19 with what we rely on and the probe
     * cannot show, multishot accept, cancel by fd with CANCEL_ALL and
     * IORING_RECVSEND_POLL_FIRST. An older kernel runs epoll instead. */
    {IORING_OP_SOCKET, "SOCKET (kernel 5.19+: multishot accept, cancel by fd)"},
};

static int uring_init(struct rn__loop *loop, void **state, char *why, size_t whylen)
{
    struct uring *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    /* RN_URING_ENTRIES shrinks (or grows) the ring: the tests use a tiny
     * one to drive the SQ-full and CQ-overflow paths. */
    unsigned sq = SQ_ENTRIES, cq = CQ_ENTRIES;
    const char *env = getenv("RN_URING_ENTRIES");
    if (env && *env) {
        long v = strtol(env, NULL, 10);
        if (v < 2 || v > 32768) {
            snprintf(why, whylen, "RN_URING_ENTRIES=%s is outside 2..32768", env);
            free(u);
            return -ERANGE; /* a configuration error, not a reason to fall back */
        }
        sq = (unsigned)v;
        /* The kernel takes at most 65536 CQ entries (twice its SQ maximum):
         * past 8192 the eightfold would make io_uring_setup fail. */
        cq = sq <= 8192 ? sq * 8 : 65536;
    }
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof setup_chain / sizeof setup_chain[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = setup_chain[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = cq;
        rc = io_uring_queue_init_params(sq, &u->ring, &p);
        if (rc != -EINVAL)
            break; /* EINVAL: this kernel lacks a flag; try the next set */
    }
    if (rc < 0) {
        snprintf(why, whylen, "io_uring_setup failed: %s (%s)", rn__errname(rc), rn_strerror(rc));
        free(u);
        return rc;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
    if (!probe) {
        snprintf(why, whylen, "the opcode probe (io_uring_register PROBE) failed");
        io_uring_queue_exit(&u->ring);
        free(u);
        return -EOPNOTSUPP;
    }
    for (size_t i = 0; i < sizeof needed_ops / sizeof needed_ops[0]; i++) {
        if (!io_uring_opcode_supported(probe, needed_ops[i].op)) {
            snprintf(why, whylen, "the kernel lacks IORING_OP_%s", needed_ops[i].name);
            io_uring_free_probe(probe);
            io_uring_queue_exit(&u->ring);
            free(u);
            return -EOPNOTSUPP;
        }
    }
    io_uring_free_probe(probe);
    u->lend = (struct pring){.entries = LEND_ENTRIES, .size = RN__LEND_SIZE, .bgid = LEND_BGID};
    u->sr = (struct pring){.entries = SR_ENTRIES, .size = SR_SIZE, .bgid = SR_BGID};
    const char *ms = getenv("RN_URING_RECV_MULTISHOT");
    u->rms_off = ms && !strcmp(ms, "0");
    /* Saves an fdget per io_uring_enter (5.18); optional. */
    (void)io_uring_register_ring_fd(&u->ring);
    *state = u;
    (void)loop;
    return 0;
}

static void uring_destroy(struct rn__loop *loop, void *state)
{
    struct uring *u = state;
    struct pring *rings[] = {&u->lend, &u->sr};
    for (size_t i = 0; i < 2; i++) {
        if (rings[i]->br) {
            (void)io_uring_unregister_buf_ring(&u->ring, rings[i]->bgid);
            munmap(rings[i]->br, rings[i]->map_len);
        }
    }
    io_uring_queue_exit(&u->ring);
    free(u);
    (void)loop;
}

static int uring_fd_open(struct rn__loop *loop, struct rn__fd *f)
{
    (void)loop;
    (void)f;
    return 0;
}

static void sr_put(struct uring *u, unsigned bid);

static void uring_fd_close(struct rn__loop *loop, struct rn__fd *f)
{
    struct uring *u = loop->bk_state;
    /* Bytes received for the connection and never read go with it. */
    while (f->rmsq_head) {
        unsigned bid = f->rmsq_head - 1u;
        f->rmsq_head = u->sm[bid].next;
        sr_put(u, bid);
    }
    f->rmsq_tail = 0;
    f->held = 0;
    f->rms_end = false;
    /* Accepted descriptors nobody took are closed with their listener. */
    for (unsigned i = 0; i < f->accq_len; i++)
        close(f->accq[(f->accq_head + i) % f->accq_cap]);
    free(f->accq);
    f->accq = NULL;
    f->accq_len = f->accq_cap = f->accq_head = 0;
    (void)loop;
}

/* Room for n SQEs; flushes the SQ to the kernel when it is full. */
static struct io_uring_sqe *get_sqes(struct rn__loop *loop, struct uring *u, unsigned n)
{
    while (io_uring_sq_space_left(&u->ring) < n) {
        int r = io_uring_submit(&u->ring);
        loop->stats.enter_calls++;
        if (r > 0)
            loop->stats.ops_submitted += (uint64_t)r;
        /* -EBUSY/-EAGAIN: the CQ is backed up; the pass after this one reaps. */
        if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
            return NULL;
    }
    return io_uring_get_sqe(&u->ring);
}

static struct rn__op *accwait_pop(struct rn__fd *f);

static void arm_accept(struct rn__loop *loop, struct uring *u, struct rn__fd *f)
{
    struct io_uring_sqe *sqe = get_sqes(loop, u, 1);
    if (!sqe) {
        /* The ring refused to take submissions (only a broken ring does):
         * nothing would ever wake the accepts parked here, so fail them. */
        struct rn__op *op;
        while ((op = accwait_pop(f)) != NULL)
            rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    io_uring_prep_multishot_accept(sqe, f->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)f | UD_ACCEPT_MS);
    f->acc_armed = true;
    /* The multishot is in flight until its last CQE: a closer waits for it,
     * and the loop knows a completion can still come. */
    f->inflight++;
    loop->inflight++;
}

static void accq_push(struct rn__fd *f, int fd)
{
    if (f->accq_len == f->accq_cap) {
        unsigned cap = f->accq_cap ? f->accq_cap * 2 : 16;
        int *q = malloc(cap * sizeof *q);
        if (!q) {
            close(fd); /* the client sees a reset; better than losing the listener */
            return;
        }
        for (unsigned i = 0; i < f->accq_len; i++)
            q[i] = f->accq[(f->accq_head + i) % f->accq_cap];
        free(f->accq);
        f->accq = q;
        f->accq_cap = cap;
        f->accq_head = 0;
    }
    f->accq[(f->accq_head + f->accq_len) % f->accq_cap] = fd;
    f->accq_len++;
}

static struct rn__op *accwait_pop(struct rn__fd *f)
{
    struct rn__op *op = f->acc_wait;
    if (op)
        f->acc_wait = op->next;
    return op;
}

static void submit_accept(struct rn__loop *loop, struct uring *u, struct rn__op *op)
{
    struct rn__fd *f = op->f;
    if (f->accq_len > 0) {
        int fd = f->accq[f->accq_head];
        f->accq_head = (f->accq_head + 1) % f->accq_cap;
        f->accq_len--;
        rn__op_complete(loop, op, fd);
        return;
    }
    struct rn__op **pp = &f->acc_wait;
    while (*pp)
        pp = &(*pp)->next;
    *pp = op;
    if (!f->acc_armed)
        arm_accept(loop, u, f);
}

/* Buffer bid of ring p, ready for the kernel once advanced. */
static void pring_put(struct pring *p, unsigned bid, int offset)
{
    io_uring_buf_ring_add(p->br, p->bufs + (size_t)bid * p->size, p->size, (unsigned short)bid,
                          io_uring_buf_ring_mask(p->entries), offset);
}

static char *pring_buf(const struct pring *p, unsigned bid)
{
    return p->bufs + (size_t)bid * p->size;
}

/* Map and register ring p (liburing 2.3 has no helper for it); whether it
 * is there. Tried once. */
static bool pring_ready(struct uring *u, struct pring *p)
{
    if (p->br || p->tried)
        return p->br != NULL;
    p->tried = true;
    size_t ring_len = p->entries * sizeof(struct io_uring_buf);
    ring_len = (ring_len + 4095) & ~(size_t)4095; /* the kernel wants the ring page-aligned */
    size_t len = ring_len + (size_t)p->entries * p->size;
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return false;
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = p->entries;
    reg.bgid = p->bgid;
    if (io_uring_register_buf_ring(&u->ring, &reg, 0) < 0) {
        munmap(mem, len);
        return false;
    }
    p->br = br;
    p->bufs = (char *)mem + ring_len;
    p->map_len = len;
    for (unsigned i = 0; i < p->entries; i++)
        pring_put(p, i, (int)i);
    io_uring_buf_ring_advance(br, (int)p->entries);
    return true;
}

/* The id of p's buffer that holds address b, or -1. */
static int pring_find(const struct pring *p, const char *b)
{
    if (!p->br || b < p->bufs || b >= p->bufs + (size_t)p->entries * p->size)
        return -1;
    return (int)((size_t)(b - p->bufs) / p->size);
}

static void sr_put(struct uring *u, unsigned bid)
{
    pring_put(&u->sr, bid, 0);
    io_uring_buf_ring_advance(u->sr.br, 1);
}

static bool uring_lend_release(struct rn__loop *loop, void *buf)
{
    struct uring *u = loop->bk_state;
    int bid = pring_find(&u->lend, buf);
    if (bid >= 0) {
        pring_put(&u->lend, (unsigned)bid, 0);
        io_uring_buf_ring_advance(u->lend.br, 1);
        return true;
    }
    /* A stream buffer lent from a connection's queue (at any offset in it). */
    if ((bid = pring_find(&u->sr, buf)) >= 0) {
        sr_put(u, (unsigned)bid);
        return true;
    }
    return false;
}

/* ---- stream reads (see the comment at SR_ENTRIES) -------------------------------- */

static void rms_push(struct uring *u, struct rn__fd *f, unsigned bid, uint32_t len)
{
    u->sm[bid] = (struct sbuf){.len = len, .off = 0, .next = 0};
    if (f->rmsq_tail)
        u->sm[f->rmsq_tail - 1u].next = (uint16_t)(bid + 1u);
    else
        f->rmsq_head = (uint16_t)(bid + 1u);
    f->rmsq_tail = (uint16_t)(bid + 1u);
    f->held += len;
}

static void rms_pop(struct uring *u, struct rn__fd *f)
{
    unsigned bid = f->rmsq_head - 1u;
    f->rmsq_head = u->sm[bid].next;
    if (!f->rmsq_head)
        f->rmsq_tail = 0;
}

/* Finish op from f's queue (which holds bytes or the stream's last word). */
static void rms_serve(struct rn__loop *loop, struct uring *u, struct rn__fd *f, struct rn__op *op)
{
    op->loop_timed = false;
    if (!f->rmsq_head) {
        f->rms_end = false; /* handed out once; a later recv asks the kernel again */
        rn__op_complete(loop, op, f->rms_res);
        return;
    }
    if (op->lend) {
        /* The whole rest of the first buffer, lent where it lies. */
        unsigned bid = f->rmsq_head - 1u;
        struct sbuf *b = &u->sm[bid];
        uint32_t n = b->len - b->off;
        op->buf = pring_buf(&u->sr, bid) + b->off;
        rms_pop(u, f);
        f->held -= n;
        rn__op_complete(loop, op, (int)n);
        return;
    }
    size_t got = 0;
    while (f->rmsq_head && got < op->len) {
        unsigned bid = f->rmsq_head - 1u;
        struct sbuf *b = &u->sm[bid];
        size_t n = b->len - b->off;
        if (n > op->len - got)
            n = op->len - got;
        memcpy((char *)op->buf + got, pring_buf(&u->sr, bid) + b->off, n);
        got += n;
        b->off += (uint32_t)n;
        f->held -= (uint32_t)n;
        if (b->off == b->len) {
            rms_pop(u, f);
            sr_put(u, bid);
        }
    }
    rn__op_complete(loop, op, (int)got);
}

static void rms_park(struct rn__fd *f, struct rn__op *op)
{
    struct rn__op **pp = &f->rms_wait;
    while (*pp)
        pp = &(*pp)->next;
    op->next = NULL;
    *pp = op;
    op->loop_timed = op->deadline != 0;
}

static void uring_expire(struct rn__loop *loop, struct rn__op *op, int res)
{
    for (struct rn__op **pp = &op->f->rms_wait; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            op->loop_timed = false;
            rn__op_complete(loop, op, res);
            return;
        }
    }
}

/* Give f a multishot recv into the stream ring; false if it cannot. */
static bool rms_arm(struct rn__loop *loop, struct uring *u, struct rn__fd *f)
{
    if (!pring_ready(u, &u->sr))
        return false;
    struct io_uring_sqe *sqe = get_sqes(loop, u, 1);
    if (!sqe)
        return false;
    io_uring_prep_recv_multishot(sqe, f->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = SR_BGID;
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST; /* armed after a short read: the socket is empty */
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)f | UD_RECV_MS);
    f->rms_armed = true;
    f->rms_cancel = false;
    /* In flight until its last CQE, as a listener's multishot accept. */
    f->inflight++;
    loop->inflight++;
    return true;
}

static void submit_one(struct rn__loop *loop, struct uring *u, struct rn__op *op);

/* A recv: from f's queue, parked on its multishot, on a new multishot, or
 * one-shot to the kernel. A lent recv that already has a heap buffer (sent
 * again after -ENOBUFS) is one-shot. */
static void submit_recv(struct rn__loop *loop, struct uring *u, struct rn__op *op)
{
    struct rn__fd *f = op->f;
    if (!(op->lend && op->buf)) {
        if (f->rmsq_head || f->rms_end) {
            rms_serve(loop, u, f, op);
            return;
        }
        if (f->rms_armed || (f->rd_drained && !f->rms_skip && !f->rs_inflight && !u->rms_off &&
                             rms_arm(loop, u, f))) {
            rms_park(f, op);
            return;
        }
        f->rms_skip = false;
    }
    if (RN_UNLIKELY(op->lend) && !op->buf && !pring_ready(u, &u->lend) &&
        !(op->buf = rn__lend_alloc(loop))) {
        rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    f->rs_inflight++;
    submit_one(loop, u, op);
}

static void uring_submit(struct rn__loop *loop, struct rn__op *op)
{
    struct uring *u = loop->bk_state;
    if (op->kind == RN__OP_ACCEPT) {
        submit_accept(loop, u, op);
        return;
    }
    if (op->kind == RN__OP_RECV) {
        submit_recv(loop, u, op);
        return;
    }
    submit_one(loop, u, op);
}

/* op as one SQE (and its linked timeout). */
static void submit_one(struct rn__loop *loop, struct uring *u, struct rn__op *op)
{
    bool linked = op->deadline && op->kind != RN__OP_SLEEP;
    struct io_uring_sqe *sqe = get_sqes(loop, u, linked ? 2 : 1);
    if (!sqe) {
        if (op->kind == RN__OP_RECV)
            op->f->rs_inflight--;
        rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    switch (op->kind) {
    case RN__OP_CONNECT:
        io_uring_prep_connect(sqe, op->f->fd, op->addr, op->addrlen);
        break;
    case RN__OP_RECV:
        io_uring_prep_recv(sqe, op->f->fd, op->buf, op->len, 0);
        if (op->lend && !op->buf) { /* the kernel picks a ring buffer when bytes come */
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = LEND_BGID;
        }
        /* The last recv emptied the socket: arm the poll at once instead of
         * a recv attempt that would only find it empty (request/response
         * traffic, where the peer answers after our write). */
        if (op->f->rd_drained)
            sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
        break;
    case RN__OP_SEND:
        io_uring_prep_send(sqe, op->f->fd, op->buf, op->len, MSG_NOSIGNAL);
        break;
    case RN__OP_POLL:
        io_uring_prep_poll_add(sqe, op->f->fd, (unsigned)op->events);
        break;
    case RN__OP_SLEEP:
        io_uring_prep_timeout(sqe, &op->ts, 0, IORING_TIMEOUT_ABS);
        break;
    default:
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    if (linked) {
        /* One absolute instant on CLOCK_MONOTONIC (the default clock), so
         * the short ops of one write_all all end at the same moment. The
         * timespec lives in op, which outlives the submission. */
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *t = io_uring_get_sqe(&u->ring);
        io_uring_prep_link_timeout(t, &op->ts, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(t, UD_IGNORE);
    }
}

static void uring_cancel_fd(struct rn__loop *loop, struct rn__fd *f)
{
    struct uring *u = loop->bk_state;
    /* Accepts and reads parked here never reached the kernel: finish them now. */
    struct rn__op *op;
    while ((op = accwait_pop(f)) != NULL)
        rn__op_complete(loop, op, -ECANCELED);
    while ((op = f->rms_wait) != NULL) {
        f->rms_wait = op->next;
        op->loop_timed = false;
        rn__op_complete(loop, op, -ECANCELED);
    }
    struct io_uring_sqe *sqe = get_sqes(loop, u, 1);
    if (!sqe)
        return;
    /* Closing an fd does not cancel io_uring requests on it: cancel every
     * request on the file (5.19: CANCEL_FD | CANCEL_ALL). */
    io_uring_prep_cancel_fd(sqe, f->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
}

static void dispatch_accept(struct rn__loop *loop, struct uring *u, struct rn__fd *f,
                            const struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int res = cqe->res;
    if (res >= 0) {
        if (f->closing) {
            close(res);
        } else {
            struct rn__op *op = accwait_pop(f);
            if (op)
                rn__op_complete(loop, op, res);
            else
                accq_push(f, res);
        }
    } else if (!f->closing && res != -ECANCELED) {
        /* EMFILE/ENFILE and the like end the multishot; the caller backs
         * off and asks again, which re-arms it. Nobody waiting: the next
         * accept re-arms and meets the error itself. */
        struct rn__op *op = accwait_pop(f);
        if (op)
            rn__op_complete(loop, op, res);
    }
    if (!more) {
        f->acc_armed = false;
        if (!f->closing && f->acc_wait)
            arm_accept(loop, u, f);
        loop->inflight--;
        rn__fd_drop(loop, f);
    }
}

static void dispatch_recv_ms(struct rn__loop *loop, struct uring *u, struct rn__fd *f,
                             const struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int res = cqe->res;
    if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (f->closing) {
            sr_put(u, bid);
        } else {
            (void)VALGRIND_MAKE_MEM_DEFINED(pring_buf(&u->sr, bid), (size_t)res);
            rms_push(u, f, bid, (uint32_t)res);
            if (f->held >= SR_CAP && more && !f->rms_cancel) {
                /* The reader is behind (or this is bulk): stop taking
                 * bytes for it, and read one-shot once it has caught up. */
                struct io_uring_sqe *sqe = get_sqes(loop, u, 1);
                if (sqe) {
                    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)f | UD_RECV_MS, 0);
                    io_uring_sqe_set_data64(sqe, UD_IGNORE);
                    f->rms_cancel = true;
                }
                f->rms_skip = true;
            }
        }
    } else if (res == -ENOBUFS) {
        f->rms_skip = true; /* the ring ran dry: the readers go one-shot once */
    } else if (res == -EINVAL) {
        u->rms_off = true; /* a kernel without multishot recv (before 6.0) */
    } else if (res != -ECANCELED && !f->closing) {
        f->rms_end = true; /* 0 (EOF) or an error: after the bytes before it */
        f->rms_res = res;
    }
    if (!more) {
        f->rms_armed = false;
        f->rms_cancel = false;
        loop->inflight--;
        rn__fd_drop(loop, f);
    }
    struct rn__op *op;
    while ((op = f->rms_wait) != NULL && (f->rmsq_head || f->rms_end)) {
        f->rms_wait = op->next;
        rms_serve(loop, u, f, op);
    }
    if (f->rms_wait && !f->rms_armed && !f->closing) {
        /* Nothing armed any more for the readers still parked: send them
         * again, in order (the first may arm a new multishot). */
        op = f->rms_wait;
        f->rms_wait = NULL;
        while (op) {
            struct rn__op *next = op->next;
            op->loop_timed = false;
            submit_recv(loop, u, op);
            op = next;
        }
    }
}

/* A lent recv's CQE: note the buffer the kernel filled; when the ring had
 * none left, send the recv again into a heap buffer (true: not done yet). */
static bool lend_complete(struct rn__loop *loop, struct uring *u, struct rn__op *op,
                          const struct io_uring_cqe *cqe, int *res)
{
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        op->buf = pring_buf(&u->lend, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        return false;
    }
    if (*res != -ENOBUFS || op->buf || op->f->closing)
        return false;
    op->buf = rn__lend_alloc(loop);
    if (!op->buf) {
        *res = -ENOMEM;
        return false;
    }
    submit_recv(loop, u, op); /* still counted in flight: no completion was reported */
    return true;
}

static unsigned reap(struct rn__loop *loop, struct uring *u)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        n++;
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        /* LIBURING_UDATA_TIMEOUT: the timeout liburing itself queues for a
         * timed wait on kernels without EXT_ARG. */
        if (ud == UD_IGNORE || ud == LIBURING_UDATA_TIMEOUT)
            continue;
        if ((ud & UD_TAG_MASK) == UD_ACCEPT_MS) {
            dispatch_accept(loop, u, (struct rn__fd *)(uintptr_t)(ud & ~UD_TAG_MASK), cqe);
            continue;
        }
        if ((ud & UD_TAG_MASK) == UD_RECV_MS) {
            dispatch_recv_ms(loop, u, (struct rn__fd *)(uintptr_t)(ud & ~UD_TAG_MASK), cqe);
            continue;
        }
        struct rn__op *op = (struct rn__op *)(uintptr_t)ud;
        int res = cqe->res;
        if (op->kind == RN__OP_RECV)
            op->f->rs_inflight--;
        if (RN_UNLIKELY(op->lend) && lend_complete(loop, u, op, cqe, &res))
            continue; /* sent again */
        if (op->kind == RN__OP_RECV && res > 0 && op->buf)
            (void)VALGRIND_MAKE_MEM_DEFINED(op->buf, (size_t)res);
        struct rn__fd *f = op->kind == RN__OP_RECV ? op->f : NULL;
        rn__op_complete(loop, op, res);
        /* The kernel says whether the recv left bytes in the socket (6.0+,
         * as multishot recv): a read that got exactly what it asked for
         * (read_exact of a header) may still have emptied it. A read of
         * more than a stream buffer holds is bulk, even if it emptied the
         * socket (a fast reader on loopback does): it stays one-shot, one
         * copy straight into the caller's buffer. */
        if (f && res > 0 && !u->rms_off && !f->closing) {
            f->rd_drained = !(cqe->flags & IORING_CQE_F_SOCK_NONEMPTY);
            if ((unsigned)res > SR_SIZE)
                f->rms_skip = true;
        }
    }
    io_uring_cq_advance(&u->ring, n);
    return n;
}

static int uring_run_once(struct rn__loop *loop, bool wait)
{
    struct uring *u = loop->bk_state;
    /* One enter both submits what the tasks queued and waits. */
    int r;
    int64_t wake_at = wait ? rn__loop_wake_at(loop) : 0;
    if (!wait) {
        r = io_uring_submit_and_get_events(&u->ring);
    } else if (!wake_at) {
        r = io_uring_submit_and_wait(&u->ring, 1);
    } else {
        /* A timed park is due at wake_at: wait no longer (the timeout rides
         * in the enter itself, IORING_FEAT_EXT_ARG, 5.11). */
        int64_t d = wake_at - rn__now_ns();
        if (d < 0)
            d = 0;
        struct __kernel_timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
        struct io_uring_cqe *cqe;
        r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    loop->stats.enter_calls++;
    if (r > 0)
        loop->stats.ops_submitted += (uint64_t)r;
    /* -EINTR: a signal; -EBUSY/-EAGAIN: the CQ is backed up. Reaping is the
     * cure for both, and the loop calls us again. */
    if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN && r != -ETIME)
        return r;
    for (;;) {
        reap(loop, u);
        /* Completions that did not fit the CQ wait in the kernel's overflow
         * list (IORING_FEAT_NODROP): flush them in and reap again. */
        if (!io_uring_cq_has_overflow(&u->ring))
            break;
        io_uring_get_events(&u->ring);
        loop->stats.enter_calls++;
    }
    return 0;
}

static size_t uring_buffered(struct rn__loop *loop, const struct rn__fd *f)
{
    (void)loop;
    return f->held;
}

const struct rn__backend rn__backend_uring = {
    .name = "io_uring",
    .init = uring_init,
    .destroy = uring_destroy,
    .fd_open = uring_fd_open,
    .fd_close = uring_fd_close,
    .submit = uring_submit,
    .cancel_fd = uring_cancel_fd,
    .run_once = uring_run_once,
    .lend_release = uring_lend_release,
    .expire = uring_expire,
    .buffered = uring_buffered,
};
