/* io.c - record I/O on a TLS session: the stream operations the
 * connection runs once TLS is its layer (read, read_lent, write,
 * write_all, shutdown_write, close, background), the per-direction turns,
 * and the ciphertext moved through the connection's transport helpers.
 *
 * Rules kept here:
 *  - After every wolfSSL call the queue is flushed through the transport; a
 *    read that produced output (a KeyUpdate reply) hands the flush to a
 *    background task, so that a reader never blocks on sending (it would
 *    deadlock a full-duplex transfer whose peer waits for us to read).
 *  - One task at a time per direction: rd_busy covers `in` and
 *    wolfSSL_read, wr_busy covers `tx` (the bytes a send works through,
 *    which never move while it does). wolfSSL calls never park, so wolfSSL
 *    is never entered by two tasks at once.
 *  - Deadlines: a timed-out call leaves the session consistent. Ciphertext
 *    not yet sent stays queued and goes out first on the next call. A write
 *    whose plaintext wolfSSL has taken reports it as written even if the
 *    flush then timed out (the caller must not send it again); the next
 *    write first finishes that flush, and fails with -ETIMEDOUT, taking
 *    nothing, if it cannot. */
#include "tls.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITE_CHUNK (64 * 1024) /* plaintext per wolfSSL_write: bounds the queue */

/* ---- turns --------------------------------------------------------------- */

int rn__tls_take(struct rn__tls *t, bool *busy, int64_t deadline)
{
    rn_conn *c = t->c;
    while (*busy && !rn__conn_closing(c)) {
        struct rn__tls_waiter w = {.task = c->loop->current, .next = t->waiters};
        t->waiters = &w;
        int r = rn__task_park_until(c->loop, deadline);
        for (struct rn__tls_waiter **pp = &t->waiters; *pp; pp = &(*pp)->next) {
            if (*pp == &w) {
                *pp = w.next;
                break;
            }
        }
        if (r < 0 && *busy && !rn__conn_closing(c))
            return r; /* -ETIMEDOUT (or -ENOMEM: the wait could not be timed) */
    }
    if (rn__conn_closing(c))
        return RN_ECLOSED;
    *busy = true;
    return 0;
}

void rn__tls_give(struct rn__tls *t, bool *busy)
{
    *busy = false;
    struct rn__tls_waiter *w = t->waiters;
    t->waiters = NULL;
    for (; w; w = w->next)
        rn__task_wake(t->c->loop, w->task);
}

/* ---- moving ciphertext --------------------------------------------------- */

int rn__tls_flush_locked(struct rn__tls *t, int64_t deadline)
{
    rn_conn *c = t->c;
    for (;;) {
        if (t->tx.len == 0) {
            if (t->q.len == 0)
                return 0;
            struct rn__tls_buf b = t->tx;
            t->tx = t->q;
            t->q = b;
            t->q.off = t->q.len = 0;
        }
        size_t sent;
        int r = rn__conn_send_all(c, t->tx.p + t->tx.off, t->tx.len, deadline, &sent);
        t->tx.off += sent;
        t->tx.len -= sent;
        if (t->tx.len == 0)
            t->tx.off = 0;
        if (r < 0)
            return r;
    }
}

ssize_t rn__tls_fill_locked(struct rn__tls *t, int64_t deadline)
{
    if (t->in_eof)
        return 0;
    if (!t->wr_busy && t->q.len == 0 && t->tx.len == 0 && (t->q.p || t->tx.p)) {
        /* Nothing to send and nobody sending: the outbound buffers go too,
         * so a session waiting for its peer holds none (the next write
         * allocates again). */
        rn__tls_outbuf_free(t, &t->q);
        rn__tls_outbuf_free(t, &t->tx);
    }
    void *b;
    ssize_t r = rn__conn_recv_lent(t->c, &b, deadline);
    if (r > 0) {
        t->in.p = b;
        t->in.cap = RN__LEND_SIZE;
        t->in.off = 0;
        t->in.len = (size_t)r;
    } else if (r == 0) {
        t->in_eof = true;
    }
    return r;
}

/* The background flush a read starts when it produced output (run as a
 * call on the connection: close waits for it). */
static void tls_background(rn_conn *c)
{
    struct rn__tls *t = rn__tls_of(c);
    t->flusher = false;
    if (!rn__conn_closing(c) && !t->wr_busy && (t->q.len || t->tx.len)) {
        t->wr_busy = true;
        (void)rn__tls_flush_locked(t, 0); /* what fails stays queued for the next writer */
        rn__tls_give(t, &t->wr_busy);
    }
}

