/* session.c - one TLS session over a connection: wolfSSL reads and writes
 * only memory, and the engine moves the ciphertext. Also the seams api/
 * calls on TLS connections (read, write, flush, shutdown_write, close).
 *
 * Rules kept here:
 *  - wolfSSL's recv callback hands out bytes of `in` or WANT_READ; its send
 *    callback appends to `q` and never returns WANT_WRITE (that path makes
 *    wolfSSL re-send records).
 *  - After every wolfSSL call the queue is flushed through the engine; a
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

#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITE_CHUNK     (64 * 1024) /* plaintext per wolfSSL_write: bounds the queue */
#define CLOSE_NOTIFY_MS 200         /* how long close waits to hand close_notify to the kernel */

/* ---- wolfSSL's I/O callbacks ---------------------------------------------------------- */

int rn__tls_cb_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    (void)ssl;
    struct rn__tls *t = ctx;
    if (t->in.len == 0)
        return t->in_eof ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
    size_t n = t->in.len < (size_t)sz ? t->in.len : (size_t)sz;
    memcpy(buf, t->in.p + t->in.off, n);
    t->in.off += n;
    t->in.len -= n;
    if (t->in.len == 0) { /* wolfSSL has it all: the buffer goes back, an idle session holds none */
        rn__lend_release(t->c->loop, t->in.p);
        t->in.p = NULL;
        t->in.off = t->in.cap = 0;
    }
    return (int)n;
}

/* The outbound buffers start at RN__LEND_SIZE bytes from the loop's cache
 * (so the free-while-idle below costs no malloc per response) and grow with
 * realloc; a grown one goes back to malloc. */
static void outbuf_free(struct rn__tls *t, struct rn__tls_buf *b)
{
    if (b->cap == RN__LEND_SIZE)
        rn__lend_release(t->c->loop, b->p);
    else
        free(b->p);
    memset(b, 0, sizeof *b);
}

int rn__tls_cb_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    (void)ssl;
    struct rn__tls *t = ctx;
    struct rn__tls_buf *b = &t->q;
    size_t n = (size_t)sz;
    /* q is never the buffer of a send in flight (that is tx), so it may
     * move and grow. */
    if (b->off + b->len + n > b->cap) {
        if (b->off > 0) {
            memmove(b->p, b->p + b->off, b->len);
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap * 2 : RN__LEND_SIZE;
            while (cap < b->len + n)
                cap *= 2;
            char *p =
                !b->p && cap == RN__LEND_SIZE ? rn__lend_alloc(t->c->loop) : realloc(b->p, cap);
            if (!p)
                return WOLFSSL_CBIO_ERR_GENERAL;
            b->p = p;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->off + b->len, buf, n);
    b->len += n;
    return sz;
}

/* ---- errors ------------------------------------------------------------------------------- */

static const char *peer_of(struct rn__tls *t)
{
    return t->host[0] ? t->host : rn_conn_remote_addr(t->c);
}

/* Make the session fail for good with code and this sentence. */
static int session_fail(struct rn__tls *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int session_fail(struct rn__tls *t, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->fatal_msg, sizeof t->fatal_msg, fmt, ap);
    va_end(ap);
    t->fatal = code;
    return rn__err(code, "%s", t->fatal_msg);
}

static int sticky(struct rn__tls *t)
{
    return rn__err(t->fatal, "%s", t->fatal_msg);
}

/* An alert's name. wolfSSL 5.5 has none for some (NULL, printed as
 * "(null)"): certificate_required, TLS 1.3's refusal of a client without a
 * certificate, among them. */
static const char *alert_name(int code)
{
    const char *s = wolfSSL_alert_desc_string_long(code);
    if (s)
        return s;
    switch (code) {
    case 21:
        return "decryption_failed";
    case 86:
        return "inappropriate_fallback";
    case 109:
        return "missing_extension";
    case 110:
        return "unsupported_extension";
    case 115:
        return "unknown_psk_identity";
    case 116:
        return "certificate_required";
    default:
        return "unknown alert";
    }
}

