/* xthread.c - a loop seen from other threads: its public handle (rn_loop,
 * reference counted, outliving the thread), the inbox other threads post
 * to (new tasks, wake-ups of waiting tasks) with the eventfd that wakes the
 * loop when it sleeps in the kernel, and park/wake (rn_task_*).
 *
 * The inbox is a list under a mutex. The first post after the loop last
 * drained it wakes the loop; later posts only append (signalled), so many
 * posts between two passes of the loop cost one wake-up. The loop checks
 * one atomic flag per pass and drains the whole list at once.
 *
 * The wake-up: a task on a loop of the same backend sends it ring to ring
 * when the backend can (io_uring: IORING_OP_MSG_RING, submitted at once,
 * so the target finds a completion in its ring and has no eventfd read to
 * take and re-arm); anyone else writes the eventfd. */
#include "task.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct rn_loop {
    int refs;           /* atomic: the loop's own and each rn_loop_self's */
    pthread_mutex_t mu; /* guards what follows, up to the end */
    bool closed;        /* the loop ended (or rn_run_threads finished it): posts are refused */
    bool signalled;     /* the eventfd was written since the loop last drained */
    int has_msgs;       /* atomic: the list is not empty (read by the loop without the mutex) */
    int efd;            /* the eventfd the backend watches; -1 once closed */
    const struct rn__backend *bk; /* the loop's backend (a ring-to-ring wake-up needs the same) */
    int token;                    /* bk->xwake_token's descriptor, -1 for none; closed with xt */
    struct rn__task *head;        /* posted: new tasks (xspawn) and wake-ups, oldest first */
    struct rn__task *tail;
    size_t stack_size; /* atomic: for tasks spawned from other threads */
};

