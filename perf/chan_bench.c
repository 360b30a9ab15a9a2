/* chan_bench.c - cross-thread hand-over, ringnet's channels against a pipe
 * baseline, two threads pinned to the first two CPUs of the process's
 * affinity mask (perf/go/chanbench is the Go peer; perf/run --threads runs
 * all three in the same run, round after round).
 *
 * Modes (--mode):
 *   rn-pingpong    a task on thread 0 sends on channel A (capacity 1) and
 *                  waits on channel B; a task on thread 1 answers: one round
 *                  trip = two hand-overs, each waking a parked task on the
 *                  other thread (rn_run_threads(2), rn_chan_send/recv).
 *   rn-pingpong-park  the same over channels of capacity 2, which never
 *                  spin before they wait (core/chan.c): every hand-over
 *                  parks the task and wakes it from the other thread, the
 *                  path RN_URING_MSG_RING=0/1 compares.
 *   rn-stream      one producer task (thread 0), one consumer task
 *                  (thread 1), a channel of --cap items (default 1024), one
 *                  pointer-sized item per rn_chan_send.
 *   rn-batch       the same, each channel item a pointer to a block of
 *                  --batch items (default 64), channel capacity --cap/--batch
 *                  blocks (the same items in flight); blocks are recycled
 *                  round robin from a pool the channel cannot overrun.
 *   pipe-pingpong  two pinned pthreads, an 8-byte write and a blocking read
 *                  over two pipes per direction: the kernel's hand-over.
 *   pipe-stream    a pointer-sized item per write(2)/read(2) over one pipe.
 *   pipe-batch     --batch items per write/read (512 bytes for 64).
 *
 * Every item is checked by the consumer (the sequence 1, 2, 3, ...); a
 * wrong or missing item is an error (exit 1). Prints one line:
 *   RESULT mode=M ops=N seconds=S ns_per_op=X mops=Y cpu_s=C
 * where an op is a round trip (ping-pong) or an item (streams), and cpu_s is
 * the process's user+sys CPU seconds over the measured part.
 *
 * Usage: chan_bench --mode M [--ops N] [--cap C] [--batch B] [--backend B] */
#define _GNU_SOURCE
#include <ringnet.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 2000 /* ping-pong round trips before the clock starts */

static const char *mode;
static long ops = 0;
static size_t cap = 1024, batch = 64;
static rn_chan *ch_a, *ch_b;
static int64_t t_start, t_end;
static double cpu_start, cpu_end;
static long bad; /* items that were not the next in the sequence */
static int failed;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void mark_start(void)
{
    cpu_start = cpu_now();
    t_start = now_ns();
}

static void mark_end(void)
{
    t_end = now_ns();
    cpu_end = cpu_now();
}

static void chan_fail(const char *what, int rc)
{
    fprintf(stderr, "chan_bench: %s: %s (%s)\n", what, rn_strerror(rc), rn_last_error());
    failed = 1;
}

/* ---- ringnet ------------------------------------------------------------------------ */

static void rn_ping(void)
{
    for (long i = -WARMUP; i < ops; i++) {
        if (i == 0)
            mark_start();
        void *got;
        int rc = rn_chan_send(ch_a, (void *)(uintptr_t)(i + WARMUP + 1), -1);
        if (rc == 0)
            rc = rn_chan_recv(ch_b, &got, -1);
        if (rc < 0) {
            chan_fail("ping", rc);
            break;
        }
        if ((uintptr_t)got != (uintptr_t)(i + WARMUP + 1))
            bad++;
    }
    mark_end();
    rn_chan_close(ch_a);
}

static void rn_pong(void)
{
    void *got;
    int rc;
    while ((rc = rn_chan_recv(ch_a, &got, -1)) == 0) {
        if ((rc = rn_chan_send(ch_b, got, -1)) < 0) {
            chan_fail("pong", rc);
            return;
        }
    }
    if (rc != RN_ECLOSED)
        chan_fail("pong recv", rc);
}

static void rn_produce(void)
{
    mark_start();
    for (long i = 1; i <= ops; i++) {
        int rc = rn_chan_send(ch_a, (void *)(uintptr_t)i, -1);
        if (rc < 0) {
            chan_fail("send", rc);
            break;
        }
    }
    rn_chan_close(ch_a);
}

static void rn_consume(void)
{
    uintptr_t next = 1;
    void *got;
    int rc;
    while ((rc = rn_chan_recv(ch_a, &got, -1)) == 0) {
        if ((uintptr_t)got != next)
            bad++;
        next++;
    }
    mark_end();
    if (rc != RN_ECLOSED)
        chan_fail("recv", rc);
    if (next - 1 != (uintptr_t)ops)
        bad += labs(ops - (long)(next - 1));
}

