/* soak.c - the soak test of ringnet (hardening issue, "Soak"): N concurrent
 * connections, half of them TLS, through a ringnet echo server for a set
 * time, every byte checked end to end, and the server's descriptors and
 * memory watched before the load, at its peak and after it.
 *
 * Two processes. This program is the driver and the load generator; it
 * starts perf/soak_server.c (a ringnet server: a plain and a TLS echo
 * listener on one loop thread) as a child with the backend under test, and
 * talks to it only over loopback TCP, its stdout and signals.
 *
 * The load side is written on epoll and OpenSSL, not on ringnet: a peer that
 * shares no code with the server cannot hide a ringnet bug behind the same
 * bug on the other end (a lost byte, a wrong record boundary, a close_notify
 * skipped on both sides), and OpenSSL's client checks wolfSSL's server
 * handshake, records and close_notify as an independent implementation.
 * The client verifies the server's certificate (made here, at run time, by
 * the openssl CLI) and its name, and does a full handshake every time (no
 * session resumption).
 *
 * What every connection does: it opens (at most --inflight connects and
 * handshakes at once, so the listen backlog never fills) and waits until
 * every connection is open; then it writes messages of varied sizes (1 B to
 * 16 KiB, log-uniform, at most the window, from a per-connection random
 * sequence) while it reads the echo, keeping at most --window bytes
 * unanswered: writes and reads overlap, and a message's echo may arrive in
 * any split. Byte k of connection i's stream is a function of (i, k), so
 * every byte read is compared with the one that must be there (a byte lost,
 * repeated, shifted or crossed over from another connection fails), and a
 * 64-bit checksum of each direction (of the bytes as written and as read)
 * is kept and compared at the end. When the time is up, each connection
 * finishes its message, waits for all of its echo, then ends its sending
 * side (TLS: close_notify; plain: shutdown) and must read a clean end from
 * the server (TLS: the server's close_notify; plain: end of stream): the
 * server closes first, so no TIME_WAIT is left on the client's ephemeral
 * ports between runs.
 *
 * --seconds counts from the first connect: connecting (5,000 TLS handshakes
 * cost several seconds of server CPU on a small machine) is inside it, and
 * the run fails if not every connection is open, all at once, before the
 * time is up. No data moves until then, so the handshakes have both
 * processes to themselves: with --overlap (each connection moves data as
 * soon as it is open) a 30 s run on the shared 2-CPU machine of
 * perf/RESULTS.md opened fewer than 4,000 of the 10,000, the echo traffic
 * of the open ones taking the CPU time the handshakes needed. The summary
 * gives the opening times (connect to TCP up, TCP up to handshake done) as
 * the client saw them: they include its own loop's rounds.
 *
 * The server is sampled from /proc/<pid>/fd and /proc/<pid>/status: before
 * the first connect (baseline), twice a second during the run and the moment
 * the last connection opened (peak: the most descriptors seen; VmHWM for
 * memory), and after every connection closed: descriptors must come back to
 * the baseline exactly (polled up to 10 s, as the server closes on its own
 * time); memory is read then, and again after the server ran malloc_trim
 * (SIGUSR2), which returns free heap that glibc keeps cached; the trimmed
 * figure must be within --rss-tolerance-mib of the baseline (see the
 * option's help for the bound). At the end the server's own summary (bytes
 * it echoed, connections, errors) must agree with the load's account.
 *
 * Usage: soak --server PATH [--conns N] [--seconds S] [--backend B]
 *             [--tls-fraction F] [...]   (soak --help lists them all)
 * Exit status: 0 passed; 1 failed (any error, a byte or count mismatch,
 * descriptors or memory not back); 2 bad options or setup failure; 77 the
 * backend cannot run on this machine (the reason is printed).
 *
 * Built by perf/CMakeLists.txt (target soak) when OpenSSL is found;
 * perf/soak/run.sh builds it before a run.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define IO_CHUNK            (64 * 1024)
#define MAX_MSG_LOG2        14 /* messages of 1 .. 16 KiB */
#define MAX_REPORTED_ERRORS 10
#define SAMPLE_EVERY_S      0.5
#define PROGRESS_EVERY_S    5.0
#define FD_RETURN_WAIT_S    10.0
#define SERVER_WAIT_S       15.0

/* ---- options -------------------------------------------------------------- */

static struct {
    const char *server;
    long conns;
    double seconds;
    const char *backend;
    double tls_fraction;
    long window;
    long inflight;
    double drain_s;
    long rss_tol_mib;
    bool quiet;
    bool overlap; /* data from each connection's open on, not from the last one's */
} opt = {
    .conns = 10000,
    .seconds = 30,
    .backend = "auto",
    .tls_fraction = 0.5,
    .window = 16384,
    .inflight = 256,
    .drain_s = 30,
    .rss_tol_mib = 16,
};

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s --server PATH [options]\n"
            "  --server PATH        the soak_server executable (built with ringnet)\n"
            "  --conns N            concurrent connections (default 10000)\n"
            "  --seconds S          run time, counted from the first connect (default 30)\n"
            "  --backend B          the server's backend: io_uring, epoll or auto (default auto)\n"
            "  --tls-fraction F     share of the connections that are TLS, 0..1 (default 0.5)\n"
            "  --window BYTES       unanswered bytes per connection at most (default 16384)\n"
            "  --inflight N         connects and handshakes under way at once (default 256)\n"
            "  --drain S            time allowed after the run for the echoes and closes (default 30)\n"
            "  --rss-tolerance-mib M  server memory after the run, once trimmed, may exceed\n"
            "                       the baseline by this much (default 16: the loop keeps up\n"
            "                       to 64 task stacks for reuse, each with the pages a TLS\n"
            "                       connection touched, and glibc keeps its per-thread\n"
            "                       caches and fragments malloc_trim cannot return; a leak\n"
            "                       of 2 KiB per connection at 10,000 connections is above it)\n"
            "  --overlap            each connection starts moving data as soon as it is open,\n"
            "                       so the handshakes compete with the echo traffic (default:\n"
            "                       data starts once every connection is open)\n"
            "  --quiet              no progress lines, only the summary\n",
            prog);
}

