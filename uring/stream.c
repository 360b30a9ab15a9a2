/* stream.c - the io_uring backend's stream reads. A connection whose last
 * read emptied the socket and took no more than a stream buffer holds
 * (request/response traffic) gets one multishot recv that stays in the
 * kernel across reads; each arrival fills a buffer of the stream ring and
 * queues on the connection (sr_head..sr_tail, linked through struct
 * sr_buf), and reads are served from that queue: copied out (rn_conn_read)
 * or lent (rn_conn_read_lent). One SQE per connection instead of one per
 * read.
 *  - Backpressure: once a queue holds SR_CAP bytes the multishot is
 *    cancelled and the next read after the queue is one-shot, so a reader
 *    that stops reading stops the kernel taking bytes for it (TCP's window
 *    closes); a one-shot read of more than SR_SIZE bytes, or one that left
 *    bytes in the socket, keeps it one-shot (bulk).
 *  - The ring running dry ends multishots with -ENOBUFS: their readers go
 *    one-shot once, then may re-arm.
 *  - A read parked on the queue is outside the kernel, so its deadline is
 *    the loop's (loop_timed: a timed park, then rn__sr_expire).
 *  - Ordering: a multishot is armed only with an empty queue and no
 *    one-shot recv in flight, and a one-shot recv goes out only with no
 *    multishot armed and an empty queue.
 *  - RN_URING_RECV_MULTISHOT=0 turns it off (comparisons); a kernel that
 *    refuses it (before 6.0: -EINVAL) turns it off for the loop. */
#include "uring.h"

#include <string.h>

static void sr_push(struct uring *u, struct rn__uring_fd *uf, unsigned bid, uint32_t len)
{
    u->sr_bufs[bid] = (struct sr_buf){.len = len, .off = 0, .next = 0};
    if (uf->sr_tail)
        u->sr_bufs[uf->sr_tail - 1u].next = (uint16_t)(bid + 1u);
    else
        uf->sr_head = (uint16_t)(bid + 1u);
    uf->sr_tail = (uint16_t)(bid + 1u);
    uf->sr_held += len;
}

static void sr_pop(struct uring *u, struct rn__uring_fd *uf)
{
    unsigned bid = uf->sr_head - 1u;
    uf->sr_head = u->sr_bufs[bid].next;
    if (!uf->sr_head)
        uf->sr_tail = 0;
}

/* Finish op from f's queue (which holds bytes or the stream's last word). */
static void sr_serve(struct rn__loop *loop, struct uring *u, struct rn__fd *f, struct rn__op *op)
{
    struct rn__uring_fd *uf = &f->bk.uring;
    op->loop_timed = false;
    if (!uf->sr_head) {
        uf->sr_end = false; /* handed out once; a later recv asks the kernel again */
        rn__op_complete(loop, op, uf->sr_res);
        return;
    }
    if (op->lend) {
        /* The whole rest of the first buffer, lent where it lies. */
        unsigned bid = uf->sr_head - 1u;
        struct sr_buf *b = &u->sr_bufs[bid];
        uint32_t n = b->len - b->off;
        op->buf = pbuf_buf(&u->sr, bid) + b->off;
        sr_pop(u, uf);
        uf->sr_held -= n;
        rn__op_complete(loop, op, (int)n);
        return;
    }
    size_t got = 0;
    while (uf->sr_head && got < op->len) {
        unsigned bid = uf->sr_head - 1u;
        struct sr_buf *b = &u->sr_bufs[bid];
        size_t n = b->len - b->off;
        if (n > op->len - got)
            n = op->len - got;
        memcpy((char *)op->buf + got, pbuf_buf(&u->sr, bid) + b->off, n);
        got += n;
        b->off += (uint32_t)n;
        uf->sr_held -= (uint32_t)n;
        if (b->off == b->len) {
            sr_pop(u, uf);
            pbuf_recycle(&u->sr, bid);
        }
    }
    rn__op_complete(loop, op, (int)got);
}

