/* error.c - the one table of ringnet's own codes, rn_strerror, and the
 * thread-local detail behind rn_last_error(). */
#include "rn.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static __thread char tl_last_error[512];
/* Which task wrote the newest sentence: with the task's own count of them
 * (rn__task.err_seq), a call can tell whether a deeper layer of it already
 * explained its failure (rn__err_since). */
static __thread const void *tl_err_task;

#define RN_OWN_CODES(X)                                                                            \
    X(RN_EDNS, "RN_EDNS", "name did not resolve")                                                  \
    X(RN_ETLS, "RN_ETLS", "TLS protocol or handshake failure")                                     \
    X(RN_ETLS_VERIFY, "RN_ETLS_VERIFY", "peer certificate refused")                                \
    X(RN_EEOF, "RN_EEOF", "stream ended before the requested length")                              \
    X(RN_ECLOSED, "RN_ECLOSED", "connection or server closed")                                     \
    X(RN_EBACKEND, "RN_EBACKEND", "requested I/O backend cannot run here")                         \
    X(RN_ETLS_TRUNCATED, "RN_ETLS_TRUNCATED", "TLS stream ended without close_notify (truncated)")

RN_EXPORT const char *rn_strerror(int err)
{
    switch (err) {
#define X(code, name, msg)                                                                         \
    case code:                                                                                     \
        return msg;
        RN_OWN_CODES(X)
#undef X
    case 0:
        return "success";
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        /* glibc's description table: static, thread-safe, no locale games. */
        const char *d = strerrordesc_np(-err);
        if (d)
            return d;
    }
    return "unknown error";
}

const char *rn__errname(int err)
{
    switch (err) {
#define X(code, name, msg)                                                                         \
    case code:                                                                                     \
        return name;
        RN_OWN_CODES(X)
#undef X
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        const char *n = strerrorname_np(-err);
        if (n)
            return n;
    }
    return "?";
}

RN_EXPORT const char *rn_last_error(void)
{
    return tl_last_error;
}

bool rn__err_since(struct rn__loop *loop, unsigned mark)
{
    return loop->current->err_seq != mark && tl_err_task == loop->current;
}

int rn__err(int err, const char *fmt, ...)
{
    struct rn__loop *loop = rn__loop_peek();
    if (loop)
        loop->current->err_seq++;
    tl_err_task = loop ? (const void *)loop->current : NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_last_error, sizeof tl_last_error, fmt, ap);
    va_end(ap);
    /* Sentences quote what peers and callers sent (certificate names, host
     * names): no control byte reaches a log through them. */
    for (char *p = tl_last_error; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return err;
}