/* A wolfSSL call failed with ret: classify, describe, make it sticky. */
static int wolf_fail(struct rn__tls *t, int ret, const char *what)
{
    int err = wolfSSL_get_error(t->ssl, ret);
    char why[300];
    if (rn__tls_is_verify_error(t, err)) {
        rn__tls_verify_message(t, err, why, sizeof why);
        return session_fail(t, RN_ETLS_VERIFY, "%s with %s: %s", what, peer_of(t), why);
    }
    WOLFSSL_ALERT_HISTORY h;
    if (err == FATAL_ERROR && wolfSSL_get_alert_history(t->ssl, &h) == WOLFSSL_SUCCESS &&
        h.last_rx.code > 0) {
        snprintf(why, sizeof why, "the peer sent the fatal alert \"%s\" (%d)",
                 alert_name(h.last_rx.code), h.last_rx.code);
    } else {
        char eb[160];
        wolfSSL_ERR_error_string_n((unsigned long)err, eb, sizeof eb);
        snprintf(why, sizeof why, "%s (wolfSSL error %d)", eb, err);
    }
    return session_fail(t, RN_ETLS, "%s with %s: %s", what, peer_of(t), why);
}

/* ---- turns ---------------------------------------------------------------------------------- */

/* Wait until *busy is free and take it: park on the session's waiter list
 * until the holder gives the turn back, or until the deadline (a timed
 * park: a holder blocked without a deadline cannot make this call late). */
static int take(struct rn__tls *t, bool *busy, int64_t deadline)
{
    rn_conn *c = t->c;
    while (*busy && !c->f.closing) {
        struct rn__tls_waiter w = {.task = c->loop->current, .next = t->waiters};
        t->waiters = &w;
        int r = rn__task_park_until(c->loop, deadline);
        for (struct rn__tls_waiter **pp = &t->waiters; *pp; pp = &(*pp)->next) {
            if (*pp == &w) {
                *pp = w.next;
                break;
            }
        }
        if (r < 0 && *busy && !c->f.closing)
            return r; /* -ETIMEDOUT (or -ENOMEM: the wait could not be timed) */
    }
    if (c->f.closing)
        return RN_ECLOSED;
    *busy = true;
    return 0;
}

static void give(struct rn__tls *t, bool *busy)
{
    *busy = false;
    struct rn__tls_waiter *w = t->waiters;
    t->waiters = NULL;
    for (; w; w = w->next)
        rn__task_wake(t->c->loop, w->task);
}

/* ---- moving ciphertext ------------------------------------------------------------------------
 */

/* Hand everything queued to the kernel (wr_busy held). On failure what is
 * unsent stays, in order, for the next flush. */
static int flush_locked(struct rn__tls *t, int64_t deadline)
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
        struct rn__op op = {.kind = RN__OP_SEND,
                            .f = &c->f,
                            .buf = t->tx.p + t->tx.off,
                            .len = t->tx.len,
                            .deadline = deadline};
        int r = rn__op_wait(c->loop, &op);
        if (r < 0)
            return r;
        t->tx.off += (size_t)r;
        t->tx.len -= (size_t)r;
        if (t->tx.len == 0)
            t->tx.off = 0;
    }
}

/* Receive more ciphertext into `in` (rd_busy held; called only when wolfSSL
 * has taken all of it, so `in` holds no buffer). The bytes land in a lent
 * buffer, which the receive callback gives back once wolfSSL has taken
 * them all: a session waiting for its peer holds no inbound buffer. Bytes
 * (> 0), 0 at end of stream, or an error. */
