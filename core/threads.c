/* threads.c - thread-per-core: rn_run_threads starts n threads, each pinned
 * to one CPU of the process's affinity mask and running fn as the first
 * task of its own loop, and rn_thread_index. Each thread inherits the
 * caller's backend choice (rn_set_backend) and task stack size. */
#include "task.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Threads beyond this are a caller's mistake, not a server. */
#define RN_MAX_THREADS 4096

static __thread int tl_thread_index = -1;

struct run_threads {
    rn_task_fn fn;
    void *arg;
    const char *backend; /* the caller's rn_set_backend choice, NULL for none */
    size_t stack_size;   /* the caller's rn_set_task_stack_size, 0 for the default */
    pthread_mutex_t mu;  /* guards err and why */
    int err;             /* the first error of any thread */
    int err_index;
    char why[512];
};

struct thread_slot {
    struct run_threads *rt;
    int index;
    int cpu; /* -1: do not pin */
    pthread_t tid;
};

static void record_error(struct run_threads *rt, int index, int err)
{
    pthread_mutex_lock(&rt->mu);
    if (rt->err == 0) {
        rt->err = err;
        rt->err_index = index;
        snprintf(rt->why, sizeof rt->why, "%s", rn_last_error());
    }
    pthread_mutex_unlock(&rt->mu);
}

static void *thread_main(void *p)
{
    struct thread_slot *s = p;
    struct run_threads *rt = s->rt;
    tl_thread_index = s->index;
    if (s->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(s->cpu, &set);
        int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        if (e != 0) {
            record_error(rt, s->index,
                         rn__err(-e, "rn_run_threads: cannot pin thread %d to CPU %d: %s", s->index,
                                 s->cpu, rn_strerror(-e)));
            return NULL;
        }
    }
    if (rt->backend)
        (void)rn_set_backend(rt->backend);
    if (rt->stack_size)
        (void)rn_set_task_stack_size(rt->stack_size);
    int rc = rn_run(rt->fn, rt->arg);
    struct rn__loop *loop = rn__loop_peek();
    /* Tasks other threads spawned as the last one ended still run here;
     * once the inbox is empty, later spawns get RN_ECLOSED. */
    while (rc == 0 && loop && !rn__xt_close_if_idle(loop)) {
        if (rn__loop_run(loop) < 0)
            rc = rn__err(-EDEADLK,
                         "rn_run_threads: thread %d: %zu task(s) are parked with "
                         "nothing in flight that could wake them",
                         s->index, loop->ntasks);
    }
    if (rc < 0)
        record_error(rt, s->index, rc);
    return NULL;
}

RN_EXPORT int rn_run_threads(int n, rn_task_fn fn, void *arg)
{
    if (n < 0)
        return rn__err(-EINVAL, "rn_run_threads: %d threads", n);
    if (!fn)
        return rn__err(-EINVAL, "rn_run_threads: the task function is NULL");
    if (n > RN_MAX_THREADS)
        return rn__err(-EINVAL, "rn_run_threads: %d threads is over %d", n, RN_MAX_THREADS);
    struct rn__loop *here = rn__loop_peek();
    if (here && (here->current != &here->root || here->running))
        return rn__err(-EBUSY, "rn_run_threads: called from inside a task (it would block the "
                               "loop until every thread ends)");
    cpu_set_t mask;
    int cpus[CPU_SETSIZE], ncpu = 0;
    if (sched_getaffinity(0, sizeof mask, &mask) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &mask))
                cpus[ncpu++] = c;
    if (n == 0)
        n = ncpu > 0 ? ncpu : 1;
    struct thread_slot *slots = calloc((size_t)n, sizeof *slots);
    if (!slots)
        return rn__err(-ENOMEM, "rn_run_threads: out of memory for %d threads", n);
    struct run_threads rt = {.fn = fn, .arg = arg};
    pthread_mutex_init(&rt.mu, NULL);
    rt.backend = rn__backend_choice();
    rt.stack_size = rn__task_stack_choice();
    int started = 0, err = 0;
    for (int i = 0; i < n; i++) {
        slots[i] =
            (struct thread_slot){.rt = &rt, .index = i, .cpu = ncpu > 0 ? cpus[i % ncpu] : -1};
        int e = pthread_create(&slots[i].tid, NULL, thread_main, &slots[i]);
        if (e != 0) {
            err = rn__err(-e, "rn_run_threads: cannot start thread %d of %d: %s", i, n,
                          rn_strerror(-e));
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(slots[i].tid, NULL);
    free(slots);
    pthread_mutex_destroy(&rt.mu);
    if (err == 0 && rt.err != 0)
        err = rn__err(rt.err, "rn_run_threads: thread %d: %s", rt.err_index, rt.why);
    return err;
}

RN_EXPORT int rn_thread_index(void)
{
    return tl_thread_index;
}
