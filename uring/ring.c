/* ring.c - the io_uring backend's ring: setup and the opcode probe, ops
 * as SQEs (deadlines as linked absolute timeouts), one io_uring_enter per
 * loop pass that submits them all and waits, and the reaping of CQEs, each
 * dispatched to its op (rn__op_complete) or to the multishot it belongs to
 * (accept.c, stream.c). */
#include "uring.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define RN_URING_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RN_URING_TSAN 1
#endif
#endif
#ifdef RN_URING_TSAN
/* liburing maps and unmaps the rings with raw syscalls, which
 * ThreadSanitizer does not see: a new ring at the address of one another
 * thread freed would inherit that thread's accesses (a false race). Every
 * ring's end happens before every later ring's start, as the kernel
 * orders them: say so, both before a ring is made and once it is mapped
 * (an acquire made before another thread's release does not see it, and
 * that thread's unmap may come between the two). */
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char tsan_ring_order;
#define tsan_ring_start() __tsan_acquire(&tsan_ring_order)
#define tsan_ring_end()   __tsan_release(&tsan_ring_order)
#else
#define tsan_ring_start() ((void)0)
#define tsan_ring_end()   ((void)0)
#endif

#define SQ_ENTRIES 1024u
#define CQ_ENTRIES (SQ_ENTRIES * 8u) /* completions can outnumber one pass's submissions */

/* Setup flags, best first. SINGLE_ISSUER|DEFER_TASKRUN (6.1) runs completion
 * work only when we enter the ring, on this thread; COOP_TASKRUN (5.19)
 * avoids IPIs; older kernels get the plain ring. */
static const unsigned setup_chain[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_SUBMIT_ALL,
    0,
};

static const struct {
    int op;
    const char *name;
} needed_ops[] = {
    {IORING_OP_CONNECT, "CONNECT"},
    {IORING_OP_ACCEPT, "ACCEPT"},
    {IORING_OP_RECV, "RECV"},
    {IORING_OP_SEND, "SEND"},
    {IORING_OP_POLL_ADD, "POLL_ADD"},
    {IORING_OP_TIMEOUT, "TIMEOUT"},
    {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    /* Not used itself: it came in 5.19 with what we rely on and the probe
     * cannot show, multishot accept, cancel by fd with CANCEL_ALL and
     * IORING_RECVSEND_POLL_FIRST. An older kernel runs epoll instead. */
    {IORING_OP_SOCKET, "SOCKET (kernel 5.19+: multishot accept, cancel by fd)"},
};

static int uring_init(struct rn__loop *loop, void **state, char *why, size_t whylen)
{
    struct uring *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    /* RN_URING_ENTRIES shrinks (or grows) the ring: the tests use a tiny
     * one to drive the SQ-full and CQ-overflow paths. */
    unsigned sq = SQ_ENTRIES, cq = CQ_ENTRIES;
    const char *env = getenv("RN_URING_ENTRIES");
    if (env && *env) {
        long v = strtol(env, NULL, 10);
        if (v < 2 || v > 32768) {
            snprintf(why, whylen, "RN_URING_ENTRIES=%s is outside 2..32768", env);
            free(u);
            return -ERANGE; /* a configuration error, not a reason to fall back */
        }
        sq = (unsigned)v;
        /* The kernel takes at most 65536 CQ entries (twice its SQ maximum):
         * past 8192 the eightfold would make io_uring_setup fail. */
        cq = sq <= 8192 ? sq * 8 : 65536;
    }
    int rc = -EINVAL;
    tsan_ring_start(); /* before liburing writes the new ring's memory */
    for (size_t i = 0; i < sizeof setup_chain / sizeof setup_chain[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = setup_chain[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = cq;
        rc = io_uring_queue_init_params(sq, &u->ring, &p);
        if (rc != -EINVAL)
            break; /* EINVAL: this kernel lacks a flag; try the next set */
    }
    if (rc < 0) {
        snprintf(why, whylen, "io_uring_setup failed: %s (%s)", rn__errname(rc), rn_strerror(rc));
        free(u);
        return rc;
    }
    /* Again now that the ring is mapped: another thread may have ended its
     * ring, at the address this one got, after the acquire above. */
    tsan_ring_start();
    struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
    if (!probe) {
        snprintf(why, whylen, "the opcode probe (io_uring_register PROBE) failed");
        io_uring_queue_exit(&u->ring);
        free(u);
        return -EOPNOTSUPP;
    }
    for (size_t i = 0; i < sizeof needed_ops / sizeof needed_ops[0]; i++) {
        if (!io_uring_opcode_supported(probe, needed_ops[i].op)) {
            snprintf(why, whylen, "the kernel lacks IORING_OP_%s", needed_ops[i].name);
            io_uring_free_probe(probe);
            io_uring_queue_exit(&u->ring);
            free(u);
            return -EOPNOTSUPP;
        }
    }
    /* Optional: without it other loops wake this one through its eventfd. */
    const char *mr = getenv("RN_URING_MSG_RING");
    u->msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) && !(mr && !strcmp(mr, "0"));
    io_uring_free_probe(probe);
    u->lend = (struct pbuf){.entries = LEND_ENTRIES, .size = RN__LEND_SIZE, .bgid = LEND_BGID};
    u->sr = (struct pbuf){.entries = SR_ENTRIES, .size = SR_SIZE, .bgid = SR_BGID};
    const char *ms = getenv("RN_URING_RECV_MULTISHOT");
    u->sr_off = ms && !strcmp(ms, "0");
    /* Saves an fdget per io_uring_enter (5.18); optional. */
    (void)io_uring_register_ring_fd(&u->ring);
    u->xefd = -1;
    u->poll_efd = -1;
    *state = u;
    (void)loop;
    return 0;
}

/* The outcome of wake-ups this loop sent ring to ring (UD_XSENT CQEs) not
 * reaped yet, as the loop ends: each holds a reference on its target. */
static void xsent_settle(struct uring *u)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    (void)io_uring_submit_and_get_events(&u->ring);
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        n++;
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        if ((ud & UD_TAG_MASK) == UD_XSENT)
            rn__xt_post_done((struct rn_loop *)(uintptr_t)(ud & ~UD_TAG_MASK), cqe->res);
    }
    io_uring_cq_advance(&u->ring, n);
}

