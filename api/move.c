/* move.c - moving a connection between threads. rn_conn_detach takes a
 * connection off its thread's loop: the backend lets go of the descriptor
 * (io_uring: its multishot recv is cancelled and reaped) and every byte it
 * had read ahead comes up into the connection (c->rx, served before the
 * socket), as does the ciphertext a stream layer held in the loop's
 * buffers; the server that accepted it forgets it. rn_conn_attach gives it
 * to the calling thread's loop. A detached connection belongs to no
 * thread: attach, or a close from any thread (which frees it here, with no
 * TLS goodbye). */
#include "api.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Room for n more bytes at the end of c->rx: 0 or -ENOMEM. */
static int rx_reserve(rn_conn *c, size_t n)
{
    if (c->rx_off + c->rx_len + n <= c->rx_cap)
        return 0;
    size_t need = c->rx_len + n;
    char *k = malloc(need);
    if (!k)
        return -ENOMEM;
    if (c->rx_len)
        memcpy(k, c->rx + c->rx_off, c->rx_len);
    free(c->rx);
    c->rx = k;
    c->rx_off = 0;
    c->rx_cap = need;
    return 0;
}

void rn__conn_wait_detach(rn_conn *c)
{
    c->detach_cancel = true;
    while (c->detaching) {
        c->close_waiter = c->loop->current;
        rn__task_park(c->loop);
    }
    c->close_waiter = NULL;
}

/* Wait (parked) until the backend's own requests on c have ended: their
 * last completions may still bring bytes, which it queues. */
static int quiesce(rn_conn *c)
{
    struct rn__loop *loop = c->loop;
    struct rn__fd *f = &c->f;
    if (f->inflight == 0)
        return 0;
    if (loop->bk->fd_quiesce) {
        int rc = loop->bk->fd_quiesce(loop, f);
        if (rc < 0)
            return rn__err(rc, "detach: the %s backend cannot stop its reads on %s: %s",
                           loop->bk->name, rn_conn_remote_addr(c), rn_strerror(rc));
    }
    /* Meanwhile other calls are refused (rn__conn_enter), and a close waits
     * for this detach to give way (rn__conn_wait_detach). */
    c->detaching = true;
    while (f->inflight > 0) {
        f->drain_waiter = loop->current;
        rn__task_park(loop);
    }
    if (f->drain_waiter == loop->current)
        f->drain_waiter = NULL;
    c->detaching = false;
    if (c->detach_cancel) {
        c->detach_cancel = false;
        if (c->close_waiter)
            rn__task_wake(loop, c->close_waiter);
        return rn__err(RN_ECLOSED, "detach: the connection was closed while it was being detached");
    }
    if (c->reset || f->closing)
        return rn__err(
            RN_ECLOSED,
            "detach: the server's drain reset the connection while it was being detached");
    return 0;
}

RN_EXPORT int rn_conn_detach(rn_conn *c)
{
    if (!c)
        return rn__err(-EINVAL, "detach: the connection is NULL");
    if (c->detached)
        return rn__err(-EXDEV,
                       "detach: the connection is detached already (rn_conn_attach it first)");
    struct rn__loop *loop = c->loop;
    if (rn__loop_peek() != loop)
        return rn__err(-EXDEV, "detach: the connection belongs to another thread");
    if (c->detaching)
        return rn__err(-EBUSY, "detach: another task of this thread is detaching it already");
    if (c->reset)
        return rn__err(RN_ECLOSED, "detach: the connection was reset by its server's drain");
    if (c->f.closing || c->destroying)
        return rn__err(RN_ECLOSED, "detach: the connection is closed or being closed");
    if (c->calls > 0)
        return rn__err(-EBUSY,
                       "detach: %d call%s in flight on the connection (another task's, or the TLS "
                       "layer's background flush); detach it once they have returned",
                       c->calls, c->calls == 1 ? " is" : "s are");
    int rc = quiesce(c);
    if (rc < 0)
        return rc;
    /* Nothing parks from here on. A failure leaves c attached and whole:
     * c->rx always holds the bytes that come next after what the stream
     * layer holds, and before the socket's. */
    if (loop->bk->fd_unbuffer) {
        size_t n = rn__fd_buffered(loop, &c->f);
        if (rx_reserve(c, n) < 0)
            return rn__err(-ENOMEM, "detach: out of memory for the %zu bytes read ahead", n);
        int end = 1;
        char *to = n ? c->rx + c->rx_off + c->rx_len : NULL;
        c->rx_len += loop->bk->fd_unbuffer(loop, &c->f, to, n, &end);
        if (end != 1) {
            c->rx_end = end;
            c->rx_has_end = true;
        }
    }
    if (c->ops->detach && c->ops->detach(c) < 0)
        return rn__err(-ENOMEM, "detach: out of memory for the stream layer's received bytes");
    /* The bytes of the last lent read were handed out already: the lend
     * ends here, as at the next read. */
    rn__lend_release(loop, c->lent);
    c->lent = NULL;
    rn__server_untrack(c); /* a moved connection is no longer its server's to drain */
    loop->bk->fd_close(loop, &c->f);
    memset(&c->f.bk, 0, sizeof c->f.bk);
    c->f.drain_waiter = NULL;
    c->f.rd_drained = false; /* the new loop's first read asks the socket */
    c->close_waiter = NULL;
    c->loop = NULL;
    c->detached = true;
    return 0;
}

RN_EXPORT int rn_conn_attach(rn_conn *c)
{
    if (!c)
        return rn__err(-EINVAL, "attach: the connection is NULL");
    if (!c->detached)
        return rn__err(-EINVAL, "attach: the connection is not detached (it belongs to a thread: "
                                "rn_conn_detach it there first)");
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    int rc = loop->bk->fd_open(loop, &c->f);
    if (rc < 0)
        return rn__err(rc, "attach: cannot register the connection with the %s backend: %s",
                       loop->bk->name, rn_strerror(rc));
    c->loop = loop;
    c->detached = false;
    if (c->ops->attach)
        c->ops->attach(c);
    return 0;
}

void rn__conn_close_detached(rn_conn *c, bool abort)
{
    if (abort) {
        /* l_linger 0: close(2) sends RST and drops what is unsent. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->f.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    c->destroying = true;
    /* Nothing is in flight and no loop knows the descriptor. The stream
     * layer's heap buffers go to this thread's loop cache, or to free when
     * this thread has none (rn__lend_release with NULL). */
    c->loop = rn__loop_peek();
    if (c->ops->free)
        c->ops->free(c);
    close(c->f.fd);
    free(c->kept);
    free(c->rx);
    free(c);
}
