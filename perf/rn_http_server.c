/* rn_http_server.c - the HTTP/1.1 keep-alive hello world the benchmarks
 * measure against nginx, written the way a ringnet user would write it: a
 * task per connection that reads, counts the requests that arrived (pipelined
 * ones included) and writes their answers with rn_conn_write_all. The answer
 * is the 160 bytes nginx 1.22.1 sends for `return 200 "hello world\n"`, with
 * a Server value of the same length and the Date refreshed once a second.
 *
 * Usage: rn_http_server [--port N] [--backend io_uring|epoll|auto]
 *                       [--stack BYTES] [--bufsize BYTES] [--threads N]
 * --threads N (1..1024): rn_run_threads(N), each thread with its own
 * listener on the port (rn_tcp_listen_reuseport) and its own answers, so the
 * threads share nothing; without it, one loop (rn_run, the classic server).
 * Prints "listening <addr> backend <name>" once ready (once per thread with
 * --threads; STATS are then thread 0's loop's); on SIGUSR1 prints
 *   STATS ops_submitted=.. enter_calls=.. completions=.. task_switches=.. tasks_spawned=..
 * on stderr. SIGTERM/SIGINT end it. */
#define _GNU_SOURCE
#include <ringnet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_server.h"
#include "http_count.h"

#define RESP_REPEAT 64 /* answers one write can carry */

static struct bench_opts opt = {9000, 4096};

static int nthreads; /* --threads; 0: one loop under rn_run */

/* Per thread (--threads): each refreshes its own Date, nothing is shared. */
static _Thread_local char answers[160 * RESP_REPEAT]; /* the answer, RESP_REPEAT times */
static _Thread_local size_t answer_len;
static _Thread_local time_t answer_date;

static void build_answers(time_t now)
{
    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    char one[256];
    int n = snprintf(
        one, sizeof one,
        "HTTP/1.1 200 OK\r\nServer: ringnet-perf\r\nDate: %s\r\nContent-Type: text/plain\r\n"
        "Content-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n",
        date);
    answer_len = (size_t)n;
    for (int i = 0; i < RESP_REPEAT; i++)
        memcpy(answers + (size_t)i * answer_len, one, answer_len);
    answer_date = now;
}

static void handle_client(void *arg)
{
    rn_conn *c = arg;
    char *buf = __builtin_alloca(opt.bufsize); /* on the task's stack, as a user would */
    struct http_count st = {{0}, 0};
    for (;;) {
        ssize_t n = rn_conn_read(c, buf, opt.bufsize);
        if (n <= 0)
            break;
        unsigned k = http_count_requests(&st, buf, (size_t)n);
        if (k == 0)
            continue;
        time_t now = time(NULL);
        if (now != answer_date)
            build_answers(now);
        int rc = 0;
        while (k > 0 && rc == 0) {
            unsigned m = k < RESP_REPEAT ? k : RESP_REPEAT;
            rc = rn_conn_write_all(c, answers, m * answer_len);
            k -= m;
        }
        if (rc < 0)
            break;
    }
    rn_conn_close(c);
}

static void main_task(void *arg)
{
    (void)arg;
    rn_server *s;
    build_answers(time(NULL));
    int rc = nthreads > 0 ? rn_tcp_listen_reuseport(&s, "127.0.0.1", opt.port)
                          : rn_tcp_listen(&s, "127.0.0.1", opt.port);
    if (rc < 0) {
        fprintf(stderr, "listen: %s (%s)\n", rn_strerror(rc), rn_last_error());
        exit(1);
    }
    bench_serve(s, handle_client);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        int r = bench_common_option(argc, argv, &i, &opt);
        if (r < 0)
            return 2;
        if (r == 0 && !strcmp(argv[i], "--threads") && i + 1 < argc) {
            nthreads = atoi(argv[++i]);
            if (nthreads < 1 || nthreads > 1024) {
                fprintf(stderr, "--threads must be 1..1024\n");
                return 2;
            }
            continue;
        }
        if (r == 0) {
            fprintf(stderr,
                    "usage: %s [--port N] [--backend io_uring|epoll|auto] [--stack BYTES] "
                    "[--bufsize BYTES] [--threads N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (opt.bufsize < 64 || opt.bufsize > (1 << 20)) {
        fprintf(stderr, "--bufsize must be 64..1048576\n");
        return 2;
    }
    bench_raise_nofile("rn_http_server");
    bench_signals(0);
    if (nthreads > 0) {
        int rc = rn_run_threads(nthreads, main_task, NULL);
        if (rc < 0) {
            fprintf(stderr, "rn_http_server: rn_run_threads: %s (%s)\n", rn_strerror(rc),
                    rn_last_error());
            return 1;
        }
        return 0;
    }
    return bench_run("rn_http_server", main_task);
}
