/* conn.c - rn_conn: connect, read, write, deadlines, addresses, close. A
 * call checks the handle and runs the connection's stream operations: the
 * plain ones here build one engine op on the caller's stack and park on it;
 * a stream layer (tls/) brings its own table and moves its bytes through
 * the transport helpers below. */
#include "api.h"

#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static __thread int64_t tl_connect_ms = 30000;

int64_t rn__connect_deadline(void)
{
    return rn__deadline_after_ms(tl_connect_ms);
}

RN_EXPORT void rn_set_connect_timeout(int64_t ms)
{
    tl_connect_ms = ms > 0 ? ms : 0;
}

/* ---- handle bookkeeping -------------------------------------------------- */

/* Why rn__conn_enter refuses c (here: this thread's loop, or NULL). */
static int enter_refused(rn_conn *c, struct rn__loop *here, const char *what)
{
    if (c->detached)
        return rn__err(-EXDEV,
                       "%s: the connection is detached (rn_conn_detach): it belongs to no thread "
                       "until rn_conn_attach",
                       what);
    if (here != c->loop)
        return rn__err(-EXDEV, "%s: the connection belongs to another thread", what);
    if (c->detaching)
        return rn__err(-EXDEV, "%s: the connection is being detached by another task", what);
    if (c->reset)
        return rn__err(RN_ECLOSED, "%s: the connection was reset by its server's drain", what);
    return rn__err(RN_ECLOSED, "%s: the connection is closed", what);
}

int rn__conn_enter(rn_conn *c, const char *what)
{
    if (!c)
        return rn__err(-EINVAL, "%s: the connection is NULL", what);
    /* One test on the way in; the reasons in order when it fails. A
     * detached connection has no loop, and a thread with none (NULL) must
     * not match it. */
    struct rn__loop *here = rn__loop_peek();
    if (RN_UNLIKELY(here != c->loop || !here || c->detaching || c->reset || c->f.closing))
        return enter_refused(c, here, what);
    c->calls++;
    return 0;
}

void rn__conn_leave(rn_conn *c)
{
    if (--c->calls == 0 && c->close_waiter)
        rn__task_wake(c->loop, c->close_waiter);
}

int rn__conn_new(struct rn__loop *loop, int fd, bool accepted, rn_conn **out)
{
    rn_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return rn__err(-ENOMEM, "out of memory for a connection");
    }
    c->f.fd = fd;
    c->f.nonblock = accepted && loop->bk->accepts_nonblock;
    c->ops = &rn__plain_ops;
    c->loop = loop;
    int rc = loop->bk->fd_open(loop, &c->f);
    if (rc < 0) {
        close(fd);
        free(c);
        return rn__err(rc, "cannot register a connection with the %s backend: %s", loop->bk->name,
                       rn_strerror(rc));
    }
    /* Small writes go out at once, as Go and nginx do for request/response
     * traffic; write_all of large buffers is unaffected. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *out = c;
    return 0;
}

void rn__conn_destroy(rn_conn *c)
{
    c->destroying = true;
    /* No goodbye on a reset connection (rn_conn_abort, a drain's reset). */
    if (c->ops->close && !c->reset && !c->no_goodbye)
        c->ops->close(c);
    rn__fd_close(c->loop, &c->f);
    while (c->calls > 0) {
        c->close_waiter = c->loop->current;
        rn__task_park(c->loop);
    }
    rn__server_untrack(c); /* a drain waiting for it to close is woken */
    if (c->ops->free)
        c->ops->free(c); /* only now: the calls that just left were using it */
    rn__lend_release(c->loop, c->lent);
    free(c->kept);
    free(c->rx);
    free(c);
}

RN_EXPORT int rn_conn_close(rn_conn *c)
{
    if (!c)
        return 0;
    if (c->detached) { /* any thread may close it (api/move.c) */
        rn__conn_close_detached(c, false);
        return 0;
    }
    if (rn__loop_peek() != c->loop)
        return rn__err(-EXDEV, "close: the connection belongs to another thread");
    if (c->detaching) {
        rn__conn_wait_detach(c); /* the detach gives way, c stays this thread's */
        if (c->destroying)
            return rn__err(RN_ECLOSED, "close: the connection is already being closed");
    }
    /* A connection a drain reset is closed but not freed: its owner's close
     * frees it. */
    if (c->destroying)
        return rn__err(RN_ECLOSED, "close: the connection is already being closed");
    rn__conn_destroy(c);
    return 0;
}

