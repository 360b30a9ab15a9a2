/* echo_load.c - a load generator for echo servers, written on epoll alone so
 * that it is a peer independent of ringnet: N connections each send a message,
 * wait for it to come back, check every byte, and send the next.
 *
 * Build: gcc -O2 -Wall -Wextra -o echo_load perf/echo_load.c
 *
 * Usage: echo_load [--host H] [--port P] [--conns N] [--seconds S]
 *                  [--size B] [--pipeline K] [--server-pid PID]
 *   defaults: 127.0.0.1 9000, 64 connections, 5 s, 64-byte messages,
 *   1 message in flight per connection.
 *
 * Message seq of connection id is B bytes of a pattern computed from
 * (id, seq, offset), so a reply can be checked without keeping what was sent,
 * and bytes that come back on the wrong connection, out of order or shifted
 * do not match. Latency is one message's round trip, from the write of its
 * first byte to the read of its last, kept in a log-linear histogram (about
 * 1.6% resolution) rather than as samples.
 *
 * --server-pid reads utime + stime of that process (all its threads, not its
 * children) from /proc at the start and the end of the measured run.
 *
 * Output: the figures as text, then a CSVHEADER,... line naming the fields
 * and a CSV,... line with the values (empty server fields without
 * --server-pid), for scripts.
 *
 * Exit status: 0; 1 for bad options or a setup failure; 2 if any error
 * happened during the run (failed connect, reset, early close, a byte that
 * did not match, extra bytes, no reply in the drain time).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* SOCK_NONBLOCK, MSG_NOSIGNAL, getaddrinfo under -std=c11 */
#endif
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S            INT64_C(1000000000)
#define IO_CHUNK            (64 * 1024) /* bytes per send/recv call at most */
#define CONNECT_TIMEOUT_NS  (10 * NS_PER_S)
#define DRAIN_TIMEOUT_NS    (10 * NS_PER_S) /* for replies still owed when time is up */
#define MAX_REPORTED_ERRORS 10 /* lines about single failures; the rest are only counted */

/* ---- options ------------------------------------------------------------ */

struct options {
    const char *host;
    const char *port;
    long conns;
    double seconds;
    long size;
    long pipeline;
    long server_pid; /* 0: none */
};

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--host H] [--port P] [--conns N] [--seconds S] [--size B]\n"
            "          [--pipeline K] [--server-pid PID]\n"
            "  --host H        server address or name (default 127.0.0.1)\n"
            "  --port P        server port (default 9000)\n"
            "  --conns N       connections (default 64)\n"
            "  --seconds S     how long to send, may be fractional (default 5)\n"
            "  --size B        bytes per message (default 64)\n"
            "  --pipeline K    messages in flight per connection (default 1)\n"
            "  --server-pid P  report the CPU time process P used during the run\n",
            prog);
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.host = "127.0.0.1",
                          .port = "9000",
                          .conns = 64,
                          .seconds = 5,
                          .size = 64,
                          .pipeline = 1,
                          .server_pid = 0};
    for (int i = 1; i < argc; i++) {
        const char *name = argv[i];
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
            usage(stdout, argv[0]);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "echo_load: %s needs a value (or is unknown)\n", name);
            return -1;
        }
        const char *val = argv[++i];
        bool ok = true;
        long port;
        if (strcmp(name, "--host") == 0) {
            o->host = val;
        } else if (strcmp(name, "--port") == 0) {
            ok = parse_long(val, 1, 65535, &port);
            o->port = val;
        } else if (strcmp(name, "--conns") == 0) {
            ok = parse_long(val, 1, 1000000, &o->conns);
        } else if (strcmp(name, "--seconds") == 0) {
            char *end;
            o->seconds = strtod(val, &end);
            ok = *val != '\0' && *end == '\0' && o->seconds > 0 && o->seconds < 1e6;
        } else if (strcmp(name, "--size") == 0) {
            ok = parse_long(val, 1, 64L * 1024 * 1024, &o->size);
        } else if (strcmp(name, "--pipeline") == 0) {
            ok = parse_long(val, 1, 65536, &o->pipeline);
        } else if (strcmp(name, "--server-pid") == 0) {
            ok = parse_long(val, 1, INT32_MAX, &o->server_pid);
        } else {
            fprintf(stderr, "echo_load: unknown option %s\n", name);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "echo_load: bad value '%s' for %s\n", val, name);
            return -1;
        }
    }
    return 0;
}

