/* session.c - one TLS session over a connection: wolfSSL reads and writes
 * only memory, and the connection's transport moves the ciphertext. Here:
 * wolfSSL's I/O callbacks, the session's lifetime, its errors, and the
 * handshake; record I/O (the stream operations) is in io.c.
 *
 * wolfSSL's recv callback hands out bytes of `in` or WANT_READ; its send
 * callback appends to `q` and never returns WANT_WRITE (that path makes
 * wolfSSL re-send records). */
#include "tls.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- wolfSSL's I/O callbacks --------------------------------------------- */

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
void rn__tls_outbuf_free(struct rn__tls *t, struct rn__tls_buf *b)
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

/* ---- errors -------------------------------------------------------------- */

const char *rn__tls_peer(struct rn__tls *t)
{
    return t->host[0] ? t->host : rn_conn_remote_addr(t->c);
}

struct rn__tls_diag *rn__tls_diag(struct rn__tls *t)
{
    if (!t->diag)
        t->diag = calloc(1, sizeof *t->diag);
    return t->diag;
}

/* The sticky failure's sentence (a fixed one when there was no memory to
 * keep it). */
static const char *fatal_msg(struct rn__tls *t)
{
    return t->diag && t->diag->fatal_msg[0]
               ? t->diag->fatal_msg
               : "tls: the session failed (out of memory for its message)";
}

int rn__tls_fail(struct rn__tls *t, int code, const char *fmt, ...)
{
    struct rn__tls_diag *d = rn__tls_diag(t);
    if (d) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->fatal_msg, sizeof d->fatal_msg, fmt, ap);
        va_end(ap);
    }
    t->fatal = code;
    return rn__err(code, "%s", fatal_msg(t));
}

