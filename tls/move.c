/* move.c - a TLS session changing threads with its connection
 * (rn_conn_detach / rn_conn_attach, api/move.c): what of the session
 * belongs to the old thread's loop goes back to it, keeping every byte.
 *
 * The inbound buffer `in` may be one of the old loop's io_uring buffers
 * (a lent recv's): its ciphertext not yet given to wolfSSL goes back to the
 * transport (rn__conn_unread, served before the socket on the new thread)
 * and the buffer back to its ring. The outbound buffers q and tx are heap
 * memory (rn__lend_alloc: a loop's cache or malloc, released into the
 * cache of whichever loop frees them), so they travel as they are, with the
 * ciphertext still to be sent in them. wolfSSL's own state is heap memory
 * used by one thread at a time. */
#include "tls.h"

#include <string.h>

int rn__tls_detach(rn_conn *c)
{
    struct rn__tls *t = rn__tls_of(c);
    if (t->in.len > 0 && rn__conn_unread(c, t->in.p + t->in.off, t->in.len) < 0)
        return -ENOMEM;
    rn__lend_release(c->loop, t->in.p);
    memset(&t->in, 0, sizeof t->in);
    return 0;
}

void rn__tls_attach(rn_conn *c)
{
    (void)c;
    rn__tls_thread_used(); /* wolfSSL runs on this thread now: free its caches at exit */
}
