/* rn.h - ringnet's private core: the loop, tasks, operations and the backend
 * contract that uring/ and fallback/ implement. Not installed. */
#ifndef RN_CORE_H
#define RN_CORE_H

#include <errno.h>
#include <linux/time_types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "heap.h"
#include "ringnet.h"

#define RN_LIKELY(x)           __builtin_expect(!!(x), 1)
#define RN_UNLIKELY(x)         __builtin_expect(!!(x), 0)
#define RN_STATIC_ASSERT(c, m) _Static_assert(c, m)
/* Public calls are the only symbols the shared library exports. */
#define RN_EXPORT __attribute__((visibility("default")))

struct rn__loop;
struct rn__task;

/* ---- time --------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds. Deadlines are absolute instants on it. */
int64_t rn__now_ns(void);
/* Absolute deadline ms from now; 0 (no deadline) for ms <= 0; saturates. */
int64_t rn__deadline_after_ms(int64_t ms);

/* ---- operations: what a task hands a backend ----------------------------- */

enum rn__op_kind {
    RN__OP_CONNECT, /* connect(fd, addr, addrlen) */
    RN__OP_ACCEPT,  /* res = new fd; peer address in addr/addrlen_out */
    RN__OP_RECV,    /* recv(fd, buf, len) */
    RN__OP_SEND,    /* send(fd, buf, len, MSG_NOSIGNAL) */
    RN__OP_POLL,    /* poll(fd, events): res = revents */
    RN__OP_SLEEP,   /* until deadline; res = 0 */
};

/* State of one descriptor (a connection's or a listener's), shared by the
 * layers: the api owns it, the backend keeps its bookkeeping in it. */
struct rn__fd {
    int fd;
    int inflight;    /* ops of this fd inside the backend */
    bool closing;    /* rn_*_close began: new ops fail, completions map to RN_ECLOSED */
    bool accepted;   /* came from accept (epoll: already non-blocking) */
    bool rd_drained; /* the last recv got less than it asked: the socket was emptied */
    struct rn__task *drain_waiter; /* woken when inflight drops to 0 while closing */

    /* epoll backend: registered once (edge-triggered) and the parked ops. */
    bool ep_registered;
    bool ep_rd_ready; /* a readable edge came with nothing parked and no EAGAIN since */
    bool ep_hup;      /* the peer's end (RDHUP/HUP/ERR) was seen: no edge will follow it */
    struct rn__op *ep_rd, *ep_wr; /* FIFO heads of ops waiting for readability / writability */

    /* io_uring backend: the multishot accept of a listener. */
    bool acc_armed; /* a multishot accept is in the kernel */
    int *accq;      /* accepted fds not yet taken (ring buffer) */
    unsigned accq_head, accq_len, accq_cap;
    struct rn__op *acc_wait; /* FIFO of parked accept ops */

    /* io_uring backend: the multishot recv of a connection whose reads are
     * request/response sized (see uring.c "stream reads"). */
    bool rms_armed;  /* in the kernel until its last CQE */
    bool rms_cancel; /* its queue reached the cap: a cancel was sent */
    bool rms_skip;   /* the next recv goes one-shot (ring ran dry, cap hit, a bulk-sized read) */
    bool rms_end;    /* rms_res is the stream's last word, due after the queue */
    int rms_res;     /* 0 (EOF) or -errno */
    uint16_t rmsq_head, rmsq_tail; /* filled buffers not yet read: buffer id + 1, 0 = none */
    uint16_t rs_inflight;          /* one-shot recvs in the kernel (no multishot beside them) */
    uint32_t held;                 /* bytes the queue holds: received, not yet read */
    struct rn__op *rms_wait;       /* FIFO of reads parked on the queue */
};

/* One blocking call's request, on the calling task's stack. It must stay
 * put until `done`, which the task waits for by parking. */
struct rn__op {
    uint8_t kind; /* enum rn__op_kind */
    bool done;
    int res;               /* result: >= 0 or -errno, RN_ECLOSED, -ETIMEDOUT */
    struct rn__fd *f;      /* NULL for SLEEP */
    struct rn__task *task; /* who to wake (the loop's root task outside tasks) */
    void *buf;
    size_t len;
    struct sockaddr *addr; /* CONNECT: target; ACCEPT: where to store the peer (may be NULL) */
    socklen_t addrlen;     /* CONNECT: its length; ACCEPT: in/out */
    bool lend;             /* RECV into a loop buffer (rn_conn_read_lent): buf is NULL when
                            * submitted and the backend sets it to the buffer it filled */
    short events;          /* POLL: POLLIN/POLLOUT */
    int64_t deadline;      /* absolute rn__now_ns instant, 0 = none */
    struct __kernel_timespec ts; /* io_uring: the deadline as a timespec until submitted */
    struct rn__op *next;         /* backend queues (epoll waiters, accept waiters) */
    struct rn__heap_node
        timer;       /* epoll: its place in the deadline heap (idx RN__HEAP_NONE: not in it) */
    bool loop_timed; /* the backend holds op outside the kernel: rn__op_wait
                      * enforces its deadline with a timed park and bk->expire */
};

