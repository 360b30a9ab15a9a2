/* loop.c - the per-thread loop and its stackful tasks: creation on first use,
 * backend choice, the run queue, park/wake, and the one place where results
 * of both backends are mapped to what callers see. */
#include "rn.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>) && __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define RN_HAVE_VALGRIND 1
#endif
#endif
#ifndef RN_HAVE_VALGRIND
#define VALGRIND_STACK_REGISTER(lo, hi)        0u
#define VALGRIND_STACK_DEREGISTER(id)          ((void)(id))
#define VALGRIND_MAKE_MEM_UNDEFINED(addr, len) ((void)(addr), (void)(len))
#endif

#if defined(__SANITIZE_ADDRESS__)
#define RN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RN_ASAN 1
#endif
#endif
#ifdef RN_ASAN
#include <sanitizer/common_interface_defs.h>
#define ASAN_START(save, bottom, size)  __sanitizer_start_switch_fiber(save, bottom, size)
#define ASAN_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
/* sizeof: the arguments are not evaluated (one was a sysconf call per
 * switch, found by callgrind). */
#define ASAN_START(save, bottom, size)                                                             \
    ((void)sizeof(save), (void)sizeof(bottom), (void)sizeof(size))
#define ASAN_FINISH(save, bottom, size)                                                            \
    ((void)sizeof(save), (void)sizeof(bottom), (void)sizeof(size))
#endif

#if defined(__SANITIZE_THREAD__)
#define RN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RN_TSAN 1
#endif
#endif
#ifdef RN_TSAN
/* ThreadSanitizer must be told about each stack we switch to, or it takes
 * a task switch for a wild jump inside one thread. */
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#define TSAN_SWITCH(fiber) __tsan_switch_to_fiber(fiber, 0)
#else
#define TSAN_SWITCH(fiber) ((void)(fiber))
#endif

#define RN_DEFAULT_STACK   (256u * 1024u)
#define RN_MIN_STACK       (16u * 1024u)
#define RN_STACK_CACHE_MAX 64

void rn__ctx_entry(void);

static __thread struct rn__loop *tl_loop;
static __thread const char *tl_backend_choice; /* static string or NULL */
static __thread size_t tl_stack_size;
static __thread int tl_loop_err; /* why this thread's loop could not start */
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

/* ---- tasks ----------------------------------------------------------------- */

static size_t page_size(void)
{
    /* The same for every thread: relaxed atomics make the first-use race
     * (two threads storing the same value) well defined. */
    static size_t page;
    size_t p = __atomic_load_n(&page, __ATOMIC_RELAXED);
    if (!p) {
        p = (size_t)sysconf(_SC_PAGESIZE);
        __atomic_store_n(&page, p, __ATOMIC_RELAXED);
    }
    return p;
}

static void task_free_stack(struct rn__task *t)
{
#ifdef RN_TSAN
    __tsan_destroy_fiber(t->tsan_fiber);
#endif
    VALGRIND_STACK_DEREGISTER(t->valgrind_id);
    munmap(t->stack, t->stack_size + page_size());
}

static void task_release(struct rn__loop *loop, struct rn__task *t)
{
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else
        loop->all = t->all_next;
    if (t->all_next)
        t->all_next->all_prev = t->all_prev;
    if (loop->stack_cache_len < RN_STACK_CACHE_MAX && t->stack_size == loop->stack_size) {
        t->all_next = loop->stack_cache;
        loop->stack_cache = t;
        loop->stack_cache_len++;
        return;
    }
    task_free_stack(t);
}

/* The task record lives at the top of its own stack, so a spawn is one mmap
 * (or none, from the cache) and no malloc. */