static ssize_t fill_locked(struct rn__tls *t, int64_t deadline)
{
    if (t->in_eof)
        return 0;
    if (!t->wr_busy && t->q.len == 0 && t->tx.len == 0 && (t->q.p || t->tx.p)) {
        /* Nothing to send and nobody sending: the outbound buffers go too,
         * so a session waiting for its peer holds none (the next write
         * allocates again). */
        outbuf_free(t, &t->q);
        outbuf_free(t, &t->tx);
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

/* The background flush a read starts when it produced output. Counted as a
 * call on the connection, so close waits for it. */
static void flusher_main(void *arg)
{
    rn_conn *c = arg;
    struct rn__tls *t = c->tls;
    t->flusher = false;
    if (!c->f.closing && !t->wr_busy && (t->q.len || t->tx.len)) {
        t->wr_busy = true;
        (void)flush_locked(t, 0); /* what fails stays queued for the next writer */
        give(t, &t->wr_busy);
    }
    rn__conn_leave(c);
}

static void kick_flush(struct rn__tls *t)
{
    rn_conn *c = t->c;
    /* A task holding wr_busy empties the queue before it lets go. */
    if (t->q.len == 0 || t->wr_busy || t->flusher || c->f.closing)
        return;
    c->calls++;
    if (rn_spawn(flusher_main, c) == 0)
        t->flusher = true;
    else
        c->calls--; /* no memory for a task: the next write or close sends it */
}

/* ---- session lifetime -------------------------------------------------------------------------
 */

static bool is_ip_literal(const char *host)
{
    unsigned char b[16];
    return inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1;
}

int rn__tls_session_attach(rn_conn *c, rn_tls_config *cfg, const char *host, bool server)
{
    rn__tls_thread_used();
    struct rn__tls *t = calloc(1, sizeof *t);
    WOLFSSL *ssl = wolfSSL_new(cfg->ctx);
    if (!t || !ssl) {
        free(t);
        if (ssl)
            wolfSSL_free(ssl);
        return rn__err(-ENOMEM, "tls: out of memory for a session");
    }
    t->c = c;
    t->ssl = ssl;
    t->server = server;
    wolfSSL_SetIOReadCtx(ssl, t);
    wolfSSL_SetIOWriteCtx(ssl, t);
    const char *failed = NULL;
    if (!server) {
        size_t hl = strlen(host);
        if (hl >= sizeof t->host)
            failed = "the host name is too long";
        memcpy(t->host, host, hl < sizeof t->host ? hl + 1 : 0);
        t->host_is_ip = is_ip_literal(host);
        if (failed) {
        } else if (t->host_is_ip) {
            /* No SNI for addresses (RFC 6066); the certificate must carry
             * the address as an IP subjectAltName. */
            if (wolfSSL_X509_VERIFY_PARAM_set1_ip_asc(wolfSSL_get0_param(ssl), host) !=
                WOLFSSL_SUCCESS)
                failed = "setting the IP address to verify";
        } else {
            if (wolfSSL_check_domain_name(ssl, host) != WOLFSSL_SUCCESS)
                failed = "setting the host name to verify";
            else if (wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, host, (word16)hl) !=
                     WOLFSSL_SUCCESS)
                failed = "setting SNI";
        }
    }
    if (!failed && cfg->alpn &&
        wolfSSL_UseALPN(ssl, cfg->alpn, (word32)strlen(cfg->alpn),
                        WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS)
        failed = "setting ALPN";
    if (failed) {
        wolfSSL_free(ssl);
        free(t);
        return rn__err(server ? RN_ETLS : -EINVAL, "tls: %s%s%s failed", failed,
                       server ? "" : " for ", server ? "" : host);
    }
    rn__tls_config_ref(cfg);
    t->cfg = cfg;
    c->tls = t;
    return 0;
}

void rn__tls_free(rn_conn *c)
{
    struct rn__tls *t = c->tls;
    if (!t)
        return;
    wolfSSL_free(t->ssl);
    rn__lend_release(c->loop, t->in.p);
    outbuf_free(t, &t->q);
    outbuf_free(t, &t->tx);
    rn__tls_config_unref(t->cfg);
    free(t);
    c->tls = NULL;
}

/* ---- handshake
 * ------------------------------------------------------------------------------------ */

static int hs_io_error(struct rn__tls *t, int err, const char *what)
{
    if (err == -ETIMEDOUT)
        return rn__err(err, "%s: the TLS handshake with %s did not finish before the deadline",
                       what, peer_of(t));
    if (err == RN_ECLOSED)
        return rn__err(err, "%s: the connection was closed during the TLS handshake", what);
    return rn__err(err, "%s: TLS handshake with %s: %s", what, peer_of(t), rn_strerror(err));
}

static int handshake_locked(struct rn__tls *t, int64_t deadline, const char *what)
{
    for (;;) {
        if (t->hs_done)
            return 0; /* another task finished it while this one waited */
        if (t->fatal)
            return sticky(t);
        int r = t->server ? wolfSSL_accept(t->ssl) : wolfSSL_connect(t->ssl);
        int err = r == WOLFSSL_SUCCESS ? 0 : wolfSSL_get_error(t->ssl, r);
        if (err != 0 && err != WOLFSSL_ERROR_WANT_READ) {
            int code = wolf_fail(t, r, what);
            /* Let the peer see the alert wolfSSL queued, briefly. */
            int64_t soon = rn__deadline_after_ms(CLOSE_NOTIFY_MS);
            (void)flush_locked(t, deadline && deadline < soon ? deadline : soon);
            return rn__err(code, "%s", t->fatal_msg);
        }
        int fr = flush_locked(t, deadline);
        if (fr < 0)
            return hs_io_error(t, fr, what);
        if (err == 0) {
            char *name = NULL;
            unsigned short len = 0;
            if (wolfSSL_ALPN_GetProtocol(t->ssl, &name, &len) == WOLFSSL_SUCCESS && name &&
                len > 0 && len < sizeof t->alpn) {
                memcpy(t->alpn, name, len);
                t->alpn[len] = '\0';
            }
            t->hs_done = true;
            /* The handshake's deep wolfSSL frames touched tens of KiB of
             * this task's stack that an idle connection would keep. */
            rn__task_trim_stack(t->c->loop);
            return 0;
        }
        ssize_t got = fill_locked(t, deadline);
        if (got < 0)
            return hs_io_error(t, (int)got, what);
        if (got == 0)
            return session_fail(t, RN_ETLS, "%s: %s closed the connection during the TLS handshake",
                                what, peer_of(t));
    }
}

int rn__tls_handshake(rn_conn *c, int64_t deadline, const char *what)
{
    struct rn__tls *t = c->tls;
    if (t->hs_done)
        return 0;
    if (t->fatal)
        return sticky(t);
    int rc = take(t, &t->rd_busy, deadline);
    if (rc < 0)
        return rc == -ETIMEDOUT ? hs_io_error(t, rc, what) : rc;
    rc = take(t, &t->wr_busy, deadline);
    if (rc == 0) {
        rc = handshake_locked(t, deadline, what);
        give(t, &t->wr_busy);
    } else if (rc == -ETIMEDOUT) {
        rc = hs_io_error(t, rc, what);
    }
    give(t, &t->rd_busy);
    return rc;
}

/* ---- the seams api/ calls
 * ------------------------------------------------------------------------------ */

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
            ssize_t r = fill_locked(t, deadline);
            if (r < 0)
                return r;
            continue; /* at end of stream wolfSSL now sees CONN_CLOSE */
        }
        if (got > 0)
            return (ssize_t)got; /* the end or the error comes with the next read */
        if (t->in_eof)
            return rn__err(RN_ETLS_TRUNCATED,
                           "read from %s: the peer ended the TCP stream without a TLS "
                           "close_notify; what it sent "
                           "may have been cut short",
                           peer_of(t));
        return wolf_fail(t, n, "read");
    }
}