/* ---- time and errors ------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double t_start;
static uint64_t n_errors;

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errorf(const char *fmt, ...)
{
    n_errors++;
    if (n_errors > MAX_REPORTED_ERRORS) {
        if (n_errors == MAX_REPORTED_ERRORS + 1)
            fprintf(stderr, "soak: (further errors are counted, not shown)\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: ERROR at %.2fs: ", now_s() - t_start);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ---- the byte stream and the message sizes ---------------------------------- */

static inline uint64_t mix64(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Bytes [off, off + n) of connection id's stream: byte k is byte k % 8
 * (little-endian) of mix64(id << 44 ^ k / 8). */
static void pattern(uint32_t id, uint64_t off, uint8_t *out, size_t n)
{
    uint64_t seed = (uint64_t)id << 44;
    size_t i = 0;
    while (i < n && ((off + i) & 7)) {
        uint64_t o = off + i;
        out[i++] = (uint8_t)(mix64(seed ^ (o >> 3)) >> (8 * (o & 7)));
    }
    for (; n - i >= 8; i += 8) {
        uint64_t w = htole64(mix64(seed ^ ((off + i) >> 3)));
        memcpy(out + i, &w, 8);
    }
    for (; i < n; i++) {
        uint64_t o = off + i;
        out[i] = (uint8_t)(mix64(seed ^ (o >> 3)) >> (8 * (o & 7)));
    }
}

/* The checksum of one direction of a connection: an order-sensitive 64-bit
 * hash of its bytes taken 8 at a time (h = mix64(h ^ word)), the same
 * however the stream was split into reads and writes. */
struct csum {
    uint64_t h, acc;
    unsigned n; /* bytes in acc */
};

static void csum_add(struct csum *c, const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len && c->n) {
        c->acc |= (uint64_t)p[i++] << (8 * c->n);
        if (++c->n == 8) {
            c->h = mix64(c->h ^ c->acc);
            c->acc = 0;
            c->n = 0;
        }
    }
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        c->h = mix64(c->h ^ le64toh(w));
    }
    for (; i < len; i++)
        c->acc |= (uint64_t)p[i] << (8 * c->n++);
}

static uint64_t csum_final(const struct csum *c)
{
    return mix64(c->h ^ c->acc ^ ((uint64_t)c->n << 61));
}

/* The sizes of a connection's messages, 1 .. 16 KiB, log-uniform, and never
 * more than the window: when time is up a connection finishes the message
 * it is writing, and a message larger than the window would take many round
 * trips to finish (16,384 of them with --window 1). The writer and the
 * reader each walk the same sequence. */
static inline uint64_t next_size(uint64_t *rng)
{
    uint64_t r = mix64((*rng)++);
    unsigned bits = (unsigned)((r >> 40) % (MAX_MSG_LOG2 + 1));
    uint64_t size = 1 + (r & ((UINT64_C(1) << bits) - 1));
    return size < (uint64_t)opt.window ? size : (uint64_t)opt.window;
}

/* ---- connections -------------------------------------------------------------- */

enum state { ST_NEW, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_DONE, ST_FAILED };

struct conn {
    int fd;
    uint32_t id;
    uint8_t state;
    bool tls;
    bool retry;      /* an SSL_write to repeat with retry_len bytes */
    bool shut_sent;  /* our sending side is ended */
    bool queued;     /* on the ready list: to be driven again without an event */
    uint32_t retry_len;
    SSL *ssl;
    uint64_t sent, recvd;        /* stream offsets */
    uint64_t msg_end;            /* end of the message being written (== sent: none) */
    uint64_t echo_end;           /* end of the next message whose echo is awaited */
    uint64_t rng_w, rng_r;
    struct csum sum_sent, sum_recv;
    double t_connect, t_tcp; /* when connect was called, when TCP was up */
};

struct kind_totals {
    uint64_t conns, bytes_out, bytes_in, msgs_out, msgs_echoed;
    uint64_t sum_out, sum_in; /* per-connection checksums, added */
};

