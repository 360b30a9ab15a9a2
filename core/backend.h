/* backend.h - the contract between the core and its two engines (uring/,
 * fallback/): the descriptor and operation records the layers above fill
 * in, the table of calls each backend implements, and the calls a backend
 * makes back into the core. Not installed. */
#ifndef RN_BACKEND_H
#define RN_BACKEND_H

#include <linux/time_types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../fallback/epoll_fd.h"
#include "../uring/uring_fd.h"
#include "rn.h"

/* ---- descriptors and operations ------------------------------------------- */

/* State of one descriptor (a connection's or a listener's). The api owns
 * it; the shared fields are what every layer reads, and bk is the running
 * backend's own share, declared in that backend's header. */
struct rn__fd {
    int fd;
    int inflight;    /* ops of this fd inside the backend (rn__fd_hold/rn__fd_drop) */
    bool closing;    /* rn_*_close began: new ops fail, completions map to RN_ECLOSED */
    bool nonblock;   /* O_NONBLOCK is set already (epoll's accept4, a resolver's pipe) */
    bool rd_drained; /* the last recv got less than it asked: the socket was emptied */
    struct rn__task *drain_waiter; /* woken when inflight drops to 0 while closing */
    union {
        struct rn__uring_fd uring;
        struct rn__epoll_fd epoll;
    } bk;
};

enum rn__op_kind {
    RN__OP_CONNECT, /* connect(fd, addr, addrlen) */
    RN__OP_ACCEPT,  /* res = new fd; peer address in addr/addrlen_out */
    RN__OP_RECV,    /* recv(fd, buf, len) */
    RN__OP_SEND,    /* send(fd, buf, len, MSG_NOSIGNAL) */
    RN__OP_POLL,    /* poll(fd, events): res = revents */
};

/* One blocking call's request, on the calling task's stack. It must stay
 * put until `done`, which the task waits for by parking. */
struct rn__op {
    uint8_t kind; /* enum rn__op_kind */
    bool done;
    bool lend;             /* RECV into a loop buffer (rn_conn_read_lent): buf is NULL when
                            * submitted and the backend sets it to the buffer it filled */
    bool loop_timed;       /* the backend holds op outside the kernel: rn__op_wait
                            * enforces its deadline with a timed park and bk->expire */
    short events;          /* POLL: POLLIN/POLLOUT */
    int res;               /* result: >= 0 or -errno, RN_ECLOSED, -ETIMEDOUT */
    struct rn__fd *f;      /* the descriptor it works on */
    struct rn__task *task; /* who to wake (the loop's root task outside tasks) */
    void *buf;
    size_t len;
    struct sockaddr *addr; /* CONNECT: target; ACCEPT: where to store the peer (may be NULL) */
    socklen_t addrlen;     /* CONNECT: its length; ACCEPT: in/out */
    int64_t deadline;      /* absolute rn__now_ns instant, 0 = none */
    struct __kernel_timespec ts; /* io_uring: the deadline as its linked timeout reads it */
    struct rn__op *next;         /* the queue a backend parks it on */
};

/* ---- what a backend calls in the core --------------------------------------- */

/* op finished with raw result res. Applies the one result mapping both
 * backends share (closing -> RN_ECLOSED, cancelled by its linked timeout ->
 * -ETIMEDOUT), drops the in-flight counts and wakes the task. */
void rn__op_complete(struct rn__loop *loop, struct rn__op *op, int res);

/* Work on f enters the backend: an op (rn__op_wait does it) or a backend's
 * own request (a multishot) that a closer must wait for and whose
 * completion can still wake the loop. */
static inline void rn__fd_hold(struct rn__loop *loop, struct rn__fd *f)
{
    f->inflight++;
    loop->inflight++;
}

/* That work left: drop both counts and wake a closer waiting for f to drain. */
static inline void rn__fd_drop(struct rn__loop *loop, struct rn__fd *f)
{
    loop->inflight--;
    if (--f->inflight == 0 && f->drain_waiter)
        rn__task_wake(loop, f->drain_waiter);
}

/* When run_once must return by: the earliest timed park or the bound of a
 * host's rn_loop_run_once (loop->wait_until), 0 if neither. */
static inline int64_t rn__loop_wake_at(const struct rn__loop *loop)
{
    const struct rn__heap_node *n = rn__heap_min(&loop->timers);
    int64_t at = n ? n->key : 0;
    if (loop->wait_until && (!at || loop->wait_until < at))
        at = loop->wait_until;
    return at;
}

/* ---- the backend contract ---------------------------------------------------- */

/* One const table per backend, in the style of nginx's event actions. The
 * loop never calls a backend's syscalls itself. Every function returns 0 or
 * -errno unless said otherwise. */