static int io_error(rn_conn *c, const char *what, int err, unsigned mark);

RN_EXPORT int rn_conn_shutdown_write(rn_conn *c)
{
    int rc = rn__conn_enter(c, "shutdown_write");
    if (rc < 0)
        return rc;
    unsigned mark = rn__err_mark(c->loop);
    /* The stream layer's own end first (TLS: close_notify), so the peer
     * reads a clean end. */
    if (c->ops->shutdown_write &&
        (rc = c->ops->shutdown_write(c, rn__deadline_after_ms(c->wr_ms))) < 0) {
        /* Its flush returns bare codes: give them a sentence. */
        rc = io_error(c, "shutdown_write", rc, mark);
        rn__conn_leave(c);
        return rc;
    }
    if (shutdown(c->f.fd, SHUT_WR) < 0)
        rc = rn__err(-errno, "shutdown_write on %s: %s", rn_conn_remote_addr(c),
                     rn_strerror(-errno));
    rn__conn_leave(c);
    return rc;
}

/* ---- addresses and deadlines --------------------------------------------- */

static const char *conn_addr(const rn_conn *cc, bool remote)
{
    if (!cc)
        return "";
    rn_conn *c = (rn_conn *)cc; /* the text is a cache: formatted once */
    char *out = remote ? c->raddr : c->laddr;
    if (out[0] || c->f.fd < 0)
        return out;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int r = remote ? getpeername(c->f.fd, (struct sockaddr *)&ss, &len)
                   : getsockname(c->f.fd, (struct sockaddr *)&ss, &len);
    if (r == 0)
        rn__addr_format((struct sockaddr *)&ss, out, sizeof c->raddr);
    return out;
}

RN_EXPORT const char *rn_conn_remote_addr(const rn_conn *c)
{
    return conn_addr(c, true);
}

RN_EXPORT const char *rn_conn_local_addr(const rn_conn *c)
{
    return conn_addr(c, false);
}

RN_EXPORT void rn_conn_set_deadline(rn_conn *c, int64_t ms)
{
    if (c)
        c->rd_ms = c->wr_ms = ms > 0 ? ms : 0;
}

RN_EXPORT void rn_conn_set_read_deadline(rn_conn *c, int64_t ms)
{
    if (c)
        c->rd_ms = ms > 0 ? ms : 0;
}

RN_EXPORT void rn_conn_set_write_deadline(rn_conn *c, int64_t ms)
{
    if (c)
        c->wr_ms = ms > 0 ? ms : 0;
}

/* ---- transfers ----------------------------------------------------------- */

/* io_uring results are ints: keep one op under 1 GiB. */
#define OP_MAX ((size_t)1 << 30)

/* Serve a read from what a moved connection brought (c->rx): true with
 * *r (bytes, or the stream's last word once), false when it has nothing. */
static bool rx_serve(rn_conn *c, void *buf, size_t len, ssize_t *r)
{
    if (RN_LIKELY(!c->rx_len && !c->rx_has_end))
        return false;
    if (c->rx_len == 0) {
        c->rx_has_end = false;
        *r = c->rx_end;
        return true;
    }
    size_t n = c->rx_len < len ? c->rx_len : len;
    memcpy(buf, c->rx + c->rx_off, n);
    c->rx_off += n;
    c->rx_len -= n;
    if (c->rx_len == 0) { /* drained: the memory goes */
        free(c->rx);
        c->rx = NULL;
        c->rx_off = c->rx_cap = 0;
    }
    *r = (ssize_t)n;
    return true;
}

int rn__conn_unread(rn_conn *c, const void *buf, size_t n)
{
    if (n == 0)
        return 0;
    size_t need = n + c->rx_len;
    if (need > c->rx_cap || c->rx_off < n) {
        char *k = malloc(need);
        if (!k)
            return -ENOMEM;
        if (c->rx_len)
            memcpy(k + n, c->rx + c->rx_off, c->rx_len);
        free(c->rx);
        c->rx = k;
        c->rx_cap = need;
        c->rx_off = n;
    }
    c->rx_off -= n;
    memcpy(c->rx + c->rx_off, buf, n);
    c->rx_len = need;
    return 0;
}

ssize_t rn__conn_recv(rn_conn *c, void *buf, size_t len, int64_t deadline)
{
    ssize_t got;
    if (RN_UNLIKELY(rx_serve(c, buf, len, &got)))
        return got;
    if (len > OP_MAX)
        len = OP_MAX;
    struct rn__op op = {
        .kind = RN__OP_RECV, .f = &c->f, .buf = buf, .len = len, .deadline = deadline};
    return rn__op_wait(c->loop, &op);
}

