/* uring.h - private to uring/: the io_uring backend's per-loop state, the
 * user_data tags of its CQEs, and the calls between its parts: the ring
 * (ring.c: setup, submission, reaping and dispatch), the multishot accept
 * (accept.c), the provided-buffer rings (pbuf.c) and stream reads
 * (stream.c). */
#ifndef RN_URING_H
#define RN_URING_H

#include <liburing.h>

#include "backend.h"

/* Valgrind's memcheck does not see the kernel write into a recv buffer
 * through the ring (it sees syscalls only): without this, every byte an
 * io_uring recv delivers looks uninitialised to it. A no-op outside
 * Valgrind (a few instructions). */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

/* user_data tags: ops are at least 8-aligned, so the low bits are free. */
#define UD_IGNORE       0ull /* linked timeouts and cancels: their op's CQE decides */
#define UD_ACCEPT_MULTI 1ull /* | rn__fd*: the multishot accept of a listener */
#define UD_RECV_MULTI   2ull /* | rn__fd*: the multishot recv of a connection */
#define UD_WAKE         3ull /* | generation << 3: the timeout armed for the loop's timed parks */
#define UD_XWAKE        4ull /* the read kept armed on the cross-thread eventfd */
#define UD_XMSG         5ull /* a wake-up another loop sent ring to ring (IORING_OP_MSG_RING) */
#define UD_XSENT        6ull /* | struct rn_loop*: the outcome of a wake-up this loop sent */
#define UD_TAG_MASK     7ull

RN_STATIC_ASSERT(_Alignof(struct rn__op) >= 8, "op pointers carry tags in their low bits");
RN_STATIC_ASSERT(_Alignof(struct rn__fd) >= 8, "fd pointers carry tags in their low bits");

/* ---- provided-buffer rings (pbuf.c) ----------------------------------------- */

/* A provided-buffer ring: the kernel picks one of its buffers only when
 * bytes arrive, so a task waiting to read holds none. Mapped on first use
 * (one mapping: the ring entries, then the buffers); tried once. */
struct pbuf {
    struct io_uring_buf_ring *br; /* NULL until set up (or if that failed) */
    char *bufs;                   /* entries * size bytes */
    size_t map_len;
    unsigned entries, size; /* entries: a power of two */
    unsigned short bgid;
    bool tried;
};

/* Lent reads (rn_conn_read_lent) that go one-shot to the kernel: 64 buffers
 * of RN__LEND_SIZE bytes; when all are out, the recv fails with -ENOBUFS and
 * is sent again into a heap buffer (rn__lend_alloc). */
#define LEND_ENTRIES 64u
#define LEND_BGID    0

/* ---- stream reads (stream.c; the design is described there) ------------------ */

/* 256 buffers of 16 KiB (a lent read may take RN_LENT_MAX bytes at once):
 * 4 MiB per loop, kept for the loop's life once written (the soak's check
 * of RSS after 10,000 connections counts it). Enough for the arrivals of
 * one loop pass at 1,000 busy connections; past that a connection meets
 * -ENOBUFS and reads one-shot. */
#define SR_ENTRIES 256u
#define SR_SIZE    RN__LEND_SIZE
#define SR_BGID    1
#define SR_CAP     (64u * 1024u) /* bytes a queue may hold before its multishot is cancelled */

/* One buffer of the stream ring while it sits on a connection's queue. */
struct sr_buf {
    uint32_t len, off; /* bytes the kernel put there; bytes read already */
    uint16_t next;     /* the next queued buffer's id + 1; 0: last */
};

/* ---- the loop's io_uring ---------------------------------------------------- */

struct uring {
    struct io_uring ring;
    struct pbuf lend; /* one-shot lent reads */
    struct pbuf sr;   /* stream reads */
    bool sr_off;      /* no multishot recv: refused by the kernel or RN_URING_RECV_MULTISHOT=0 */
    /* The loop's timed parks: an absolute timeout no later than the
     * earliest is in the kernel while there is one (ring.c, wake_arm). */
    bool wake_due;                    /* a wake timeout's CQE came this pass */
    int64_t wake_armed;               /* when the latest one armed fires; 0: none pending */
    uint64_t wake_gen;                /* which one that is (its user_data) */
    struct __kernel_timespec wake_ts; /* its instant, read by the kernel at submission */
    /* Wake-ups from other threads: a read of their eventfd, re-armed each
     * time it completes (ring.c, xwake_arm). */
    int xefd;      /* the eventfd; -1 until xwake_start */
    bool xarmed;   /* its read is in the kernel */
    uint64_t xval; /* where that read puts the count */
    /* rn_loop_fd where the kernel does not wake a poller of a DEFER_TASKRUN
     * ring: an eventfd registered with the ring (ring.c, uring_loop_fd). */
    int poll_efd;  /* -1: none (the ring's own descriptor serves) */
    bool embedded; /* rn_loop_fd was called: a host may sleep on the descriptor
                    * between passes, so each pass ends with nothing left to submit */
    bool msg_ring; /* IORING_OP_MSG_RING wakes other loops (the probe has it, and
                    * RN_URING_MSG_RING is not 0) */
    struct sr_buf sr_bufs[SR_ENTRIES];
};

