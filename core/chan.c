/* chan.c - channels: a bounded queue of pointers between tasks on any
 * threads, under one mutex. A sender that finds a receiver waiting hands
 * the item straight to it, and a receiver that takes from a full queue
 * moves the first waiting sender's item in, so a waiter is only ever woken
 * with its work done (or the channel closed). A waiter on this thread goes
 * back on the run queue (no kernel call); one on another thread is woken
 * through its loop's inbox (xthread.c).
 *
 * Before a call on a channel of capacity 1 registers as a waiter it spins
 * for a few microseconds (chan_spin) when its thread has nothing else ready
 * and the last call on the other side came from another thread: a partner
 * on another core that comes within that time then finds no waiter to wake,
 * so the hand-over costs no eventfd write and no kernel wake-up on either
 * side.
 * ch->len and ch->closed are read there without the mutex, so they are
 * written with atomic stores (under the mutex, as before). */
#include "task.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

enum { W_WAITING, W_DONE, W_CLOSED };

/* A task waiting in send or recv, on its own stack. */
struct waiter {
    struct rn__task *task;
    struct rn_loop *xt; /* its loop's handle, for a wake-up from another thread */
    void *item;         /* send: what it sends; recv: what it got */
    int state;          /* W_*, under the channel's mutex */
    struct waiter *next, *prev;
};

struct wlist {
    struct waiter *head, *tail;
};

struct rn_chan {
    pthread_mutex_t mu;
    void **ring;
    size_t cap, head, len;
    bool closed;
    bool freed;   /* rn_chan_free came while tasks still waited: the last to leave frees */
    size_t users; /* waiters inside a wait (they touch the channel after waking) */
    struct wlist senders, receivers;
    /* Capacity 1 only: the loops of the last send and the last receive
     * (atomic; compared, never followed): chan_spin spins only for a
     * partner on another thread. */
    struct rn__loop *last_send, *last_recv;
};

static void wl_push(struct wlist *l, struct waiter *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
}

static void wl_remove(struct wlist *l, struct waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
}

static struct waiter *wl_pop(struct wlist *l)
{
    struct waiter *w = l->head;
    if (w)
        wl_remove(l, w);
    return w;
}

/* w's state is set: make its task look again. Under ch->mu, so that w (on
 * the waiter's stack) and its task are still there: the waiter takes the
 * mutex before it can leave. */
static void notify(struct waiter *w)
{
    rn__xt_wake_task(w->xt, w->task);
}

/* How long a send or receive that would wait spins first, in ns: a few
 * hand-overs between two running threads, less than a kernel wake-up. */
#define CHAN_SPIN_NS 10000

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Called without ch->mu, before a call would wait: spin (up to
 * CHAN_SPIN_NS) until the channel may let a receive (recv) or a send go on.
 * Only on a channel of capacity 1, where every item is a hand-over that
 * would cost a wake-up (a buffer already spreads one wake-up over many
 * items, and spinning there makes both threads meet on the mutex at every
 * item: measured, it cut a stream's rate to about 0.6x), only when the last call on
 * the other side came from another thread, only with another CPU online,
 * and only when this thread has nothing else ready. Only delays the wait:
 * the caller looks again under the mutex either way. */
static void chan_spin(struct rn_chan *ch, bool recv)
{
    static int ncpu; /* online CPUs: with one, the partner cannot run meanwhile */
    if (__atomic_load_n(&ncpu, __ATOMIC_RELAXED) == 0)
        __atomic_store_n(&ncpu, (int)sysconf(_SC_NPROCESSORS_ONLN), __ATOMIC_RELAXED);
    struct rn__loop *loop = rn__loop_peek();
    struct rn__loop *partner =
        __atomic_load_n(recv ? &ch->last_send : &ch->last_recv, __ATOMIC_RELAXED);
    if (ch->cap != 1 || !loop || loop->rq_head || !partner || partner == loop ||
        __atomic_load_n(&ncpu, __ATOMIC_RELAXED) < 2)
        return; /* a buffer, other tasks ready, or the partner is (or was last) here */
    int64_t until = rn__now_ns() + CHAN_SPIN_NS;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            size_t len = __atomic_load_n(&ch->len, __ATOMIC_RELAXED);
            if ((recv ? len > 0 : len < ch->cap) || __atomic_load_n(&ch->closed, __ATOMIC_RELAXED))
                return;
            cpu_relax();
        }
        if (rn__now_ns() >= until || (loop->xt && rn__xt_pending(loop)))
            return;
    }
}