static void uring_destroy(struct rn__loop *loop, void *state)
{
    struct uring *u = state;
    if (u->msg_ring)
        xsent_settle(u);
    rn__pbuf_free(u, &u->lend);
    rn__pbuf_free(u, &u->sr);
    if (u->poll_efd >= 0)
        close(u->poll_efd); /* the ring's exit unregisters it */
    tsan_ring_end();
    io_uring_queue_exit(&u->ring);
    free(u);
    (void)loop;
}

static int uring_fd_open(struct rn__loop *loop, struct rn__fd *f)
{
    (void)loop;
    (void)f;
    return 0;
}

static void uring_fd_close(struct rn__loop *loop, struct rn__fd *f)
{
    rn__sr_close(loop->bk_state, f);
    rn__acc_close(f);
}

bool rn__ring_make_room(struct rn__loop *loop, struct uring *u, unsigned n)
{
    while (io_uring_sq_space_left(&u->ring) < n) {
        int r = io_uring_submit(&u->ring);
        loop->stats.enter_calls++;
        if (r > 0)
            loop->stats.ops_submitted += (uint64_t)r;
        /* -EBUSY/-EAGAIN: the CQ is backed up; the pass after this one reaps. */
        if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
            return false;
    }
    return true;
}

static void uring_submit(struct rn__loop *loop, struct rn__op *op)
{
    struct uring *u = loop->bk_state;
    if (op->kind == RN__OP_RECV) {
        rn__sr_recv(loop, u, op);
        return;
    }
    if (op->kind == RN__OP_ACCEPT) {
        rn__acc_submit(loop, u, op);
        return;
    }
    rn__ring_submit(loop, u, op);
}