/* Blocks of `batch` items, recycled: block k goes to pool slot k % nslots.
 * While the producer fills block k, the channel holds at most its capacity
 * (blocks k-1 .. k-nblocks) and the consumer at most the one before, so
 * nblocks + 3 slots are never overrun. */
struct block {
    size_t n;
    uintptr_t item[];
};
static struct block **pool;
static size_t nslots;

static void rn_produce_batch(void)
{
    mark_start();
    uintptr_t v = 1;
    for (size_t k = 0; v <= (uintptr_t)ops; k++) {
        struct block *b = pool[k % nslots];
        b->n = 0;
        while (b->n < batch && v <= (uintptr_t)ops)
            b->item[b->n++] = v++;
        int rc = rn_chan_send(ch_a, b, -1);
        if (rc < 0) {
            chan_fail("send", rc);
            break;
        }
    }
    rn_chan_close(ch_a);
}

static void rn_consume_batch(void)
{
    uintptr_t next = 1;
    void *got;
    int rc;
    while ((rc = rn_chan_recv(ch_a, &got, -1)) == 0) {
        struct block *b = got;
        for (size_t i = 0; i < b->n; i++, next++)
            if (b->item[i] != next)
                bad++;
    }
    mark_end();
    if (rc != RN_ECLOSED)
        chan_fail("recv", rc);
    if (next - 1 != (uintptr_t)ops)
        bad += labs(ops - (long)(next - 1));
}

static void rn_thread(void *arg)
{
    (void)arg;
    int me = rn_thread_index();
    if (!strncmp(mode, "rn-pingpong", 11))
        me == 0 ? rn_ping() : rn_pong();
    else if (!strcmp(mode, "rn-stream"))
        me == 0 ? rn_produce() : rn_consume();
    else
        me == 0 ? rn_produce_batch() : rn_consume_batch();
}

static int run_rn(void)
{
    size_t c = cap;
    if (!strcmp(mode, "rn-pingpong"))
        c = 1;
    else if (!strcmp(mode, "rn-pingpong-park"))
        c = 2;
    else if (!strcmp(mode, "rn-batch")) {
        c = cap / batch ? cap / batch : 1;
        nslots = c + 3;
        pool = calloc(nslots, sizeof *pool);
        for (size_t i = 0; pool && i < nslots; i++)
            if (!(pool[i] = malloc(sizeof(struct block) + batch * sizeof(uintptr_t))))
                pool = NULL;
        if (!pool) {
            fprintf(stderr, "chan_bench: out of memory\n");
            return 1;
        }
    }
    ch_a = rn_chan_new(c);
    ch_b = rn_chan_new(c);
    if (!ch_a || !ch_b) {
        fprintf(stderr, "chan_bench: rn_chan_new: %s\n", rn_last_error());
        return 1;
    }
    int rc = rn_run_threads(2, rn_thread, NULL);
    if (rc < 0) {
        fprintf(stderr, "chan_bench: rn_run_threads: %s (%s)\n", rn_strerror(rc), rn_last_error());
        return 1;
    }
    rn_chan_free(ch_a);
    rn_chan_free(ch_b);
    return 0;
}

/* ---- pipes ---------------------------------------------------------------------------- */

static int p_ab[2], p_ba[2];

static int full_write(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes; 0 at end of file before any byte, -1 on error. */
static int full_read(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 && got == 0)
            return 0;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 1;
}

/* Pins the calling thread to the idx-th CPU of the process's mask, as
 * rn_run_threads pins its threads. */
static void pin(int idx)
{
    cpu_set_t mask, one;
    if (sched_getaffinity(0, sizeof mask, &mask) < 0)
        return;
    int n = CPU_COUNT(&mask), seen = 0;
    if (n == 0)
        return;
    idx %= n;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &mask))
            continue;
        if (seen++ == idx) {
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            pthread_setaffinity_np(pthread_self(), sizeof one, &one);
            return;
        }
    }
}

