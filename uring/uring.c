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
#define UD_IGNORE 0ull            /* linked timeouts and cancels: their op's CQE decides */
#define UD_ACCEPT_MS 1ull         /* | rn__fd*: the multishot accept of a listener */
#define UD_TAG_MASK 7ull

RN_STATIC_ASSERT(_Alignof(struct rn__op) >= 8, "op pointers carry tags in their low bits");
RN_STATIC_ASSERT(_Alignof(struct rn__fd) >= 8, "fd pointers carry tags in their low bits");

/* Lent reads (rn_conn_read_lent) take their buffer from a provided-buffer
 * ring: the kernel picks one only when bytes arrive, so a task waiting to
 * read holds none. LEND_ENTRIES buffers of RN__LEND_SIZE bytes, mapped on
 * the first lent read; when all are out, the recv fails with -ENOBUFS and is
 * sent again into a heap buffer (rn__lend_alloc). */
#define LEND_ENTRIES 64u
#define LEND_BGID 0

struct uring {
    struct io_uring ring;
    struct io_uring_buf_ring *br; /* NULL until the first lent read (or if it failed) */
    char *br_bufs;                /* LEND_ENTRIES * RN__LEND_SIZE bytes */
    size_t br_map_len;            /* the one mapping: the ring entries, then the buffers */
    bool br_tried;
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
    {IORING_OP_CONNECT, "CONNECT"}, {IORING_OP_ACCEPT, "ACCEPT"},       {IORING_OP_RECV, "RECV"},
    {IORING_OP_SEND, "SEND"},       {IORING_OP_POLL_ADD, "POLL_ADD"},   {IORING_OP_TIMEOUT, "TIMEOUT"},
    {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
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
        cq = sq * 8;
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
    /* Saves an fdget per io_uring_enter (5.18); optional. */
    (void)io_uring_register_ring_fd(&u->ring);
    *state = u;
    (void)loop;
    return 0;
}

static void uring_destroy(struct rn__loop *loop, void *state)
{
    struct uring *u = state;
    if (u->br) {
        (void)io_uring_unregister_buf_ring(&u->ring, LEND_BGID);
        munmap(u->br, u->br_map_len);
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

static void uring_fd_close(struct rn__loop *loop, struct rn__fd *f)
{
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

/* Buffer bid of the lent-read ring, ready for the kernel once advanced. */
static void ring_put(struct uring *u, unsigned bid, int offset)
{
    io_uring_buf_ring_add(u->br, u->br_bufs + (size_t)bid * RN__LEND_SIZE, RN__LEND_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(LEND_ENTRIES), offset);
}

/* Map and register the lent-read buffer ring (liburing 2.3 has no helper
 * for it). Tried once; without it, lent reads use heap buffers. */
static void lend_ring_setup(struct uring *u)
{
    u->br_tried = true;
    size_t ring_len = LEND_ENTRIES * sizeof(struct io_uring_buf);
    ring_len = (ring_len + 4095) & ~(size_t)4095; /* the kernel wants the ring page-aligned */
    size_t len = ring_len + (size_t)LEND_ENTRIES * RN__LEND_SIZE;
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return;
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = LEND_ENTRIES;
    reg.bgid = LEND_BGID;
    if (io_uring_register_buf_ring(&u->ring, &reg, 0) < 0) {
        munmap(mem, len);
        return;
    }
    u->br = br;
    u->br_bufs = (char *)mem + ring_len;
    u->br_map_len = len;
    for (unsigned i = 0; i < LEND_ENTRIES; i++)
        ring_put(u, i, (int)i);
    io_uring_buf_ring_advance(br, (int)LEND_ENTRIES);
}

static bool uring_lend_release(struct rn__loop *loop, void *buf)
{
    struct uring *u = loop->bk_state;
    char *b = buf;
    if (!u->br || b < u->br_bufs || b >= u->br_bufs + (size_t)LEND_ENTRIES * RN__LEND_SIZE)
        return false;
    ring_put(u, (unsigned)((size_t)(b - u->br_bufs) / RN__LEND_SIZE), 0);
    io_uring_buf_ring_advance(u->br, 1);
    return true;
}

static void uring_submit(struct rn__loop *loop, struct rn__op *op)
{
    struct uring *u = loop->bk_state;
    if (op->kind == RN__OP_ACCEPT) {
        submit_accept(loop, u, op);
        return;
    }
    if (RN_UNLIKELY(op->lend) && !op->buf) {
        if (!u->br_tried)
            lend_ring_setup(u);
        if (!u->br && !(op->buf = rn__lend_alloc(loop))) {
            rn__op_complete(loop, op, -ENOMEM);
            return;
        }
    }
    bool linked = op->deadline && op->kind != RN__OP_SLEEP;
    struct io_uring_sqe *sqe = get_sqes(loop, u, linked ? 2 : 1);
    if (!sqe) {
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
    /* Accepts parked here never reached the kernel: finish them now. */
    struct rn__op *op;
    while ((op = accwait_pop(f)) != NULL)
        rn__op_complete(loop, op, -ECANCELED);
    struct io_uring_sqe *sqe = get_sqes(loop, u, 1);
    if (!sqe)
        return;
    /* Closing an fd does not cancel io_uring requests on it: cancel every
     * request on the file (5.19: CANCEL_FD | CANCEL_ALL). */
    io_uring_prep_cancel_fd(sqe, f->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
}

static void dispatch_accept(struct rn__loop *loop, struct uring *u, struct rn__fd *f, const struct io_uring_cqe *cqe)
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

/* A lent recv's CQE: note the buffer the kernel filled; when the ring had
 * none left, send the recv again into a heap buffer (true: not done yet). */
static bool lend_complete(struct rn__loop *loop, struct uring *u, struct rn__op *op, const struct io_uring_cqe *cqe,
                          int *res)
{
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        op->buf = u->br_bufs + (size_t)bid * RN__LEND_SIZE;
        return false;
    }
    if (*res != -ENOBUFS || op->buf || op->f->closing)
        return false;
    op->buf = rn__lend_alloc(loop);
    if (!op->buf) {
        *res = -ENOMEM;
        return false;
    }
    uring_submit(loop, op); /* still counted in flight: no completion was reported */
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
        struct rn__op *op = (struct rn__op *)(uintptr_t)ud;
        int res = cqe->res;
        if (RN_UNLIKELY(op->lend) && lend_complete(loop, u, op, cqe, &res))
            continue; /* sent again */
        if (op->kind == RN__OP_RECV && res > 0 && op->buf)
            (void)VALGRIND_MAKE_MEM_DEFINED(op->buf, (size_t)res);
        rn__op_complete(loop, op, res);
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
};
