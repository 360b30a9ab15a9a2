/* sockets.c - socket options of a connection (TCP_NODELAY, keepalive) and
 * rn_conn_abort, the reset instead of an orderly close. */
#include "api.h"

#include <netinet/tcp.h>

/* Linux's bounds (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT). */
#define KEEPIDLE_MAX  32767
#define KEEPINTVL_MAX 32767
#define KEEPCNT_MAX   127

static int set_opt(rn_conn *c, int level, int name, int value, const char *what, const char *opt)
{
    if (setsockopt(c->f.fd, level, name, &value, sizeof value) == 0)
        return 0;
    int err = -errno;
    return rn__err(err, "%s on %s: setsockopt %s=%d: %s", what, rn_conn_remote_addr(c), opt, value,
                   rn_strerror(err));
}

RN_EXPORT int rn_conn_set_nodelay(rn_conn *c, bool on)
{
    int rc = rn__conn_enter(c, "set_nodelay");
    if (rc < 0)
        return rc;
    rc = set_opt(c, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0, "set_nodelay", "TCP_NODELAY");
    rn__conn_leave(c);
    return rc;
}

static int keepalive_args(int idle_s, int interval_s, int count)
{
    const char *what = "set_keepalive";
    if (idle_s < 0 || interval_s < 0 || count < 0)
        return rn__err(-EINVAL, "%s: %s is negative (idle_s %d, interval_s %d, count %d)", what,
                       idle_s < 0       ? "idle_s"
                       : interval_s < 0 ? "interval_s"
                                        : "count",
                       idle_s, interval_s, count);
    if (idle_s == 0)
        return 0; /* off: the others are not used */
    if (idle_s > KEEPIDLE_MAX)
        return rn__err(-EINVAL, "%s: idle_s %d is outside 1..%d", what, idle_s, KEEPIDLE_MAX);
    if (interval_s < 1 || interval_s > KEEPINTVL_MAX)
        return rn__err(-EINVAL, "%s: interval_s %d is outside 1..%d", what, interval_s,
                       KEEPINTVL_MAX);
    if (count < 1 || count > KEEPCNT_MAX)
        return rn__err(-EINVAL, "%s: count %d is outside 1..%d", what, count, KEEPCNT_MAX);
    return 0;
}

RN_EXPORT int rn_conn_set_keepalive(rn_conn *c, int idle_s, int interval_s, int count)
{
    const char *what = "set_keepalive";
    int rc = rn__conn_enter(c, what);
    if (rc < 0)
        return rc;
    if ((rc = keepalive_args(idle_s, interval_s, count)) == 0) {
        if (idle_s == 0) {
            rc = set_opt(c, SOL_SOCKET, SO_KEEPALIVE, 0, what, "SO_KEEPALIVE");
        } else if ((rc = set_opt(c, IPPROTO_TCP, TCP_KEEPIDLE, idle_s, what, "TCP_KEEPIDLE")) ==
                       0 &&
                   (rc = set_opt(c, IPPROTO_TCP, TCP_KEEPINTVL, interval_s, what,
                                 "TCP_KEEPINTVL")) == 0 &&
                   (rc = set_opt(c, IPPROTO_TCP, TCP_KEEPCNT, count, what, "TCP_KEEPCNT")) == 0) {
            /* The timings first: keepalive starts with the ones asked for. */
            rc = set_opt(c, SOL_SOCKET, SO_KEEPALIVE, 1, what, "SO_KEEPALIVE");
        }
    }
    rn__conn_leave(c);
    return rc;
}

RN_EXPORT int rn_conn_abort(rn_conn *c)
{
    if (!c)
        return 0;
    if (c->detached) { /* any thread may close it (api/move.c) */
        rn__conn_close_detached(c, true);
        return 0;
    }
    if (rn__loop_peek() != c->loop)
        return rn__err(-EXDEV, "abort: the connection belongs to another thread");
    if (c->detaching) {
        rn__conn_wait_detach(c); /* the detach gives way, c stays this thread's */
        if (c->destroying)
            return rn__err(RN_ECLOSED, "abort: the connection is already being closed");
    }
    if (c->destroying)
        return rn__err(RN_ECLOSED, "abort: the connection is already being closed");
    /* l_linger 0: close(2) drops what is unsent and sends RST at once; it
     * never waits (only l_linger > 0 makes close block). */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (c->f.fd >= 0)
        (void)setsockopt(c->f.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    c->no_goodbye = true;
    rn__conn_destroy(c); /* cancels blocked calls, waits for them, closes, frees */
    return 0;
}