/* ---- time and CPU ------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* utime + stime of pid in seconds, or -1 if /proc/pid/stat cannot be read. */
static double proc_cpu_seconds(long pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) is in parentheses and may hold spaces or
     * ')' itself, so count fields from the last ')'. After it come field 3
     * (state) onwards; utime and stime are fields 14 and 15. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long utime, stime;
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) !=
        2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(utime + stime) / (double)(hz > 0 ? hz : 100);
}

static double self_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- latency histogram ------------------------------------------------- */

/* Log-linear buckets over nanoseconds: values below 128 have a bucket each;
 * above, every power of two is split into 64 equal buckets. Up to 2^47 ns
 * (39 hours), which no round trip reaches. */
#define HIST_SUB       64
#define HIST_MAX_SHIFT 41
#define HIST_BUCKETS   (2 * HIST_SUB + HIST_MAX_SHIFT * HIST_SUB)

static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count;
static uint64_t hist_max_ns;
static double hist_sum_ns;

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 6; /* v >> shift is in [64, 128) */
    if (shift > HIST_MAX_SHIFT)
        return HIST_BUCKETS - 1;
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The middle of bucket i, in ns. */
static double hist_value(unsigned i)
{
    if (i < 2 * HIST_SUB)
        return i;
    unsigned shift = (i - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t lo = (uint64_t)(HIST_SUB + (i - 2 * HIST_SUB) % HIST_SUB) << shift;
    return (double)lo + (double)(UINT64_C(1) << shift) / 2;
}

static void hist_record(int64_t ns)
{
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    hist[hist_index(v)]++;
    hist_count++;
    hist_sum_ns += (double)v;
    if (v > hist_max_ns)
        hist_max_ns = v;
}

/* The q-quantile (0 < q <= 1) in ns; never above the exact maximum. */
static double hist_quantile(double q)
{
    if (hist_count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)hist_count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return v > (double)hist_max_ns ? (double)hist_max_ns : v;
        }
    }
    return (double)hist_max_ns;
}

/* ---- the pattern -------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 29;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 32;
    return x;
}

static uint64_t msg_seed(uint32_t conn_id, uint64_t seq)
{
    return mix64(((uint64_t)conn_id << 40) ^ mix64(seq + UINT64_C(0x9e3779b97f4a7c15)));
}

/* Word j of a message: cheap (one multiply) since the seed is already mixed;
 * every byte offset of a message still gets its own value. */
static inline uint64_t pattern_word(uint64_t seed, uint64_t j)
{
    uint64_t x = seed + j * UINT64_C(0x9e3779b97f4a7c15);
    x ^= x >> 32;
    x *= UINT64_C(0xd6e8feb86659fd93);
    return x ^ (x >> 29);
}

/* Bytes [off, off + n) of message seq of connection conn_id, into out.
 * Byte i is byte (i % 8) of word i / 8, least significant first. */
static void pattern_fill(unsigned char *out, uint32_t conn_id, uint64_t seq, size_t off, size_t n)
{
    uint64_t seed = msg_seed(conn_id, seq);
    size_t i = off, end = off + n;
    while (i < end && (i & 7) != 0) {
        *out++ = (unsigned char)(pattern_word(seed, i >> 3) >> (8 * (i & 7)));
        i++;
    }
    for (; i + 8 <= end; i += 8) {
        uint64_t w = pattern_word(seed, i >> 3);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        memcpy(out, &w, 8); /* least significant byte first */
        out += 8;
    }
    for (; i < end; i++)
        *out++ = (unsigned char)(pattern_word(seed, i >> 3) >> (8 * (i & 7)));
}

/* ---- connections -------------------------------------------------------- */

enum conn_state { CONNECTING, RUNNING, DONE };

struct conn {
    int fd;
    uint32_t id;
    enum conn_state state;
    bool want_out;       /* EPOLLOUT is in the interest set */
    bool msg_bad;        /* the message being received has mismatched */
    uint64_t send_seq;   /* message being sent (or next to start) */
    size_t send_off;     /* bytes of it already sent */
    uint64_t recv_seq;   /* message being received */
    size_t recv_off;     /* bytes of it already received */
    uint64_t bytes_sent; /* totals, to catch a server that sends more than it got */
    uint64_t bytes_recv;
    int64_t *t_start; /* [pipeline]: first-byte write time of message seq % pipeline */
};

struct errors {
    uint64_t connect;   /* connect failed or timed out */
    uint64_t io;        /* send/recv failed (reset, ...) */
    uint64_t early_eof; /* server closed while replies were owed or before time was up */
    uint64_t mismatch;  /* messages with at least one wrong byte */
    uint64_t extra;     /* server sent bytes nobody sent it */
    uint64_t drain;     /* replies not back within the drain time */
};