void rn__ring_submit(struct rn__loop *loop, struct uring *u, struct rn__op *op)
{
    struct io_uring_sqe *sqe = ring_sqes(loop, u, op->deadline ? 2 : 1);
    if (!sqe) {
        if (op->kind == RN__OP_RECV)
            op->f->bk.uring.sr_oneshot--;
        rn__op_complete(loop, op, -ENOMEM);
        return;
    }
    switch (op->kind) {
    case RN__OP_CONNECT:
        io_uring_prep_connect(sqe, op->f->fd, op->addr, op->addrlen);
        break;
    case RN__OP_RECV:
        io_uring_prep_recv(sqe, op->f->fd, op->buf, op->len, 0);
        if (op->lend && !op->buf) { /* the kernel picks a ring buffer when bytes come */
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = LEND_BGID;
        }
        /* The last recv emptied the socket: arm the poll at once instead of
         * a recv attempt that would only find it empty (request/response
         * traffic, where the peer answers after our write). */
        if (op->f->rd_drained)
            sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
        break;
    case RN__OP_SEND:
        io_uring_prep_send(sqe, op->f->fd, op->buf, op->len, MSG_NOSIGNAL);
        break;
    case RN__OP_POLL:
        io_uring_prep_poll_add(sqe, op->f->fd, (unsigned)op->events);
        break;
    default:
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    if (op->deadline) {
        /* One absolute instant on CLOCK_MONOTONIC (the default clock), so
         * the short ops of one write_all all end at the same moment. The
         * timespec lives in op, which outlives the submission. */
        op->ts.tv_sec = op->deadline / 1000000000;
        op->ts.tv_nsec = op->deadline % 1000000000;
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *t = io_uring_get_sqe(&u->ring);
        io_uring_prep_link_timeout(t, &op->ts, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(t, UD_IGNORE);
    }
}

static void uring_cancel_fd(struct rn__loop *loop, struct rn__fd *f)
{
    struct uring *u = loop->bk_state;
    /* Accepts and reads parked here never reached the kernel: finish them now. */
    rn__acc_cancel(loop, f);
    rn__sr_cancel(loop, f);
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (!sqe)
        return;
    /* Closing an fd does not cancel io_uring requests on it: cancel every
     * request on the file (5.19: CANCEL_FD | CANCEL_ALL). */
    io_uring_prep_cancel_fd(sqe, f->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
}

/* The CQE of one op. */
static void dispatch_op(struct rn__loop *loop, struct uring *u, struct rn__op *op,
                        const struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    if (op->kind != RN__OP_RECV) {
        rn__op_complete(loop, op, res);
        return;
    }
    struct rn__fd *f = op->f;
    f->bk.uring.sr_oneshot--;
    if (RN_UNLIKELY(op->lend) && rn__pbuf_lend_done(loop, u, op, cqe, &res))
        return; /* sent again */
    if (res > 0 && op->buf)
        (void)VALGRIND_MAKE_MEM_DEFINED(op->buf, (size_t)res);
    rn__op_complete(loop, op, res);
    /* The kernel says whether the recv left bytes in the socket (6.0+, as
     * multishot recv): a read that got exactly what it asked for
     * (read_exact of a header) may still have emptied it. A read of more
     * than a stream buffer holds is bulk, even if it emptied the socket (a
     * fast reader on loopback does): it stays one-shot, one copy straight
     * into the caller's buffer. */
    if (res > 0 && !u->sr_off && !f->closing) {
        f->rd_drained = !(cqe->flags & IORING_CQE_F_SOCK_NONEMPTY);
        if ((unsigned)res > SR_SIZE)
            f->bk.uring.sr_skip = true;
    }
}

static unsigned reap(struct rn__loop *loop, struct uring *u)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        n++;
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        if (ud == UD_IGNORE)
            continue;
        struct rn__fd *f = (struct rn__fd *)(uintptr_t)(ud & ~UD_TAG_MASK);
        switch (ud & UD_TAG_MASK) {
        case UD_RECV_MULTI:
            rn__sr_dispatch(loop, u, f, cqe);
            break;
        case UD_ACCEPT_MULTI:
            rn__acc_dispatch(loop, u, f, cqe);
            break;
        case UD_XWAKE:
            u->xarmed = false; /* re-armed before the next wait */
            break;
        case UD_XMSG:
            break; /* it ended the wait: the loop drains its inbox next */
        case UD_XSENT:
            rn__xt_post_done((struct rn_loop *)(uintptr_t)(ud & ~UD_TAG_MASK), cqe->res);
            break;
        case UD_WAKE:
            u->wake_due = true;
            if (ud >> 3 == u->wake_gen)
                u->wake_armed = 0; /* the latest fired: none is pending */
            break;
        default:
            dispatch_op(loop, u, (struct rn__op *)(uintptr_t)ud, cqe);
            break;
        }
    }
    io_uring_cq_advance(&u->ring, n);
    return n;
}

/* The loop's earliest timed park is due at wake_at: an absolute timeout
 * (IORING_OP_TIMEOUT) at that instant ends the wait then with its CQE, so a
 * wait costs no clock read and no timeout argument. One stays armed across
 * passes; a new one goes out only when a park earlier than it appears or
 * it fired (a park that left early leaves it to fire early: the loop then
 * finds nothing due and the next pass arms the next one). */
static void wake_arm(struct rn__loop *loop, struct uring *u, int64_t wake_at)
{
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (!sqe)
        return; /* a ring that refuses submissions fails the enter below */
    u->wake_ts.tv_sec = wake_at / 1000000000;
    u->wake_ts.tv_nsec = wake_at % 1000000000;
    io_uring_prep_timeout(sqe, &u->wake_ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(sqe, ++u->wake_gen << 3 | UD_WAKE);
    u->wake_armed = wake_at;
}

/* The read that ends a wait when another thread writes the eventfd. The
 * eventfd is blocking, so the read waits in the kernel (poll-driven) and
 * takes the whole count when it completes. */
static void xwake_arm(struct rn__loop *loop, struct uring *u)
{
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (!sqe)
        return; /* a ring that refuses submissions fails the enter */
    io_uring_prep_read(sqe, u->xefd, &u->xval, sizeof u->xval, 0);
    io_uring_sqe_set_data64(sqe, UD_XWAKE);
    u->xarmed = true;
}

static int uring_xwake_start(struct rn__loop *loop, int efd)
{
    struct uring *u = loop->bk_state;
    u->xefd = efd;
    xwake_arm(loop, u);
    return 0;
}

static int uring_xwake_token(struct rn__loop *loop)
{
    struct uring *u = loop->bk_state;
    /* A descriptor of the ring's own: a sender's message must never reach
     * whatever file a closed ring fd's number came to name. */
    return u->msg_ring ? fcntl(u->ring.ring_fd, F_DUPFD_CLOEXEC, 0) : -1;
}

static bool uring_xwake_post(struct rn__loop *loop, int token, struct rn_loop *xt)
{
    struct uring *u = loop->bk_state;
    if (!u->msg_ring)
        return false;
    struct io_uring_sqe *sqe = ring_sqes(loop, u, 1);
    if (!sqe)
        return false;
    /* The target's CQE carries UD_XMSG and nothing else; ours says whether
     * it arrived. */
    io_uring_prep_msg_ring(sqe, token, 0, UD_XMSG, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)xt | UD_XSENT);
    /* Now, not with this loop's next pass: the poster may go on running (a
     * channel's spin, a busy task) long after the post, and the wake-up is
     * what the other thread waits for. Measured: deferred to the next pass,
     * a channel ping-pong took 40-50 us a round trip against 1-2 us. The
     * enter also carries whatever else this loop had queued. */
    int r = io_uring_submit(&u->ring);
    loop->stats.enter_calls++;
    if (r > 0)
        loop->stats.ops_submitted += (uint64_t)r;
    else if (r < 0)
        loop->xflush = true; /* not taken (-EBUSY: a backed-up CQ): the next pass takes it */
    return true;
}

static int uring_run_once(struct rn__loop *loop, bool wait)
{
    struct uring *u = loop->bk_state;
    if (u->xefd >= 0 && !u->xarmed)
        xwake_arm(loop, u);
    int64_t wake_at = rn__loop_wake_at(loop);
    if (wake_at && (!u->wake_armed || wake_at < u->wake_armed))
        wake_arm(loop, u, wake_at);
    if (u->poll_efd >= 0) {
        /* Before the enter: work that arrives after it signals again, so a
         * host never sleeps on pending work. */
        uint64_t cnt;
        (void)!read(u->poll_efd, &cnt, sizeof cnt);
    }
    /* One enter both submits what the tasks queued and waits. */
    int r = wait ? io_uring_submit_and_wait(&u->ring, 1) : io_uring_submit_and_get_events(&u->ring);
    loop->stats.enter_calls++;
    if (r > 0)
        loop->stats.ops_submitted += (uint64_t)r;
    /* -EINTR: a signal; -EBUSY/-EAGAIN: the CQ is backed up. Reaping is the
     * cure for both, and the loop calls us again. */
    if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
        return r;
    u->wake_due = false;
    for (;;) {
        reap(loop, u);
        /* Completions that did not fit the CQ wait in the kernel's overflow
         * list (IORING_FEAT_NODROP): flush them in and reap again. */
        if (!io_uring_cq_has_overflow(&u->ring))
            break;
        io_uring_get_events(&u->ring);
        loop->stats.enter_calls++;
    }
    if (u->embedded) {
        /* A host sleeps in poll(2) next, not in our enter: the eventfd's
         * read and what the reaping queued (a multishot re-armed) must be
         * in the kernel now, or nothing would turn the descriptor readable
         * for them. */
        if (u->xefd >= 0 && !u->xarmed)
            xwake_arm(loop, u);
        if (io_uring_sq_ready(&u->ring)) {
            r = io_uring_submit(&u->ring);
            loop->stats.enter_calls++;
            if (r > 0)
                loop->stats.ops_submitted += (uint64_t)r;
            else if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
                return r;
        }
    }
    return u->wake_due;
}

/* Whether a poller of a SINGLE_ISSUER|DEFER_TASKRUN ring's descriptor is
 * woken when a completion's deferred work arrives. Some kernels (6.18 among
 * them) report the ring readable when asked but never wake a poll(2) that
 * sleeps on it. Asked once per process on a scratch ring: a 1 ms timeout on
 * the ring, a 50 ms timerfd beside it, one poll of both. The ring alone
 * readable: it woke the poll. Both (the timerfd's wake-up, or a machine so
 * loaded that both came before the poll slept): take the eventfd, which is
 * always right. RN_URING_LOOP_FD=ring or =eventfd decides instead. */
static bool defer_ring_wakes_pollers(void)
{
    static int known; /* atomic: 0 not asked, 1 it wakes, 2 it does not */
    int k = __atomic_load_n(&known, __ATOMIC_ACQUIRE);
    if (k)
        return k == 1;
    const char *env = getenv("RN_URING_LOOP_FD");
    if (env && !strcmp(env, "ring"))
        k = 1;
    else if (env && !strcmp(env, "eventfd"))
        k = 2;
    else {
        k = 2;
        struct io_uring r;
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        tsan_ring_start();
        if (tfd >= 0 && io_uring_queue_init_params(2, &r, &p) == 0) {
            tsan_ring_start(); /* as in uring_init: mapped now */
            struct __kernel_timespec ts = {0, 1000000};
            struct io_uring_sqe *sqe = io_uring_get_sqe(&r);
            io_uring_prep_timeout(sqe, &ts, 0, 0);
            struct itimerspec its = {{0, 0}, {0, 50000000}};
            if (io_uring_submit(&r) == 1 && timerfd_settime(tfd, 0, &its, NULL) == 0) {
                struct pollfd pf[2] = {{r.ring_fd, POLLIN, 0}, {tfd, POLLIN, 0}};
                int n = poll(pf, 2, 1000);
                if (n == 1 && (pf[0].revents & POLLIN))
                    k = 1;
            }
            tsan_ring_end();
            io_uring_queue_exit(&r);
        }
        if (tfd >= 0)
            close(tfd);
    }
    __atomic_store_n(&known, k, __ATOMIC_RELEASE);
    return k == 1;
}

static int uring_loop_fd(struct rn__loop *loop)
{
    struct uring *u = loop->bk_state;
    u->embedded = true;
    if (u->poll_efd >= 0)
        return u->poll_efd;
    if (!(u->ring.flags & IORING_SETUP_DEFER_TASKRUN) || defer_ring_wakes_pollers())
        return u->ring.ring_fd;
    /* The kernel signals a registered eventfd when deferred work arrives
     * (and when a CQE is posted: run_once reads the count before it enters). */
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
        return -errno;
    int rc = io_uring_register_eventfd(&u->ring, efd);
    if (rc < 0) {
        close(efd);
        return rc;
    }
    u->poll_efd = efd;
    return efd;
}

static size_t uring_buffered(struct rn__loop *loop, const struct rn__fd *f)
{
    (void)loop;
    return f->bk.uring.sr_held;
}

const struct rn__backend rn__backend_uring = {
    .name = "io_uring",
    .accepts_nonblock = false,
    .init = uring_init,
    .destroy = uring_destroy,
    .fd_open = uring_fd_open,
    .fd_close = uring_fd_close,
    .submit = uring_submit,
    .cancel_fd = uring_cancel_fd,
    .run_once = uring_run_once,
    .lend_release = rn__pbuf_lend_release,
    .expire = rn__sr_expire,
    .buffered = uring_buffered,
    .xwake_start = uring_xwake_start,
    .loop_fd = uring_loop_fd,
    .xwake_token = uring_xwake_token,
    .xwake_post = uring_xwake_post,
    .fd_quiesce = rn__sr_quiesce,
    .fd_unbuffer = rn__sr_unbuffer,
};
