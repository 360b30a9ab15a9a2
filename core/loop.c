/* loop.c - the per-thread loop: creation on first use, backend choice,
 * the run queue, park/wake and timed parks, waiting for an op, and the one
 * place where results of both backends are mapped to what callers see. */
#include "task.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static __thread struct rn__loop *tl_loop;
static __thread const char *tl_backend_choice; /* static string or NULL */
static __thread int tl_loop_err;               /* why this thread's loop could not start */
static pthread_key_t loop_key;
static pthread_once_t loop_key_once = PTHREAD_ONCE_INIT;

/* ---- time ---------------------------------------------------------------- */

int64_t rn__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t rn__deadline_after_ms(int64_t ms)
{
    if (ms <= 0)
        return 0;
    /* Saturate: a deadline a few centuries away is "no deadline" in practice
     * but keeps the arithmetic defined. */
    const int64_t max_ms = INT64_MAX / 1000000 / 2;
    if (ms > max_ms)
        ms = max_ms;
    return rn__now_ns() + ms * 1000000;
}

/* ---- the run queue ------------------------------------------------------------- */

void rn__task_wake(struct rn__loop *loop, struct rn__task *t)
{
    if (!t->parked)
        return; /* running: it checks its condition before it parks */
    if (t == &loop->root) {
        t->ready = true;
        return;
    }
    if (t->queued)
        return;
    t->queued = true;
    t->next_ready = NULL;
    if (loop->rq_tail)
        loop->rq_tail->next_ready = t;
    else
        loop->rq_head = t;
    loop->rq_tail = t;
}

/* Run every task that is ready now; tasks woken meanwhile run next pass,
 * after the backend has had a chance to collect completions. */
static size_t run_ready(struct rn__loop *loop)
{
    struct rn__task *t = loop->rq_head;
    loop->rq_head = loop->rq_tail = NULL;
    size_t n = 0;
    for (; t; n++) {
        struct rn__task *next = t->next_ready;
        t->queued = false;
        t->parked = false;
        rn__task_switch_in(loop, t);
        t = next;
    }
    return n;
}

/* ---- timed parks: tasks in loop->timers on their deadline ------------------------- */

/* Wake the timed parks whose deadline has come. */
static void fire_timers(struct rn__loop *loop)
{
    int64_t now = rn__now_ns();
    struct rn__heap_node *n;
    while ((n = rn__heap_min(&loop->timers)) && n->key <= now) {
        struct rn__task *t = rn__heap_entry(n, struct rn__task, timer);
        rn__heap_remove(&loop->timers, n);
        t->timed_out = true;
        rn__task_wake(loop, t);
    }
}

int rn__task_park_until(struct rn__loop *loop, int64_t deadline)
{
    if (!deadline) {
        rn__task_park(loop);
        return 0;
    }
    if (rn__now_ns() >= deadline)
        return -ETIMEDOUT;
    struct rn__task *t = loop->current;
    if (rn__heap_push(&loop->timers, &t->timer, deadline, 16) < 0)
        return -ENOMEM;
    t->timed_out = false;
    rn__task_park(loop);
    if (rn__heap_queued(&t->timer)) /* woken before its deadline: no longer timed */
        rn__heap_remove(&loop->timers, &t->timer);
    return t->timed_out ? -ETIMEDOUT : 0;
}

/* One run_once; whether timed parks may be due. */
static bool backend_pass(struct rn__loop *loop, bool wait)
{
    loop->xflush = false; /* the pass takes the wake-ups tasks queued for other loops */
    int r = loop->bk->run_once(loop, wait);
    if (r < 0) {
        /* Only a bug (EBADF, EFAULT) gets here: there is no way to go on. */
        fprintf(stderr, "ringnet: %s backend failed: %s\n", loop->bk->name, rn_strerror(r));
        abort();
    }
    return r > 0;
}

/* A task queued a wake-up for another loop that goes to the kernel with
 * this loop's next pass (rn__xt_post_done, bk->xwake_post): the loop is
 * about to stop running, and nothing says when it runs again, so make that
 * pass now, without waiting. What it completes is run by the loop's next
 * run. */
static void flush_xwakes(struct rn__loop *loop)
{
    (void)backend_pass(loop, false);
}

/* Drive the loop on the thread's own stack until *flag is true (flag NULL:
 * until no spawned task is left), or until nothing can ever get there (no
 * ready task, nothing in flight): then -EDEADLK. */
