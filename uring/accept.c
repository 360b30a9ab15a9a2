/* accept.c - the io_uring backend's accepts: one multishot accept per
 * listener stays in the kernel while anyone waits, each CQE goes to the
 * oldest parked accept op or, with none, onto the listener's queue of
 * accepted descriptors, which the next accepts take first. */
#include "uring.h"

#include <stdlib.h>
#include <unistd.h>

static struct rn__op *acc_pop(struct rn__uring_fd *uf)
{
    struct rn__op *op = uf->acc_wait;
    if (op)
        uf->acc_wait = op->next;
    return op;
}

static void acc_arm(struct rn__loop *loop, struct uring *u, struct rn__fd *f)
{
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (!sqe) {
        /* The ring refused to take submissions: nothing would ever wake
         * the accepts parked here, so fail them. */
        struct rn__op *op;
        while ((op = acc_pop(&f->bk.uring)) != NULL)
            rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    io_uring_prep_multishot_accept(sqe, f->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)f | UD_ACCEPT_MULTI);
    f->bk.uring.acc_armed = true;
    /* In flight until its last CQE: a closer waits for it, and the loop
     * knows a completion can still come. */
    rn__fd_hold(loop, f);
}

static void accq_push(struct rn__uring_fd *uf, int fd)
{
    if (uf->accq_len == uf->accq_cap) {
        unsigned cap = uf->accq_cap ? uf->accq_cap * 2 : 16;
        int *q = malloc(cap * sizeof *q);
        if (!q) {
            close(fd); /* the client sees a reset; better than losing the listener */
            return;
        }
        for (unsigned i = 0; i < uf->accq_len; i++)
            q[i] = uf->accq[(uf->accq_head + i) % uf->accq_cap];
        free(uf->accq);
        uf->accq = q;
        uf->accq_cap = cap;
        uf->accq_head = 0;
    }
    uf->accq[(uf->accq_head + uf->accq_len) % uf->accq_cap] = fd;
    uf->accq_len++;
}

void rn__acc_submit(struct rn__loop *loop, struct uring *u, struct rn__op *op)
{
    struct rn__fd *f = op->f;
    struct rn__uring_fd *uf = &f->bk.uring;
    if (uf->accq_len > 0) {
        int fd = uf->accq[uf->accq_head];
        uf->accq_head = (uf->accq_head + 1) % uf->accq_cap;
        uf->accq_len--;
        rn__op_complete(loop, op, fd);
        return;
    }
    struct rn__op **pp = &uf->acc_wait;
    while (*pp)
        pp = &(*pp)->next;
    *pp = op;
    if (!uf->acc_armed)
        acc_arm(loop, u, f);
}

void rn__acc_dispatch(struct rn__loop *loop, struct uring *u, struct rn__fd *f,
                      const struct io_uring_cqe *cqe)
{
    struct rn__uring_fd *uf = &f->bk.uring;
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int res = cqe->res;
    if (res >= 0) {
        if (f->closing) {
            close(res);
        } else {
            struct rn__op *op = acc_pop(uf);
            if (op)
                rn__op_complete(loop, op, res);
            else
                accq_push(uf, res);
        }
    } else if (!f->closing && res != -ECANCELED) {
        /* EMFILE/ENFILE and the like end the multishot; the caller backs
         * off and asks again, which re-arms it. Nobody waiting: the next
         * accept re-arms and meets the error itself. */
        struct rn__op *op = acc_pop(uf);
        if (op)
            rn__op_complete(loop, op, res);
    }
    if (!more) {
        uf->acc_armed = false;
        if (!f->closing && uf->acc_wait)
            acc_arm(loop, u, f);
        rn__fd_drop(loop, f);
    }
}

void rn__acc_cancel(struct rn__loop *loop, struct rn__fd *f)
{
    struct rn__op *op;
    while ((op = acc_pop(&f->bk.uring)) != NULL)
        rn__op_complete(loop, op, -ECANCELED);
}

void rn__acc_close(struct rn__fd *f)
{
    struct rn__uring_fd *uf = &f->bk.uring;
    for (unsigned i = 0; i < uf->accq_len; i++)
        close(uf->accq[(uf->accq_head + i) % uf->accq_cap]);
    free(uf->accq);
    uf->accq = NULL;
    uf->accq_len = uf->accq_cap = uf->accq_head = 0;
}