static struct conn *conns;
static SSL_CTX *ssl_ctx;
static int ep;
static struct sockaddr_in addr_plain, addr_tls;
static uint8_t wbuf[IO_CHUNK], rbuf[IO_CHUNK], xbuf[IO_CHUNK];
static bool stopping, moving; /* moving: every connection is open, data flows */
static struct conn **ready;   /* connections with more to do than one pass did */
static long n_ready;
static long n_created, n_open_now, n_inflight, n_finished, n_open_max;
static double t_all_open; /* 0 until every connection was open at once */
static struct kind_totals tot[2];
static char tls_desc[128];
/* Opening times: connect to TCP up (all), TCP up to handshake done (TLS). */
static double lat_tcp_sum, lat_tcp_max, lat_hs_sum, lat_hs_max;

static const char *ssl_errors(void)
{
    static char buf[512];
    size_t used = 0;
    buf[0] = '\0';
    unsigned long e;
    while ((e = ERR_get_error()) != 0 && used + 2 < sizeof buf) {
        if (used)
            buf[used++] = ';', buf[used] = '\0';
        ERR_error_string_n(e, buf + used, sizeof buf - used);
        used = strlen(buf);
    }
    return used ? buf : "no OpenSSL error queued";
}

static void conn_end(struct conn *c, bool ok)
{
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE)
        n_inflight--;
    else if (c->state == ST_OPEN || c->state == ST_CLOSING)
        n_open_now--;
    c->state = ok ? ST_DONE : ST_FAILED;
    n_finished++;
    if (ok) {
        struct kind_totals *k = &tot[c->tls];
        k->bytes_out += c->sent;
        k->bytes_in += c->recvd;
        k->sum_out += csum_final(&c->sum_sent);
        k->sum_in += csum_final(&c->sum_recv);
    }
}

static void conn_fail(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_fail(struct conn *c, const char *fmt, ...)
{
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    errorf("%s connection %u (state %d, sent %" PRIu64 ", echoed %" PRIu64 ", message ends at %" PRIu64 "): %s",
           c->tls ? "TLS" : "plain", c->id, c->state, c->sent, c->recvd, c->msg_end, what);
    conn_end(c, false);
}

static void conn_start(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = ST_CONNECTING; /* counted as in flight until conn_fail */
        n_inflight++;
        conn_fail(c, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = ST_CONNECTING;
    c->t_connect = now_s();
    n_inflight++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        conn_fail(c, "epoll_ctl: %s", strerror(errno));
        return;
    }
    const struct sockaddr_in *sa = c->tls ? &addr_tls : &addr_plain;
    if (connect(c->fd, (const struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS)
        conn_fail(c, "connect: %s", strerror(errno));
}

static void conn_opened(struct conn *c)
{
    if (c->tls) {
        double hs = now_s() - c->t_tcp;
        lat_hs_sum += hs;
        if (hs > lat_hs_max)
            lat_hs_max = hs;
    }
    c->state = ST_OPEN;
    n_inflight--;
    n_open_now++;
    tot[c->tls].conns++;
    if (n_open_now > n_open_max)
        n_open_max = n_open_now;
    if (c->tls && !tls_desc[0])
        snprintf(tls_desc, sizeof tls_desc, "%s %s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
}

/* Read all there is; false if the connection ended (done or failed). */
static bool conn_read(struct conn *c, bool *progress)
{
    for (;;) {
        ssize_t n;
        if (c->tls) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, rbuf, sizeof rbuf);
            if (r > 0) {
                n = r;
            } else {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return true;
                if (e == SSL_ERROR_ZERO_RETURN)
                    n = 0;
                else {
                    conn_fail(c, "SSL_read: error %d (%s), errno %s", e, ssl_errors(), strerror(errno));
                    return false;
                }
            }
        } else {
            n = recv(c->fd, rbuf, sizeof rbuf, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    return true;
                conn_fail(c, "recv: %s", strerror(errno));
                return false;
            }
        }
        if (n == 0) {
            if (c->state == ST_CLOSING && c->recvd == c->sent) {
                if (csum_final(&c->sum_sent) != csum_final(&c->sum_recv)) {
                    conn_fail(c, "checksum of the bytes sent %016" PRIx64 ", of the echo %016" PRIx64,
                              csum_final(&c->sum_sent), csum_final(&c->sum_recv));
                    return false;
                }
                conn_end(c, true);
                return false;
            }
            conn_fail(c, "the server ended the stream early (%s)",
                      c->tls ? "close_notify" : "end of stream");
            return false;
        }
        *progress = true;
        if (c->recvd + (uint64_t)n > c->sent) {
            conn_fail(c, "%zd bytes came back where only %" PRIu64 " were owed", n, c->sent - c->recvd);
            return false;
        }
        pattern(c->id, c->recvd, xbuf, (size_t)n);
        if (memcmp(xbuf, rbuf, (size_t)n) != 0) {
            size_t i = 0;
            while (rbuf[i] == xbuf[i])
                i++;
            conn_fail(c, "byte %" PRIu64 " of the echo is 0x%02x, 0x%02x was sent", c->recvd + i, rbuf[i], xbuf[i]);
            return false;
        }
        csum_add(&c->sum_recv, rbuf, (size_t)n);
        c->recvd += (uint64_t)n;
        while (c->echo_end <= c->recvd) {
            tot[c->tls].msgs_echoed++;
            c->echo_end += next_size(&c->rng_r);
        }
    }
}

/* Write what the window allows; false if the connection failed. */
static bool conn_write(struct conn *c, bool *progress)
{
    while (!c->shut_sent) {
        size_t len;
        if (c->retry) {
            len = c->retry_len;
        } else {
            if (c->sent == c->msg_end) {
                if (stopping || !(moving || opt.overlap))
                    break;
                c->msg_end = c->sent + next_size(&c->rng_w);
                tot[c->tls].msgs_out++;
            }
            uint64_t unanswered = c->sent - c->recvd;
            if (unanswered >= (uint64_t)opt.window)
                break;
            len = (size_t)(c->msg_end - c->sent);
            if (len > (uint64_t)opt.window - unanswered)
                len = (size_t)((uint64_t)opt.window - unanswered);
            if (len > sizeof wbuf)
                len = sizeof wbuf;
        }
        pattern(c->id, c->sent, wbuf, len);
        ssize_t n;
        if (c->tls) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, wbuf, (int)len);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    c->retry = true;
                    c->retry_len = (uint32_t)len;
                    return true;
                }
                conn_fail(c, "SSL_write: error %d (%s), errno %s", e, ssl_errors(), strerror(errno));
                return false;
            }
            c->retry = false;
            n = r;
        } else {
            n = send(c->fd, wbuf, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN)
                    return true;
                if (errno == EINTR)
                    continue;
                conn_fail(c, "send: %s", strerror(errno));
                return false;
            }
        }
        *progress = true;
        csum_add(&c->sum_sent, wbuf, (size_t)n);
        c->sent += (uint64_t)n;
    }
    /* Time is up, the last message is written and all of it came back: end
     * our side; the server then closes, and the read sees a clean end. */
    if (stopping && !c->shut_sent && !c->retry && c->sent == c->msg_end && c->recvd == c->sent) {
        if (c->tls) {
            ERR_clear_error();
            int r = SSL_shutdown(c->ssl);
            if (r < 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    return true;
                conn_fail(c, "SSL_shutdown: error %d (%s)", e, ssl_errors());
                return false;
            }
        } else if (shutdown(c->fd, SHUT_WR) < 0) {
            conn_fail(c, "shutdown: %s", strerror(errno));
            return false;
        }
        c->shut_sent = true;
        c->state = ST_CLOSING;
        *progress = true;
    }
    return true;
}