static int loop_run(struct rn__loop *loop, const bool *flag)
{
    loop->running++;
    int rc = 0;
    for (;;) {
        if (loop->xt && rn__xt_pending(loop))
            rn__xt_drain(loop);
        run_ready(loop);
        if (flag ? *flag : loop->ntasks == 0)
            break;
        bool wait = loop->rq_head == NULL;
        /* A task in a wait another thread may end (park, a channel) can be
         * woken through the inbox: the loop waits for it in the kernel. */
        if (wait && loop->inflight == 0 && loop->timers.len == 0 && loop->xwaiters == 0) {
            rc = -EDEADLK;
            break;
        }
        if (backend_pass(loop, wait) && loop->timers.len)
            fire_timers(loop);
    }
    if (loop->xflush)
        flush_xwakes(loop);
    loop->running--;
    return rc;
}

int rn__loop_run(struct rn__loop *loop)
{
    return loop_run(loop, NULL);
}

void rn__loop_host_pass(struct rn__loop *loop, int64_t ms)
{
    loop->running++;
    if (loop->xt && rn__xt_pending(loop))
        rn__xt_drain(loop);
    if (loop->timers.len)
        fire_timers(loop);
    run_ready(loop);
    bool work = loop->rq_head || (loop->xt && rn__xt_pending(loop));
    bool wait = ms != 0 && !work;
    /* No bound and nothing that could end the wait: do not sleep forever. */
    if (wait && ms < 0 && loop->inflight == 0 && loop->timers.len == 0 && loop->xwaiters == 0)
        wait = false;
    if (wait && ms > 0)
        loop->wait_until = rn__deadline_after_ms(ms);
    (void)backend_pass(loop, wait);
    loop->wait_until = 0;
    for (int round = 0; round < 2; round++) {
        if (loop->timers.len)
            fire_timers(loop);
        if (loop->xt && rn__xt_pending(loop))
            rn__xt_drain(loop);
        /* The tasks that ran may have queued ops: hand them to the kernel
         * now, or the host would sleep on a descriptor that cannot turn
         * readable for them. What that pass completes runs next call. */
        if (round == 0 && run_ready(loop))
            (void)backend_pass(loop, false);
        else
            break;
    }
    if (loop->xflush)
        flush_xwakes(loop);
    loop->running--;
}

void rn__task_park(struct rn__loop *loop)
{
    struct rn__task *t = loop->current;
    t->parked = true;
    if (t == &loop->root) {
        t->ready = false;
        if (loop_run(loop, &t->ready) < 0) {
            /* Nothing is in flight and no task can run: the caller waited on
             * something that cannot happen (a bug in a layer above). */
            fprintf(stderr, "ringnet: a call outside any task waits with nothing in flight\n");
            abort();
        }
    } else {
        rn__task_switch_out(loop, t);
    }
    t->parked = false;
}

/* ---- operations --------------------------------------------------------------- */

int rn__op_wait(struct rn__loop *loop, struct rn__op *op)
{
    struct rn__fd *f = op->f;
    if (f->closing)
        return RN_ECLOSED;
    op->done = false;
    op->loop_timed = false;
    op->task = loop->current;
    op->next = NULL;
    rn__fd_hold(loop, f);
    loop->bk->submit(loop, op);
    while (!op->done) {
        if (!op->loop_timed) {
            rn__task_park(loop);
            continue;
        }
        /* Parked by the backend in user space (on a queue of received
         * buffers, on an epoll edge): the deadline is the loop's. */
        int r = rn__task_park_until(loop, op->deadline);
        if (r < 0 && !op->done && op->loop_timed)
            loop->bk->expire(loop, op, r);
    }
    return op->res;
}

void rn__op_complete(struct rn__loop *loop, struct rn__op *op, int res)
{
    struct rn__fd *f = op->f;
    if (f->closing) {
        if (op->kind == RN__OP_ACCEPT && res >= 0)
            close(res); /* accepted as the listener closed: nobody will take it */
        res = RN_ECLOSED;
    } else if (op->deadline && (res == -ECANCELED || res == -EINTR)) {
        /* Only close and a linked timeout cancel an op; close is handled above. */
        res = -ETIMEDOUT;
    } else if (op->kind == RN__OP_RECV && res >= 0) {
        /* A short read emptied the socket: the next recv will most likely
         * have to wait, and a backend can skip trying it first. Not at EOF:
         * nothing more will come. */
        f->rd_drained = res > 0 && (size_t)res < op->len;
    }
    rn__fd_drop(loop, f);
    op->res = res;
    op->done = true;
    loop->stats.completions++;
    rn__task_wake(loop, op->task);
}