static void sr_park(struct rn__uring_fd *uf, struct rn__op *op)
{
    struct rn__op **pp = &uf->sr_wait;
    while (*pp)
        pp = &(*pp)->next;
    op->next = NULL;
    *pp = op;
    op->loop_timed = op->deadline != 0;
}

void rn__sr_expire(struct rn__loop *loop, struct rn__op *op, int res)
{
    for (struct rn__op **pp = &op->f->bk.uring.sr_wait; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            op->loop_timed = false;
            rn__op_complete(loop, op, res);
            return;
        }
    }
}

/* Give f a multishot recv into the stream ring; false if it cannot. */
static bool sr_arm(struct rn__loop *loop, struct uring *u, struct rn__fd *f)
{
    if (!rn__pbuf_ready(u, &u->sr))
        return false;
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (!sqe)
        return false;
    io_uring_prep_recv_multishot(sqe, f->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = SR_BGID;
    /* No IORING_RECVSEND_POLL_FIRST, although the socket was empty a moment
     * ago: armed poll-first on a socket where bytes and then a reset are
     * already in, the multishot takes the bytes and never tries again, so
     * the reset is lost and the next read waits forever (Linux 6.18;
     * SocketsTest.AResetBehindUnreadBytesIsSeenByTheNextRead). Tried at
     * once, it reads until the socket says no more: the bytes, then the
     * reset. On an empty socket the cost is one recv that finds nothing,
     * inside the same io_uring_enter. */
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)f | UD_RECV_MULTI);
    f->bk.uring.sr_armed = true;
    f->bk.uring.sr_cancel = false;
    /* In flight until its last CQE, as a listener's multishot accept. */
    rn__fd_hold(loop, f);
    return true;
}

/* A lent recv that already has a heap buffer (sent again after -ENOBUFS)
 * is one-shot. */
void rn__sr_recv(struct rn__loop *loop, struct uring *u, struct rn__op *op)
{
    struct rn__fd *f = op->f;
    struct rn__uring_fd *uf = &f->bk.uring;
    if (!(op->lend && op->buf)) {
        if (uf->sr_head || uf->sr_end) {
            sr_serve(loop, u, f, op);
            return;
        }
        if (uf->sr_armed || (f->rd_drained && !uf->sr_skip && !uf->sr_oneshot && !u->sr_off &&
                             sr_arm(loop, u, f))) {
            sr_park(uf, op);
            return;
        }
        uf->sr_skip = false;
    }
    if (RN_UNLIKELY(op->lend) && !op->buf && !rn__pbuf_ready(u, &u->lend) &&
        !(op->buf = rn__lend_alloc(loop))) {
        rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    uf->sr_oneshot++;
    rn__ring_submit(loop, u, op);
}

/* The reader is behind (or this is bulk): stop the kernel taking bytes
 * for it, and read one-shot once it has caught up. */
static void sr_backpressure(struct rn__loop *loop, struct uring *u, struct rn__fd *f)
{
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (sqe) {
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)f | UD_RECV_MULTI, 0);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        f->bk.uring.sr_cancel = true;
    }
    f->bk.uring.sr_skip = true;
}

/* Serve the parked readers the queue can answer; if no multishot is armed
 * for the rest, send them again, in order (the first may arm a new one). */
static void sr_wake(struct rn__loop *loop, struct uring *u, struct rn__fd *f)
{
    struct rn__uring_fd *uf = &f->bk.uring;
    struct rn__op *op;
    while ((op = uf->sr_wait) != NULL && (uf->sr_head || uf->sr_end)) {
        uf->sr_wait = op->next;
        sr_serve(loop, u, f, op);
    }
    if (!uf->sr_wait || uf->sr_armed || f->closing)
        return;
    op = uf->sr_wait;
    uf->sr_wait = NULL;
    while (op) {
        struct rn__op *next = op->next;
        op->loop_timed = false;
        rn__sr_recv(loop, u, op);
        op = next;
    }
}