static void chan_destroy(struct rn_chan *ch)
{
    pthread_mutex_destroy(&ch->mu);
    free(ch->ring);
    free(ch);
}

/* Park the current task (or run the loop outside tasks) on ch's list l
 * until w is done, the channel closes, or the deadline passes. Called with
 * ch->mu held and returns with it released. */
static int chan_wait(struct rn_chan *ch, struct wlist *l, struct waiter *w, int64_t ms,
                     const char *what)
{
    pthread_mutex_unlock(&ch->mu);
    struct rn__loop *loop = rn__loop_get();
    int err = 0;
    if (!loop)
        return rn__loop_error();
    if (!rn__xt_get(loop, &err))
        return err;
    int64_t deadline = rn__deadline_after_ms(ms);
    const char *wants = l == &ch->receivers ? "item came" : "room came";
    struct rn__task *t = loop->current;
    w->task = t;
    w->xt = loop->xt;
    w->state = W_WAITING;
    pthread_mutex_lock(&ch->mu);
    /* The channel may have changed while the mutex was free: the caller
     * rechecks it, so go back when it would not have to wait now. */
    bool ready = ch->closed || (l == &ch->receivers ? ch->len > 0 : ch->len < ch->cap) ||
                 (l == &ch->receivers ? ch->senders.head : ch->receivers.head);
    if (ready) {
        pthread_mutex_unlock(&ch->mu);
        return 1; /* try again */
    }
    wl_push(l, w);
    ch->users++;
    t->xexposed = true;
    t->xparked = true;
    loop->xwaiters++;
    pthread_mutex_unlock(&ch->mu);
    int rc;
    for (;;) {
        int r = rn__task_park_until(loop, deadline);
        pthread_mutex_lock(&ch->mu);
        if (w->state != W_WAITING) {
            rc = w->state == W_DONE ? 0 : RN_ECLOSED;
            break;
        }
        if (r < 0) {
            wl_remove(l, w);
            rc = r;
            break;
        }
        pthread_mutex_unlock(&ch->mu);
    }
    loop->xwaiters--;
    t->xparked = false;
    bool last = --ch->users == 0 && ch->freed;
    pthread_mutex_unlock(&ch->mu);
    if (last)
        chan_destroy(ch);
    if (rc == RN_ECLOSED)
        return rn__err(rc, "%s: the channel was closed while waiting", what);
    if (rc == -ETIMEDOUT)
        return rn__err(rc, "%s: no %s within %lld ms", what, wants, (long long)ms);
    if (rc < 0)
        return rn__err(rc, "%s: cannot record the deadline", what);
    return 0;
}

RN_EXPORT rn_chan *rn_chan_new(size_t capacity)
{
    if (capacity == 0) {
        rn__err(-EINVAL, "rn_chan_new: the capacity must be at least 1");
        return NULL;
    }
    if (capacity > ((size_t)1 << 32)) {
        rn__err(-EINVAL, "rn_chan_new: a capacity of %zu items is over 2^32", capacity);
        return NULL;
    }
    struct rn_chan *ch = calloc(1, sizeof *ch);
    void **ring = calloc(capacity, sizeof *ring);
    if (!ch || !ring) {
        free(ch);
        free(ring);
        rn__err(-ENOMEM, "rn_chan_new: out of memory for %zu items", capacity);
        return NULL;
    }
    pthread_mutex_init(&ch->mu, NULL);
    ch->ring = ring;
    ch->cap = capacity;
    return ch;
}