void rn__fd_close(struct rn__loop *loop, struct rn__fd *f)
{
    f->closing = true;
    if (f->inflight > 0) {
        loop->bk->cancel_fd(loop, f);
        while (f->inflight > 0) {
            f->drain_waiter = loop->current;
            rn__task_park(loop);
        }
        f->drain_waiter = NULL;
    }
    if (f->fd >= 0) {
        loop->bk->fd_close(loop, f);
        close(f->fd);
        f->fd = -1;
    }
}

/* ---- lent read buffers --------------------------------------------------------------- */

/* Free heap buffers kept for the next lent read. Enough to absorb the
 * bursts of a busy loop without going back to malloc; beyond it they go. */
#define RN_LEND_CACHE_MAX 64

void *rn__lend_alloc(struct rn__loop *loop)
{
    void *b = loop->lend_cache;
    if (b) {
        memcpy(&loop->lend_cache, b, sizeof(void *));
        loop->lend_cache_len--;
        return b;
    }
    return malloc(RN__LEND_SIZE);
}

void rn__lend_release(struct rn__loop *loop, void *buf)
{
    if (!buf)
        return;
    if (!loop) { /* a detached connection closed on a thread with no loop */
        free(buf);
        return;
    }
    if (loop->bk->lend_release && loop->bk->lend_release(loop, buf))
        return;
    if (loop->lend_cache_len >= RN_LEND_CACHE_MAX) {
        free(buf);
        return;
    }
    memcpy(buf, &loop->lend_cache, sizeof(void *));
    loop->lend_cache = buf;
    loop->lend_cache_len++;
}

/* ---- the loop --------------------------------------------------------------------- */

static void loop_destroy(struct rn__loop *loop)
{
    if (!loop)
        return;
    if (loop->xt)
        rn__xt_loop_end(loop);
    if (loop->bk)
        loop->bk->destroy(loop, loop->bk_state);
    rn__heap_free(&loop->timers);
    while (loop->lend_cache) {
        void *b = loop->lend_cache;
        memcpy(&loop->lend_cache, b, sizeof(void *));
        free(b);
    }
    rn__tasks_free(loop);
    free(loop);
}

static void loop_key_dtor(void *p)
{
    if (p == tl_loop)
        tl_loop = NULL;
    loop_destroy(p);
}

static void main_thread_exit(void)
{
    /* Thread-specific destructors do not run for the thread calling exit(). */
    struct rn__loop *loop = tl_loop;
    if (loop && loop->running == 0 && loop->current == &loop->root) {
        pthread_setspecific(loop_key, NULL);
        tl_loop = NULL;
        loop_destroy(loop);
    }
}

static void make_key(void)
{
    pthread_key_create(&loop_key, loop_key_dtor);
    atexit(main_thread_exit);
}

static bool fallback_allowed(int err)
{
    return err == -ENOSYS || err == -EPERM || err == -EACCES || err == -EINVAL ||
           err == -EOPNOTSUPP;
}

static int loop_pick_backend(struct rn__loop *loop)
{
    const char *choice = tl_backend_choice;
    if (!choice) {
        choice = getenv("RN_BACKEND");
        if (!choice || !*choice)
            choice = "auto";
    }
    char why[128] = "";
    int rc;
    if (strcmp(choice, "epoll") == 0) {
        loop->bk = &rn__backend_epoll;
        rc = loop->bk->init(loop, &loop->bk_state, why, sizeof why);
        if (rc < 0)
            return rn__err(rc, "epoll backend cannot start: %s", why);
        snprintf(loop->reason, sizeof loop->reason, "epoll: chosen (RN_BACKEND or rn_set_backend)");
    } else if (strcmp(choice, "io_uring") == 0 || strcmp(choice, "auto") == 0) {
        bool forced = choice[0] == 'i';
        loop->bk = &rn__backend_uring;
        rc = loop->bk->init(loop, &loop->bk_state, why, sizeof why);
        if (rc == 0) {
            snprintf(loop->reason, sizeof loop->reason, "io_uring: %s",
                     forced ? "chosen" : "probe passed");
        } else if (forced) {
            loop->bk = NULL;
            return rn__err(RN_EBACKEND, "io_uring was asked for but cannot run here: %s", why);
        } else if (!fallback_allowed(rc)) {
            loop->bk = NULL;
            return rn__err(rc,
                           "io_uring could not start (%s, not a reason to fall back to epoll): %s",
                           rc == -ERANGE ? "a configuration error" : "a resource error", why);
        } else {
            char uwhy[128];
            snprintf(uwhy, sizeof uwhy, "%s", why);
            loop->bk = &rn__backend_epoll;
            rc = loop->bk->init(loop, &loop->bk_state, why, sizeof why);
            if (rc < 0) {
                loop->bk = NULL;
                return rn__err(rc, "no backend can start: io_uring: %s; epoll: %s", uwhy, why);
            }
            snprintf(loop->reason, sizeof loop->reason, "epoll: io_uring unavailable (%s)", uwhy);
        }
    } else {
        return rn__err(-EINVAL, "RN_BACKEND=%s is not io_uring, epoll or auto", choice);
    }
    const char *dbg = getenv("RN_DEBUG");
    if (dbg && *dbg && strcmp(dbg, "0") != 0)
        fprintf(stderr, "ringnet: backend %s\n", loop->reason);
    return 0;
}