/* ring.c */

/* Flush the SQ to the kernel until it has room for n SQEs; false if the
 * ring refuses submissions (only a broken ring does). */
bool rn__ring_make_room(struct rn__loop *loop, struct uring *u, unsigned n);

/* Room for n SQEs (the first returned; the rest follow with
 * io_uring_get_sqe), or NULL. */
static inline struct io_uring_sqe *ring_sqes(struct rn__loop *loop, struct uring *u, unsigned n)
{
    if (RN_UNLIKELY(io_uring_sq_space_left(&u->ring) < n) && !rn__ring_make_room(loop, u, n))
        return NULL;
    return io_uring_get_sqe(&u->ring);
}

/* op as one SQE, linked to an absolute timeout when it has a deadline. */
void rn__ring_submit(struct rn__loop *loop, struct uring *u, struct rn__op *op);

/* accept.c */

void rn__acc_submit(struct rn__loop *loop, struct uring *u, struct rn__op *op);
void rn__acc_dispatch(struct rn__loop *loop, struct uring *u, struct rn__fd *f,
                      const struct io_uring_cqe *cqe);
/* Finish the accepts parked on f (closing). */
void rn__acc_cancel(struct rn__loop *loop, struct rn__fd *f);
/* Close the accepted descriptors nobody took, with their listener. */
void rn__acc_close(struct rn__fd *f);

/* pbuf.c */

/* Map and register ring p; whether it is there. Tried once. */
bool rn__pbuf_ready(struct uring *u, struct pbuf *p);
/* The id of p's buffer that holds address b, or -1. */
int rn__pbuf_find(const struct pbuf *p, const char *b);
void rn__pbuf_free(struct uring *u, struct pbuf *p);
/* The backend's lend_release: a buffer of either ring goes back to it. */
bool rn__pbuf_lend_release(struct rn__loop *loop, void *buf);
/* A one-shot lent recv's CQE: note the buffer the kernel filled; when the
 * ring had none left, send the recv again into a heap buffer (true: not
 * done yet). */
bool rn__pbuf_lend_done(struct rn__loop *loop, struct uring *u, struct rn__op *op,
                        const struct io_uring_cqe *cqe, int *res);

static inline char *pbuf_buf(const struct pbuf *p, unsigned bid)
{
    return p->bufs + (size_t)bid * p->size;
}

/* Buffer bid of ring p, ready for the kernel once advanced. */
static inline void pbuf_put(struct pbuf *p, unsigned bid, int offset)
{
    io_uring_buf_ring_add(p->br, pbuf_buf(p, bid), p->size, (unsigned short)bid,
                          io_uring_buf_ring_mask(p->entries), offset);
}

/* Buffer bid back to the kernel now. */
static inline void pbuf_recycle(struct pbuf *p, unsigned bid)
{
    pbuf_put(p, bid, 0);
    io_uring_buf_ring_advance(p->br, 1);
}

/* stream.c */

/* The backend's submit for a recv: from the queue, parked on the
 * multishot, or one-shot through rn__ring_submit. */
void rn__sr_recv(struct rn__loop *loop, struct uring *u, struct rn__op *op);
/* A CQE of f's multishot recv. */
void rn__sr_dispatch(struct rn__loop *loop, struct uring *u, struct rn__fd *f,
                     const struct io_uring_cqe *cqe);
/* The backend's expire: a read parked on its queue. */
void rn__sr_expire(struct rn__loop *loop, struct rn__op *op, int res);
/* Finish the reads parked on f (closing). */
void rn__sr_cancel(struct rn__loop *loop, struct rn__fd *f);
/* Bytes received for f and never read go with it. */
void rn__sr_close(struct uring *u, struct rn__fd *f);
/* The backend's fd_quiesce and fd_unbuffer: f moves to another loop. */
int rn__sr_quiesce(struct rn__loop *loop, struct rn__fd *f);
size_t rn__sr_unbuffer(struct rn__loop *loop, struct rn__fd *f, void *out, size_t len, int *end);

#endif /* RN_URING_H */