static void *pipe_second(void *arg)
{
    (void)arg;
    pin(1);
    if (!strcmp(mode, "pipe-pingpong")) {
        uint64_t v;
        while (full_read(p_ab[0], &v, sizeof v) == 1)
            if (full_write(p_ba[1], &v, sizeof v) < 0)
                break;
        close(p_ba[1]);
        return NULL;
    }
    size_t per = !strcmp(mode, "pipe-batch") ? batch : 1;
    uintptr_t *buf = malloc(per * sizeof *buf), next = 1;
    int r;
    /* The producer writes whole blocks (a write of up to PIPE_BUF bytes is
     * atomic); the last may be short, so read what comes and check it. */
    for (;;) {
        ssize_t n = read(p_ab[0], buf, per * sizeof *buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = (int)n;
            break;
        }
        size_t k = (size_t)n / sizeof *buf;
        if (n % sizeof *buf) { /* a split item: take the rest of it */
            size_t rest = sizeof *buf - (size_t)n % sizeof *buf;
            if (full_read(p_ab[0], (char *)buf + n, rest) != 1) {
                r = -1;
                break;
            }
            k++;
        }
        for (size_t i = 0; i < k; i++, next++)
            if (buf[i] != next)
                bad++;
    }
    mark_end();
    free(buf);
    if (r < 0)
        failed = 1;
    if (next - 1 != (uintptr_t)ops)
        bad += labs(ops - (long)(next - 1));
    return NULL;
}

static int run_pipe(void)
{
    if (pipe(p_ab) < 0 || pipe(p_ba) < 0) {
        perror("chan_bench: pipe");
        return 1;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, pipe_second, NULL) != 0) {
        fprintf(stderr, "chan_bench: pthread_create failed\n");
        return 1;
    }
    pin(0);
    if (!strcmp(mode, "pipe-pingpong")) {
        for (long i = -WARMUP; i < ops; i++) {
            if (i == 0)
                mark_start();
            uint64_t v = (uint64_t)(i + WARMUP + 1), back = 0;
            if (full_write(p_ab[1], &v, sizeof v) < 0 ||
                full_read(p_ba[0], &back, sizeof back) != 1) {
                failed = 1;
                break;
            }
            if (back != v)
                bad++;
        }
        mark_end();
        close(p_ab[1]);
    } else {
        size_t per = !strcmp(mode, "pipe-batch") ? batch : 1;
        uintptr_t *buf = malloc(per * sizeof *buf), v = 1;
        mark_start();
        while (v <= (uintptr_t)ops) {
            size_t n = 0;
            while (n < per && v <= (uintptr_t)ops)
                buf[n++] = v++;
            if (full_write(p_ab[1], buf, n * sizeof *buf) < 0) {
                failed = 1;
                break;
            }
        }
        free(buf);
        close(p_ab[1]);
    }
    pthread_join(th, NULL);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

static long num(const char *s, long lo, long hi, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "chan_bench: %s must be %ld..%ld\n", what, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "chan_bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--mode"))
            mode = v;
        else if (!strcmp(a, "--ops"))
            ops = num(v, 1, 1L << 40, "--ops");
        else if (!strcmp(a, "--cap"))
            cap = (size_t)num(v, 1, 1 << 24, "--cap");
        else if (!strcmp(a, "--batch"))
            batch = (size_t)num(v, 1, 512, "--batch"); /* 4 KiB: a pipe write stays atomic */
        else if (!strcmp(a, "--backend")) {
            if (rn_set_backend(v) < 0) {
                fprintf(stderr, "chan_bench: %s\n", rn_last_error());
                return 2;
            }
        } else {
            fprintf(stderr,
                    "usage: chan_bench --mode rn-pingpong|rn-pingpong-park|rn-stream|rn-batch|"
                    "pipe-pingpong|pipe-stream|pipe-batch [--ops N] [--cap C] "
                    "[--batch B] [--backend io_uring|epoll]\n");
            return 2;
        }
    }
    static const char *modes[] = {"rn-pingpong",   "rn-pingpong-park", "rn-stream", "rn-batch",
                                  "pipe-pingpong", "pipe-stream",      "pipe-batch"};
    int known = 0;
    for (size_t i = 0; mode && i < sizeof modes / sizeof *modes; i++)
        known |= !strcmp(mode, modes[i]);
    if (!known) {
        fprintf(stderr,
                "chan_bench: --mode must be one of rn-pingpong rn-pingpong-park rn-stream rn-batch "
                "pipe-pingpong pipe-stream pipe-batch\n");
        return 2;
    }
    if (ops == 0)
        ops = strstr(mode, "pingpong") ? 100000 : 4000000;
    int rc = !strncmp(mode, "rn-", 3) ? run_rn() : run_pipe();
    if (rc != 0 || failed)
        return 1;
    if (bad) {
        fprintf(stderr, "chan_bench: %s: %ld items wrong or missing\n", mode, bad);
        return 1;
    }
    double s = (double)(t_end - t_start) / 1e9;
    printf("RESULT mode=%s ops=%ld seconds=%.4f ns_per_op=%.1f mops=%.3f cpu_s=%.3f\n", mode, ops,
           s, s * 1e9 / (double)ops, (double)ops / s / 1e6, cpu_end - cpu_start);
    return 0;
}