static struct options opt;
static int epfd;
static struct conn *conns;
static struct errors errs;
static uint64_t messages;
static long live_conns; /* not DONE */
static bool stopping;   /* time is up: start no new message */
static unsigned char io_buf[IO_CHUNK];
static unsigned char expect_buf[IO_CHUNK];

/* One line on stderr about one failure, for the first few failures only: a
 * server that drops every connection must not bury the summary. */
static void report_error(const char *fmt, ...)
{
    static unsigned reported;
    if (reported > MAX_REPORTED_ERRORS)
        return;
    if (reported++ == MAX_REPORTED_ERRORS) {
        fprintf(stderr, "echo_load: further errors are counted, not shown\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fputs("echo_load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint64_t total_errors(void)
{
    return errs.connect + errs.io + errs.early_eof + errs.mismatch + errs.extra + errs.drain;
}

static void conn_finish(struct conn *c)
{
    if (c->state == DONE)
        return;
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = DONE;
    live_conns--;
}

static bool conn_idle(const struct conn *c)
{
    return c->send_off == 0 && c->send_seq == c->recv_seq;
}

static void set_want_out(struct conn *c, bool want)
{
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        perror("echo_load: epoll_ctl");
        exit(1);
    }
    c->want_out = want;
}

/* Send what may be sent: the rest of a partly sent message, then new
 * messages while fewer than --pipeline are in flight and time is not up. */
static void conn_send(struct conn *c)
{
    const size_t size = (size_t)opt.size;
    const uint64_t depth = (uint64_t)opt.pipeline;

    while (c->state == RUNNING) {
        /* Lay out the next bytes to send in io_buf; no byte is sent yet. */
        uint64_t seq = c->send_seq;
        size_t off = c->send_off, len = 0;
        int64_t t = now_ns();
        while (len < IO_CHUNK) {
            if (off == 0) {
                if (stopping || seq - c->recv_seq >= depth)
                    break;
                /* Stamped again on every layout until its first byte is out,
                 * so the stamp is that of the write that started it. */
                c->t_start[seq % depth] = t;
            }
            size_t n = size - off;
            if (n > IO_CHUNK - len)
                n = IO_CHUNK - len;
            pattern_fill(io_buf + len, c->id, seq, off, n);
            len += n;
            off += n;
            if (off == size) {
                seq++;
                off = 0;
            }
        }
        if (len == 0)
            break;

        ssize_t w = send(c->fd, io_buf, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_want_out(c, true);
                return;
            }
            report_error("conn %u: send: %s", c->id, strerror(errno));
            errs.io++;
            conn_finish(c);
            return;
        }
        c->bytes_sent += (uint64_t)w;
        for (size_t left = (size_t)w; left > 0;) {
            size_t n = size - c->send_off;
            if (n > left)
                n = left;
            c->send_off += n;
            left -= n;
            if (c->send_off == size) {
                c->send_seq++;
                c->send_off = 0;
            }
        }
        if ((size_t)w < len) {
            set_want_out(c, true);
            return;
        }
    }
    if (c->state == RUNNING)
        set_want_out(c, false);
}

/* Check n received bytes against what this connection is owed, message by
 * message; count completed round trips. */
static void conn_check(struct conn *c, const unsigned char *data, size_t n)
{
    const size_t size = (size_t)opt.size;
    const uint64_t depth = (uint64_t)opt.pipeline;

    while (n > 0) {
        size_t take = size - c->recv_off;
        if (take > n)
            take = n;
        pattern_fill(expect_buf, c->id, c->recv_seq, c->recv_off, take);
        if (!c->msg_bad && memcmp(expect_buf, data, take) != 0) {
            c->msg_bad = true;
            size_t i = 0;
            while (expect_buf[i] == data[i])
                i++;
            report_error("conn %u message %" PRIu64 ": byte %zu is 0x%02x, expected 0x%02x", c->id,
                         c->recv_seq, c->recv_off + i, data[i], expect_buf[i]);
        }
        c->recv_off += take;
        data += take;
        n -= take;
        if (c->recv_off == size) {
            hist_record(now_ns() - c->t_start[c->recv_seq % depth]);
            messages++;
            if (c->msg_bad)
                errs.mismatch++;
            c->msg_bad = false;
            c->recv_seq++;
            c->recv_off = 0;
        }
    }
}

static void conn_recv(struct conn *c)
{
    while (c->state == RUNNING) {
        ssize_t r = recv(c->fd, io_buf, sizeof io_buf, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            report_error("conn %u: recv: %s", c->id, strerror(errno));
            errs.io++;
            conn_finish(c);
            return;
        }
        if (r == 0) {
            report_error("conn %u: server closed the connection (%" PRIu64 " bytes owed)", c->id,
                         c->bytes_sent - c->bytes_recv);
            errs.early_eof++;
            conn_finish(c);
            return;
        }
        uint64_t owed = c->bytes_sent - c->bytes_recv;
        if ((uint64_t)r > owed) {
            report_error("conn %u: server sent %" PRIu64 " bytes more than it was sent", c->id,
                         (uint64_t)r - owed);
            errs.extra++;
            conn_finish(c);
            return;
        }
        c->bytes_recv += (uint64_t)r;
        conn_check(c, io_buf, (size_t)r);
        if ((size_t)r < sizeof io_buf)
            break; /* level-triggered: epoll says when there is more */
    }
    if (c->state != RUNNING)
        return;
    if (stopping && conn_idle(c))
        conn_finish(c);
    else
        conn_send(c);
}

/* ---- setup -------------------------------------------------------------- */

static void raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            perror("echo_load: setrlimit(RLIMIT_NOFILE)");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)need > rl.rlim_cur) {
        fprintf(stderr, "echo_load: %ld connections need %ld descriptors; the limit is %llu\n",
                opt.conns, need, (unsigned long long)rl.rlim_cur);
        exit(1);
    }
}

