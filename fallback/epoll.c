/* epoll.c - the epoll backend, for kernels and sandboxes that refuse
 * io_uring: non-blocking sockets, the syscall tried first, the op parked on
 * EAGAIN until an edge-triggered event. A parked op's deadline is the
 * loop's timed park (expire takes it off its queue); epoll_pwait2 waits no
 * longer than the nearest one. Results go through rn__op_complete exactly
 * as io_uring's. */
#include "backend.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_EVENTS 256

/* Why edge-triggered: every descriptor is registered once, when it opens,
 * for IN|OUT|RDHUP, and never touched again: no epoll_ctl per operation.
 * It is safe because an op parks only after its own syscall saw EAGAIN, so
 * the next arrival is a new edge. */
#define EP_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

struct ep {
    int epfd;
    int xefd;  /* the cross-thread eventfd (xwake_start), -1 until then */
    char xtag; /* its events carry this address instead of an rn__fd's */
    struct epoll_event evs[MAX_EVENTS];
};

static int ep_init(struct rn__loop *loop, void **state, char *why, size_t whylen)
{
    struct ep *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        int err = -errno;
        snprintf(why, whylen, "epoll_create1 failed: %s", rn_strerror(err));
        free(e);
        return err;
    }
    e->xefd = -1;
    *state = e;
    (void)loop;
    return 0;
}

/* Level-triggered: it stays readable until run_once reads its count. */
static int ep_xwake_start(struct rn__loop *loop, int efd)
{
    struct ep *e = loop->bk_state;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &e->xtag};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, efd, &ev) < 0)
        return -errno;
    e->xefd = efd;
    return 0;
}

static void ep_destroy(struct rn__loop *loop, void *state)
{
    struct ep *e = state;
    close(e->epfd);
    free(e);
    (void)loop;
}

static int ep_fd_open(struct rn__loop *loop, struct rn__fd *f)
{
    struct ep *e = loop->bk_state;
    if (!f->nonblock && fcntl(f->fd, F_SETFL, O_NONBLOCK) < 0)
        return -errno;
    f->nonblock = true;
    struct epoll_event ev = {.events = EP_EVENTS, .data.ptr = f};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, f->fd, &ev) < 0)
        return -errno;
    f->bk.epoll.registered = true;
    return 0;
}

static void ep_fd_close(struct rn__loop *loop, struct rn__fd *f)
{
    /* Explicitly, not by close(2): a descriptor handed on (a resolver's
     * pipe) may outlive this loop's interest in it. */
    struct ep *e = loop->bk_state;
    if (f->bk.epoll.registered)
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, f->fd, NULL);
    f->bk.epoll.registered = false;
}

/* Writable again after connect(2) said EINPROGRESS: the connect's outcome,
 * or -EAGAIN while the handshake is still going (a spurious edge). */
static int connect_outcome(struct rn__fd *f)
{
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        return -errno;
    if (err == 0) {
        struct pollfd p = {.fd = f->fd, .events = POLLOUT};
        if (poll(&p, 1, 0) == 0)
            return -EAGAIN;
    }
    return -err;
}