RN_EXPORT int rn_chan_send(rn_chan *ch, void *item, int64_t ms)
{
    if (!ch)
        return rn__err(-EINVAL, "rn_chan_send: the channel is NULL");
    if (ch->cap == 1) { /* only these spin (chan_spin), so only these keep track */
        struct rn__loop *me = rn__loop_peek();
        if (__atomic_load_n(&ch->last_send, __ATOMIC_RELAXED) != me)
            __atomic_store_n(&ch->last_send, me, __ATOMIC_RELAXED);
    }
    bool spun = false;
    for (;;) {
        pthread_mutex_lock(&ch->mu);
        if (ch->closed) {
            pthread_mutex_unlock(&ch->mu);
            return rn__err(RN_ECLOSED, "rn_chan_send: the channel is closed");
        }
        struct waiter *r = wl_pop(&ch->receivers);
        if (r) { /* a receiver waits, so the queue is empty: hand it over */
            r->item = item;
            r->state = W_DONE;
            notify(r);
            pthread_mutex_unlock(&ch->mu);
            return 0;
        }
        if (ch->len < ch->cap) {
            ch->ring[(ch->head + ch->len) % ch->cap] = item;
            __atomic_store_n(&ch->len, ch->len + 1, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&ch->mu);
            return 0;
        }
        if (ms == 0) {
            pthread_mutex_unlock(&ch->mu);
            return rn__err(-EAGAIN, "rn_chan_send: the channel is full (%zu items)", ch->cap);
        }
        if (!spun) {
            pthread_mutex_unlock(&ch->mu);
            chan_spin(ch, false);
            spun = true;
            continue;
        }
        struct waiter w = {.item = item};
        int rc = chan_wait(ch, &ch->senders, &w, ms, "rn_chan_send");
        if (rc != 1)
            return rc;
    }
}

RN_EXPORT int rn_chan_recv(rn_chan *ch, void **item, int64_t ms)
{
    if (!ch)
        return rn__err(-EINVAL, "rn_chan_recv: the channel is NULL");
    if (!item)
        return rn__err(-EINVAL, "rn_chan_recv: item is NULL");
    if (ch->cap == 1) { /* only these spin (chan_spin), so only these keep track */
        struct rn__loop *me = rn__loop_peek();
        if (__atomic_load_n(&ch->last_recv, __ATOMIC_RELAXED) != me)
            __atomic_store_n(&ch->last_recv, me, __ATOMIC_RELAXED);
    }
    bool spun = false;
    for (;;) {
        pthread_mutex_lock(&ch->mu);
        if (ch->len > 0) {
            *item = ch->ring[ch->head];
            ch->head = (ch->head + 1) % ch->cap;
            __atomic_store_n(&ch->len, ch->len - 1, __ATOMIC_RELAXED);
            struct waiter *s = wl_pop(&ch->senders);
            if (s) { /* the queue was full: the first waiting sender's item goes in */
                ch->ring[(ch->head + ch->len) % ch->cap] = s->item;
                __atomic_store_n(&ch->len, ch->len + 1, __ATOMIC_RELAXED);
                s->state = W_DONE;
                notify(s);
            }
            pthread_mutex_unlock(&ch->mu);
            return 0;
        }
        if (ch->closed) {
            pthread_mutex_unlock(&ch->mu);
            return rn__err(RN_ECLOSED, "rn_chan_recv: the channel is closed and empty");
        }
        if (ms == 0) {
            pthread_mutex_unlock(&ch->mu);
            return rn__err(-EAGAIN, "rn_chan_recv: the channel is empty");
        }
        if (!spun) {
            pthread_mutex_unlock(&ch->mu);
            chan_spin(ch, true);
            spun = true;
            continue;
        }
        struct waiter w = {.item = NULL};
        int rc = chan_wait(ch, &ch->receivers, &w, ms, "rn_chan_recv");
        if (rc == 0)
            *item = w.item;
        if (rc != 1)
            return rc;
    }
}

RN_EXPORT void rn_chan_close(rn_chan *ch)
{
    if (!ch)
        return;
    pthread_mutex_lock(&ch->mu);
    __atomic_store_n(&ch->closed, true, __ATOMIC_RELAXED);
    struct waiter *w;
    while ((w = wl_pop(&ch->senders)) != NULL) {
        w->state = W_CLOSED;
        notify(w);
    }
    while ((w = wl_pop(&ch->receivers)) != NULL) {
        w->state = W_CLOSED;
        notify(w);
    }
    pthread_mutex_unlock(&ch->mu);
}

RN_EXPORT void rn_chan_free(rn_chan *ch)
{
    if (!ch)
        return;
    /* A task still waiting is a caller's bug; it gets RN_ECLOSED rather
     * than a freed channel, and the last one out frees it. */
    rn_chan_close(ch);
    pthread_mutex_lock(&ch->mu);
    bool now = ch->users == 0;
    ch->freed = true;
    pthread_mutex_unlock(&ch->mu);
    if (now)
        chan_destroy(ch);
}