ssize_t rn__conn_recv_lent(rn_conn *c, void **buf, int64_t deadline)
{
    if (RN_UNLIKELY(c->rx_len || c->rx_has_end)) {
        void *b = c->rx_len ? rn__lend_alloc(c->loop) : NULL;
        if (c->rx_len && !b) {
            *buf = NULL;
            return -ENOMEM;
        }
        ssize_t got = 0; /* rx_serve sets it: the test above is its own */
        (void)rx_serve(c, b, RN__LEND_SIZE, &got);
        if (got <= 0) {
            rn__lend_release(c->loop, b);
            b = NULL;
        }
        *buf = b;
        return got;
    }
    struct rn__op op = {
        .kind = RN__OP_RECV, .lend = true, .f = &c->f, .len = RN__LEND_SIZE, .deadline = deadline};
    int r = rn__op_wait(c->loop, &op);
    if (r > 0) {
        *buf = op.buf;
    } else {
        rn__lend_release(c->loop, op.buf);
        *buf = NULL;
    }
    return r;
}

ssize_t rn__conn_send(rn_conn *c, const void *buf, size_t len, int64_t deadline)
{
    struct rn__op op = {.kind = RN__OP_SEND,
                        .f = &c->f,
                        .buf = (void *)buf,
                        .len = len < OP_MAX ? len : OP_MAX,
                        .deadline = deadline};
    return rn__op_wait(c->loop, &op);
}

int rn__conn_send_all(rn_conn *c, const void *buf, size_t len, int64_t deadline, size_t *sent)
{
    const char *p = buf;
    size_t done = 0;
    int rc = 0;
    while (done < len) {
        ssize_t r = rn__conn_send(c, p + done, len - done, deadline);
        if (r < 0) {
            rc = (int)r;
            break;
        }
        done += (size_t)r;
    }
    if (sent)
        *sent = done;
    return rc;
}

size_t rn__conn_pending(rn_conn *c)
{
    int waiting = 0;
    if (ioctl(c->f.fd, FIONREAD, &waiting) < 0 || waiting < 0)
        waiting = 0;
    return (size_t)waiting + rn__fd_buffered(c->loop, &c->f) + c->rx_len;
}

int64_t rn__conn_io_deadline(const rn_conn *c)
{
    int64_t r = rn__deadline_after_ms(c->rd_ms), w = rn__deadline_after_ms(c->wr_ms);
    if (!r)
        return w;
    if (!w)
        return r;
    return r < w ? r : w;
}

static void background_main(void *arg)
{
    rn_conn *c = arg;
    c->ops->background(c);
    rn__conn_leave(c);
}

int rn__conn_spawn_background(rn_conn *c)
{
    c->calls++;
    int rc = rn_spawn(background_main, c);
    if (rc < 0)
        c->calls--;
    return rc;
}

const struct rn__stream_ops rn__plain_ops = {
    .read = rn__conn_recv,
    .read_lent = rn__conn_recv_lent,
    .write = rn__conn_send,
    .write_all = rn__conn_send_all,
};

/* The sentence for a failed transfer, unless this call's task already
 * wrote a more specific one since mark (a stream layer's, argument checks):
 * a layer writes its own detail with each failure, so its codes need no
 * case here. */
static int io_error(rn_conn *c, const char *what, int err, unsigned mark)
{
    if (rn__err_since(c->loop, mark))
        return err;
    if (err == -ETIMEDOUT)
        return rn__err(err, "%s on %s: deadline passed", what, rn_conn_remote_addr(c));
    if (err == RN_ECLOSED && c->reset)
        return rn__err(
            err, "%s: the server's drain reset the connection while the call was blocked", what);
    if (err == RN_ECLOSED)
        return rn__err(err, "%s: the connection was closed while the call was blocked", what);
    return rn__err(err, "%s on %s: %s", what, rn_conn_remote_addr(c), rn_strerror(err));
}

/* Take up to max of the bytes a failed read_exact gave back: where they
 * are (*at), and how many (they stay in place until the next read). */
static size_t consume_kept(rn_conn *c, size_t max, const char **at)
{
    size_t n = c->kept_len < max ? c->kept_len : max;
    *at = c->kept + c->kept_off;
    c->kept_off += n;
    c->kept_len -= n;
    if (c->kept_len == 0)
        c->kept_off = 0;
    return n;
}