static void xt_unref(struct rn_loop *xt)
{
    if (__atomic_sub_fetch(&xt->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        if (xt->token >= 0)
            close(xt->token);
        pthread_mutex_destroy(&xt->mu);
        free(xt);
    }
}

struct rn_loop *rn__xt_get(struct rn__loop *loop, int *err)
{
    if (RN_LIKELY(loop->xt != NULL))
        return loop->xt;
    struct rn_loop *xt = calloc(1, sizeof *xt);
    if (!xt) {
        *err = rn__err(-ENOMEM, "out of memory making this thread's loop reachable from others");
        return NULL;
    }
    /* Blocking: io_uring's read of it must wait, not fail with EAGAIN; epoll
     * reads it only once it is readable. */
    xt->efd = eventfd(0, EFD_CLOEXEC);
    if (xt->efd < 0) {
        int e = -errno;
        free(xt);
        *err = rn__err(e, "cannot make the eventfd other threads wake this loop with: %s",
                       rn_strerror(e));
        return NULL;
    }
    int rc = loop->bk->xwake_start(loop, xt->efd);
    if (rc < 0) {
        close(xt->efd);
        free(xt);
        *err = rn__err(rc, "the %s backend cannot watch the cross-thread eventfd: %s",
                       loop->bk->name, rn_strerror(rc));
        return NULL;
    }
    pthread_mutex_init(&xt->mu, NULL);
    xt->refs = 1;
    xt->bk = loop->bk;
    xt->token = loop->bk->xwake_token ? loop->bk->xwake_token(loop) : -1;
    xt->stack_size = loop->stack_size;
    loop->xt = xt;
    return xt;
}

bool rn__xt_pending(const struct rn__loop *loop)
{
    return __atomic_load_n(&loop->xt->has_msgs, __ATOMIC_ACQUIRE) != 0;
}

static void write_efd(struct rn_loop *xt)
{
    uint64_t one = 1;
    /* Never blocks: the count stays far below its maximum. */
    ssize_t w;
    do
        w = write(xt->efd, &one, sizeof one);
    while (w < 0 && errno == EINTR);
}

/* Wake xt's loop ring to ring from this thread's loop, if both run a
 * backend that can; false: write the eventfd. Under xt->mu. */
static bool wake_by_ring(struct rn_loop *xt)
{
    struct rn__loop *here = rn__loop_peek();
    /* Only from a task: a message the kernel did not take at once (a
     * backed-up CQ) goes with its loop's next pass, which comes before the
     * loop stops running (loop_run sees xflush). Outside any task nothing
     * says when this thread's loop runs again. */
    if (xt->token < 0 || !here || here->bk != xt->bk || here->current == &here->root)
        return false;
    /* The reference rn__xt_post_done drops: xt outlives the message. */
    __atomic_add_fetch(&xt->refs, 1, __ATOMIC_RELAXED);
    if (!here->bk->xwake_post(here, xt->token, xt)) {
        __atomic_sub_fetch(&xt->refs, 1, __ATOMIC_RELAXED); /* ours was not the last */
        return false;
    }
    here->stats.xwakes_by_ring++;
    return true;
}

void rn__xt_post_done(struct rn_loop *xt, int res)
{
    if (res < 0) {
        /* It did not arrive (the target's completion queue was full, say):
         * the eventfd wakes it, late rather than never. */
        pthread_mutex_lock(&xt->mu);
        if (!xt->closed)
            write_efd(xt);
        pthread_mutex_unlock(&xt->mu);
    }
    xt_unref(xt);
}

/* Append t under xt->mu; wake the loop for the first post of a batch. */
static void post_locked(struct rn_loop *xt, struct rn__task *t)
{
    t->xnext = NULL;
    if (xt->tail)
        xt->tail->xnext = t;
    else
        xt->head = t;
    xt->tail = t;
    __atomic_store_n(&xt->has_msgs, 1, __ATOMIC_RELEASE);
    if (!xt->signalled) {
        xt->signalled = true;
        if (!wake_by_ring(xt))
            write_efd(xt);
    }
}

void rn__xt_drain(struct rn__loop *loop)
{
    struct rn_loop *xt = loop->xt;
    pthread_mutex_lock(&xt->mu);
    struct rn__task *t = xt->head;
    xt->head = xt->tail = NULL;
    if (xt->signalled)
        loop->stats.xwakeups++;
    xt->signalled = false;
    __atomic_store_n(&xt->has_msgs, 0, __ATOMIC_RELAXED);
    for (struct rn__task *p = t; p; p = p->xnext) {
        p->xqueued = false;
        p->xrun = p->xnext;
    }
    pthread_mutex_unlock(&xt->mu);
    while (t) {
        struct rn__task *next = t->xrun;
        if (t->xspawn) {
            t->xspawn = false;
            rn__task_adopt(loop, t);
        } else if (t->xparked) {
            rn__task_wake(loop, t);
        }
        t = next;
    }
}

bool rn__xt_wake_task(struct rn_loop *xt, struct rn__task *t)
{
    struct rn__loop *here = rn__loop_peek();
    if (here && here->xt == xt) {
        /* Its own thread: straight into the run queue, no kernel call. */
        if (t->xparked)
            rn__task_wake(here, t);
        return true;
    }
    pthread_mutex_lock(&xt->mu);
    bool closed = xt->closed;
    if (!closed && !t->xqueued) {
        t->xqueued = true;
        post_locked(xt, t);
    }
    pthread_mutex_unlock(&xt->mu);
    return !closed;
}

void rn__xt_ref(struct rn_loop *xt)
{
    __atomic_add_fetch(&xt->refs, 1, __ATOMIC_RELAXED);
}

void rn__xt_task_exit(struct rn__loop *loop, struct rn__task *t)
{
    struct rn_loop *xt = loop->xt;
    pthread_mutex_lock(&xt->mu);
    if (t->xqueued) {
        struct rn__task **pp = &xt->head, *prev = NULL;
        while (*pp && *pp != t) {
            prev = *pp;
            pp = &(*pp)->xnext;
        }
        if (*pp) {
            *pp = t->xnext;
            if (xt->tail == t)
                xt->tail = prev;
        }
        t->xqueued = false;
        if (!xt->head) {
            /* As a drain would: the loop sees no message now, so the next
             * post must write the eventfd again (a count left there only
             * ends one wait early). */
            __atomic_store_n(&xt->has_msgs, 0, __ATOMIC_RELAXED);
            xt->signalled = false;
        }
    }
    pthread_mutex_unlock(&xt->mu);
}

void rn__xt_loop_end(struct rn__loop *loop)
{
    struct rn_loop *xt = loop->xt;
    pthread_mutex_lock(&xt->mu);
    xt->closed = true;
    struct rn__task *t = xt->head;
    xt->head = xt->tail = NULL;
    __atomic_store_n(&xt->has_msgs, 0, __ATOMIC_RELAXED);
    close(xt->efd);
    xt->efd = -1;
    pthread_mutex_unlock(&xt->mu);
    /* Spawns that came after the loop last ran: their thread will never
     * run them (as rn_spawn's from a main that never blocks again). */
    while (t) {
        struct rn__task *next = t->xnext;
        if (t->xspawn)
            rn__task_discard(t);
        t = next;
    }
    loop->xt = NULL;
    xt_unref(xt);
}

bool rn__xt_close_if_idle(struct rn__loop *loop)
{
    struct rn_loop *xt = loop->xt;
    if (!xt)
        return true;
    pthread_mutex_lock(&xt->mu);
    bool idle = xt->head == NULL;
    if (idle)
        xt->closed = true;
    pthread_mutex_unlock(&xt->mu);
    return idle;
}

void rn__xt_stack_size(struct rn__loop *loop, size_t bytes)
{
    __atomic_store_n(&loop->xt->stack_size, bytes, __ATOMIC_RELAXED);
}

/* ---- public: the loop's handle ---------------------------------------------------- */

RN_EXPORT rn_loop *rn_loop_self(void)
{
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return NULL;
    int err;
    struct rn_loop *xt = rn__xt_get(loop, &err);
    if (!xt)
        return NULL;
    __atomic_add_fetch(&xt->refs, 1, __ATOMIC_RELAXED);
    return xt;
}

RN_EXPORT void rn_loop_release(rn_loop *l)
{
    if (l)
        xt_unref(l);
}

RN_EXPORT int rn_loop_spawn(rn_loop *l, rn_task_fn fn, void *arg)
{
    if (!l)
        return rn__err(-EINVAL, "rn_loop_spawn: the loop is NULL");
    if (!fn)
        return rn__err(-EINVAL, "rn_loop_spawn: the task function is NULL");
    struct rn__loop *here = rn__loop_peek();
    if (here && here->xt == l)
        return rn_spawn(fn, arg);
    struct rn__task *t = rn__task_new(__atomic_load_n(&l->stack_size, __ATOMIC_RELAXED), fn, arg);
    if (!t)
        return rn__err(-ENOMEM, "rn_loop_spawn: cannot map a task stack (%s)", rn__errname(-errno));
    t->xspawn = true;
    pthread_mutex_lock(&l->mu);
    bool closed = l->closed;
    if (!closed)
        post_locked(l, t);
    pthread_mutex_unlock(&l->mu);
    if (closed) {
        rn__task_discard(t);
        return rn__err(RN_ECLOSED, "rn_loop_spawn: that loop's thread has ended");
    }
    return 0;
}

/* ---- public: park and wake --------------------------------------------------------- */

RN_EXPORT rn_task *rn_task_self(void)
{
    struct rn__loop *loop = rn__loop_peek();
    if (!loop || loop->current == &loop->root)
        return NULL;
    int err;
    if (!rn__xt_get(loop, &err))
        return NULL;
    loop->current->xexposed = true;
    return (rn_task *)loop->current;
}

RN_EXPORT int rn_task_park(int64_t ms)
{
    struct rn__loop *loop = rn__loop_peek();
    if (!loop || loop->current == &loop->root)
        return rn__err(-EINVAL, "rn_task_park: called outside a task (nothing could wake it)");
    struct rn__task *t = loop->current;
    if (__atomic_exchange_n(&t->permit, 0, __ATOMIC_ACQ_REL))
        return 0;
    if (ms == 0)
        return rn__err(-ETIMEDOUT, "rn_task_park: no wake was pending");
    int err;
    if (!rn__xt_get(loop, &err))
        return err;
    t->xexposed = true;
    int64_t deadline = rn__deadline_after_ms(ms);
    t->xparked = true;
    loop->xwaiters++;
    int rc;
    for (;;) {
        int r = rn__task_park_until(loop, deadline);
        /* The wake decides over a timeout that came with it: each wake is
         * taken by exactly one park, this one or the next. */
        if (__atomic_exchange_n(&t->permit, 0, __ATOMIC_ACQ_REL)) {
            rc = 0;
            break;
        }
        if (r < 0) {
            rc = r == -ETIMEDOUT ? rn__err(r, "rn_task_park: no wake within %lld ms", (long long)ms)
                                 : rn__err(r, "rn_task_park: cannot record the deadline");
            break;
        }
    }
    loop->xwaiters--;
    t->xparked = false;
    return rc;
}

RN_EXPORT void rn_task_wake(rn_task *pub)
{
    struct rn__task *t = (struct rn__task *)pub;
    if (!t)
        return;
    if (__atomic_exchange_n(&t->permit, 1, __ATOMIC_ACQ_REL))
        return; /* a wake is pending already: its park has been or will be run */
    /* t->loop->xt was made before rn_task_self handed t out, and stays
     * until t's loop ends, which t (not finished) outlives. */
    rn__xt_wake_task(t->loop->xt, t);
}
