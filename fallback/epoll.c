/* epoll.c - the epoll backend, for kernels and sandboxes that refuse
 * io_uring: non-blocking sockets, the syscall tried first, the op parked on
 * EAGAIN until an edge-triggered event, deadlines from a timer heap feeding
 * epoll_pwait2. Results go through rn__op_complete exactly as io_uring's. */
#include "rn.h"

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
    struct rn__heap heap; /* ops with a deadline, on their deadline */
    struct epoll_event evs[MAX_EVENTS];
};

/* ---- timer heap ------------------------------------------------------------- */

static int heap_add(struct ep *e, struct rn__op *op)
{
    return rn__heap_push(&e->heap, &op->timer, op->deadline, 64);
}

/* ---- the contract ----------------------------------------------------------- */

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
    *state = e;
    (void)loop;
    return 0;
}

static void ep_destroy(struct rn__loop *loop, void *state)
{
    struct ep *e = state;
    close(e->epfd);
    rn__heap_free(&e->heap);
    free(e);
    (void)loop;
}

static int ep_fd_open(struct rn__loop *loop, struct rn__fd *f)
{
    struct ep *e = loop->bk_state;
    if (!f->accepted && fcntl(f->fd, F_SETFL, O_NONBLOCK) < 0)
        return -errno;
    struct epoll_event ev = {.events = EP_EVENTS, .data.ptr = f};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, f->fd, &ev) < 0)
        return -errno;
    f->ep_registered = true;
    return 0;
}

static void ep_fd_close(struct rn__loop *loop, struct rn__fd *f)
{
    /* Explicitly, not by close(2): a descriptor handed on (a resolver's
     * eventfd) may outlive this loop's interest in it. */
    struct ep *e = loop->bk_state;
    if (f->ep_registered)
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, f->fd, NULL);
    f->ep_registered = false;
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
            if (r > 0 && (size_t)r < op->len && !op->f->ep_hup)
                op->f->ep_rd_ready = false;
            break;
        case RN__OP_SEND:
            r = send(fd, op->buf, op->len, MSG_NOSIGNAL);
            break;
        case RN__OP_ACCEPT:
            r = accept4(fd, op->addr, op->addr ? &op->addrlen : NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            break;
        case RN__OP_CONNECT:
            if (op->len == 0) { /* first try: start the connect */
                op->len = 1;
                r = connect(fd, op->addr, op->addrlen);
                if (r < 0 && errno == EINPROGRESS)
                    return -EAGAIN;
            } else { /* writable again: the connect has an outcome */
                int err = 0;
                socklen_t l = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
                    return -errno;
                if (err == 0) {
                    /* Spurious wake-up before the handshake ended? */
                    struct pollfd p = {.fd = fd, .events = POLLOUT};
                    if (poll(&p, 1, 0) == 0)
                        return -EAGAIN;
                }
                return -err;
            }
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

static void finish(struct rn__loop *loop, struct rn__op *op, int res)
{
    struct ep *e = loop->bk_state;
    if (rn__heap_queued(&op->timer))
        rn__heap_remove(&e->heap, &op->timer);
    rn__op_complete(loop, op, res);
}

static void ep_submit(struct rn__loop *loop, struct rn__op *op)
{
    struct ep *e = loop->bk_state;
    if (op->kind == RN__OP_SLEEP) {
        if (heap_add(e, op) < 0)
            rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    /* A recv on a socket its last recv emptied, with no edge since, would
     * only see EAGAIN: park it straight away and save the syscall. */
    int r = -EAGAIN;
    if (!(op->kind == RN__OP_RECV && op->f->rd_drained && !op->f->ep_rd_ready)) {
        loop->stats.ops_submitted++;
        r = try_op(loop, op);
        if (r != -EAGAIN) {
            rn__op_complete(loop, op, r);
            return;
        }
    }
    if (op_wants_read(op))
        op->f->ep_rd_ready = false;
    if (op->deadline && rn__now_ns() >= op->deadline) {
        rn__op_complete(loop, op, -ETIMEDOUT);
        return;
    }
    if (op->deadline && heap_add(e, op) < 0) {
        rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    list_append(op_wants_read(op) ? &op->f->ep_rd : &op->f->ep_wr, op);
}

static void ep_cancel_fd(struct rn__loop *loop, struct rn__fd *f)
{
    struct rn__op *op;
    while ((op = f->ep_rd) != NULL) {
        f->ep_rd = op->next;
        finish(loop, op, -ECANCELED);
    }
    while ((op = f->ep_wr) != NULL) {
        f->ep_wr = op->next;
        finish(loop, op, -ECANCELED);
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
                op->f->ep_rd_ready = false;
            return;
        }
        *head = op->next;
        finish(loop, op, r);
    }
}

static void expire_timers(struct rn__loop *loop, struct ep *e)
{
    if (e->heap.len == 0)
        return;
    int64_t now = rn__now_ns();
    struct rn__heap_node *n;
    while ((n = rn__heap_min(&e->heap)) && n->key <= now) {
        struct rn__op *op = rn__heap_entry(n, struct rn__op, timer);
        rn__heap_remove(&e->heap, n);
        if (op->kind == RN__OP_SLEEP) {
            rn__op_complete(loop, op, 0);
            continue;
        }
        list_remove(op_wants_read(op) ? &op->f->ep_rd : &op->f->ep_wr, op);
        /* -ETIME maps to -ETIMEDOUT, as io_uring's cancelled-by-timeout. */
        rn__op_complete(loop, op, -ETIME);
    }
}

static int ep_run_once(struct rn__loop *loop, bool wait)
{
    struct ep *e = loop->bk_state;
    struct timespec ts = {0, 0}, *tsp = &ts;
    if (wait) {
        /* The nearest of the ops' deadlines and the loop's timed parks. */
        const struct rn__heap_node *top = rn__heap_min(&e->heap);
        int64_t until = top ? top->key : 0;
        int64_t wake_at = rn__loop_wake_at(loop);
        if (wake_at && (!until || wake_at < until))
            until = wake_at;
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
        struct rn__fd *f = e->evs[i].data.ptr;
        uint32_t ev = e->evs[i].events;
        /* Errors and hang-ups wake both directions: the syscall reports them. */
        if (ev & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
            f->ep_hup = true;
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
            f->ep_rd_ready = true;
            retry_list(loop, &f->ep_rd);
        }
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            retry_list(loop, &f->ep_wr);
    }
    expire_timers(loop, e);
    return 0;
}

const struct rn__backend rn__backend_epoll = {
    .name = "epoll",
    .init = ep_init,
    .destroy = ep_destroy,
    .fd_open = ep_fd_open,
    .fd_close = ep_fd_close,
    .submit = ep_submit,
    .cancel_fd = ep_cancel_fd,
    .run_once = ep_run_once,
};
