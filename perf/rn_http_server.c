/* rn_http_server.c - the HTTP/1.1 keep-alive hello world the benchmarks
 * measure against nginx, written the way a ringnet user would write it: a
 * task per connection that reads, counts the requests that arrived (pipelined
 * ones included) and writes their answers with rn_conn_write_all. The answer
 * is the 160 bytes nginx 1.22.1 sends for `return 200 "hello world\n"`, with
 * a Server value of the same length and the Date refreshed once a second.
 *
 * Usage: rn_http_server [--port N] [--backend io_uring|epoll|auto]
 *                       [--stack BYTES] [--bufsize BYTES] [--threads N [--handoff]]
 * --threads N (1..1024): rn_run_threads(N), each thread with its own
 * listener on the port (rn_tcp_listen_reuseport) and its own answers, so the
 * threads share nothing; without it, one loop (rn_run, the classic server).
 * --handoff (with --threads N): acceptor + workers instead of reuseport.
 * Thread 0 holds the only listener (plain rn_tcp_listen) and runs the accept
 * loop; each accepted connection is detached (rn_conn_detach) and sent,
 * round robin, through the rn_chan of one thread. Every thread, thread 0
 * included, runs a worker task that receives connections from its channel,
 * attaches them (rn_conn_attach) and spawns the same per-connection task as
 * above. Thread 0 serves too so that both variants serve on the same n
 * threads (n CPUs): at n = 1 handoff is reuseport plus a detach, a channel
 * hop and an attach per connection, and at every n the acceptor's cost is
 * charged to the threads that serve. Round robin over a channel per thread,
 * not one channel all workers receive from: with one shared channel the
 * acceptor's own thread took most of wrk's burst of connects (its worker is
 * handed a connection without a wake-up; 29 of 38 at n = 2 in a try), so
 * reuseport's even spread would have been compared with a lopsided one. On
 * SIGTERM the watcher closes the server, the accept loop ends and closes
 * the channels, and each worker ends once its channel is empty; each thread
 * then prints
 *   HANDOFF thread=<i> conns=<k>
 * on stderr (how many connections it served). Detach, attach and channel
 * errors print and exit(1).
 * Prints "listening <addr> backend <name>" once ready (once per thread with
 * --threads, once with --handoff; STATS are then thread 0's loop's); on
 * SIGUSR1 prints
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

static int nthreads;         /* --threads; 0: one loop under rn_run */
static int handoff;          /* --handoff: thread 0 accepts, every thread serves */
static rn_chan **conns_chan; /* --handoff: per thread, accepted detached connections */

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

/* --handoff, a task on every thread: take detached connections off the
 * channel until it is closed and empty, attach each here and serve it. */
static void handoff_worker(void *arg)
{
    (void)arg;
    unsigned long served = 0;
    for (;;) {
        void *item;
        int rc = rn_chan_recv(conns_chan[rn_thread_index()], &item, -1);
        if (rc == RN_ECLOSED)
            break;
        if (rc < 0) {
            fprintf(stderr, "handoff: rn_chan_recv: %s (%s)\n", rn_strerror(rc), rn_last_error());
            exit(1);
        }
        rn_conn *c = item;
        rc = rn_conn_attach(c);
        if (rc < 0) {
            fprintf(stderr, "handoff: rn_conn_attach on thread %d: %s (%s)\n", rn_thread_index(),
                    rn_strerror(rc), rn_last_error());
            exit(1);
        }
        served++;
        if (rn_spawn(handle_client, c) < 0)
            rn_conn_close(c);
    }
    fprintf(stderr, "HANDOFF thread=%d conns=%lu\n", rn_thread_index(), served);
}

/* --handoff, thread 0: the only listener; accept, detach, send to the
 * workers; once the watcher has closed the server, close the channel. */
static void handoff_acceptor(void)
{
    rn_server *s;
    int rc = rn_tcp_listen(&s, "127.0.0.1", opt.port);
    if (rc < 0) {
        fprintf(stderr, "listen: %s (%s)\n", rn_strerror(rc), rn_last_error());
        exit(1);
    }
    bench_print_listening(s);
    rn_spawn(bench_watcher, s);
    int next = 0;
    for (;;) {
        rn_conn *c;
        rc = rn_server_accept(s, &c);
        if (rc == RN_ECLOSED)
            break;
        if (rc < 0)
            continue; /* as bench_serve: a client gone before its accept */
        rc = rn_conn_detach(c);
        if (rc < 0) {
            fprintf(stderr, "handoff: rn_conn_detach: %s (%s)\n", rn_strerror(rc), rn_last_error());
            exit(1);
        }
        rc = rn_chan_send(conns_chan[next], c, -1);
        next = next + 1 < nthreads ? next + 1 : 0;
        if (rc < 0) {
            fprintf(stderr, "handoff: rn_chan_send: %s (%s)\n", rn_strerror(rc), rn_last_error());
            exit(1);
        }
    }
    for (int i = 0; i < nthreads; i++)
        rn_chan_close(conns_chan[i]);
}

static void main_task(void *arg)
{
    (void)arg;
    rn_server *s;
    build_answers(time(NULL));
    if (handoff) {
        if (rn_spawn(handoff_worker, NULL) < 0) {
            fprintf(stderr, "handoff: rn_spawn: %s\n", rn_last_error());
            exit(1);
        }
        if (rn_thread_index() == 0)
            handoff_acceptor();
        return;
    }
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
        if (r == 0 && !strcmp(argv[i], "--handoff")) {
            handoff = 1;
            continue;
        }
        if (r == 0) {
            fprintf(stderr,
                    "usage: %s [--port N] [--backend io_uring|epoll|auto] [--stack BYTES] "
                    "[--bufsize BYTES] [--threads N [--handoff]]\n",
                    argv[0]);
            return 2;
        }
    }
    if (opt.bufsize < 64 || opt.bufsize > (1 << 20)) {
        fprintf(stderr, "--bufsize must be 64..1048576\n");
        return 2;
    }
    if (handoff && nthreads < 1) {
        fprintf(stderr, "--handoff needs --threads N\n");
        return 2;
    }
    bench_raise_nofile("rn_http_server");
    bench_signals(0);
    if (handoff) {
        conns_chan = calloc((size_t)nthreads, sizeof *conns_chan);
        if (!conns_chan) {
            fprintf(stderr, "rn_http_server: out of memory\n");
            return 1;
        }
        for (int i = 0; i < nthreads; i++) {
            conns_chan[i] = rn_chan_new(1024);
            if (!conns_chan[i]) {
                fprintf(stderr, "rn_http_server: rn_chan_new: %s\n", rn_last_error());
                return 1;
            }
        }
    }
    if (nthreads > 0) {
        int rc = rn_run_threads(nthreads, main_task, NULL);
        for (int i = 0; handoff && i < nthreads; i++)
            rn_chan_free(conns_chan[i]);
        free(conns_chan);
        if (rc < 0) {
            fprintf(stderr, "rn_http_server: rn_run_threads: %s (%s)\n", rn_strerror(rc),
                    rn_last_error());
            return 1;
        }
        return 0;
    }
    return bench_run("rn_http_server", main_task);
}
