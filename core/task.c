/* task.c - stackful tasks: their mmap'd stacks (guard page, the record at
 * the top), the cache of finished tasks' stacks, the first frame a new task
 * starts from, giving back the pages of a deep call (trim), rn_spawn and
 * rn_set_task_stack_size.
 * The switch itself is in task.h. */
#include "task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

#define RN_DEFAULT_STACK   (256u * 1024u)
#define RN_MIN_STACK       (16u * 1024u)
#define RN_STACK_CACHE_MAX 64

void rn__ctx_entry(void);

static __thread size_t tl_stack_size; /* rn_set_task_stack_size; 0: the default */

size_t rn__page_size(void)
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
    munmap(t->stack, t->stack_size + rn__page_size());
}

void rn__task_release(struct rn__loop *loop, struct rn__task *t)
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

static struct rn__task *task_map(size_t size);

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
        (void)VALGRIND_MAKE_MEM_UNDEFINED((char *)stack + rn__page_size(),
                                          (size_t)((char *)t - ((char *)stack + rn__page_size())));
        return t;
    }
    return task_map(loop->stack_size);
}

/* A new stack of size usable bytes with its record at the top; any thread. */
static struct rn__task *task_map(size_t size)
{
    size_t page = rn__page_size();
    struct rn__task *t;
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

/* The first frame of a task, laid out as rn__ctx_switch (core/ctx_*.S)
 * restores it: switching to it "returns" into rn__ctx_entry, which calls
 * task_main(t) on a 16-aligned stack. */
static void task_init_frame(struct rn__task *t)
{
    uintptr_t top = (uintptr_t)t & ~(uintptr_t)15; /* the record sits above the frames */
    uint64_t *sp = (uint64_t *)top;
#if defined(__x86_64__)
    /* Pops: csr word, r15, r14, r13, r12, rbx, rbp, ret. */
    *--sp = (uint64_t)(uintptr_t)rn__ctx_entry; /* at top-8: after ret, rsp = top (16-aligned) */
    *--sp = 0;                                  /* rbp */
    *--sp = 0;                                  /* rbx */
    *--sp = (uint64_t)(uintptr_t)t;             /* r12: argument */
    *--sp = (uint64_t)(uintptr_t)task_main;     /* r13: entry */
    *--sp = 0;                                  /* r14 */
    *--sp = 0;                                  /* r15 */
    *--sp = 0x037F00001F80ull;                  /* mxcsr default | x87 control word default << 32 */
#elif defined(__aarch64__)
    /* 22 words: x19..x28, x29, x30, d8..d15, fpcr, padding. fpcr 0 is the
     * Linux default: round to nearest, no traps. */
    sp -= 22;
    memset(sp, 0, 22 * sizeof *sp);
    sp[0] = (uint64_t)(uintptr_t)t;              /* x19: argument */
    sp[1] = (uint64_t)(uintptr_t)task_main;      /* x20: entry */
    sp[11] = (uint64_t)(uintptr_t)rn__ctx_entry; /* x30: where the switch returns */
#else
#error "ringnet's task switch is written for x86_64 and aarch64"
#endif
    t->sp = sp;
}

static void task_main(struct rn__task *t)
{
    struct rn__loop *loop = rn__loop_peek();
    ASAN_FINISH(NULL, &loop->asan_main_bottom, &loop->asan_main_size);
    t->fn(t->arg);
    if (t->xexposed)
        rn__xt_task_exit(loop, t);
    t->dead = true;
    loop->ntasks--;
    rn__task_switch_out(loop, t);
    abort(); /* a dead task is never resumed */
}

size_t rn__task_stack_choice(void)
{
    return tl_stack_size;
}

size_t rn__task_default_stack(void)
{
    return tl_stack_size ? tl_stack_size : RN_DEFAULT_STACK;
}

void rn__task_root_init(struct rn__loop *loop)
{
#ifdef RN_TSAN
    loop->root.tsan_fiber = __tsan_get_current_fiber();
#else
    (void)loop;
#endif
}

void rn__tasks_free(struct rn__loop *loop)
{
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
}

__attribute__((noinline)) void rn__task_trim_stack(struct rn__loop *loop)
{
    struct rn__task *t = loop->current;
    if (t == &loop->root || !t->stack)
        return;
    size_t page = rn__page_size();
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
                       "rn_spawn: cannot map a %zu-byte task stack (%s) with %zu tasks alive; "
                       "each task takes two memory mappings and vm.max_map_count is %ld",
                       loop->stack_size, rn__errname(-err), loop->ntasks, maps);
    }
    t->fn = fn;
    t->arg = arg;
    task_init_frame(t);
    rn__task_adopt(loop, t);
    return 0;
}

void rn__task_adopt(struct rn__loop *loop, struct rn__task *t)
{
    t->loop = loop;
    t->all_prev = NULL;
    t->all_next = loop->all;
    if (loop->all)
        loop->all->all_prev = t;
    loop->all = t;
    loop->ntasks++;
    loop->stats.tasks_spawned++;
    t->parked = true; /* a new task waits for its first turn like a parked one */
    rn__task_wake(loop, t);
}

struct rn__task *rn__task_new(size_t size, rn_task_fn fn, void *arg)
{
    struct rn__task *t = task_map(size);
    if (!t)
        return NULL;
    t->fn = fn;
    t->arg = arg;
    task_init_frame(t);
    return t;
}

void rn__task_discard(struct rn__task *t)
{
    task_free_stack(t);
}

RN_EXPORT int rn_set_task_stack_size(size_t bytes)
{
    size_t page = rn__page_size();
    if (bytes < RN_MIN_STACK || bytes > ((size_t)1 << 30))
        return rn__err(-EINVAL, "rn_set_task_stack_size: %zu bytes is outside 16 KiB .. 1 GiB",
                       bytes);
    bytes = (bytes + page - 1) & ~(page - 1);
    tl_stack_size = bytes;
    struct rn__loop *loop = rn__loop_peek();
    if (loop) {
        loop->stack_size = bytes;
        if (loop->xt)
            rn__xt_stack_size(loop, bytes);
    }
    return 0;
}