int rn__loop_error(void)
{
    return tl_loop_err ? tl_loop_err : RN_EBACKEND;
}

struct rn__loop *rn__loop_peek(void)
{
    return tl_loop;
}

const char *rn__backend_choice(void)
{
    return tl_backend_choice;
}

struct rn__loop *rn__loop_get(void)
{
    struct rn__loop *loop = tl_loop;
    if (RN_LIKELY(loop != NULL))
        return loop;
    pthread_once(&loop_key_once, make_key);
    loop = calloc(1, sizeof *loop);
    if (!loop) {
        tl_loop_err = rn__err(-ENOMEM, "out of memory creating this thread's loop");
        return NULL;
    }
    loop->current = &loop->root;
    rn__task_root_init(loop);
    loop->stack_size = rn__task_default_stack();
    int rc = loop_pick_backend(loop);
    if (rc < 0) {
        free(loop);
        tl_loop_err = rc;
        return NULL;
    }
    tl_loop = loop;
    pthread_setspecific(loop_key, loop);
    return loop;
}

/* ---- public calls ------------------------------------------------------------------ */

RN_EXPORT int rn_run(rn_task_fn fn, void *arg)
{
    if (!fn)
        return rn__err(-EINVAL, "rn_run: the task function is NULL");
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    if (loop->current != &loop->root || loop->running)
        return rn__err(-EBUSY, "rn_run: called from inside a task; use rn_spawn there");
    int rc = rn_spawn(fn, arg);
    if (rc < 0)
        return rc;
    if (loop_run(loop, NULL) < 0)
        return rn__err(-EDEADLK,
                       "rn_run: %zu task(s) are parked with nothing in flight that could wake them",
                       loop->ntasks);
    return 0;
}

RN_EXPORT void rn_yield(void)
{
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return;
    struct rn__task *t = loop->current;
    if (t == &loop->root) {
        if (loop->running)
            return;
        loop->running++;
        if (loop->xt && rn__xt_pending(loop))
            rn__xt_drain(loop);
        run_ready(loop);
        (void)backend_pass(loop, false);
        loop->running--;
        return;
    }
    t->parked = true;
    rn__task_wake(loop, t);
    rn__task_switch_out(loop, t);
    t->parked = false;
}

RN_EXPORT int rn_sleep(int64_t ms)
{
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    if (ms <= 0) {
        rn_yield();
        return 0;
    }
    /* Nothing wakes a sleeping task but its deadline; a wake from elsewhere
     * would only park it again. */
    int64_t deadline = rn__deadline_after_ms(ms);
    int rc;
    while ((rc = rn__task_park_until(loop, deadline)) == 0) {
    }
    return rc == -ETIMEDOUT ? 0 : rn__err(rc, "rn_sleep: %s", rn_strerror(rc));
}

RN_EXPORT const char *rn_backend_name(void)
{
    struct rn__loop *loop = rn__loop_get();
    return loop ? loop->bk->name : NULL;
}

RN_EXPORT int rn_set_backend(const char *name)
{
    static const char *const names[] = {"io_uring", "epoll", "auto"};
    if (!name)
        name = "auto";
    const char *pick = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            pick = names[i];
    if (!pick)
        return rn__err(-EINVAL, "rn_set_backend: \"%s\" is not io_uring, epoll or auto", name);
    if (tl_loop)
        return rn__err(-EBUSY, "rn_set_backend: this thread's loop already runs %s",
                       tl_loop->bk->name);
    tl_backend_choice = pick;
    return 0;
}

RN_EXPORT const char *rn_backend_reason(void)
{
    struct rn__loop *loop = rn__loop_get();
    return loop ? loop->reason : rn_last_error();
}

RN_EXPORT int rn_loop_stats(rn_stats *out)
{
    if (!out)
        return rn__err(-EINVAL, "rn_loop_stats: out is NULL");
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    *out = loop->stats;
    return 0;
}
