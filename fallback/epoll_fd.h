/* epoll_fd.h - the epoll backend's share of a descriptor (rn__fd's
 * bk.epoll): its registration, what the edges said, and the parked ops.
 * Only fallback/ touches it. */
#ifndef RN_EPOLL_FD_H
#define RN_EPOLL_FD_H

#include <stdbool.h>

struct rn__op;

struct rn__epoll_fd {
    bool registered;        /* in the epoll set (edge-triggered) */
    bool rd_ready;          /* a readable edge came with nothing parked and no EAGAIN since */
    bool hup;               /* the peer's end (RDHUP/HUP/ERR) was seen: no edge will follow it */
    bool connecting;        /* connect(2) was called: a retry asks for its outcome (SO_ERROR) */
    struct rn__op *rd, *wr; /* FIFO heads of ops waiting for readability / writability */
};

#endif /* RN_EPOLL_FD_H */