static void conn_drive(struct conn *c)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            conn_fail(c, "connect: %s", strerror(err));
            return;
        }
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) < 0)
            return; /* not connected yet */
        c->t_tcp = now_s();
        if (c->t_tcp - c->t_connect > lat_tcp_max)
            lat_tcp_max = c->t_tcp - c->t_connect;
        lat_tcp_sum += c->t_tcp - c->t_connect;
        if (c->tls) {
            c->ssl = SSL_new(ssl_ctx);
            if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || !SSL_set_tlsext_host_name(c->ssl, "localhost") ||
                !SSL_set1_host(c->ssl, "localhost")) {
                conn_fail(c, "SSL setup: %s", ssl_errors());
                return;
            }
            SSL_set_connect_state(c->ssl);
            c->state = ST_HANDSHAKE;
        } else {
            conn_opened(c);
        }
    }
    if (c->state == ST_HANDSHAKE) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            long v = SSL_get_verify_result(c->ssl);
            conn_fail(c, "TLS handshake: error %d (%s), verify: %s", e, ssl_errors(),
                      X509_verify_cert_error_string(v));
            return;
        }
        conn_opened(c);
    }
    if (c->state != ST_OPEN && c->state != ST_CLOSING)
        return;
    /* One pass, then back of the line: the server echoes on the other CPU
     * as fast as this loop writes, so "until nothing moves" could keep one
     * connection going for seconds while the others wait. Edge-triggered
     * events come only once, so a connection that moved is driven again from
     * the ready list until a pass finds nothing to do (its socket then is
     * drained or full, and the next edge will come). */
    bool progress = false;
    if (!conn_read(c, &progress) || !conn_write(c, &progress))
        return;
    if (progress && !c->queued) {
        c->queued = true;
        ready[n_ready++] = c;
    }
}

/* ---- the server process ----------------------------------------------------------- */

static pid_t server_pid;
static int server_out = -1; /* its stdout */
static char tmpdir[64];

static void cleanup(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
    if (tmpdir[0]) {
        char p[128];
        static const char *const files[] = {"cert.pem", "key.pem", "openssl.log"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
            unlink(p);
        }
        rmdir(tmpdir);
        tmpdir[0] = '\0';
    }
}

/* Interrupted (^C, a CI timeout): no server or temporary files left behind.
 * kill, waitpid, unlink, rmdir and _exit are async-signal-safe; cleanup's
 * snprintf of a short path is the one liberty taken. */
static void on_interrupt(int sig)
{
    cleanup();
    _exit(128 + sig);
}

static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cleanup();
    exit(2);
}

/* One line of the server's stdout, within timeout_s; false on timeout or
 * end. Bytes come one at a time: a few short lines in a whole run. */
static bool server_line(char *buf, size_t size, double timeout_s)
{
    size_t used = 0;
    double until = now_s() + timeout_s;
    while (used + 1 < size) {
        double left = until - now_s();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = server_out, .events = POLLIN};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        char ch;
        ssize_t n = read(server_out, &ch, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (ch == '\n') {
            buf[used] = '\0';
            return true;
        }
        buf[used++] = ch;
    }
    buf[used] = '\0';
    return false;
}