/* What every read does first: the handshake if it is still pending, then
 * the read turn. 0 with rd_busy held, 1 at a clean end (nothing held), or
 * an error. */
static int read_enter(rn_conn *c, int64_t deadline, const char *what)
{
    struct rn__tls *t = c->tls;
    int rc = rn__tls_handshake(c, deadline, what);
    if (rc < 0)
        return rc;
    if (t->got_close_notify)
        return 1;
    if (t->fatal)
        return sticky(t);
    return take(t, &t->rd_busy, deadline);
}

ssize_t rn__tls_read_lent(rn_conn *c, void **out, int64_t deadline)
{
    struct rn__tls *t = c->tls;
    *out = NULL;
    int rc = read_enter(c, deadline, "read_lent");
    if (rc != 0)
        return rc < 0 ? rc : 0;
    /* Wait for ciphertext before taking a plaintext buffer, so that a
     * session waiting for its peer holds none. */
    ssize_t r = 0;
    if (t->in.len == 0 && wolfSSL_pending(t->ssl) == 0 && !t->in_eof && !t->got_close_notify)
        r = fill_locked(t, deadline); /* 0 at the end: read_locked says which end */
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
    give(t, &t->rd_busy);
    return r;
}

ssize_t rn__tls_read(rn_conn *c, void *buf, size_t max, int64_t deadline)
{
    int rc = read_enter(c, deadline, "read");
    if (rc != 0)
        return rc < 0 ? rc : 0;
    ssize_t r = read_locked(c->tls, buf, max, deadline);
    give(c->tls, &c->tls->rd_busy);
    return r;
}