void rn__sr_dispatch(struct rn__loop *loop, struct uring *u, struct rn__fd *f,
                     const struct io_uring_cqe *cqe)
{
    struct rn__uring_fd *uf = &f->bk.uring;
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int res = cqe->res;
    if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (f->closing) {
            pbuf_recycle(&u->sr, bid);
        } else {
            (void)VALGRIND_MAKE_MEM_DEFINED(pbuf_buf(&u->sr, bid), (size_t)res);
            sr_push(u, uf, bid, (uint32_t)res);
            if (uf->sr_held >= SR_CAP && more && !uf->sr_cancel)
                sr_backpressure(loop, u, f);
        }
    } else if (res == -ENOBUFS) {
        uf->sr_skip = true; /* the ring ran dry: the readers go one-shot once */
    } else if (res == -EINVAL) {
        u->sr_off = true; /* a kernel without multishot recv (before 6.0) */
    } else if (res != -ECANCELED && !f->closing) {
        uf->sr_end = true; /* 0 (EOF) or an error: after the bytes before it */
        uf->sr_res = res;
    }
    if (!more) {
        uf->sr_armed = false;
        uf->sr_cancel = false;
        rn__fd_drop(loop, f);
    }
    sr_wake(loop, u, f);
}

void rn__sr_cancel(struct rn__loop *loop, struct rn__fd *f)
{
    struct rn__uring_fd *uf = &f->bk.uring;
    struct rn__op *op;
    while ((op = uf->sr_wait) != NULL) {
        uf->sr_wait = op->next;
        op->loop_timed = false;
        rn__op_complete(loop, op, -ECANCELED);
    }
}

void rn__sr_close(struct uring *u, struct rn__fd *f)
{
    struct rn__uring_fd *uf = &f->bk.uring;
    while (uf->sr_head) {
        unsigned bid = uf->sr_head - 1u;
        uf->sr_head = u->sr_bufs[bid].next;
        pbuf_recycle(&u->sr, bid);
    }
    uf->sr_tail = 0;
    uf->sr_held = 0;
    uf->sr_end = false;
}

/* ---- moving a connection to another loop ------------------------------- */

int rn__sr_quiesce(struct rn__loop *loop, struct rn__fd *f)
{
    struct uring *u = loop->bk_state;
    struct rn__uring_fd *uf = &f->bk.uring;
    if (!uf->sr_armed || uf->sr_cancel)
        return 0; /* nothing armed, or its cancel is on its way (backpressure) */
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (!sqe)
        return -ENOMEM;
    /* The CQEs that come before the last one still queue their bytes:
     * f->closing is false. */
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)f | UD_RECV_MULTI, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    uf->sr_cancel = true;
    return 0;
}

size_t rn__sr_unbuffer(struct rn__loop *loop, struct rn__fd *f, void *out, size_t len, int *end)
{
    struct uring *u = loop->bk_state;
    struct rn__uring_fd *uf = &f->bk.uring;
    size_t got = 0;
    while (uf->sr_head && got < len) {
        unsigned bid = uf->sr_head - 1u;
        struct sr_buf *b = &u->sr_bufs[bid];
        size_t n = b->len - b->off;
        if (n > len - got)
            n = len - got;
        memcpy((char *)out + got, pbuf_buf(&u->sr, bid) + b->off, n);
        got += n;
        b->off += (uint32_t)n;
        uf->sr_held -= (uint32_t)n;
        if (b->off == b->len) {
            sr_pop(u, uf);
            pbuf_recycle(&u->sr, bid);
        }
    }
    *end = 1;
    if (!uf->sr_head && uf->sr_end) {
        *end = uf->sr_res;
        uf->sr_end = false;
    }
    return got;
}
