/* server.c - rn_server: listen, accept (EMFILE-safe), address, close. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_BACKLOG          4096 /* the kernel caps it at net.core.somaxconn */
#define ACCEPT_BACKOFF_MAX_MS   500
#define ACCEPT_BACKOFF_SLICE_MS 50 /* how soon a close notices a backing-off accept */

static int listen_common(rn_server **out, const char *host, int port, bool reuseport,
                         const struct rn__accept_hook *hook, const char *what)
{
    if (!out)
        return rn__err(-EINVAL, "%s: out is NULL", what);
    *out = NULL;
    if (!host || !*host)
        host = "0.0.0.0";
    if (port < 0 || port > 65535)
        return rn__err(-EINVAL, "%s on %s: port %d is outside 0..65535", what, host, port);
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();

    struct sockaddr_storage *addrs;
    size_t n;
    int rc = rn__resolve_all(loop, host, port, rn__connect_deadline(), &addrs, &n);
    if (rc < 0)
        return rc;
    struct sockaddr_storage sa = addrs[0];
    free(addrs);
    socklen_t salen =
        sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);

    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return rn__err(-errno, "%s on %s:%d: socket: %s", what, host, port, rn_strerror(-errno));
    int one = 1;
    /* SO_REUSEADDR: a restarted server binds at once despite TIME_WAIT. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)) {
        rc = -errno;
        close(fd);
        return rn__err(rc, "%s on %s:%d: setsockopt: %s", what, host, port, rn_strerror(rc));
    }
    if (bind(fd, (struct sockaddr *)&sa, salen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        rc = -errno;
        close(fd);
        return rn__err(rc, "%s on %s:%d: %s", what, host, port, rn_strerror(rc));
    }
    rn_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return rn__err(-ENOMEM, "%s: out of memory", what);
    }
    s->f.fd = fd;
    s->loop = loop;
    if (hook)
        s->hook = *hook;
    rc = loop->bk->fd_open(loop, &s->f);
    if (rc < 0) {
        close(fd);
        free(s);
        return rn__err(rc, "%s: cannot register the listener: %s", what, rn_strerror(rc));
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        rn__addr_format((struct sockaddr *)&bound, s->addr, sizeof s->addr);
    *out = s;
    return 0;
}

int rn__listen(rn_server **out, const char *host, int port, const struct rn__accept_hook *hook,
               const char *what)
{
    return listen_common(out, host, port, false, hook, what);
}

RN_EXPORT int rn_tcp_listen(rn_server **out, const char *host, int port)
{
    return listen_common(out, host, port, false, NULL, "tcp_listen");
}

RN_EXPORT int rn_tcp_listen_reuseport(rn_server **out, const char *host, int port)
{
    return listen_common(out, host, port, true, NULL, "tcp_listen_reuseport");
}

RN_EXPORT const char *rn_server_addr(const rn_server *s)
{
    return s ? s->addr : "";
}

static int server_enter(rn_server *s, const char *what)
{
    if (!s)
        return rn__err(-EINVAL, "%s: the server is NULL", what);
    if (rn__loop_peek() != s->loop)
        return rn__err(-EXDEV, "%s: the server belongs to another thread", what);
    if (s->f.closing)
        return rn__err(RN_ECLOSED, "%s: the server is closed", what);
    s->calls++;
    return 0;
}

static void server_leave(rn_server *s)
{
    if (--s->calls == 0 && s->close_waiter)
        rn__task_wake(s->loop, s->close_waiter);
}

/* Out of descriptors: wait, in slices so a close is noticed soon, and let
 * the clients wait in the backlog. Retrying at once would spin: the
 * listener stays readable while the queue is not empty. */
static void accept_backoff(rn_server *s, int64_t ms)
{
    s->loop->stats.accept_backoffs++;
    while (ms > 0 && !s->f.closing) {
        int64_t slice = ms < ACCEPT_BACKOFF_SLICE_MS ? ms : ACCEPT_BACKOFF_SLICE_MS;
        rn_sleep(slice);
        ms -= slice;
    }
}

RN_EXPORT int rn_server_accept(rn_server *s, rn_conn **out)
{
    if (!out)
        return rn__err(-EINVAL, "accept: out is NULL");
    *out = NULL;
    int rc = server_enter(s, "accept");
    if (rc < 0)
        return rc;
    int64_t backoff = 1;
    for (;;) {
        struct rn__op op = {.kind = RN__OP_ACCEPT, .f = &s->f};
        int r = rn__op_wait(s->loop, &op);
        if (r >= 0 && s->f.closing) {
            /* Taken from the kernel just before a close or a drain began:
             * no new connection after that. */
            close(r);
            r = RN_ECLOSED;
        }
        if (r >= 0) {
            rc = rn__conn_new(s->loop, r, true, out);
            if (rc == 0)
                rn__server_track(s, *out); /* before the hook: a drain can reset it */
            /* Format the peer's address now: once the peer resets, the
             * socket has none left to ask for, and the error sentences
             * would name nobody ("read on : Connection reset by peer"). */
            if (rc == 0)
                (void)rn_conn_remote_addr(*out);
            if (rc == 0 && s->hook.on_accept) {
                rc = s->hook.on_accept(*out, s->hook.data);
                if (rc < 0) {
                    rn__conn_destroy(*out);
                    *out = NULL;
                }
            }
            break;
        }
        if (r == -EMFILE || r == -ENFILE || r == -ENOBUFS || r == -ENOMEM) {
            /* No sentence: the call goes on and may well succeed, and a
             * successful call leaves rn_last_error() as it was (the header's
             * promise). The back-off is counted in rn_loop_stats. */
            accept_backoff(s, backoff);
            backoff = backoff * 2 > ACCEPT_BACKOFF_MAX_MS ? ACCEPT_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        /* A client that left before we took it, or a signal: not our error. */
        if (r == -ECONNABORTED || r == -EINTR || r == -EPROTO || r == -EPERM || r == -EAGAIN)
            continue;
        rc = r == RN_ECLOSED ? rn__err(r, "accept: the server was closed")
                             : rn__err(r, "accept on %s: %s", s->addr, rn_strerror(r));
        break;
    }
    server_leave(s);
    return rc;
}

RN_EXPORT int rn_server_close(rn_server *s)
{
    if (!s)
        return 0;
    if (rn__loop_peek() != s->loop)
        return rn__err(-EXDEV, "server_close: the server belongs to another thread");
    if (s->f.closing)
        return rn__err(RN_ECLOSED, "server_close: already being closed");
    rn__fd_close(s->loop, &s->f);
    while (s->calls > 0) {
        s->close_waiter = s->loop->current;
        rn__task_park(s->loop);
    }
    rn__server_forget_all(s); /* its connections live on, untracked */
    if (s->hook.release)
        s->hook.release(s->hook.data);
    free(s);
    return 0;
}