/* Try op's syscall once, non-blocking. Returns the result, -EAGAIN to park. */
static int try_op(struct rn__loop *loop, struct rn__op *op)
{
    int fd = op->f->fd;
    ssize_t r;
    for (;;) {
        switch (op->kind) {
        case RN__OP_RECV:
            /* A lent read holds a buffer only while the syscall runs and
             * after it got bytes: a parked one has none. */
            if (op->lend && !op->buf && !(op->buf = rn__lend_alloc(loop)))
                return -ENOMEM;
            r = recv(fd, op->buf, op->len, 0);
            if (op->lend && r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                rn__lend_release(loop, op->buf);
                op->buf = NULL;
                errno = EAGAIN;
            }
            /* A short read emptied the socket, like EAGAIN would say: only
             * an edge from now on means there is more. Not once the peer's
             * end was seen: the end of stream is still to be read, and its
             * edge came already. */
            if (r > 0 && (size_t)r < op->len && !op->f->bk.epoll.hup)
                op->f->bk.epoll.rd_ready = false;
            break;
        case RN__OP_SEND:
            r = send(fd, op->buf, op->len, MSG_NOSIGNAL);
            break;
        case RN__OP_ACCEPT:
            r = accept4(fd, op->addr, op->addr ? &op->addrlen : NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            break;
        case RN__OP_CONNECT:
            if (op->f->bk.epoll.connecting)
                return connect_outcome(op->f);
            op->f->bk.epoll.connecting = true; /* from now on, the outcome is asked for */
            r = connect(fd, op->addr, op->addrlen);
            if (r < 0 && errno == EINPROGRESS)
                return -EAGAIN;
            break;
        case RN__OP_POLL: {
            struct pollfd p = {.fd = fd, .events = op->events};
            r = poll(&p, 1, 0);
            if (r == 0)
                return -EAGAIN;
            if (r > 0)
                r = p.revents;
            break;
        }
        default:
            return -EINVAL;
        }
        if (r >= 0)
            return (int)r;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static bool op_wants_read(const struct rn__op *op)
{
    return op->kind == RN__OP_RECV || op->kind == RN__OP_ACCEPT ||
           (op->kind == RN__OP_POLL && (op->events & POLLIN));
}

static void list_append(struct rn__op **head, struct rn__op *op)
{
    while (*head)
        head = &(*head)->next;
    op->next = NULL;
    *head = op;
}

static void list_remove(struct rn__op **head, struct rn__op *op)
{
    while (*head && *head != op)
        head = &(*head)->next;
    if (*head)
        *head = op->next;
}

static void ep_submit(struct rn__loop *loop, struct rn__op *op)
{
    /* A recv on a socket its last recv emptied, with no edge since, would
     * only see EAGAIN: park it straight away and save the syscall. */
    int r = -EAGAIN;
    if (!(op->kind == RN__OP_RECV && op->f->rd_drained && !op->f->bk.epoll.rd_ready)) {
        loop->stats.ops_submitted++;
        r = try_op(loop, op);
        if (r != -EAGAIN) {
            rn__op_complete(loop, op, r);
            return;
        }
    }
    bool rd = op_wants_read(op);
    if (rd)
        op->f->bk.epoll.rd_ready = false;
    list_append(rd ? &op->f->bk.epoll.rd : &op->f->bk.epoll.wr, op);
    op->loop_timed = op->deadline != 0;
}

/* A parked op's deadline came (or its timed park failed): off its queue. */
static void ep_expire(struct rn__loop *loop, struct rn__op *op, int res)
{
    struct rn__epoll_fd *ef = &op->f->bk.epoll;
    list_remove(op_wants_read(op) ? &ef->rd : &ef->wr, op);
    op->loop_timed = false;
    rn__op_complete(loop, op, res);
}

static void ep_cancel_fd(struct rn__loop *loop, struct rn__fd *f)
{
    struct rn__epoll_fd *ef = &f->bk.epoll;
    struct rn__op *op;
    while ((op = ef->rd) != NULL) {
        ef->rd = op->next;
        rn__op_complete(loop, op, -ECANCELED);
    }
    while ((op = ef->wr) != NULL) {
        ef->wr = op->next;
        rn__op_complete(loop, op, -ECANCELED);
    }
}

/* An edge on one direction: retry the parked ops in order until one would
 * block again (then the rest would too). */
static void retry_list(struct rn__loop *loop, struct rn__op **head)
{
    struct rn__op *op;
    while ((op = *head) != NULL) {
        loop->stats.ops_submitted++;
        int r = try_op(loop, op);
        if (r == -EAGAIN) {
            if (op_wants_read(op))
                op->f->bk.epoll.rd_ready = false;
            return;
        }
        *head = op->next;
        rn__op_complete(loop, op, r);
    }
}

static int ep_run_once(struct rn__loop *loop, bool wait)
{
    struct ep *e = loop->bk_state;
    struct timespec ts = {0, 0}, *tsp = &ts;
    if (wait) {
        /* No longer than the nearest timed park (parked ops' deadlines). */
        int64_t until = rn__loop_wake_at(loop);
        if (!until) {
            tsp = NULL;
        } else {
            int64_t d = until - rn__now_ns();
            if (d > 0) {
                ts.tv_sec = d / 1000000000;
                ts.tv_nsec = d % 1000000000;
            }
        }
    }
    /* epoll_pwait2 is 5.11; older kernels (and Valgrind 3.19) get ms
     * precision. Learnt once for the process. */
    static int no_pwait2;
    int n = -1;
    bool pwait2 = !__atomic_load_n(&no_pwait2, __ATOMIC_RELAXED);
    if (pwait2) {
        n = epoll_pwait2(e->epfd, e->evs, MAX_EVENTS, tsp, NULL);
        if (n < 0 && errno == ENOSYS) {
            __atomic_store_n(&no_pwait2, 1, __ATOMIC_RELAXED);
            pwait2 = false;
        }
    }
    if (!pwait2) {
        int ms = !tsp ? -1 : (int)(ts.tv_sec * 1000 + (ts.tv_nsec + 999999) / 1000000);
        n = epoll_wait(e->epfd, e->evs, MAX_EVENTS, ms);
    }
    loop->stats.enter_calls++;
    if (n < 0) {
        if (errno != EINTR)
            return -errno;
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        if (e->evs[i].data.ptr == &e->xtag) {
            /* Another thread posted: the loop drains its inbox next; the
             * count goes (readable, so this read does not block). */
            uint64_t cnt;
            if (read(e->xefd, &cnt, sizeof cnt) < 0 && errno != EINTR && errno != EAGAIN)
                return -errno;
            continue;
        }
        struct rn__fd *f = e->evs[i].data.ptr;
        uint32_t ev = e->evs[i].events;
        /* Errors and hang-ups wake both directions: the syscall reports them. */
        if (ev & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
            f->bk.epoll.hup = true;
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
            f->bk.epoll.rd_ready = true;
            retry_list(loop, &f->bk.epoll.rd);
        }
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            retry_list(loop, &f->bk.epoll.wr);
    }
    return 1; /* the wait may have ended at the nearest timed park */
}

/* The epoll set is readable while one of its descriptors has an event. */
static int ep_loop_fd(struct rn__loop *loop)
{
    return ((struct ep *)loop->bk_state)->epfd;
}

const struct rn__backend rn__backend_epoll = {
    .name = "epoll",
    .accepts_nonblock = true,
    .init = ep_init,
    .destroy = ep_destroy,
    .fd_open = ep_fd_open,
    .fd_close = ep_fd_close,
    .submit = ep_submit,
    .cancel_fd = ep_cancel_fd,
    .run_once = ep_run_once,
    .expire = ep_expire,
    .xwake_start = ep_xwake_start,
    .loop_fd = ep_loop_fd,
};
