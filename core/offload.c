/* offload.c - blocking work off the loop: rn_offload runs fn(arg) on a
 * worker thread of one process-wide pool while the calling task waits (its
 * loop serves the others), and rn__offload_until, the same with a deadline
 * after which the waiter leaves and the job cleans up after itself (the
 * resolver in api/dns.c).
 *
 * The pool: no thread until the first job; a job that finds no idle worker
 * starts one, up to max(4, 4 x the CPUs this process may run on), at most
 * RN__OFFLOAD_MAX_THREADS; beyond that jobs queue (FIFO). A worker with no
 * job for RN__OFFLOAD_IDLE_S seconds exits, so an idle process holds no
 * worker. Workers run with every signal blocked: signals go to the
 * application's own threads.
 *
 * A finished job wakes its task through the loop's inbox (core/xthread.c:
 * the same path as rn_task_wake, one eventfd write per batch), not a
 * descriptor per job. The job holds a reference to the loop's handle, so a
 * job that ends after its loop's thread did finds the handle closed and
 * wakes nobody. */
#include "task.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

struct job {
    int refs;                   /* atomic: the waiter's and the worker's */
    int done;                   /* atomic, release/acquire: fn has returned */
    rn_task_fn fn;              /* the work */
    void *arg;                  /* its argument */
    void (*release)(void *arg); /* rn__offload_until: frees arg when the waiter left first */
    pthread_mutex_t mu;         /* guards waiter: the worker wakes it only while it waits */
    struct rn__task *waiter;    /* NULL once it has left */
    struct rn_loop *xt;         /* the waiter's loop (a reference) */
    struct job *next;           /* the pool's queue */
};

static struct {
    pthread_once_t once;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC: idle workers wait on it */
    struct job *head, *tail;
    int queued;  /* jobs in the queue */
    int threads; /* workers alive */
    int idle;    /* of which waiting for a job (woken or not yet) */
    int max;     /* the bound on threads, from the CPU count */
} pool = {.once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER};

static void pool_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pool.cv, &ca);
    pthread_condattr_destroy(&ca);
    int ncpu = 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        ncpu = CPU_COUNT(&set);
    int max = ncpu * 4;
    if (max < 4)
        max = 4;
    if (max > RN__OFFLOAD_MAX_THREADS)
        max = RN__OFFLOAD_MAX_THREADS;
    pool.max = max;
}

static void job_unref(struct job *j)
{
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_destroy(&j->mu);
    rn_loop_release(j->xt);
    free(j);
}

/* On the worker, after fn: mark the job done and wake its waiter if it
 * still waits. A waiter whose loop has ended will never run again: the
 * worker lets go for it (and frees arg, if the job came with a release). */
static void job_finish(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    bool gone = j->waiter == NULL;
    if (!gone && !rn__xt_wake_task(j->xt, j->waiter)) {
        j->waiter = NULL; /* its loop ended: it never comes back for the job */
        gone = true;
        job_unref(j); /* the waiter's reference (the worker still holds its own) */
    }
    pthread_mutex_unlock(&j->mu);
    if (gone && j->release)
        j->release(j->arg);
    job_unref(j);
}

static void *worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.head) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += RN__OFFLOAD_IDLE_S;
            pool.idle++;
            int r = pthread_cond_timedwait(&pool.cv, &pool.mu, &ts);
            pool.idle--;
            if (r == ETIMEDOUT && !pool.head) {
                pool.threads--;
                pthread_mutex_unlock(&pool.mu);
                return NULL;
            }
        }
        struct job *j = pool.head;
        pool.head = j->next;
        if (!pool.head)
            pool.tail = NULL;
        pool.queued--;
        pthread_mutex_unlock(&pool.mu);
        j->fn(j->arg);
        job_finish(j);
        pthread_mutex_lock(&pool.mu);
    }
}

/* Queue j and make sure a worker will take it: 0, or the error of
 * pthread_create when no worker exists at all (j is not queued then). */
static int pool_push(struct job *j)
{
    pthread_once(&pool.once, pool_init);
    pthread_mutex_lock(&pool.mu);
    j->next = NULL;
    if (pool.tail)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    pool.queued++;
    int rc = 0;
    /* More jobs queued than workers waiting (an idle worker signalled a
     * moment ago still counts as idle until it takes one): one more. */
    if (pool.queued > pool.idle && pool.threads < pool.max) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old); /* the worker starts with all blocked */
        pthread_t t;
        rc = -pthread_create(&t, &attr, worker_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        if (rc == 0)
            pool.threads++;
        else if (pool.threads > 0)
            rc = 0; /* the workers there are will get to it */
    }
    if (rc == 0) {
        pthread_cond_signal(&pool.cv);
    } else { /* no worker at all: take the job back (it is the only one) */
        pool.head = pool.tail = NULL;
        pool.queued = 0;
    }
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

int rn__offload_until(struct rn__loop *loop, rn_task_fn fn, void *arg, void (*release)(void *),
                      int64_t deadline)
{
    int rc;
    struct job *j = NULL;
    struct rn_loop *xt = rn__xt_get(loop, &rc);
    if (!xt)
        goto fail;
    j = calloc(1, sizeof *j);
    if (!j) {
        rc = rn__err(-ENOMEM, "out of memory queueing work for the offload pool");
        goto fail;
    }
    struct rn__task *t = loop->current;
    pthread_mutex_init(&j->mu, NULL);
    j->refs = 2;
    j->fn = fn;
    j->arg = arg;
    j->release = release;
    j->waiter = t;
    j->xt = xt;
    rn__xt_ref(xt);
    rc = pool_push(j);
    if (rc < 0) {
        rc = rn__err(rc, "cannot start a worker thread for the offload pool: %s", rn_strerror(rc));
        pthread_mutex_destroy(&j->mu);
        rn_loop_release(xt);
        free(j);
        j = NULL;
        goto fail;
    }
    /* A wait only the worker can end: the inbox's wake-up runs it again. */
    t->xexposed = true;
    t->xparked = true;
    loop->xwaiters++;
    rc = 0;
    while (!__atomic_load_n(&j->done, __ATOMIC_ACQUIRE)) {
        int r = rn__task_park_until(loop, deadline);
        if (r < 0) {
            rc = r;
            break;
        }
    }
    loop->xwaiters--;
    t->xparked = false;
    /* Leave under the job's lock: a worker inside its wake-up of t holds it,
     * so t outlives that wake-up. */
    pthread_mutex_lock(&j->mu);
    j->waiter = NULL;
    if (rc < 0 && __atomic_load_n(&j->done, __ATOMIC_ACQUIRE))
        rc = 0; /* it finished as the deadline came: the answer is there */
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
    if (rc == -ETIMEDOUT)
        return rn__err(rc, "the offloaded work did not finish by its deadline");
    if (rc < 0)
        return rn__err(rc, "cannot record the deadline of the offloaded work");
    return 0;
fail:
    if (release)
        release(arg);
    return rc;
}

RN_EXPORT int rn_offload(rn_task_fn fn, void *arg)
{
    if (!fn)
        return rn__err(-EINVAL, "rn_offload: the function is NULL");
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    int rc = rn__offload_until(loop, fn, arg, NULL, 0);
    if (rc == -EAGAIN)
        rc = rn__err(-ENOMEM,
                     "rn_offload: cannot start a worker thread (%s: out of threads "
                     "or memory)",
                     rn__errname(rc));
    return rc;
}
