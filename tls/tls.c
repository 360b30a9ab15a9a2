/* tls.c - the public TLS calls: connect, STARTTLS on both sides, listen,
 * the deferred server handshake, ALPN. Sessions and configs live in
 * session.c and config.c. */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>

/* The config a client call uses, with a reference the caller drops. */
static int client_config(const rn_tls_config *given, rn_tls_config **out, const char *what)
{
    rn_tls_config *cfg = (rn_tls_config *)given;
    if (cfg) {
        if (cfg->server)
            return rn__err(-EINVAL,
                           "%s: a server config cannot verify servers (use rn_tls_client_config)",
                           what);
        rn__tls_config_ref(cfg);
    } else {
        cfg = rn__tls_default_client();
        if (!cfg)
            return RN_ETLS;
    }
    int rc = rn__tls_config_use(cfg, what);
    if (rc < 0) {
        rn__tls_config_unref(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

RN_EXPORT int rn_tls_connect_with(rn_conn **out, const char *host, int port,
                                  const rn_tls_config *given)
{
    int64_t deadline = rn__connect_deadline(); /* one bound: resolve, connect, handshake */
    if (!out)
        return rn__err(-EINVAL, "tls_connect: out is NULL");
    *out = NULL;
    rn_tls_config *cfg = NULL; /* set when client_config succeeds; GCC -O3 cannot tell */
    int rc = client_config(given, &cfg, "tls_connect");
    if (rc < 0)
        return rc;
    rn_conn *c = NULL;
    rc = rn__connect(&c, host, port, deadline, "tls_connect");
    if (rc == 0)
        rc = rn__tls_session_attach(c, cfg, host, false);
    if (rc == 0) {
        rc = rn__tls_handshake(c, deadline, "tls_connect");
        if (rc == -ETIMEDOUT)
            rc = rn__err(rc,
                         "tls_connect to %s port %d: "
                         "the TLS handshake did not finish within the connect timeout",
                         host, port);
    }
    rn__tls_config_unref(cfg); /* the session holds its own */
    if (rc < 0) {
        if (c)
            rn__conn_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

RN_EXPORT int rn_tls_connect(rn_conn **out, const char *host, int port)
{
    return rn_tls_connect_with(out, host, port, NULL);
}

/* What STARTTLS on either side refuses: a connection that is TLS already,
 * or one whose plaintext from before the upgrade point the library still
 * holds (it would be taken as protected: CVE-2011-0411). */
static int starttls_check(rn_conn *c, const char *what)
{
    if (rn__tls_of(c))
        return rn__err(RN_ETLS, "%s: the connection is TLS already", what);
    size_t kept = rn__conn_kept(c);
    if (kept > 0)
        return rn__err(
            RN_ETLS,
            "%s refused: %zu bytes of plaintext received before the upgrade are still unread; "
            "they would be mistaken for protected data",
            what, kept);
    return 0;
}

RN_EXPORT int rn_conn_upgrade_to_tls_with(rn_conn *c, const char *host, const rn_tls_config *given)
{
    const char *what = "upgrade_to_tls";
    int rc = rn__conn_enter(c, what);
    if (rc < 0)
        return rc;
    rn_tls_config *cfg = NULL;
    if (!host || !*host) {
        rc = rn__err(-EINVAL, "%s: host is NULL or empty", what);
        goto out;
    }
    if ((rc = starttls_check(c, what)) < 0)
        goto out;
    /* A server says nothing between its go-ahead and our ClientHello, so
     * bytes waiting now were sent past the upgrade point: injected
     * plaintext (CVE-2021-23222 in libpq). */
    /* Bytes the engine already took off the socket for a read to come
     * (io_uring's stream reads) count the same. */
    size_t waiting = rn__conn_pending(c);
    if (waiting > 0) {
        rc = rn__err(
            RN_ETLS,
            "%s refused: %zu bytes arrived from %s after its go-ahead and before our ClientHello; "
            "plaintext there is never taken as protected",
            what, waiting, rn_conn_remote_addr(c));
        goto out;
    }
    if ((rc = client_config(given, &cfg, what)) < 0)
        goto out;
    rc = rn__tls_session_attach(c, cfg, host, false);
    rn__tls_config_unref(cfg);
    /* On failure the connection stays TLS (and failed): it never falls
     * back to plaintext. */
    if (rc == 0)
        rc = rn__tls_handshake(c, rn__conn_io_deadline(c), what);
out:
    rn__conn_leave(c);
    return rc;
}

RN_EXPORT int rn_conn_upgrade_to_tls(rn_conn *c, const char *host)
{
    return rn_conn_upgrade_to_tls_with(c, host, NULL);
}

static int server_config(const rn_tls_config *cfg, const char *what)
{
    if (!cfg)
        return rn__err(-EINVAL, "%s: server_cfg is NULL", what);
    if (!cfg->server)
        return rn__err(-EINVAL,
                       "%s: a client config has no certificate to serve (use rn_tls_server_config)",
                       what);
    return rn__tls_config_use((rn_tls_config *)cfg, what);
}

/* ---- listeners and rotation --------------------------------------------- */

void rn__tls_listener_unref(struct rn__tls_listener *l)
{
    if (!l || atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    rn__tls_config_unref(l->cfg);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* The accept hook of a TLS listener. The session starts with the config
 * current now and keeps a reference on the listener, so that a rotation
 * before its handshake begins still reaches it (session.c). The handshake
 * waits for the first read, write or rn_conn_handshake: a silent client
 * must not hold up the accept loop. */
static int listener_accept(rn_conn *c, void *data)
{
    struct rn__tls_listener *l = data;
    pthread_mutex_lock(&l->mu);
    rn_tls_config *cfg = l->cfg;
    rn__tls_config_ref(cfg);
    pthread_mutex_unlock(&l->mu);
    int rc = rn__tls_session_attach(c, cfg, NULL, true);
    rn__tls_config_unref(cfg); /* the session holds its own */
    if (rc == 0) {
        atomic_fetch_add(&l->refs, 1);
        rn__tls_of(c)->listener = l;
    }
    return rc;
}

static void listener_release(void *data)
{
    rn__tls_listener_unref(data); /* rn_tls_listen's reference */
}

RN_EXPORT int rn_tls_listen(rn_server **out, const char *host, int port, const rn_tls_config *cfg)
{
    if (out)
        *out = NULL;
    int rc = server_config(cfg, "tls_listen");
    if (rc < 0)
        return rc;
    struct rn__tls_listener *l = calloc(1, sizeof *l);
    if (!l)
        return rn__err(-ENOMEM, "tls_listen: out of memory");
    atomic_init(&l->refs, 1);
    pthread_mutex_init(&l->mu, NULL);
    rn__tls_config_ref((rn_tls_config *)cfg); /* dropped with the listener */
    l->cfg = (rn_tls_config *)cfg;
    struct rn__accept_hook hook = {
        .on_accept = listener_accept, .release = listener_release, .data = l};
    rc = rn__listen(out, host, port, &hook, "tls_listen");
    if (rc < 0)
        rn__tls_listener_unref(l);
    return rc;
}

RN_EXPORT int rn_server_set_tls_config(rn_server *s, const rn_tls_config *cfg)
{
    const char *what = "server_set_tls_config";
    if (!s)
        return rn__err(-EINVAL, "%s: the server is NULL", what);
    if (s->hook.on_accept != listener_accept)
        return rn__err(-EINVAL, "%s: the server was not made by rn_tls_listen", what);
    if (!cfg)
        return rn__err(-EINVAL, "%s: cfg is NULL", what);
    int rc = server_config(cfg, what);
    if (rc < 0)
        return rc;
    struct rn__tls_listener *l = s->hook.data;
    rn__tls_config_ref((rn_tls_config *)cfg);
    pthread_mutex_lock(&l->mu);
    rn_tls_config *old = l->cfg;
    l->cfg = (rn_tls_config *)cfg;
    pthread_mutex_unlock(&l->mu);
    rn__tls_config_unref(old); /* sessions using it hold their own */
    return 0;
}

RN_EXPORT int rn_conn_accept_tls(rn_conn *c, const rn_tls_config *cfg)
{
    const char *what = "accept_tls";
    int rc = rn__conn_enter(c, what);
    if (rc < 0)
        return rc;
    if ((rc = server_config(cfg, what)) == 0 && (rc = starttls_check(c, what)) == 0 &&
        (rc = rn__tls_session_attach(c, (rn_tls_config *)cfg, NULL, true)) == 0)
        rc = rn__tls_handshake(c, rn__conn_io_deadline(c), what);
    rn__conn_leave(c);
    return rc;
}

RN_EXPORT int rn_conn_handshake(rn_conn *c)
{
    int rc = rn__conn_enter(c, "handshake");
    if (rc < 0)
        return rc;
    if (rn__tls_of(c))
        rc = rn__tls_handshake(c, rn__conn_io_deadline(c), "handshake");
    rn__conn_leave(c);
    return rc;
}

RN_EXPORT const char *rn_conn_alpn(const rn_conn *c)
{
    struct rn__tls *t = c ? rn__tls_of(c) : NULL;
    if (!t || !t->hs_done || !t->alpn[0])
        return NULL;
    return t->alpn;
}

RN_EXPORT bool rn_conn_is_tls(const rn_conn *c)
{
    return c && rn__tls_of(c);
}
