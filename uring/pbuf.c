/* pbuf.c - the io_uring backend's provided-buffer rings: setting one up on
 * first use, finding the buffer an address belongs to, taking lent buffers
 * back, and the one-shot lent reads that draw from the lend ring. */
#include "uring.h"

#include <string.h>
#include <sys/mman.h>

/* liburing 2.3 has no helper that maps and registers a ring. */
bool rn__pbuf_ready(struct uring *u, struct pbuf *p)
{
    if (p->br || p->tried)
        return p->br != NULL;
    p->tried = true;
    size_t ring_len = p->entries * sizeof(struct io_uring_buf);
    ring_len = (ring_len + 4095) & ~(size_t)4095; /* the kernel wants the ring page-aligned */
    size_t len = ring_len + (size_t)p->entries * p->size;
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return false;
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = p->entries;
    reg.bgid = p->bgid;
    if (io_uring_register_buf_ring(&u->ring, &reg, 0) < 0) {
        munmap(mem, len);
        return false;
    }
    p->br = br;
    p->bufs = (char *)mem + ring_len;
    p->map_len = len;
    for (unsigned i = 0; i < p->entries; i++)
        pbuf_put(p, i, (int)i);
    io_uring_buf_ring_advance(br, (int)p->entries);
    return true;
}

int rn__pbuf_find(const struct pbuf *p, const char *b)
{
    if (!p->br || b < p->bufs || b >= p->bufs + (size_t)p->entries * p->size)
        return -1;
    return (int)((size_t)(b - p->bufs) / p->size);
}

void rn__pbuf_free(struct uring *u, struct pbuf *p)
{
    if (!p->br)
        return;
    (void)io_uring_unregister_buf_ring(&u->ring, p->bgid);
    munmap(p->br, p->map_len);
    p->br = NULL;
}

bool rn__pbuf_lend_release(struct rn__loop *loop, void *buf)
{
    struct uring *u = loop->bk_state;
    /* A stream buffer is lent from a connection's queue, at any offset in it. */
    struct pbuf *rings[] = {&u->lend, &u->sr};
    for (size_t i = 0; i < 2; i++) {
        int bid = rn__pbuf_find(rings[i], buf);
        if (bid >= 0) {
            pbuf_recycle(rings[i], (unsigned)bid);
            return true;
        }
    }
    return false;
}

bool rn__pbuf_lend_done(struct rn__loop *loop, struct uring *u, struct rn__op *op,
                        const struct io_uring_cqe *cqe, int *res)
{
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        op->buf = pbuf_buf(&u->lend, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        return false;
    }
    if (*res != -ENOBUFS || op->buf || op->f->closing)
        return false;
    op->buf = rn__lend_alloc(loop);
    if (!op->buf) {
        *res = -ENOMEM;
        return false;
    }
    rn__sr_recv(loop, u, op); /* still counted in flight: no completion was reported */
    return true;
}