ssize_t rn__tls_write(rn_conn *c, const void *buf, size_t len, int64_t deadline)
{
    struct rn__tls *t = c->tls;
    int rc = rn__tls_handshake(c, deadline, "write");
    if (rc < 0)
        return rc;
    if (t->fatal)
        return sticky(t);
    if (t->sent_close_notify)
        return rn__err(-EPIPE,
                       "write to %s: the TLS session was shut down for writing (close_notify sent)",
                       peer_of(t));
    rc = take(t, &t->wr_busy, deadline);
    if (rc < 0)
        return rc;
    /* Older ciphertext first; a write that cannot get it out takes nothing. */
    rc = flush_locked(t, deadline);
    if (rc < 0) {
        give(t, &t->wr_busy);
        return rc;
    }
    int n = (int)(len < WRITE_CHUNK ? len : WRITE_CHUNK);
    int w = wolfSSL_write(t->ssl, buf, n);
    if (w <= 0) {
        rc = wolf_fail(t, w, "write");
        give(t, &t->wr_busy);
        return rc;
    }
    /* From here the w bytes are committed: encrypted, queued, and sent
     * before anything written later. A timeout of this flush still reports
     * them written (sending them again would duplicate them). */
    rc = flush_locked(t, deadline);
    give(t, &t->wr_busy);
    if (rc < 0 && rc != -ETIMEDOUT)
        return rc;
    return w;
}

int rn__tls_flush(rn_conn *c, int64_t deadline)
{
    struct rn__tls *t = c->tls;
    if (t->q.len == 0 && t->tx.len == 0)
        return 0;
    int rc = take(t, &t->wr_busy, deadline);
    if (rc < 0)
        return rc;
    rc = flush_locked(t, deadline);
    give(t, &t->wr_busy);
    return rc;
}

int rn__tls_shutdown_write(rn_conn *c, int64_t deadline)
{
    struct rn__tls *t = c->tls;
    int rc = rn__tls_handshake(c, deadline, "shutdown_write");
    if (rc < 0)
        return rc;
    if (t->fatal)
        return sticky(t);
    rc = take(t, &t->wr_busy, deadline);
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
    rc = flush_locked(t, deadline);
    give(t, &t->wr_busy);
    return rc;
}

void rn__tls_close(rn_conn *c)
{
    struct rn__tls *t = c->tls;
    /* Best effort and bounded: skipped when there is no session to close,
     * or a write is in progress (its record may be half-sent; close_notify
     * cannot go after it). */
    if (!t || !t->hs_done || t->fatal || t->wr_busy || c->f.closing)
        return;
    t->wr_busy = true;
    if (!t->sent_close_notify) {
        t->sent_close_notify = true;
        (void)wolfSSL_shutdown(t->ssl);
    }
    (void)flush_locked(t, rn__deadline_after_ms(CLOSE_NOTIFY_MS));
    give(t, &t->wr_busy);
}