/* Called by a backend when op finished with raw result res. Applies the one
 * result mapping both backends share (closing -> RN_ECLOSED, cancelled past
 * the deadline -> -ETIMEDOUT), drops the fd's in-flight count and wakes the
 * task. */
void rn__op_complete(struct rn__loop *loop, struct rn__op *op, int res);
/* A backend's own in-flight work on f (a multishot accept) ended: drop the
 * count and wake a closer waiting for f to drain. */
void rn__fd_drop(struct rn__loop *loop, struct rn__fd *f);

/* ---- the backend contract ------------------------------------------------- */

/* One const table per backend, in the style of nginx's event actions. The
 * loop never calls a backend's syscalls itself. Every function returns 0 or
 * -errno unless said otherwise. */
struct rn__backend {
    const char *name;
    /* Set up for loop. On failure -errno and a sentence in why; the loop
     * falls back to epoll (in auto mode) on -ENOSYS, -EPERM, -EACCES, -EINVAL
     * and -EOPNOTSUPP (a missing opcode), never on resource errors. */
    int (*init)(struct rn__loop *loop, void **state, char *why, size_t whylen);
    void (*destroy)(struct rn__loop *loop, void *state);
    /* A descriptor begins (socket made, accepted) or ends (about to close(2);
     * nothing in flight any more). */
    int (*fd_open)(struct rn__loop *loop, struct rn__fd *f);
    void (*fd_close)(struct rn__loop *loop, struct rn__fd *f);
    /* Start op; its completion comes through rn__op_complete, possibly
     * before submit returns (epoll tries the syscall at once). */
    void (*submit)(struct rn__loop *loop, struct rn__op *op);
    /* Make every op in flight on f complete soon (f->closing is set). */
    void (*cancel_fd)(struct rn__loop *loop, struct rn__fd *f);
    /* Hand the kernel everything queued, wait for at least one completion
     * when wait is true (else only collect what is ready), dispatch them.
     * A wait ends by rn__loop_wake_at(loop) (an absolute rn__now_ns
     * instant; 0: no bound) even if nothing completed: the loop's own
     * timers (timed parks) are due then. */
    int (*run_once)(struct rn__loop *loop, bool wait);
    /* Take back a lent buffer the backend handed out itself (io_uring: one
     * of its provided-buffer ring); false if buf is not its own. NULL when
     * the backend keeps no buffers of its own. */
    bool (*lend_release)(struct rn__loop *loop, void *buf);
    /* An op the backend marked loop_timed reached its deadline (res
     * -ETIMEDOUT) or its timed park could not be recorded (-ENOMEM): take
     * it out of wherever it waits and complete it with res. NULL when the
     * backend never marks ops so. */
    void (*expire)(struct rn__loop *loop, struct rn__op *op, int res);
    /* Bytes the backend has already taken off f's socket and not yet
     * handed to a read (io_uring's stream-read queue). NULL when the
     * backend never reads ahead. */
    size_t (*buffered)(struct rn__loop *loop, const struct rn__fd *f);
};

extern const struct rn__backend rn__backend_uring;
extern const struct rn__backend rn__backend_epoll;

/* Bytes received on f that wait inside the backend for a read. */
static inline size_t rn__fd_buffered(struct rn__loop *loop, const struct rn__fd *f);

/* ---- lent read buffers (rn_conn_read_lent) ---------------------------------- */

/* Each lent buffer holds this many bytes: a TLS record's plaintext fits. */
#define RN__LEND_SIZE ((unsigned)RN_LENT_MAX)
/* A heap buffer of RN__LEND_SIZE bytes from the loop's cache (or malloc);
 * NULL when out of memory. */
void *rn__lend_alloc(struct rn__loop *loop);
/* Give a lent buffer back: to the backend that owns it, else to the cache. */
void rn__lend_release(struct rn__loop *loop, void *buf);

/* ---- tasks and the loop ---------------------------------------------------- */

