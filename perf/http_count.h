/* http_count.h - counts the HTTP/1.1 request heads that end in a stream
 * read piece by piece, for the hello-world servers of the benchmarks. Every
 * server includes this one copy, so all of them do the same parsing work.
 *
 * A head ends at "\r\n\r\n" (a hello world ignores the method, the path and
 * any body). memchr finds each '\n' and the three bytes before it are
 * checked; the last three bytes of the previous read are kept so that a
 * terminator split across reads still counts, once. Occurrences do not
 * overlap ("\r\n\r\n\r\n" is one head and an empty line), so any number of
 * pipelined heads per read is counted right. */
#ifndef PERF_HTTP_COUNT_H
#define PERF_HTTP_COUNT_H

#include <stddef.h>
#include <string.h>

struct http_count {
    char tail[3];       /* the last bytes seen, tail[2] the latest; tail[3 - have..2] valid */
    unsigned char have; /* how many of them may still start a terminator */
};

/* The byte `back` (1..3) places before offset off of p, reaching into the
 * previous read's tail; 0 if there is none. */
static inline char http_count_before(const struct http_count *st, const char *p, size_t off,
                                     size_t back)
{
    if (off >= back)
        return p[off - back];
    size_t into_tail = back - off;
    return into_tail <= st->have ? st->tail[3 - into_tail] : 0;
}

/* Heads completed by p[0..n). */
static inline unsigned http_count_requests(struct http_count *st, const char *p, size_t n)
{
    unsigned reqs = 0;
    size_t from = 0; /* bytes before this offset belong to a counted terminator */
    for (const char *q = p; (q = memchr(q, '\n', (size_t)(p + n - q))) != NULL; q++) {
        size_t off = (size_t)(q - p);
        if (off < from + 3 && (from > 0 || off >= 3))
            continue; /* would overlap the terminator just counted */
        if (http_count_before(st, p, off, 1) == '\r' && http_count_before(st, p, off, 2) == '\n' &&
            http_count_before(st, p, off, 3) == '\r') {
            reqs++;
            from = off + 1;
        }
    }
    size_t avail = n - from; /* bytes after the last terminator */
    if (avail >= 3) {
        memcpy(st->tail, p + n - 3, 3);
        st->have = 3;
    } else {
        char seq[6];
        unsigned len = 0, keep = from == 0 ? st->have : 0;
        for (unsigned i = 3 - keep; i < 3; i++)
            seq[len++] = st->tail[i];
        for (size_t i = from; i < n; i++)
            seq[len++] = p[i];
        unsigned h = len < 3 ? len : 3;
        memcpy(st->tail + 3 - h, seq + len - h, h);
        st->have = (unsigned char)h;
    }
    return reqs;
}

#endif
