/* drain.c - a server's list of the connections it accepted, and
 * rn_server_drain: stop accepting, give the connections until a deadline,
 * reset the ones still open, wait for their owners to close them.
 *
 * A reset here does not free the connection (its owner still holds the
 * handle): it marks it closing and reset, sets SO_LINGER {1, 0}, cancels
 * what is in flight, and closes the descriptor (the RST) once nothing is
 * in flight any more; the owner's rn_conn_close frees the rest. Nothing in
 * the reset pass parks, so the list cannot change under it. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void rn__server_track(rn_server *s, rn_conn *c)
{
    c->srv = s;
    c->srv_prev = NULL;
    c->srv_next = s->conns;
    if (s->conns)
        s->conns->srv_prev = c;
    s->conns = c;
}

void rn__server_untrack(rn_conn *c)
{
    rn_server *s = c->srv;
    if (!s)
        return;
    if (c->srv_prev)
        c->srv_prev->srv_next = c->srv_next;
    else
        s->conns = c->srv_next;
    if (c->srv_next)
        c->srv_next->srv_prev = c->srv_prev;
    c->srv = NULL;
    c->srv_prev = c->srv_next = NULL;
    if (s->drain_waiter)
        rn__task_wake(s->loop, s->drain_waiter);
}

void rn__server_forget_all(rn_server *s)
{
    rn_conn *c = s->conns;
    while (c) {
        rn_conn *next = c->srv_next;
        c->srv = NULL;
        c->srv_prev = c->srv_next = NULL;
        c = next;
    }
    s->conns = NULL;
}

/* Close a reset connection's descriptor now that nothing is in flight on
 * it: with SO_LINGER {1, 0} the kernel sends RST instead of FIN. */
static void reset_close_fd(struct rn__loop *loop, rn_conn *c)
{
    if (c->f.drain_waiter == loop->current)
        c->f.drain_waiter = NULL;
    loop->bk->fd_close(loop, &c->f);
    close(c->f.fd);
    c->f.fd = -1;
}

/* Reset c without parking: calls blocked on it return RN_ECLOSED (the
 * backend completes them as closing), later ones fail at the door. */
static void reset_conn(struct rn__loop *loop, rn_conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (c->f.fd >= 0)
        (void)setsockopt(c->f.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    c->reset = true;
    c->f.closing = true;
    if (c->f.inflight > 0)
        loop->bk->cancel_fd(loop, &c->f);
    else if (c->f.fd >= 0)
        reset_close_fd(loop, c);
}

RN_EXPORT int rn_server_drain(rn_server *s, int64_t ms)
{
    if (!s)
        return rn__err(-EINVAL, "server_drain: the server is NULL");
    struct rn__loop *loop = s->loop;
    if (rn__loop_peek() != loop)
        return rn__err(-EXDEV, "server_drain: the server belongs to another thread");
    if (s->f.closing)
        return rn__err(RN_ECLOSED, "server_drain: the server is already being closed or drained");
    if (ms < 0)
        return rn__err(-EINVAL, "server_drain: ms is %lld (0 resets the connections at once)",
                       (long long)ms);
    int64_t deadline = rn__deadline_after_ms(ms);

    /* No new connection: the listener closes, a blocked accept returns
     * RN_ECLOSED. */
    rn__fd_close(loop, &s->f);

    /* The connections' time to finish: woken as each one closes. */
    while (s->conns && deadline) {
        s->drain_waiter = loop->current;
        int r = rn__task_park_until(loop, deadline);
        s->drain_waiter = NULL;
        if (r == -ETIMEDOUT)
            break;
        if (r == -ENOMEM)
            break; /* no timer could be recorded: reset now rather than wait unbounded */
    }

    /* Time is up: reset every connection still open (one its owner is
     * closing already is on its way out and not counted). */
    int resets = 0;
    for (rn_conn *c = s->conns; c; c = c->srv_next) {
        if (c->destroying || c->reset)
            continue;
        reset_conn(loop, c);
        resets++;
    }

    /* Until the owners have closed every one; meanwhile close the
     * descriptor (the RST) of each whose cancelled calls have drained. */
    while (s->conns) {
        for (rn_conn *c = s->conns; c; c = c->srv_next) {
            if (!c->reset || c->f.fd < 0)
                continue;
            if (c->f.inflight == 0)
                reset_close_fd(loop, c);
            else if (!c->f.drain_waiter) /* else its owner's close waits on it */
                c->f.drain_waiter = loop->current;
        }
        s->drain_waiter = loop->current;
        rn__task_park(loop);
        s->drain_waiter = NULL;
    }

    /* As rn_server_close: accepts that were blocked leave first. */
    while (s->calls > 0) {
        s->close_waiter = loop->current;
        rn__task_park(loop);
    }
    if (s->hook.release)
        s->hook.release(s->hook.data);
    free(s);
    return resets;
}
