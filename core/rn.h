/* rn.h - ringnet's private core: time, the loop, tasks, errors and lent
 * buffers. The descriptor and operation records and the backend contract
 * are in backend.h, which comes with this header. Not installed. */
#ifndef RN_CORE_H
#define RN_CORE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "heap.h"
#include "ringnet.h"

#define RN_LIKELY(x)           __builtin_expect(!!(x), 1)
#define RN_UNLIKELY(x)         __builtin_expect(!!(x), 0)
#define RN_STATIC_ASSERT(c, m) _Static_assert(c, m)
/* Public calls are the only symbols the shared library exports. */
#define RN_EXPORT __attribute__((visibility("default")))

struct rn__loop;
struct rn__task;
struct rn__fd;
struct rn__op;
struct rn_loop; /* the public handle of a loop for other threads (core/xthread.c) */

/* ---- time --------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds. Deadlines are absolute instants on it. */
int64_t rn__now_ns(void);
/* Absolute deadline ms from now; 0 (no deadline) for ms <= 0; saturates. */
int64_t rn__deadline_after_ms(int64_t ms);

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
    /* Across threads (core/xthread.c). */
    struct rn__loop *loop;  /* the loop it belongs to (NULL while a cross-thread spawn is queued) */
    int permit;             /* rn_task_wake's token (atomic): a wake not yet taken by a park */
    bool xparked;           /* in a wait another thread may end: the inbox's wake-up wakes it */
    bool xexposed;          /* other threads may post its wake-up: at its end, unqueue it */
    bool xqueued;           /* its wake-up is in the inbox (under the inbox's mutex) */
    bool xspawn;            /* queued in an inbox as a new task (rn_loop_spawn) */
    struct rn__task *xnext; /* the inbox's list (under its mutex) */
    struct rn__task *xrun;  /* the drained batch's list (owner thread only: a
                             * poster may queue the task again meanwhile) */
};

struct rn__loop {
    const struct rn__backend *bk;
    void *bk_state;
    struct rn__task root;     /* the thread's own stack: scheduler and calls outside tasks */
    struct rn__task *current; /* running task (&root when none) */
    struct rn__task *rq_head, *rq_tail; /* ready tasks */
    size_t ntasks;                      /* live spawned tasks */
    struct rn__task *all;               /* list of live spawned tasks */
    size_t inflight; /* work inside the backend (rn__fd_hold; 0 with no ready task and no timed
                      * park = nothing can wake us) */
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
    struct rn_loop *xt; /* the handle other threads post to; NULL until needed (rn__xt_get) */
    size_t xwaiters;    /* tasks in a wait only another thread may end (park, channel) */
    int64_t wait_until; /* rn_loop_run_once's bound on its wait (rn__now_ns), 0: none */
    bool xflush;        /* a wake-up for another loop waits in the backend for this
                         * loop's next pass (bk->xwake_post could not send it at once):
                         * make one before the loop stops running */
};

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
/* This thread's rn_set_backend choice (a static name), NULL for none. */
const char *rn__backend_choice(void);
/* This thread's rn_set_task_stack_size, 0 for the default. */
size_t rn__task_stack_choice(void);

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

/* One pass for a host loop (rn_loop_run_once, core/embed.c): run what is
 * ready, wait in the backend at most ms (0: no wait; < 0: no bound, but
 * none when nothing could end it), fire deadlines, run what became ready
 * and submit what it asked for. Outside tasks, not nested. */
void rn__loop_host_pass(struct rn__loop *loop, int64_t ms);

/* Run the loop until no spawned task is left: 0, or -EDEADLK when every
 * remaining task waits with nothing that could wake it. */
int rn__loop_run(struct rn__loop *loop);

/* ---- across threads (core/xthread.c) ------------------------------------------ */

/* The loop's handle for other threads, made on first use by the owning
 * thread (an eventfd the backend watches); NULL with the error and a
 * sentence in *err when it cannot be made. */
struct rn_loop *rn__xt_get(struct rn__loop *loop, int *err);
/* Take what other threads posted (spawns, wake-ups) into the run queue. */
void rn__xt_drain(struct rn__loop *loop);
/* Whether something waits in the inbox (one atomic load). */
bool rn__xt_pending(const struct rn__loop *loop);
/* From any thread: make t, a task of the loop whose handle is xt, run its
 * wait again (t->xparked) if it is in one: at once on t's own thread,
 * through the inbox from others. Called with nothing of xt held. False
 * when xt's loop has ended (t is gone: nothing was touched). */
bool rn__xt_wake_task(struct rn_loop *xt, struct rn__task *t);
/* Take one more reference to xt (dropped with rn_loop_release). */
void rn__xt_ref(struct rn_loop *xt);
/* Task t ends (t->xexposed): take its wake-up out of the inbox. */
void rn__xt_task_exit(struct rn__loop *loop, struct rn__task *t);
/* The loop ends (its thread exits): refuse posts from now on, drop what
 * was posted and not run, close the eventfd, drop the loop's reference. */
void rn__xt_loop_end(struct rn__loop *loop);
/* Refuse posts if the inbox is empty (true), else false (the caller runs
 * the loop again). For rn_run_threads' threads as their loop finishes. */
bool rn__xt_close_if_idle(struct rn__loop *loop);
/* A wake-up sent loop to loop (bk->xwake_post) has its outcome: res < 0
 * means it did not arrive, and the target's eventfd is written instead.
 * Drops the reference the post held on xt. */
void rn__xt_post_done(struct rn_loop *xt, int res);
/* The stack size of tasks spawned from other threads (rn_set_task_stack_size). */
void rn__xt_stack_size(struct rn__loop *loop, size_t bytes);

/* ---- blocking work on the offload pool (core/offload.c) ------------------------- */

/* The pool's bound on workers: max(4, 4 x CPUs), at most this many. */
#define RN__OFFLOAD_MAX_THREADS 256
/* A worker with no job for this many seconds exits. */
#define RN__OFFLOAD_IDLE_S 10
/* fn(arg) on a worker while the current task (or, outside tasks, the loop)
 * waits, until an absolute deadline (0: none). 0 once fn returned: the
 * caller owns arg again. Any error (-ETIMEDOUT, -ENOMEM, -EAGAIN: no worker
 * could start, an eventfd error) means the caller no longer owns arg:
 * release(arg) (if not NULL) has run, or runs on the worker once fn is
 * done. Sentence in rn_last_error. */
int rn__offload_until(struct rn__loop *loop, rn_task_fn fn, void *arg, void (*release)(void *),
                      int64_t deadline);

/* A task record with a fresh stack of size bytes, made on any thread
 * (no loop's cache), set to start fn(arg); NULL with errno on failure. */
struct rn__task *rn__task_new(size_t size, rn_task_fn fn, void *arg);
/* Unmap a task made by rn__task_new that never ran. */
void rn__task_discard(struct rn__task *t);
/* The loop takes t (rn__task_new, on its own thread now): live, ready. */
void rn__task_adopt(struct rn__loop *loop, struct rn__task *t);

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

/* Every layer above the core hands ops to a backend. */
#include "backend.h"

#endif /* RN_CORE_H */
