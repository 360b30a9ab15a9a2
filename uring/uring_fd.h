/* uring_fd.h - the io_uring backend's share of a descriptor (rn__fd's
 * bk.uring): a listener's multishot accept and a connection's stream reads.
 * Only uring/ touches it. */
#ifndef RN_URING_FD_H
#define RN_URING_FD_H

#include <stdbool.h>
#include <stdint.h>

struct rn__op;

struct rn__uring_fd {
    /* A listener's multishot accept (uring/accept.c). */
    bool acc_armed; /* a multishot accept is in the kernel */
    int *accq;      /* accepted fds not yet taken (ring buffer) */
    unsigned accq_head, accq_len, accq_cap;
    struct rn__op *acc_wait; /* FIFO of parked accept ops */

    /* A connection's stream reads (uring/stream.c). */
    bool sr_armed;    /* the multishot recv is in the kernel until its last CQE */
    bool sr_cancel;   /* the queue reached SR_CAP: a cancel was sent */
    bool sr_skip;     /* the next recv goes one-shot (ring ran dry, cap hit, a bulk-sized read) */
    bool sr_end;      /* sr_res is the stream's last word, due after the queue */
    int sr_res;       /* 0 (EOF) or -errno */
    uint16_t sr_head; /* filled buffers not yet read, oldest first: buffer id + 1, 0 = none */
    uint16_t sr_tail; /* the newest of them */
    uint16_t sr_oneshot;    /* one-shot recvs in the kernel (no multishot beside them) */
    uint32_t sr_held;       /* bytes the queue holds: received, not yet read */
    struct rn__op *sr_wait; /* FIFO of reads parked on the queue */
};

#endif /* RN_URING_FD_H */