int rn__tls_sticky(struct rn__tls *t)
{
    return rn__err(t->fatal, "%s", fatal_msg(t));
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

int rn__tls_wolf_fail(struct rn__tls *t, int ret, const char *what)
{
    int err = wolfSSL_get_error(t->ssl, ret);
    char why[400];
    if (rn__tls_is_verify_error(t, err)) {
        rn__tls_verify_message(t, err, why, sizeof why);
        return rn__tls_fail(t, RN_ETLS_VERIFY, "%s with %s: %s", what, rn__tls_peer(t), why);
    }
    WOLFSSL_ALERT_HISTORY h;
    if (err == FATAL_ERROR && wolfSSL_get_alert_history(t->ssl, &h) == WOLFSSL_SUCCESS &&
        h.last_rx.code > 0) {
        int code = h.last_rx.code;
        /* handshake_failure, illegal_parameter, insufficient_security in a
         * handshake: most often a peer that takes nothing we offer (one
         * that offers only P-521, say: we pick none, or it refuses ours). */
        bool offer = !t->hs_done && (code == 40 || code == 47 || code == 71);
        snprintf(why, sizeof why, "the peer sent the fatal alert \"%s\" (%d)%s", alert_name(code),
                 code,
                 offer ? " during the handshake; ringnet offers and accepts only TLS 1.2 and 1.3, "
                         "AEAD suites with forward secrecy and the key exchange groups X25519, "
                         "P-256 and P-384: the peer may support none of them"
                       : "");
    } else {
        char eb[160];
        wolfSSL_ERR_error_string_n((unsigned long)err, eb, sizeof eb);
        snprintf(why, sizeof why, "%s (wolfSSL error %d)", eb, err);
    }
    return rn__tls_fail(t, RN_ETLS, "%s with %s: %s", what, rn__tls_peer(t), why);
}

/* ---- session lifetime ---------------------------------------------------- */

static bool is_ip_literal(const char *host)
{
    unsigned char b[16];
    return inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1;
}

/* A wolfSSL session for t under cfg: SNI, the name to verify and a cached
 * session to offer (clients), ALPN. NULL with *failed saying what. */
static WOLFSSL *new_ssl(struct rn__tls *t, rn_tls_config *cfg, const char **failed)
{
    WOLFSSL *ssl = wolfSSL_new(cfg->ctx);
    *failed = NULL;
    if (!ssl) {
        *failed = "making a session (out of memory)";
        return NULL;
    }
    wolfSSL_SetIOReadCtx(ssl, t);
    wolfSSL_SetIOWriteCtx(ssl, t);
    if (!t->server) {
        const char *host = t->host;
        if (t->host_is_ip) {
            /* No SNI for addresses (RFC 6066); the certificate must carry
             * the address as an IP subjectAltName. */
            if (wolfSSL_X509_VERIFY_PARAM_set1_ip_asc(wolfSSL_get0_param(ssl), host) !=
                WOLFSSL_SUCCESS)
                *failed = "setting the IP address to verify";
        } else {
            if (wolfSSL_check_domain_name(ssl, host) != WOLFSSL_SUCCESS)
                *failed = "setting the host name to verify";
            else if (wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, host, (word16)strlen(host)) !=
                     WOLFSSL_SUCCESS)
                *failed = "setting SNI";
        }
    }
    if (!*failed && cfg->alpn &&
        wolfSSL_UseALPN(ssl, cfg->alpn, (word32)strlen(cfg->alpn),
                        WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS)
        *failed = "setting ALPN";
    if (*failed) {
        wolfSSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* The peer's port, for the session cache's key; 0 if unknown. */
static int peer_port(rn_conn *c)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getpeername(c->f.fd, (struct sockaddr *)&sa, &len) < 0)
        return 0;
    if (sa.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&sa)->sin_port);
    if (sa.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    return 0;
}

int rn__tls_session_attach(rn_conn *c, rn_tls_config *cfg, const char *host, bool server)
{
    rn__tls_thread_used();
    size_t hl = server ? 0 : strlen(host);
    if (hl > RN_TLS_MAX_HOST)
        return rn__err(-EINVAL, "tls: the host name is too long (%zu bytes, at most %d)", hl,
                       RN_TLS_MAX_HOST);
    struct rn__tls *t = calloc(1, sizeof *t + hl + 1);
    if (!t)
        return rn__err(-ENOMEM, "tls: out of memory for a session");
    t->c = c;
    t->server = server;
    if (!server) {
        memcpy(t->host, host, hl + 1);
        t->host_is_ip = is_ip_literal(host);
        t->port = peer_port(c);
    }
    const char *failed;
    t->ssl = new_ssl(t, cfg, &failed);
    if (!t->ssl) {
        free(t);
        return rn__err(strstr(failed, "memory") ? -ENOMEM
                       : server                 ? RN_ETLS
                                                : -EINVAL,
                       "tls: %s%s%s failed", failed, server ? "" : " for ", server ? "" : host);
    }
    rn__tls_config_ref(cfg);
    t->cfg = cfg;
    if (!server)
        rn__tls_resume_offer(t);
    c->layer = t;
    c->ops = &rn__tls_ops;
    return 0;
}

/* A server session accepted by a listener whose config was replaced since
 * (rn_server_set_tls_config): before its handshake begins, it takes the
 * new config. Once begun, a handshake keeps the config it began with. */
static int catch_up(struct rn__tls *t, const char *what)
{
    struct rn__tls_listener *l = t->listener;
    t->listener = NULL;
    pthread_mutex_lock(&l->mu);
    rn_tls_config *cfg = l->cfg;
    rn__tls_config_ref(cfg);
    pthread_mutex_unlock(&l->mu);
    rn__tls_listener_unref(l);
    int rc = 0;
    if (cfg != t->cfg) {
        const char *failed;
        WOLFSSL *ssl = new_ssl(t, cfg, &failed);
        if (ssl) {
            wolfSSL_free(t->ssl);
            t->ssl = ssl;
            rn__tls_config_unref(t->cfg);
            t->cfg = cfg;
            cfg = NULL;
        } else {
            rc = rn__tls_fail(t, strstr(failed, "memory") ? -ENOMEM : RN_ETLS, "%s: %s failed",
                              what, failed);
        }
    }
    rn__tls_config_unref(cfg);
    return rc;
}

void rn__tls_free(rn_conn *c)
{
    struct rn__tls *t = rn__tls_of(c);
    if (!t)
        return;
    wolfSSL_free(t->ssl);
    if (t->listener)
        rn__tls_listener_unref(t->listener);
    rn__lend_release(c->loop, t->in.p);
    rn__tls_outbuf_free(t, &t->q);
    rn__tls_outbuf_free(t, &t->tx);
    rn__tls_config_unref(t->cfg);
    free(t->diag);
    free(t);
    c->layer = NULL;
    c->ops = &rn__plain_ops;
}

/* ---- handshake ----------------------------------------------------------- */

static int hs_io_error(struct rn__tls *t, int err, const char *what)
{
    if (err == -ETIMEDOUT)
        return rn__err(err, "%s: the TLS handshake with %s did not finish before the deadline",
                       what, rn__tls_peer(t));
    if (err == RN_ECLOSED)
        return rn__err(err, "%s: the connection was closed during the TLS handshake", what);
    return rn__err(err, "%s: TLS handshake with %s: %s", what, rn__tls_peer(t), rn_strerror(err));
}

static int handshake_locked(struct rn__tls *t, int64_t deadline, const char *what)
{
    for (;;) {
        if (t->hs_done)
            return 0; /* another task finished it while this one waited */
        if (t->fatal)
            return rn__tls_sticky(t);
        if (t->listener && catch_up(t, what) < 0)
            return rn__tls_sticky(t);
        int r = t->server ? wolfSSL_accept(t->ssl) : wolfSSL_connect(t->ssl);
        int err = r == WOLFSSL_SUCCESS ? 0 : wolfSSL_get_error(t->ssl, r);
        if (err != 0 && err != WOLFSSL_ERROR_WANT_READ) {
            int code = rn__tls_wolf_fail(t, r, what);
            /* Let the peer see the alert wolfSSL queued, briefly. */
            int64_t soon = rn__deadline_after_ms(CLOSE_NOTIFY_MS);
            (void)rn__tls_flush_locked(t, deadline && deadline < soon ? deadline : soon);
            return rn__err(code, "%s", fatal_msg(t));
        }
        int fr = rn__tls_flush_locked(t, deadline);
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
            t->resumed = wolfSSL_session_reused(t->ssl) == 1;
            t->hs_done = true;
            /* The handshake's secrets and scratch (Arrays, 3.4 KB, and the
             * pre-master buffer, 2 KB, zeroed as they go): wolfSSL keeps
             * them past a TLS 1.3 handshake in builds with post-handshake
             * authentication (Debian's), which ringnet never asks for.
             * The resumption secret is derived by now and tickets are
             * sealed from the session; post-handshake messages (tickets,
             * KeyUpdate) are read without them. */
            wolfSSL_FreeArrays(t->ssl);
            /* The handshake's deep wolfSSL frames touched tens of KiB of
             * this task's stack that an idle connection would keep. */
            rn__task_trim_stack(t->c->loop);
            return 0;
        }
        ssize_t got = rn__tls_fill_locked(t, deadline);
        if (got < 0)
            return hs_io_error(t, (int)got, what);
        if (got == 0)
            return rn__tls_fail(t, RN_ETLS, "%s: %s closed the connection during the TLS handshake",
                                what, rn__tls_peer(t));
    }
}

int rn__tls_handshake(rn_conn *c, int64_t deadline, const char *what)
{
    struct rn__tls *t = rn__tls_of(c);
    if (t->hs_done)
        return 0;
    if (t->fatal)
        return rn__tls_sticky(t);
    int rc = rn__tls_take(t, &t->rd_busy, deadline);
    if (rc < 0)
        return rc == -ETIMEDOUT ? hs_io_error(t, rc, what) : rc;
    rc = rn__tls_take(t, &t->wr_busy, deadline);
    if (rc == 0) {
        rc = handshake_locked(t, deadline, what);
        rn__tls_give(t, &t->wr_busy);
    } else if (rc == -ETIMEDOUT) {
        rc = hs_io_error(t, rc, what);
    }
    rn__tls_give(t, &t->rd_busy);
    return rc;
}