static struct rn__task *task_alloc(struct rn__loop *loop)
{
    struct rn__task *t = loop->stack_cache;
    if (t) {
        loop->stack_cache = t->all_next;
        loop->stack_cache_len--;
        void *stack = t->stack;
        size_t size = t->stack_size;
        unsigned vid = t->valgrind_id;
        void *fiber = t->tsan_fiber;
        memset(t, 0, sizeof *t);
        t->stack = stack;
        t->stack_size = size;
        t->valgrind_id = vid;
        t->tsan_fiber = fiber;
        /* For memcheck the last task's dead frames (and a trimmed range) may
         * still be "no access": this is a new task's fresh stack. A no-op
         * outside Valgrind. */
        (void)VALGRIND_MAKE_MEM_UNDEFINED((char *)stack + page_size(),
                                          (size_t)((char *)t - ((char *)stack + page_size())));
        return t;
    }
    size_t page = page_size();
    size_t size = loop->stack_size;
    void *base = mmap(NULL, size + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base, page, PROT_NONE) != 0) { /* the guard page below the stack */
        munmap(base, size + page);
        return NULL;
    }
    char *lo = (char *)base + page;
    t = (struct rn__task *)(lo + size - ((sizeof *t + 63) & ~(size_t)63));
    memset(t, 0, sizeof *t);
    t->stack = base;
    t->stack_size = size;
    t->valgrind_id = VALGRIND_STACK_REGISTER(lo, lo + size);
#ifdef RN_TSAN
    t->tsan_fiber = __tsan_create_fiber(0);
#endif
    return t;
}

static void task_main(struct rn__task *t);

static void task_init_frame(struct rn__task *t)
{
    uintptr_t top = (uintptr_t)t & ~(uintptr_t)15; /* the record sits above the frames */
    uint64_t *sp = (uint64_t *)top;
    /* Matches rn__ctx_switch's pops: csr word, r15, r14, r13, r12, rbx, rbp, ret. */
    *--sp = (uint64_t)(uintptr_t)rn__ctx_entry; /* at top-8: after ret, rsp = top (16-aligned) */
    *--sp = 0;                                  /* rbp */
    *--sp = 0;                                  /* rbx */
    *--sp = (uint64_t)(uintptr_t)t;             /* r12: argument */
    *--sp = (uint64_t)(uintptr_t)task_main;     /* r13: entry */
    *--sp = 0;                                  /* r14 */
    *--sp = 0;                                  /* r15 */
    *--sp = 0x037F00001F80ull;                  /* mxcsr default | x87 control word default << 32 */
    t->sp = sp;
}

static void switch_to_task(struct rn__loop *loop, struct rn__task *t)
{
    loop->current = t;
    loop->stats.task_switches++;
    ASAN_START(&loop->root.asan_fake, (char *)t->stack + page_size(), t->stack_size);
    TSAN_SWITCH(t->tsan_fiber);
    rn__ctx_switch(&loop->root.sp, t->sp);
    ASAN_FINISH(loop->root.asan_fake, NULL, NULL);
    loop->current = &loop->root;
    if (t->dead)
        task_release(loop, t);
}

static void switch_to_scheduler(struct rn__loop *loop, struct rn__task *t)
{
    /* A dying task passes NULL so ASan frees its fake stack. */
    ASAN_START(t->dead ? NULL : &t->asan_fake, loop->asan_main_bottom, loop->asan_main_size);
    TSAN_SWITCH(loop->root.tsan_fiber);
    rn__ctx_switch(&t->sp, loop->root.sp);
    ASAN_FINISH(t->asan_fake, &loop->asan_main_bottom, &loop->asan_main_size);
}