struct rn__task {
    void *sp;          /* saved stack pointer while switched out */
    void *stack;       /* mmap base (guard page first); NULL for the root */
    size_t stack_size; /* usable bytes above the guard page */
    rn_task_fn fn;
    void *arg;
    struct rn__task *next_ready;
    bool queued; /* on the run queue */
    bool dead;
    bool parked;                /* waiting in rn__task_park */
    bool ready;                 /* root only: woken */
    unsigned err_seq;           /* sentences (rn__err) this task has written */
    bool timed_out;             /* rn__task_park_until: the deadline woke it */
    struct rn__heap_node timer; /* rn__task_park_until: in the loop's timers, key = when to wake it;
                                 * idx means something only after that push (tasks start zeroed) */
    struct rn__task *all_prev, *all_next; /* every live task, for teardown */
    unsigned valgrind_id;
    void *asan_fake;  /* ASan fake stack while switched out */
    void *tsan_fiber; /* ThreadSanitizer's record of this stack */
};

struct rn__loop {
    const struct rn__backend *bk;
    void *bk_state;
    struct rn__task root;     /* the thread's own stack: scheduler and calls outside tasks */
    struct rn__task *current; /* running task (&root when none) */
    struct rn__task *rq_head, *rq_tail; /* ready tasks */
    size_t ntasks;                      /* live spawned tasks */
    struct rn__task *all;               /* list of live spawned tasks */
    size_t inflight; /* ops inside the backend (0 with no ready task = nothing can wake us) */
    int running;     /* depth of rn__loop_run on this thread */
    size_t stack_size;
    struct rn__task *stack_cache; /* finished tasks whose stacks are reused */
    size_t stack_cache_len;
    rn_stats stats;
    struct rn__heap timers; /* tasks in rn__task_park_until, on their deadline */
    void *lend_cache;       /* free heap lent buffers, linked through their first word */
    size_t lend_cache_len;
    char reason[160]; /* why this backend */
    const void *asan_main_bottom;
    size_t asan_main_size;
};

/* When run_once must return by: the earliest timed park, 0 if none. */
static inline int64_t rn__loop_wake_at(const struct rn__loop *loop)
{
    const struct rn__heap_node *n = rn__heap_min(&loop->timers);
    return n ? n->key : 0;
}

static inline size_t rn__fd_buffered(struct rn__loop *loop, const struct rn__fd *f)
{
    return loop->bk->buffered ? loop->bk->buffered(loop, f) : 0;
}

/* A mark of the sentences the current task has written so far. */
static inline unsigned rn__err_mark(struct rn__loop *loop)
{
    return loop->current->err_seq;
}

/* This thread's loop, created on first use (NULL with rn_last_error set if
 * no backend can start). */
struct rn__loop *rn__loop_get(void);
/* After rn__loop_get failed: the code to return (RN_EBACKEND, -EINVAL for
 * a bad RN_BACKEND, -ENOMEM, ...); rn_last_error has the sentence. */
int rn__loop_error(void);
/* This thread's loop if it exists, else NULL (no creation). */
struct rn__loop *rn__loop_peek(void);

/* Submit op and park until it is done; returns op->res. Works in a task and
 * outside (then the loop runs inline). */
int rn__op_wait(struct rn__loop *loop, struct rn__op *op);

/* Park the current task until rn__task_wake; outside tasks, run the loop
 * until woken. */
void rn__task_park(struct rn__loop *loop);
/* rn__task_park bounded by an absolute deadline (0: none): 0 when woken,
 * -ETIMEDOUT when the deadline came first, -ENOMEM when it cannot be
 * recorded (then it has not parked). */
int rn__task_park_until(struct rn__loop *loop, int64_t deadline);
void rn__task_wake(struct rn__loop *loop, struct rn__task *t);

/* Give the kernel back the pages of the current task's stack below the
 * caller's frame (they hold only dead frames): after a deep call such as a
 * TLS handshake, so that an idle task keeps only the pages it still uses.
 * Nothing outside tasks. */
void rn__task_trim_stack(struct rn__loop *loop);

/* Close f's descriptor the safe way: mark closing, cancel what is in flight,
 * wait for it to drain, close(2). */
void rn__fd_close(struct rn__loop *loop, struct rn__fd *f);

/* ---- errors ------------------------------------------------------------------ */

/* Record the detail for rn_last_error() and return err (for `return rn__err(...)`). */
int rn__err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether the current task has written a sentence since mark
 * (rn__err_mark, above): a call that fails asks before writing its generic
 * sentence, so the specific one a deeper layer wrote stays. */
bool rn__err_since(struct rn__loop *loop, unsigned mark);
/* errno name such as "ECONNREFUSED" (for messages). */
const char *rn__errname(int err);

/* ---- context switch (core/ctx_*.S) -------------------------------------------- */

/* Save callee-saved registers and the stack pointer into *from_sp, load
 * to_sp, restore and return into the other context. */
void rn__ctx_switch(void **from_sp, void *to_sp);

#endif /* RN_CORE_H */