struct rn__backend {
    const char *name;
    /* Descriptors its accept returns are O_NONBLOCK already (rn__fd.nonblock). */
    bool accepts_nonblock;
    /* Set up for loop. On failure -errno and a sentence in why; the loop
     * falls back to epoll (in auto mode) on -ENOSYS, -EPERM, -EACCES, -EINVAL
     * and -EOPNOTSUPP (a missing opcode), never on resource errors. */
    int (*init)(struct rn__loop *loop, void **state, char *why, size_t whylen);
    void (*destroy)(struct rn__loop *loop, void *state);
    /* A descriptor begins (socket made, accepted) or ends (about to close(2);
     * nothing in flight any more). f->bk arrives zeroed (the api zeroes
     * the whole record). */
    int (*fd_open)(struct rn__loop *loop, struct rn__fd *f);
    void (*fd_close)(struct rn__loop *loop, struct rn__fd *f);
    /* Start op; its completion comes through rn__op_complete, possibly
     * before submit returns (epoll tries the syscall at once). An op the
     * backend parks outside the kernel with a deadline is marked
     * loop_timed. */
    void (*submit)(struct rn__loop *loop, struct rn__op *op);
    /* Make every op in flight on f complete soon (f->closing is set). */
    void (*cancel_fd)(struct rn__loop *loop, struct rn__fd *f);
    /* Hand the kernel everything queued, wait for at least one completion
     * when wait is true (else only collect what is ready), dispatch them.
     * A wait ends by rn__loop_wake_at(loop) (an absolute rn__now_ns
     * instant; 0: no bound) even if nothing completed: the loop's timed
     * parks are due then. Returns 1 when they may be due (the loop reads
     * its clock and wakes them), 0 when none can be, or -errno. */
    int (*run_once)(struct rn__loop *loop, bool wait);
    /* Take back a lent buffer the backend handed out itself (io_uring: one
     * of its provided-buffer rings); false if buf is not its own. NULL when
     * the backend keeps no buffers of its own. */
    bool (*lend_release)(struct rn__loop *loop, void *buf);
    /* An op marked loop_timed reached its deadline (res -ETIMEDOUT) or its
     * timed park could not be recorded (-ENOMEM): take it out of wherever
     * it waits and complete it with res. */
    void (*expire)(struct rn__loop *loop, struct rn__op *op, int res);
    /* Bytes the backend has already taken off f's socket and not yet
     * handed to a read (io_uring's stream-read queue). NULL when the
     * backend never reads ahead. */
    size_t (*buffered)(struct rn__loop *loop, const struct rn__fd *f);
    /* Wake-ups from other threads (core/xthread.c): efd is a blocking
     * eventfd that they write to. From now on a wait in run_once ends when
     * it is written to; the backend consumes the count itself (io_uring: a
     * read kept armed on the ring; epoll: efd in the set, read when it is
     * readable). efd stays open until the loop ends (destroy comes next). */
    int (*xwake_start)(struct rn__loop *loop, int efd);
    /* rn_loop_fd (core/embed.c): a descriptor a host polls for POLLIN that
     * turns readable when run_once would find work (a completion, a write to
     * xwake_start's eventfd); the same one on each call; the backend owns
     * it. -errno when it cannot be made. */
    int (*loop_fd)(struct rn__loop *loop);
    /* Optional (NULL: the eventfd is the only way in). Wake-ups from loop
     * to loop of this backend without the eventfd (io_uring:
     * IORING_OP_MSG_RING). xwake_token: what another loop needs to reach
     * this one, a descriptor the core closes when the loop's handle goes
     * (io_uring: a duplicate of the ring's fd); -1 when there is none.
     * xwake_post, from a task of this loop: send a wake-up to the loop
     * behind token, now (a message the kernel does not take at once sets
     * loop->xflush: the core makes a pass before the loop stops running,
     * and the loop's next pass takes it). Once
     * its outcome is known the backend calls rn__xt_post_done(xt, res)
     * (the caller holds a reference on xt for it). false when it cannot
     * queue it: the caller writes the eventfd. */
    int (*xwake_token)(struct rn__loop *loop);
    bool (*xwake_post)(struct rn__loop *loop, int token, struct rn_loop *xt);
    /* Moving a connection to another thread (api/move.c). Both optional,
     * NULL when the backend starts nothing of its own on a descriptor and
     * never reads ahead (epoll).
     * fd_quiesce: f leaves this loop (rn_conn_detach) with no op of a call
     * in flight. Stop the backend's own requests on f (io_uring: the
     * multishot recv) without dropping a byte they deliver; their last
     * completions come through run_once as usual, and the core waits for
     * f->inflight to reach 0 (f->closing stays false). 0, or -errno when
     * the stop could not be asked for (the detach fails; f stays usable).
     * fd_unbuffer: then copy up to len of the bytes buffered for f (what
     * buffered counts) into out, oldest first, and let go of them (their
     * buffers go back to the loop); *end gets the stream's last word the
     * backend saw after them (0: EOF, or -errno), or 1 when it saw none.
     * Returns the bytes copied. fd_close follows, then f leaves. */
    int (*fd_quiesce)(struct rn__loop *loop, struct rn__fd *f);
    size_t (*fd_unbuffer)(struct rn__loop *loop, struct rn__fd *f, void *out, size_t len, int *end);
};

extern const struct rn__backend rn__backend_uring;
extern const struct rn__backend rn__backend_epoll;

/* Bytes received on f that wait inside the backend for a read. */
static inline size_t rn__fd_buffered(struct rn__loop *loop, const struct rn__fd *f)
{
    return loop->bk->buffered ? loop->bk->buffered(loop, f) : 0;
}

#endif /* RN_BACKEND_H */
