/* embed.c - this thread's loop inside a host event loop: rn_loop_fd (the
 * descriptor the host polls), rn_loop_run_once (one pass, driven by the
 * host) and rn_loop_timeout (how long the host may sleep). The pass itself
 * is rn__loop_host_pass in loop.c; the descriptor is the backend's
 * (loop_fd). */
#include "rn.h"

RN_EXPORT int rn_loop_fd(void)
{
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    /* Spawns and wake-ups from other threads write the eventfd the backend
     * watches, and so turn the descriptor readable: start that now. */
    int err;
    if (!rn__xt_get(loop, &err))
        return err;
    int fd = loop->bk->loop_fd(loop);
    if (fd < 0)
        return rn__err(fd, "rn_loop_fd: the %s backend cannot make a descriptor to poll: %s",
                       loop->bk->name, rn_strerror(fd));
    return fd;
}

RN_EXPORT int rn_loop_run_once(int64_t ms)
{
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    if (loop->current != &loop->root)
        return rn__err(-EBUSY, "rn_loop_run_once: called from inside a task (the loop is "
                               "already running it)");
    if (loop->running)
        return rn__err(-EBUSY, "rn_loop_run_once: the loop is already running on this thread "
                               "(a call outside tasks is waiting in it)");
    rn__loop_host_pass(loop, ms);
    return loop->ntasks > (size_t)INT32_MAX ? INT32_MAX : (int)loop->ntasks;
}

RN_EXPORT int64_t rn_loop_timeout(void)
{
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return -1;
    if (loop->rq_head || (loop->xt && rn__xt_pending(loop)))
        return 0;
    const struct rn__heap_node *n = rn__heap_min(&loop->timers);
    if (!n)
        return -1;
    int64_t d = n->key - rn__now_ns();
    if (d <= 0)
        return 0;
    /* Rounded up: a host that wakes after this many ms finds it due. */
    return (d + 999999) / 1000000;
}