static void start_server(const char *cert, const char *key)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        fatal("pipe: %s", strerror(errno));
    server_pid = fork();
    if (server_pid < 0)
        fatal("fork: %s", strerror(errno));
    if (server_pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        execl(opt.server, opt.server, "--backend", opt.backend, "--cert", cert, "--key", key, (char *)NULL);
        fprintf(stderr, "soak: exec %s: %s\n", opt.server, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    server_out = p[0];
    char line[512];
    if (!server_line(line, sizeof line, SERVER_WAIT_S)) {
        int st;
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
            server_pid = 0;
            fatal("the server exited before it was ready (status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        }
        fatal("the server said nothing within %.0f s", SERVER_WAIT_S);
    }
    if (!strncmp(line, "UNAVAILABLE ", 12)) {
        printf("soak: SKIP backend %s: it cannot run here: %s\n", opt.backend, line + 12);
        cleanup();
        exit(77);
    }
    char plain[64], tls[64], backend[32];
    long pid;
    if (sscanf(line, "READY plain=%63s tls=%63s backend=%31s pid=%ld", plain, tls, backend, &pid) != 4)
        fatal("unexpected line from the server: %s", line);
    if (pid != server_pid)
        fatal("the server says pid %ld, it is %ld", pid, (long)server_pid);
    if (strcmp(opt.backend, "auto") != 0 && strcmp(opt.backend, backend) != 0)
        fatal("asked the server for %s, it runs %s", opt.backend, backend);
    opt.backend = strdup(backend);
    struct sockaddr_in *sas[2] = {&addr_plain, &addr_tls};
    const char *texts[2] = {plain, tls};
    for (int i = 0; i < 2; i++) {
        char host[64];
        int port;
        char *colon = strrchr(texts[i], ':');
        if (!colon || colon - texts[i] >= (long)sizeof host)
            fatal("bad address from the server: %s", texts[i]);
        memcpy(host, texts[i], (size_t)(colon - texts[i]));
        host[colon - texts[i]] = '\0';
        port = atoi(colon + 1);
        sas[i]->sin_family = AF_INET;
        sas[i]->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sas[i]->sin_addr) != 1)
            fatal("bad address from the server: %s", texts[i]);
    }
}

/* ---- /proc figures of the server ------------------------------------------------------ */

static long server_fds(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)server_pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* A "Name:   123 kB" field of /proc/<pid>/status, in KiB; -1 if absent. */
static long server_status_kib(const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t flen = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, flen) && line[flen] == ':') {
            v = strtol(line + flen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* utime + stime of the server (all its threads), in seconds. */
static double server_cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name may hold spaces; fields 3.. follow it */
    unsigned long long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static long peak_fds;

static void sample(void)
{
    long n = server_fds();
    if (n > peak_fds)
        peak_fds = n;
}

/* The clock's part of the main loop: the moment every connection is open,
 * samples, progress lines, the end of the run and of the drain. Called
 * between rounds and every few hundred connections within one, since a
 * round over ten thousand busy connections can take a second. */
static double deadline, next_sample, next_progress, drain_deadline;

static void tick(void)
{
    double t = now_s();
    if (!t_all_open && n_open_now == opt.conns) {
        t_all_open = t;
        sample();
        if (!opt.quiet)
            printf("soak: all %ld connections open at %.1fs (server %ld fds): the data starts\n", opt.conns,
                   t - t_start, peak_fds);
        /* Every connection starts writing now (the open ones were idle:
         * the handshakes had the server's CPU to themselves). */
        moving = true;
        for (long i = 0; i < opt.conns; i++)
            if (conns[i].state == ST_OPEN)
                conn_drive(&conns[i]);
    }
    if (t >= next_sample) {
        sample();
        next_sample = t + SAMPLE_EVERY_S;
    }
    if (!opt.quiet && t >= next_progress) {
        next_progress += PROGRESS_EVERY_S;
        uint64_t msgs = tot[0].msgs_echoed + tot[1].msgs_echoed;
        uint64_t moved = 0;
        for (long i = 0; i < opt.conns; i++)
            moved += conns[i].recvd;
        printf("soak: %5.1fs open %ld/%ld, echoed %" PRIu64 " messages, %.1f MiB, errors %" PRIu64
               ", server %ld fds, RSS %.1f MiB\n",
               t - t_start, n_open_now, opt.conns, msgs, (double)moved / (1 << 20), n_errors, server_fds(),
               server_status_kib("VmRSS") / 1024.0);
        fflush(stdout);
    }
    if (!stopping && t >= deadline) {
        stopping = true;
        drain_deadline = t + opt.drain_s;
        sample();
        if (!t_all_open)
            errorf("time is up and only %ld of %ld connections were ever open at once (%ld still "
                   "connecting, %ld never started)",
                   n_open_max, opt.conns, n_inflight, opt.conns - n_created);
        /* Never-started ones are counted as failed; the rest finish up. */
        for (long i = n_created; i < opt.conns; i++) {
            conns[i].state = ST_FAILED;
            n_finished++;
        }
        for (long i = 0; i < n_created; i++)
            if (conns[i].state == ST_OPEN)
                conn_drive(&conns[i]);
        if (!opt.quiet)
            printf("soak: time is up at %.1fs: finishing the messages, then closing\n", t - t_start);
    }
    if (stopping && t >= drain_deadline) {
        for (long i = 0; i < n_created; i++) {
            struct conn *c = &conns[i];
            if (c->state != ST_DONE && c->state != ST_FAILED)
                conn_fail(c, "not finished %.0f s after the run (echo or close missing)", opt.drain_s);
        }
    }
}

/* ---- main -------------------------------------------------------------------------- */

static void raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        fatal("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fatal("setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)rl.rlim_max, strerror(errno));
    }
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < need)
        fatal("%ld connections need about %ld descriptors in each process; the limit is %llu", opt.conns, need,
              (unsigned long long)rl.rlim_cur);
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

static bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

static void make_cert(char *cert, char *key, size_t size)
{
    strcpy(tmpdir, "/tmp/soak.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        tmpdir[0] = '\0';
        fatal("mkdtemp: %s", strerror(errno));
    }
    snprintf(cert, size, "%s/cert.pem", tmpdir);
    snprintf(key, size, "%s/key.pem", tmpdir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
             " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
             " -keyout %s -out %s >%s/openssl.log 2>&1",
             key, cert, tmpdir);
    int rc = system(cmd);
    if (rc != 0)
        fatal("making the certificate failed (status %d): %s; see %s/openssl.log", rc, cmd, tmpdir);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, argv[0]);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            opt.quiet = true;
            continue;
        }
        if (!strcmp(a, "--overlap")) {
            opt.overlap = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "soak: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "--server"))
            opt.server = v;
        else if (!strcmp(a, "--conns"))
            ok = parse_long(v, &opt.conns) && opt.conns >= 1 && opt.conns <= 1000000;
        else if (!strcmp(a, "--seconds"))
            ok = parse_double(v, &opt.seconds) && opt.seconds > 0;
        else if (!strcmp(a, "--backend")) {
            ok = !strcmp(v, "io_uring") || !strcmp(v, "epoll") || !strcmp(v, "auto");
            opt.backend = v;
        }
        else if (!strcmp(a, "--tls-fraction"))
            ok = parse_double(v, &opt.tls_fraction) && opt.tls_fraction >= 0 && opt.tls_fraction <= 1;
        else if (!strcmp(a, "--window"))
            ok = parse_long(v, &opt.window) && opt.window >= 1 && opt.window <= (1L << 30);
        else if (!strcmp(a, "--inflight"))
            ok = parse_long(v, &opt.inflight) && opt.inflight >= 1;
        else if (!strcmp(a, "--drain"))
            ok = parse_double(v, &opt.drain_s) && opt.drain_s > 0;
        else if (!strcmp(a, "--rss-tolerance-mib"))
            ok = parse_long(v, &opt.rss_tol_mib) && opt.rss_tol_mib >= 0;
        else {
            usage(stderr, argv[0]);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "soak: bad value for %s: %s\n", a, v);
            return 2;
        }
    }
    if (!opt.server) {
        usage(stderr, argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    signal(SIGHUP, on_interrupt);
    raise_nofile(opt.conns + 64);

    char cert[128], key[128];
    make_cert(cert, key, sizeof cert);
    start_server(cert, key);

    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!ssl_ctx || !SSL_CTX_load_verify_locations(ssl_ctx, cert, NULL))
        fatal("client TLS context: %s", ssl_errors());
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_TICKET);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fatal("epoll_create1: %s", strerror(errno));
    conns = calloc((size_t)opt.conns, sizeof *conns);
    ready = calloc((size_t)opt.conns, sizeof *ready);
    struct conn **batch = calloc((size_t)opt.conns, sizeof *batch);
    if (!conns || !ready || !batch)
        fatal("out of memory for %ld connections", opt.conns);
    long n_tls = 0;
    for (long i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        c->id = (uint32_t)i;
        c->fd = -1;
        /* TLS ones spread evenly among the plain ones. */
        c->tls = (long)((double)(i + 1) * opt.tls_fraction) > (long)((double)i * opt.tls_fraction);
        n_tls += c->tls;
        c->rng_w = c->rng_r = (uint64_t)i * UINT64_C(1000003) + 12345;
        c->echo_end = next_size(&c->rng_r);
    }

    /* Let the server settle, then take the baseline. */
    usleep(200 * 1000);
    long base_fds = server_fds();
    long base_rss = server_status_kib("VmRSS");
    if (base_fds < 0 || base_rss < 0)
        fatal("cannot read /proc/%ld (fd, status)", (long)server_pid);
    peak_fds = base_fds;
    printf("soak: %ld connections (%ld TLS, %ld plain) for %.0f s through soak_server (pid %ld, backend %s); "
           "window %ld B, messages 1 B..%ld B\n",
           opt.conns, n_tls, opt.conns - n_tls, opt.seconds, (long)server_pid, opt.backend, opt.window,
           opt.window < (1L << MAX_MSG_LOG2) ? opt.window : (1L << MAX_MSG_LOG2));
    printf("soak: server before: %ld fds, RSS %.1f MiB\n", base_fds, base_rss / 1024.0);
    fflush(stdout);

    double base_cpu = server_cpu_s(), base_self_cpu = self_cpu_s();
    t_start = now_s();
    deadline = t_start + opt.seconds;
    next_sample = t_start + SAMPLE_EVERY_S;
    next_progress = t_start + PROGRESS_EVERY_S;
    struct epoll_event evs[1024];
    while (n_finished < opt.conns) {
        while (!stopping && n_created < opt.conns && n_inflight < opt.inflight)
            conn_start(&conns[n_created++]);
        int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), n_ready ? 0 : 20);
        if (n < 0 && errno != EINTR)
            fatal("epoll_wait: %s", strerror(errno));
        /* Connections still opening first (a handshake step is short, and
         * waiting behind a round over thousands of busy connections would
         * add that round to every step), then the ready list of the last
         * round, then the other new events. */
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
                conn_drive(c);
                if (c->state == ST_DONE || c->state == ST_FAILED || c->state == ST_OPEN ||
                    c->state == ST_CLOSING)
                    evs[i].data.ptr = NULL; /* driven: its events are consumed */
            }
        }
        while (!stopping && n_created < opt.conns && n_inflight < opt.inflight)
            conn_start(&conns[n_created++]);
        long nb = n_ready;
        memcpy(batch, ready, (size_t)nb * sizeof *batch);
        n_ready = 0;
        for (long i = 0; i < nb; i++) {
            struct conn *c = batch[i];
            c->queued = false;
            if (c->state != ST_DONE && c->state != ST_FAILED)
                conn_drive(c);
            if ((i & 255) == 255)
                tick();
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c && c->state != ST_DONE && c->state != ST_FAILED)
                conn_drive(c);
            if ((i & 255) == 255)
                tick();
        }
        tick();
    }
    double t_closed = now_s();
    long peak_hwm = server_status_kib("VmHWM");
    double run_cpu = server_cpu_s() - base_cpu, run_self_cpu = self_cpu_s() - base_self_cpu;

    /* The server closes on its own time: wait for its descriptors. */
    long after_fds = server_fds();
    double fd_wait_until = now_s() + FD_RETURN_WAIT_S;
    while (after_fds != base_fds && now_s() < fd_wait_until) {
        usleep(50 * 1000);
        after_fds = server_fds();
    }
    double t_fds_back = now_s();
    long after_rss = server_status_kib("VmRSS");
    kill(server_pid, SIGUSR2);
    char line[512];
    long trimmed_rss = -1;
    if (server_line(line, sizeof line, 5) && !strcmp(line, "TRIMMED"))
        trimmed_rss = server_status_kib("VmRSS");
    else
        errorf("the server did not answer SIGUSR2 (got \"%s\")", line);

    /* The server's own account. */
    kill(server_pid, SIGTERM);
    unsigned long long s_acc_plain = 0, s_acc_tls = 0, s_echo_plain = 0, s_echo_tls = 0, s_eof = 0, s_err = 0;
    long s_live = -1;
    bool got_summary = server_line(line, sizeof line, 10) &&
                       sscanf(line,
                              "SUMMARY accepted_plain=%llu accepted_tls=%llu live=%ld echoed_plain=%llu "
                              "echoed_tls=%llu clean_eof=%llu errors=%llu",
                              &s_acc_plain, &s_acc_tls, &s_live, &s_echo_plain, &s_echo_tls, &s_eof, &s_err) == 7;
    if (!got_summary)
        errorf("no summary from the server (got \"%s\")", line);
    int st = 0;
    double wait_until = now_s() + 10;
    pid_t w;
    while ((w = waitpid(server_pid, &st, WNOHANG)) == 0 && now_s() < wait_until)
        usleep(20 * 1000);
    if (w == server_pid) {
        server_pid = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            errorf("the server exited with %s %d", WIFEXITED(st) ? "status" : "signal",
                   WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    } else {
        errorf("the server did not exit within 10 s of SIGTERM");
    }

    /* The verdict. */
    uint64_t done = 0;
    for (long i = 0; i < opt.conns; i++)
        done += conns[i].state == ST_DONE;
    int failed = 0;
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            failed = 1;                                                                                      \
            fprintf(stderr, "soak: FAIL: " __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)
    CHECK(n_errors == 0, "%" PRIu64 " errors", n_errors);
    CHECK(done == (uint64_t)opt.conns, "%" PRIu64 " of %ld connections finished cleanly", done, opt.conns);
    CHECK(t_all_open != 0, "the %ld connections were never all open at once (at most %ld)", opt.conns, n_open_max);
    for (int k = 0; k < 2; k++) {
        CHECK(tot[k].bytes_out == tot[k].bytes_in && tot[k].sum_out == tot[k].sum_in,
              "%s: %" PRIu64 " bytes sent, %" PRIu64 " echoed, checksums %016" PRIx64 " / %016" PRIx64,
              k ? "TLS" : "plain", tot[k].bytes_out, tot[k].bytes_in, tot[k].sum_out, tot[k].sum_in);
        CHECK(tot[k].msgs_out == tot[k].msgs_echoed, "%s: %" PRIu64 " messages sent, %" PRIu64 " echoed",
              k ? "TLS" : "plain", tot[k].msgs_out, tot[k].msgs_echoed);
    }
    if (got_summary) {
        CHECK(s_err == 0 && s_live == 0, "the server counts %llu errors, %ld connections still open", s_err,
              s_live);
        CHECK(s_acc_plain == tot[0].conns && s_acc_tls == tot[1].conns,
              "the server accepted %llu plain and %llu TLS connections, the load opened %" PRIu64 " and %" PRIu64,
              s_acc_plain, s_acc_tls, tot[0].conns, tot[1].conns);
        CHECK(s_echo_plain == tot[0].bytes_in && s_echo_tls == tot[1].bytes_in,
              "the server echoed %llu plain and %llu TLS bytes, the load read %" PRIu64 " and %" PRIu64,
              s_echo_plain, s_echo_tls, tot[0].bytes_in, tot[1].bytes_in);
        CHECK(s_eof == (uint64_t)opt.conns, "the server saw %llu clean ends of %ld", s_eof, opt.conns);
    }
    CHECK(peak_fds >= base_fds + opt.conns, "the server's peak was %ld fds, under baseline %ld + %ld connections",
          peak_fds, base_fds, opt.conns);
    CHECK(after_fds == base_fds, "the server has %ld fds after the run, %ld before", after_fds, base_fds);
    CHECK(trimmed_rss >= 0 && trimmed_rss - base_rss <= opt.rss_tol_mib * 1024,
          "the server's RSS after the run (trimmed) is %.1f MiB, baseline %.1f MiB, tolerance %ld MiB",
          trimmed_rss / 1024.0, base_rss / 1024.0, opt.rss_tol_mib);

    uint64_t bytes_out = tot[0].bytes_out + tot[1].bytes_out, bytes_in = tot[0].bytes_in + tot[1].bytes_in;
    double run_s = t_closed - t_start;
    printf("soak: %s connections %ld (TLS %" PRIu64 " %s, plain %" PRIu64 "), all open at %.1fs, closed at %.1fs\n",
           opt.backend, opt.conns, tot[1].conns, tls_desc[0] ? tls_desc : "-", tot[0].conns,
           t_all_open ? t_all_open - t_start : -1.0, run_s);
    printf("soak: moved %" PRIu64 " B out, %" PRIu64 " B back (plain %" PRIu64 ", TLS %" PRIu64 "), %.1f MiB/s each way; "
           "messages %" PRIu64 " sent, %" PRIu64 " echoed\n",
           bytes_out, bytes_in, tot[0].bytes_in, tot[1].bytes_in, (double)bytes_in / (1 << 20) / run_s,
           tot[0].msgs_out + tot[1].msgs_out, tot[0].msgs_echoed + tot[1].msgs_echoed);
    printf("soak: server fds before %ld, peak %ld, after %ld (back in %.2fs); RSS before %.1f MiB, peak (VmHWM) "
           "%.1f MiB, after %.1f MiB, after malloc_trim %.1f MiB\n",
           base_fds, peak_fds, after_fds, t_fds_back - t_closed, base_rss / 1024.0, peak_hwm / 1024.0,
           after_rss / 1024.0, trimmed_rss / 1024.0);
    uint64_t n_opened = tot[0].conns + tot[1].conns;
    printf("soak: opening: TCP connect %.1f ms on average (max %.0f ms), TLS handshake %.1f ms on average "
           "(max %.0f ms), %ld at once at most\n",
           n_opened ? 1000 * lat_tcp_sum / (double)n_opened : 0.0, 1000 * lat_tcp_max,
           tot[1].conns ? 1000 * lat_hs_sum / (double)tot[1].conns : 0.0, 1000 * lat_hs_max, opt.inflight);
    printf("soak: CPU over the run: server %.1f s (%.0f%% of one core), load %.1f s (%.0f%%); server memory "
           "at the peak %.0f KiB per connection\n",
           run_cpu, 100 * run_cpu / run_s, run_self_cpu, 100 * run_self_cpu / run_s,
           (double)(peak_hwm - base_rss) / (double)opt.conns);
    printf("soak: errors %" PRIu64 "; server: accepted %llu+%llu, echoed %llu+%llu B, clean ends %llu, errors %llu\n",
           n_errors, s_acc_plain, s_acc_tls, s_echo_plain, s_echo_tls, s_eof, s_err);
    printf("soak: %s\n", failed ? "FAILED" : "PASSED");
    printf("SOAKCSV,backend,conns,tls_conns,seconds,all_open_s,closed_s,bytes_out,bytes_in,msgs,errors,"
           "fds_before,fds_peak,fds_after,rss_before_kib,rss_peak_kib,rss_after_kib,rss_trimmed_kib,server_cpu_s,"
           "load_cpu_s,result\n");
    printf("SOAKCSV,%s,%ld,%" PRIu64 ",%.0f,%.2f,%.2f,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
           ",%ld,%ld,%ld,%ld,%ld,%ld,%ld,%.1f,%.1f,%s\n",
           opt.backend, opt.conns, tot[1].conns, opt.seconds, t_all_open ? t_all_open - t_start : -1.0, run_s,
           bytes_out, bytes_in, tot[0].msgs_echoed + tot[1].msgs_echoed, n_errors, base_fds, peak_fds, after_fds,
           base_rss, peak_hwm, after_rss, trimmed_rss, run_cpu, run_self_cpu, failed ? "FAILED" : "PASSED");
    fflush(stdout);
    cleanup();
    SSL_CTX_free(ssl_ctx);
    return failed;
}