static void start_connects(const struct addrinfo *ai)
{
    for (long i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        c->id = (uint32_t)i;
        c->t_start = calloc((size_t)opt.pipeline, sizeof *c->t_start);
        if (!c->t_start) {
            fprintf(stderr, "echo_load: out of memory\n");
            exit(1);
        }
        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            perror("echo_load: socket");
            exit(1);
        }
        /* Small messages must go out at once, not wait for Nagle. */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->state = CONNECTING;
        live_conns++;
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            report_error("conn %ld: connect: %s", i, strerror(errno));
            errs.connect++;
            conn_finish(c);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            perror("echo_load: epoll_ctl");
            exit(1);
        }
    }
}

/* Wait until every connect has finished one way or the other. */
static void finish_connects(void)
{
    struct epoll_event evs[256];
    long pending = live_conns;
    int64_t limit = now_ns() + CONNECT_TIMEOUT_NS;

    while (pending > 0) {
        int64_t left = limit - now_ns();
        if (left <= 0)
            break;
        int n = epoll_wait(epfd, evs, 256, (int)(left / 1000000) + 1);
        if (n < 0 && errno != EINTR) {
            perror("echo_load: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state != CONNECTING)
                continue;
            pending--;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                report_error("conn %u: connect: %s", c->id, strerror(err));
                errs.connect++;
                conn_finish(c);
                continue;
            }
            c->state = RUNNING;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    for (long i = 0; i < opt.conns; i++) {
        if (conns[i].state == CONNECTING) {
            report_error("conn %ld: connect timed out", i);
            errs.connect++;
            conn_finish(&conns[i]);
        }
    }
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (parse_options(argc, argv, &opt) < 0) {
        usage(stderr, argv[0]);
        return 1;
    }
    raise_nofile(opt.conns + 16);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai;
    int gai = getaddrinfo(opt.host, opt.port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "echo_load: resolve %s: %s\n", opt.host, gai_strerror(gai));
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("echo_load: epoll_create1");
        return 1;
    }
    conns = calloc((size_t)opt.conns, sizeof *conns);
    if (!conns) {
        fprintf(stderr, "echo_load: out of memory\n");
        return 1;
    }
    start_connects(ai);
    freeaddrinfo(ai);
    finish_connects();
    long connected = live_conns;

    /* The measured run: from here until the last reply owed is back. */
    double server_cpu0 = opt.server_pid ? proc_cpu_seconds(opt.server_pid) : -1;
    double self_cpu0 = self_cpu_seconds();
    int64_t t0 = now_ns();
    int64_t t_stop = t0 + (int64_t)(opt.seconds * (double)NS_PER_S);
    int64_t t_drain = t_stop + DRAIN_TIMEOUT_NS;

    for (long i = 0; i < opt.conns; i++)
        conn_send(&conns[i]);

    struct epoll_event evs[256];
    while (live_conns > 0) {
        int64_t t = now_ns();
        if (!stopping && t >= t_stop) {
            stopping = true;
            for (long i = 0; i < opt.conns; i++)
                if (conns[i].state == RUNNING && conn_idle(&conns[i]))
                    conn_finish(&conns[i]);
            continue;
        }
        if (stopping && t >= t_drain) {
            for (long i = 0; i < opt.conns; i++) {
                struct conn *c = &conns[i];
                if (c->state != RUNNING)
                    continue;
                report_error("conn %u: %" PRIu64 " bytes not echoed within the drain time", c->id,
                             c->bytes_sent - c->bytes_recv);
                errs.drain++;
                conn_finish(c);
            }
            break;
        }
        int64_t wait_ns = (stopping ? t_drain : t_stop) - t;
        int n = epoll_wait(epfd, evs, 256, (int)(wait_ns / 1000000) + 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo_load: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state != RUNNING)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_recv(c);
            if (c->state == RUNNING && (evs[i].events & EPOLLOUT))
                conn_send(c);
        }
    }
    int64_t t_end = now_ns();
    double self_cpu = self_cpu_seconds() - self_cpu0;
    double server_cpu = -1;
    if (opt.server_pid) {
        double cpu1 = proc_cpu_seconds(opt.server_pid);
        if (server_cpu0 < 0 || cpu1 < 0)
            fprintf(stderr, "echo_load: cannot read /proc/%ld/stat; no server CPU figure\n",
                    opt.server_pid);
        else
            server_cpu = cpu1 - server_cpu0;
    }

    /* ---- report ---- */
    double secs = (double)(t_end - t0) / 1e9;
    double rate = secs > 0 ? (double)messages / secs : 0;
    double mbps = rate * (double)opt.size / 1e6;
    double p50 = hist_quantile(0.50) / 1e3, p99 = hist_quantile(0.99) / 1e3;
    double pmax = (double)hist_max_ns / 1e3;
    double mean = hist_count ? hist_sum_ns / (double)hist_count / 1e3 : 0;
    uint64_t nerr = total_errors();

    printf("echo_load: %s port %s, %ld connections (%ld connected), %ld-byte messages, "
           "pipeline %ld\n",
           opt.host, opt.port, opt.conns, connected, opt.size, opt.pipeline);
    printf("  duration     %.3f s\n", secs);
    printf("  messages     %" PRIu64 " (%.0f/s)\n", messages, rate);
    printf("  throughput   %.2f MB/s echoed (10^6 bytes, each direction)\n", mbps);
    printf("  latency      p50 %.1f us, p99 %.1f us, max %.1f us, mean %.1f us\n", p50, p99, pmax,
           mean);
    printf("  errors       %" PRIu64, nerr);
    if (nerr)
        printf(" (connect %" PRIu64 ", io %" PRIu64 ", early close %" PRIu64
               ", mismatched messages %" PRIu64 ", extra bytes %" PRIu64 ", drain %" PRIu64 ")",
               errs.connect, errs.io, errs.early_eof, errs.mismatch, errs.extra, errs.drain);
    printf("\n");
    if (server_cpu >= 0)
        printf("  server CPU   %.2f s (%.2f us per message)\n", server_cpu,
               messages ? server_cpu * 1e6 / (double)messages : 0);
    printf("  client CPU   %.2f s", self_cpu);
    if (secs >= 0.1) /* a share of a run too short to time means nothing */
        printf(" (%.0f%% of one core; near 100%% means this generator set the pace)",
               100 * self_cpu / secs);
    printf("\n");

    printf("CSVHEADER,host,port,conns,connected,size,pipeline,duration_s,messages,msgs_per_s,"
           "mb_per_s,p50_us,p99_us,max_us,mean_us,errors,server_cpu_s,server_cpu_us_per_msg,"
           "client_cpu_s\n");
    printf("CSV,%s,%s,%ld,%ld,%ld,%ld,%.3f,%" PRIu64 ",%.1f,%.3f,%.1f,%.1f,%.1f,%.1f,%" PRIu64 ",",
           opt.host, opt.port, opt.conns, connected, opt.size, opt.pipeline, secs, messages, rate,
           mbps, p50, p99, pmax, mean, nerr);
    if (server_cpu >= 0)
        printf("%.3f,%.3f,", server_cpu, messages ? server_cpu * 1e6 / (double)messages : 0);
    else
        printf(",,"); /* no --server-pid: empty fields */
    printf("%.3f\n", self_cpu);

    return nerr ? 2 : 0;
}