/* Hand out bytes a failed read_exact gave back. */
static size_t take_kept(rn_conn *c, char *buf, size_t max)
{
    if (c->kept_len == 0)
        return 0;
    const char *at;
    size_t n = consume_kept(c, max, &at);
    memcpy(buf, at, n);
    return n;
}

/* Put bytes back in front of whatever is kept. */
static int keep_front(rn_conn *c, const char *buf, size_t n)
{
    size_t need = n + c->kept_len;
    if (need > c->kept_cap) {
        char *k = malloc(need);
        if (!k)
            return -ENOMEM;
        if (c->kept_len)
            memcpy(k + n, c->kept + c->kept_off, c->kept_len);
        free(c->kept);
        c->kept = k;
        c->kept_cap = need;
    } else {
        memmove(c->kept + n, c->kept + c->kept_off, c->kept_len);
    }
    memcpy(c->kept, buf, n);
    c->kept_off = 0;
    c->kept_len = need;
    return 0;
}

/* The bytes of the last lent read are the caller's until the next read. */
static void drop_lent(rn_conn *c)
{
    if (c->lent) {
        rn__lend_release(c->loop, c->lent);
        c->lent = NULL;
    }
}

RN_EXPORT ssize_t rn_conn_read(rn_conn *c, void *buf, size_t max)
{
    int rc = rn__conn_enter(c, "read");
    if (rc < 0)
        return rc;
    unsigned mark = rn__err_mark(c->loop);
    drop_lent(c);
    ssize_t r;
    if (!buf || max == 0) {
        r = rn__err(-EINVAL, "read: %s", !buf ? "buf is NULL" : "max is 0 (0 means end of stream)");
    } else if (c->kept_len > 0) {
        r = (ssize_t)take_kept(c, buf, max);
    } else {
        r = c->ops->read(c, buf, max, rn__deadline_after_ms(c->rd_ms));
        if (r < 0)
            r = io_error(c, "read", (int)r, mark);
    }
    rn__conn_leave(c);
    return r;
}

RN_EXPORT ssize_t rn_conn_read_lent(rn_conn *c, const void **data)
{
    if (data)
        *data = NULL;
    int rc = rn__conn_enter(c, "read_lent");
    if (rc < 0)
        return rc;
    unsigned mark = rn__err_mark(c->loop);
    drop_lent(c);
    ssize_t r;
    if (!data) {
        r = rn__err(-EINVAL, "read_lent: data is NULL");
    } else if (c->kept_len > 0) {
        /* Bytes a failed read_exact gave back: lent from where they are
         * kept (the next read may reuse that space, as it may a buffer). */
        const char *at;
        r = (ssize_t)consume_kept(c, RN__LEND_SIZE, &at);
        *data = at;
    } else {
        /* Plain: a buffer the backend picks when bytes come; a stream
         * layer lends its own (TLS: the plaintext, in a buffer taken once
         * ciphertext has come). */
        void *b;
        r = c->ops->read_lent(c, &b, rn__deadline_after_ms(c->rd_ms));
        if (r > 0) {
            drop_lent(c); /* another task's lent read ended meanwhile: its bytes are stale now */
            c->lent = b;
            *data = b;
        } else if (r < 0) {
            r = io_error(c, "read_lent", (int)r, mark);
        }
    }
    rn__conn_leave(c);
    return r;
}

RN_EXPORT void rn_conn_release_lent(rn_conn *c)
{
    if (c && !c->detached && rn__loop_peek() == c->loop)
        drop_lent(c);
}

RN_EXPORT int rn_conn_read_exact(rn_conn *c, void *buf, size_t len)
{
    int rc = rn__conn_enter(c, "read_exact");
    if (rc < 0)
        return rc;
    unsigned mark = rn__err_mark(c->loop);
    if (!buf && len > 0) {
        rn__conn_leave(c);
        return rn__err(-EINVAL, "read_exact: buf is NULL");
    }
    drop_lent(c);
    char *p = buf;
    size_t got = take_kept(c, p, len);
    int64_t deadline = rn__deadline_after_ms(c->rd_ms);
    while (got < len) {
        ssize_t r = c->ops->read(c, p + got, len - got, deadline);
        if (r == 0) {
            rc = rn__err(RN_EEOF, "read_exact on %s: the stream ended after %zu of %zu bytes",
                         rn_conn_remote_addr(c), got, len);
            break;
        }
        if (r < 0) {
            rc = io_error(c, "read_exact", (int)r, mark);
            break;
        }
        got += (size_t)r;
    }
    /* A failed read_exact loses nothing: the next read starts with these. */
    if (rc < 0 && rc != RN_ECLOSED && got > 0 && keep_front(c, p, got) < 0)
        rc = rn__err(-ENOMEM, "read_exact: out of memory keeping %zu bytes", got);
    rn__conn_leave(c);
    return rc;
}