static void kick_flush(struct rn__tls *t)
{
    rn_conn *c = t->c;
    /* A task holding wr_busy empties the queue before it lets go. */
    if (t->q.len == 0 || t->wr_busy || t->flusher || rn__conn_closing(c))
        return;
    /* No memory for a task: the next write or close sends it. */
    if (rn__conn_spawn_background(c) == 0)
        t->flusher = true;
}

/* ---- the stream operations ----------------------------------------------- */

static ssize_t read_locked(struct rn__tls *t, char *buf, size_t max, int64_t deadline)
{
    size_t got = 0;
    for (;;) {
        /* After the peer's close_notify wolfSSL is not called to read
         * again: that would meet the TCP end, and a wolfSSL that has seen
         * it refuses to send our own close_notify. */
        if (t->got_close_notify)
            return (ssize_t)got;
        size_t want = max - got < INT_MAX ? max - got : INT_MAX;
        int n = wolfSSL_read(t->ssl, buf + got, (int)want);
        int err = n > 0 ? 0 : wolfSSL_get_error(t->ssl, n);
        if (err == WOLFSSL_ERROR_ZERO_RETURN ||
            (wolfSSL_get_shutdown(t->ssl) & WOLFSSL_RECEIVED_SHUTDOWN))
            t->got_close_notify = true;
        kick_flush(t); /* post-handshake messages (KeyUpdate) may have queued a reply */
        if (n > 0) {
            got += (size_t)n;
            if (got == max)
                return (ssize_t)got;
            continue; /* more records may be buffered already */
        }
        if (t->got_close_notify)
            return (ssize_t)got;
        if (err == WOLFSSL_ERROR_WANT_READ) {
            if (got > 0)
                return (ssize_t)got;
            ssize_t r = rn__tls_fill_locked(t, deadline);
            if (r < 0)
                return r;
            continue; /* at end of stream wolfSSL now sees CONN_CLOSE */
        }
        if (got > 0)
            return (ssize_t)got; /* the end or the error comes with the next read */
        if (t->in_eof)
            return rn__err(
                RN_ETLS_TRUNCATED,
                "read from %s: the peer ended the TCP stream without a TLS close_notify; "
                "what it sent may have been cut short",
                rn__tls_peer(t));
        return rn__tls_wolf_fail(t, n, "read");
    }
}

/* What every read does first: the handshake if it is still pending, then
 * the read turn. 0 with rd_busy held, 1 at a clean end (nothing held), or
 * an error. */
static int read_enter(rn_conn *c, int64_t deadline, const char *what)
{
    struct rn__tls *t = rn__tls_of(c);
    int rc = rn__tls_handshake(c, deadline, what);
    if (rc < 0)
        return rc;
    if (t->got_close_notify)
        return 1;
    if (t->fatal)
        return rn__tls_sticky(t);
    return rn__tls_take(t, &t->rd_busy, deadline);
}

static ssize_t tls_read_lent(rn_conn *c, void **out, int64_t deadline)
{
    struct rn__tls *t = rn__tls_of(c);
    *out = NULL;
    int rc = read_enter(c, deadline, "read_lent");
    if (rc != 0)
        return rc < 0 ? rc : 0;
    /* Wait for ciphertext before taking a plaintext buffer, so that a
     * session waiting for its peer holds none. */
    ssize_t r = 0;
    if (t->in.len == 0 && wolfSSL_pending(t->ssl) == 0 && !t->in_eof && !t->got_close_notify)
        r = rn__tls_fill_locked(t, deadline); /* 0 at the end: read_locked says which end */
    if (r >= 0) {
        void *b = rn__lend_alloc(c->loop);
        if (!b) {
            r = rn__err(-ENOMEM, "read_lent: out of memory for a buffer");
        } else {
            r = read_locked(t, b, RN__LEND_SIZE, deadline);
            if (r > 0)
                *out = b;
            else
                rn__lend_release(c->loop, b);
        }
    }
    rn__tls_give(t, &t->rd_busy);
    return r;
}

static ssize_t tls_read(rn_conn *c, void *buf, size_t max, int64_t deadline)
{
    int rc = read_enter(c, deadline, "read");
    if (rc != 0)
        return rc < 0 ? rc : 0;
    struct rn__tls *t = rn__tls_of(c);
    ssize_t r = read_locked(t, buf, max, deadline);
    rn__tls_give(t, &t->rd_busy);
    return r;
}