static void task_main(struct rn__task *t)
{
    struct rn__loop *loop = tl_loop;
    ASAN_FINISH(NULL, &loop->asan_main_bottom, &loop->asan_main_size);
    t->fn(t->arg);
    t->dead = true;
    loop->ntasks--;
    switch_to_scheduler(loop, t);
    abort(); /* a dead task is never resumed */
}

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
static void run_ready(struct rn__loop *loop)
{
    struct rn__task *t = loop->rq_head;
    loop->rq_head = loop->rq_tail = NULL;
    while (t) {
        struct rn__task *next = t->next_ready;
        t->queued = false;
        t->parked = false;
        switch_to_task(loop, t);
        t = next;
    }
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

static void backend_pass(struct rn__loop *loop, bool wait)
{
    int r = loop->bk->run_once(loop, wait);
    if (r < 0) {
        /* Only a bug (EBADF, EFAULT) gets here: there is no way to go on. */
        fprintf(stderr, "ringnet: %s backend failed: %s\n", loop->bk->name, rn_strerror(r));
        abort();
    }
}

/* Drive the loop on the thread's own stack until *flag is true (flag NULL:
 * until no spawned task is left), or until nothing can ever get there (no
 * ready task, nothing in flight): then -EDEADLK. */
static int loop_run(struct rn__loop *loop, const bool *flag)
{
    loop->running++;
    int rc = 0;
    for (;;) {
        run_ready(loop);
        if (flag ? *flag : loop->ntasks == 0)
            break;
        bool wait = loop->rq_head == NULL;
        if (wait && loop->inflight == 0 && loop->timers.len == 0) {
            rc = -EDEADLK;
            break;
        }
        backend_pass(loop, wait);
        if (loop->timers.len)
            fire_timers(loop);
    }
    loop->running--;
    return rc;
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
        switch_to_scheduler(loop, t);
    }
    t->parked = false;
}

__attribute__((noinline)) void rn__task_trim_stack(struct rn__loop *loop)
{
    struct rn__task *t = loop->current;
    if (t == &loop->root || !t->stack)
        return;
    size_t page = page_size();
    uintptr_t lo = (uintptr_t)t->stack + page; /* above the guard page */
    /* At least 1 KiB below this frame stays: madvise's own frame goes there. */
    uintptr_t end = ((uintptr_t)__builtin_frame_address(0) - 1024) & ~(uintptr_t)(page - 1);
    if (end > lo) {
        (void)madvise((void *)lo, end - lo, MADV_DONTNEED);
        /* Memcheck takes MADV_DONTNEED for "no longer mapped": it is still
         * this stack, to be written by the next frames (or the next task
         * that gets it from the cache). */
        (void)VALGRIND_MAKE_MEM_UNDEFINED((void *)lo, end - lo);
    }
}

/* ---- operations --------------------------------------------------------------- */

int rn__op_wait(struct rn__loop *loop, struct rn__op *op)
{
    op->done = false;
    op->task = loop->current;
    op->next = NULL;
    op->timer.idx = RN__HEAP_NONE;
    if (op->f) {
        if (op->f->closing)
            return RN_ECLOSED;
        op->f->inflight++;
    }
    if (op->deadline) {
        op->ts.tv_sec = op->deadline / 1000000000;
        op->ts.tv_nsec = op->deadline % 1000000000;
    }
    loop->inflight++;
    op->loop_timed = false;
    loop->bk->submit(loop, op);
    while (!op->done) {
        if (!op->loop_timed) {
            rn__task_park(loop);
            continue;
        }
        /* Held by the backend outside the kernel (a read waiting on a
         * connection's queue of received buffers): the deadline is ours. */
        int r = rn__task_park_until(loop, op->deadline);
        if (r < 0 && !op->done && op->loop_timed)
            loop->bk->expire(loop, op, r);
    }
    return op->res;
}

void rn__fd_drop(struct rn__loop *loop, struct rn__fd *f)
{
    f->inflight--;
    if (f->inflight == 0 && f->drain_waiter)
        rn__task_wake(loop, f->drain_waiter);
}

