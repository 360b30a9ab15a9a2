/* uv_echo_server.c - the libuv peer of the benchmarks: an echo server (and an
 * HTTP/1.1 keep-alive hello world) written the way libuv's own docs suggest,
 * on libuv 1.44 from Debian (epoll underneath), one thread.
 *
 * Reads land in a per-connection buffer; the reply goes out with
 * uv_try_write, and only what the socket did not take is copied into a
 * uv_write request, with reading paused until it is written, so memory stays
 * bounded and order is kept.
 *
 * Built by perf/CMakeLists.txt when libuv is found (target uv_echo_server).
 *
 * Usage: uv_echo_server [--port N] [--mode echo|http] [--bufsize BYTES]
 * Prints "listening 127.0.0.1:N backend libuv" once ready. SIGTERM/SIGINT
 * end it. */
#define _GNU_SOURCE
#include <uv.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../http_count.h"

#define RESP_REPEAT 64

struct conn {
    uv_tcp_t tcp;
    uv_write_t wr;
    char *pending;        /* bytes uv_try_write left over, owned until the write ends */
    struct http_count hc; /* http: where the request heads end */
    char buf[];           /* bufsize bytes */
};

static uv_loop_t *loop;
static uv_tcp_t server;
static size_t bufsize = 4096;
static int http_mode;
static char resp_block[160 * RESP_REPEAT];
static size_t resp_len;
static time_t resp_date;

static void build_response(time_t now)
{
    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    char one[256];
    /* nginx 1.22.1's answer to `return 200 "hello world\n"`, Server value of
     * the same length. */
    int n = snprintf(
        one, sizeof one,
        "HTTP/1.1 200 OK\r\nServer: libuv-1.44.2\r\nDate: %s\r\nContent-Type: text/plain\r\n"
        "Content-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n",
        date);
    resp_len = (size_t)n;
    for (int i = 0; i < RESP_REPEAT; i++)
        memcpy(resp_block + (size_t)i * resp_len, one, resp_len);
    resp_date = now;
}

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    free(c->pending);
    free(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    (void)suggested;
    struct conn *c = h->data;
    *out = uv_buf_init(c->buf, (unsigned)bufsize);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void on_write(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    free(c->pending);
    c->pending = NULL;
    if (status < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* What the socket did not take: copied out, written by uv_write, and reading
 * paused until it is gone. */
static int write_later(struct conn *c, const char *src, size_t rest, size_t src_off,
                       size_t src_period)
{
    c->pending = malloc(rest);
    if (!c->pending)
        return UV_ENOMEM;
    if (src_period == 0) {
        memcpy(c->pending, src, rest);
    } else { /* src repeats every src_period bytes: the rest of k responses */
        for (size_t i = 0; i < rest;) {
            size_t off = (src_off + i) % src_period, n = src_period - off;
            if (n > rest - i)
                n = rest - i;
            memcpy(c->pending + i, src + off, n);
            i += n;
        }
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_buf_t b = uv_buf_init(c->pending, (unsigned)rest);
    return uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write);
}

/* As much of p[0..len) as the socket takes now; returns the count or <0. */
static int try_write(struct conn *c, const char *p, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    return w == UV_EAGAIN ? 0 : w;
}

static int echo_bytes(struct conn *c, const char *p, size_t len)
{
    int w = try_write(c, p, len);
    if (w < 0 || (size_t)w == len)
        return w < 0 ? w : 0;
    return write_later(c, p + w, len - (size_t)w, 0, 0);
}

/* k responses, from the prebuilt block of RESP_REPEAT of them. */
static int answer(struct conn *c, unsigned k)
{
    time_t now = time(NULL);
    if (now != resp_date)
        build_response(now);
    size_t total = (size_t)k * resp_len, done = 0;
    while (done < total) {
        size_t block = resp_len * RESP_REPEAT, chunk = total - done < block ? total - done : block;
        int w = try_write(c, resp_block, chunk);
        if (w < 0)
            return w;
        done += (size_t)w;
        if ((size_t)w < chunk)
            break;
    }
    return done == total ? 0 : write_later(c, resp_block, total - done, done, resp_len);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n == 0)
        return; /* EAGAIN */
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    int rc;
    if (!http_mode) {
        rc = echo_bytes(c, b->base, (size_t)n);
    } else {
        unsigned k = http_count_requests(&c->hc, b->base, (size_t)n);
        rc = k ? answer(c, k) : 0;
    }
    if (rc < 0)
        uv_close((uv_handle_t *)s, on_close);
}

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0)
        return;
    struct conn *c = malloc(sizeof *c + bufsize);
    if (!c)
        return;
    memset(c, 0, sizeof *c);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->wr.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *h, int sig)
{
    (void)sig;
    uv_stop(h->loop);
}

int main(int argc, char **argv)
{
    int port = 9000;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--port") && v)
            port = atoi(v);
        else if (!strcmp(a, "--mode") && v && (!strcmp(v, "echo") || !strcmp(v, "http")))
            http_mode = !strcmp(v, "http");
        else if (!strcmp(a, "--bufsize") && v && atol(v) >= 64 && atol(v) <= (1 << 20))
            bufsize = (size_t)atol(v);
        else {
            fprintf(stderr, "usage: %s [--port N] [--mode echo|http] [--bufsize BYTES]\n", argv[0]);
            return 2;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    build_response(time(NULL));
    loop = uv_default_loop();
    uv_tcp_init(loop, &server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
    if (rc < 0) {
        fprintf(stderr, "uv_echo_server: listen on port %d: %s\n", port, uv_strerror(rc));
        return 1;
    }
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&server, (struct sockaddr *)&got, &len);
    printf("listening 127.0.0.1:%d backend libuv mode %s\n", ntohs(got.sin_port),
           http_mode ? "http" : "echo");
    fflush(stdout);
    uv_signal_t sterm, sint;
    uv_signal_init(loop, &sterm);
    uv_signal_init(loop, &sint);
    uv_signal_start(&sterm, on_signal, SIGTERM);
    uv_signal_start(&sint, on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