static ssize_t tls_write(rn_conn *c, const void *buf, size_t len, int64_t deadline)
{
    struct rn__tls *t = rn__tls_of(c);
    int rc = rn__tls_handshake(c, deadline, "write");
    if (rc < 0)
        return rc;
    if (t->fatal)
        return rn__tls_sticky(t);
    if (t->sent_close_notify)
        return rn__err(-EPIPE,
                       "write to %s: the TLS session was shut down for writing (close_notify sent)",
                       rn__tls_peer(t));
    rc = rn__tls_take(t, &t->wr_busy, deadline);
    if (rc < 0)
        return rc;
    /* Older ciphertext first; a write that cannot get it out takes nothing. */
    rc = rn__tls_flush_locked(t, deadline);
    if (rc < 0) {
        rn__tls_give(t, &t->wr_busy);
        return rc;
    }
    int n = (int)(len < WRITE_CHUNK ? len : WRITE_CHUNK);
    int w = wolfSSL_write(t->ssl, buf, n);
    if (w <= 0) {
        rc = rn__tls_wolf_fail(t, w, "write");
        rn__tls_give(t, &t->wr_busy);
        return rc;
    }
    /* From here the w bytes are committed: encrypted, queued, and sent
     * before anything written later. A timeout of this flush still reports
     * them written (sending them again would duplicate them). */
    rc = rn__tls_flush_locked(t, deadline);
    rn__tls_give(t, &t->wr_busy);
    if (rc < 0 && rc != -ETIMEDOUT)
        return rc;
    return w;
}

static int tls_flush(rn_conn *c, int64_t deadline)
{
    struct rn__tls *t = rn__tls_of(c);
    if (t->q.len == 0 && t->tx.len == 0)
        return 0;
    int rc = rn__tls_take(t, &t->wr_busy, deadline);
    if (rc < 0)
        return rc;
    rc = rn__tls_flush_locked(t, deadline);
    rn__tls_give(t, &t->wr_busy);
    return rc;
}

/* 0 means sent, not queued: after a flush that timed out, tls_write counts
 * its chunk as written (it is committed) and leaves the ciphertext queued,
 * so the last step is a flush of its own. */
static int tls_write_all(rn_conn *c, const void *buf, size_t len, int64_t deadline, size_t *done)
{
    const char *p = buf;
    size_t n = 0;
    int rc = 0;
    while (n < len) {
        ssize_t r = tls_write(c, p + n, len - n, deadline);
        if (r < 0) {
            rc = (int)r;
            break;
        }
        n += (size_t)r;
    }
    *done = n;
    return rc == 0 ? tls_flush(c, deadline) : rc;
}

static int tls_shutdown_write(rn_conn *c, int64_t deadline)
{
    struct rn__tls *t = rn__tls_of(c);
    int rc = rn__tls_handshake(c, deadline, "shutdown_write");
    if (rc < 0)
        return rc;
    if (t->fatal)
        return rn__tls_sticky(t);
    rc = rn__tls_take(t, &t->wr_busy, deadline);
    if (rc < 0)
        return rc;
    if (!t->sent_close_notify) {
        /* When the peer's close_notify is in already, wolfSSL_shutdown
         * resets the session after queueing ours: reads must end here. */
        if (wolfSSL_get_shutdown(t->ssl) & WOLFSSL_RECEIVED_SHUTDOWN)
            t->got_close_notify = true;
        t->sent_close_notify = true;
        (void)wolfSSL_shutdown(t->ssl); /* queues close_notify; the peer's is not awaited */
    }
    rc = rn__tls_flush_locked(t, deadline);
    rn__tls_give(t, &t->wr_busy);
    return rc;
}

static void tls_close(rn_conn *c)
{
    struct rn__tls *t = rn__tls_of(c);
    /* Best effort and bounded: skipped when there is no session to close,
     * or a write is in progress (its record may be half-sent; close_notify
     * cannot go after it). */
    if (!t || !t->hs_done || t->fatal || t->wr_busy || rn__conn_closing(c))
        return;
    t->wr_busy = true;
    if (!t->sent_close_notify) {
        t->sent_close_notify = true;
        (void)wolfSSL_shutdown(t->ssl);
    }
    (void)rn__tls_flush_locked(t, rn__deadline_after_ms(CLOSE_NOTIFY_MS));
    rn__tls_give(t, &t->wr_busy);
}

const struct rn__stream_ops rn__tls_ops = {
    .read = tls_read,
    .read_lent = tls_read_lent,
    .write = tls_write,
    .write_all = tls_write_all,
    .shutdown_write = tls_shutdown_write,
    .close = tls_close,
    .free = rn__tls_free,
    .background = tls_background,
    .detach = rn__tls_detach, /* move.c */
    .attach = rn__tls_attach,
};