RN_EXPORT ssize_t rn_conn_write(rn_conn *c, const void *buf, size_t len)
{
    int rc = rn__conn_enter(c, "write");
    if (rc < 0)
        return rc;
    unsigned mark = rn__err_mark(c->loop);
    ssize_t r;
    int64_t deadline = rn__deadline_after_ms(c->wr_ms);
    if (!buf && len > 0) {
        r = rn__err(-EINVAL, "write: buf is NULL");
    } else if (len == 0) {
        r = 0;
    } else {
        r = c->ops->write(c, buf, len, deadline);
    }
    if (r < 0)
        r = io_error(c, "write", (int)r, mark);
    rn__conn_leave(c);
    return r;
}

RN_EXPORT int rn_conn_write_all_n(rn_conn *c, const void *buf, size_t len, size_t *written)
{
    size_t done = 0;
    int rc = rn__conn_enter(c, "write_all");
    if (rc < 0)
        goto out;
    unsigned mark = rn__err_mark(c->loop);
    int64_t deadline = rn__deadline_after_ms(c->wr_ms);
    if (!buf && len > 0) {
        rc = rn__err(-EINVAL, "write_all: buf is NULL");
    } else {
        rc = c->ops->write_all(c, buf, len, deadline, &done);
    }
    if (rc < 0)
        rc = io_error(c, "write_all", rc, mark);
    rn__conn_leave(c);
out:
    if (written)
        *written = done;
    return rc;
}

RN_EXPORT int rn_conn_write_all(rn_conn *c, const void *buf, size_t len)
{
    return rn_conn_write_all_n(c, buf, len, NULL);
}

/* ---- connect ------------------------------------------------------------- */

/* Try every address of host in turn until one connects, all within the
 * absolute deadline. */
static int connect_any(struct rn__loop *loop, rn_conn **out, const char *host, int port,
                       int64_t deadline)
{
    struct sockaddr_storage *addrs;
    size_t n;
    int rc = rn__resolve_all(loop, host, port, deadline, &addrs, &n);
    if (rc < 0)
        return rc;
    char tried[64] = "";
    for (size_t i = 0; i < n; i++) {
        struct sockaddr *sa = (struct sockaddr *)&addrs[i];
        rn__addr_format(sa, tried, sizeof tried);
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = rn__err(-errno, "connect to %s: socket: %s", tried, rn_strerror(-errno));
            continue;
        }
        rn_conn *c;
        rc = rn__conn_new(loop, fd, false, &c);
        if (rc < 0)
            continue;
        socklen_t salen =
            sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        struct rn__op op = {
            .kind = RN__OP_CONNECT, .f = &c->f, .addr = sa, .addrlen = salen, .deadline = deadline};
        rc = rn__op_wait(loop, &op);
        if (rc >= 0) {
            memcpy(c->raddr, tried, sizeof tried);
            free(addrs);
            *out = c;
            return 0;
        }
        rn__conn_destroy(c);
        if (rc == -ETIMEDOUT)
            break; /* the bound is for the whole call */
    }
    free(addrs);
    if (rc == -ETIMEDOUT)
        return rn__err(rc, "connect to %s port %d: timed out (last address tried: %s)", host, port,
                       tried);
    return rn__err(rc, "connect to %s port %d: %s (%s%s)", host, port, rn_strerror(rc), tried,
                   n > 1 ? ", and every other address" : "");
}

int rn__connect(rn_conn **out, const char *host, int port, int64_t deadline, const char *what)
{
    if (out)
        *out = NULL; /* on every failure, as the header says for the others */
    if (!out || !host || !*host)
        return rn__err(-EINVAL, "%s: %s is NULL or empty", what, !out ? "out" : "host");
    if (port < 1 || port > 65535)
        return rn__err(-EINVAL, "%s to %s: port %d is outside 1..65535", what, host, port);
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    return connect_any(loop, out, host, port, deadline);
}

RN_EXPORT int rn_tcp_connect(rn_conn **out, const char *host, int port)
{
    return rn__connect(out, host, port, rn__connect_deadline(), "tcp_connect");
}
