/* task.h - private to core/: the context switch between the scheduler and
 * a task, with the annotations AddressSanitizer, ThreadSanitizer and
 * Valgrind need to follow it, and what loop.c asks of task.c (stacks). */
#ifndef RN_TASK_H
#define RN_TASK_H

#include "rn.h"

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
/* sizeof: the arguments are not evaluated, so a switch computes none of
 * them (rn__page_size is a call). */
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

/* The system's page size. */
size_t rn__page_size(void);
/* The stack size of tasks a new loop spawns (rn_set_task_stack_size). */
size_t rn__task_default_stack(void);
/* Set up loop's root task (the thread's own stack) for the sanitizers. */
void rn__task_root_init(struct rn__loop *loop);
/* A finished task's stack goes back to the cache, or to the system. */
void rn__task_release(struct rn__loop *loop, struct rn__task *t);
/* Unmap every stack of loop: live tasks (they can never run again once
 * their thread ends) and the cache. */
void rn__tasks_free(struct rn__loop *loop);

/* From the scheduler (the root) into task t, until t parks or ends. */
static inline void rn__task_switch_in(struct rn__loop *loop, struct rn__task *t)
{
    loop->current = t;
    loop->stats.task_switches++;
    ASAN_START(&loop->root.asan_fake, (char *)t->stack + rn__page_size(), t->stack_size);
    TSAN_SWITCH(t->tsan_fiber);
    rn__ctx_switch(&loop->root.sp, t->sp);
    ASAN_FINISH(loop->root.asan_fake, NULL, NULL);
    loop->current = &loop->root;
    if (t->dead)
        rn__task_release(loop, t);
}

/* From task t back to the scheduler. */
static inline void rn__task_switch_out(struct rn__loop *loop, struct rn__task *t)
{
    /* A dying task passes NULL so ASan frees its fake stack. */
    ASAN_START(t->dead ? NULL : &t->asan_fake, loop->asan_main_bottom, loop->asan_main_size);
    TSAN_SWITCH(loop->root.tsan_fiber);
    rn__ctx_switch(&t->sp, loop->root.sp);
    ASAN_FINISH(t->asan_fake, &loop->asan_main_bottom, &loop->asan_main_size);
}

#endif /* RN_TASK_H */