void rn__op_complete(struct rn__loop *loop, struct rn__op *op, int res)
{
    struct rn__fd *f = op->f;
    if (f) {
        if (f->closing) {
            if (op->kind == RN__OP_ACCEPT && res >= 0)
                close(res); /* accepted as the listener closed: nobody will take it */
            res = RN_ECLOSED;
        } else if (op->deadline && (res == -ECANCELED || res == -ETIME || res == -EINTR)) {
            /* Only close and the deadline cancel an op; close is handled above. */
            res = -ETIMEDOUT;
        } else if (op->kind == RN__OP_RECV && res >= 0) {
            /* A short read emptied the socket: the next recv will most likely
             * have to wait, and a backend can skip trying it first. */
            f->rd_drained =
                res > 0 && (size_t)res < op->len; /* not at EOF: nothing more will come */
        }
        rn__fd_drop(loop, f);
    } else if (op->kind == RN__OP_SLEEP && res == -ETIME) {
        res = 0;
    }
    op->res = res;
    op->done = true;
    loop->inflight--;
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
    if (loop->bk)
        loop->bk->destroy(loop, loop->bk_state);
    rn__heap_free(&loop->timers);
    while (loop->lend_cache) {
        void *b = loop->lend_cache;
        memcpy(&loop->lend_cache, b, sizeof(void *));
        free(b);
    }
    /* Tasks still parked when their thread ends can never run again. */
    while (loop->all) {
        struct rn__task *t = loop->all;
        loop->all = t->all_next;
        task_free_stack(t);
    }
    while (loop->stack_cache) {
        struct rn__task *t = loop->stack_cache;
        loop->stack_cache = t->all_next;
        task_free_stack(t);
    }
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
#ifdef RN_TSAN
    loop->root.tsan_fiber = __tsan_get_current_fiber();
#endif
    loop->stack_size = tl_stack_size ? tl_stack_size : RN_DEFAULT_STACK;
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

/* ---- public task calls ------------------------------------------------------------ */

RN_EXPORT int rn_spawn(rn_task_fn fn, void *arg)
{
    if (!fn)
        return rn__err(-EINVAL, "rn_spawn: the task function is NULL");
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    struct rn__task *t = task_alloc(loop);
    if (!t) {
        /* Each stack is two mappings (the guard page splits it): past about
         * half of vm.max_map_count tasks, mmap or mprotect fails. */
        int err = errno;
        long maps = -1;
        FILE *mf = fopen("/proc/sys/vm/max_map_count", "r");
        if (mf) {
            if (fscanf(mf, "%ld", &maps) != 1)
                maps = -1;
            fclose(mf);
        }
        return rn__err(-ENOMEM,
                       "rn_spawn: cannot map a %zu-byte task stack (%s) with %zu tasks alive; each "
                       "task takes two "
                       "memory mappings and vm.max_map_count is %ld",
                       loop->stack_size, rn__errname(-err), loop->ntasks, maps);
    }
    t->fn = fn;
    t->arg = arg;
    task_init_frame(t);
    t->all_next = loop->all;
    if (loop->all)
        loop->all->all_prev = t;
    loop->all = t;
    loop->ntasks++;
    loop->stats.tasks_spawned++;
    t->parked = true; /* a new task waits for its first turn like a parked one */
    rn__task_wake(loop, t);
    return 0;
}

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
        run_ready(loop);
        backend_pass(loop, false);
        loop->running--;
        return;
    }
    t->parked = true;
    rn__task_wake(loop, t);
    switch_to_scheduler(loop, t);
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
    struct rn__op op = {.kind = RN__OP_SLEEP, .deadline = rn__deadline_after_ms(ms)};
    int rc = rn__op_wait(loop, &op);
    return rc < 0 ? rn__err(rc, "rn_sleep: %s", rn_strerror(rc)) : 0;
}

RN_EXPORT int rn_set_task_stack_size(size_t bytes)
{
    size_t page = page_size();
    if (bytes < RN_MIN_STACK || bytes > ((size_t)1 << 30))
        return rn__err(-EINVAL, "rn_set_task_stack_size: %zu bytes is outside 16 KiB .. 1 GiB",
                       bytes);
    bytes = (bytes + page - 1) & ~(page - 1);
    tl_stack_size = bytes;
    struct rn__loop *loop = tl_loop;
    if (loop)
        loop->stack_size = bytes;
    return 0;
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
