/* rn_echo_server.c - the echo server the benchmarks measure: written the way
 * a user would write it (a task per connection, read then write_all), plus
 * what a benchmark needs: a backend choice, and the loop's counters printed
 * on SIGUSR1 so a script can take them before and after a run.
 *
 * Usage: rn_echo_server [--port N] [--backend io_uring|epoll|auto]
 *                       [--stack BYTES] [--bufsize BYTES] [--lent]
 * --lent reads with rn_conn_read_lent (the library lends the buffer; an
 * idle task holds none) instead of into a buffer on the task's stack.
 * Prints "listening <addr> backend <name>" once ready; on SIGUSR1 prints
 *   STATS ops_submitted=.. enter_calls=.. completions=.. task_switches=.. tasks_spawned=..
 * on stderr. SIGTERM/SIGINT end it. */
#define _GNU_SOURCE
#include <ringnet.h>

#include <stdio.h>
#include <string.h>

#include "bench_server.h"

static struct bench_opts opt = {9000, 4096};
static int lent;

static void handle_client_lent(void *arg)
{
    rn_conn *c = arg;
    for (;;) {
        const void *data;
        ssize_t n = rn_conn_read_lent(c, &data);
        if (n <= 0 || rn_conn_write_all(c, data, (size_t)n) < 0)
            break;
    }
    rn_conn_close(c);
}

static void handle_client(void *arg)
{
    rn_conn *c = arg;
    char *buf = __builtin_alloca(opt.bufsize); /* on the task's stack, as a user would */
    for (;;) {
        ssize_t n = rn_conn_read(c, buf, opt.bufsize);
        if (n <= 0 || rn_conn_write_all(c, buf, (size_t)n) < 0)
            break;
    }
    rn_conn_close(c);
}

static void main_task(void *arg)
{
    (void)arg;
    rn_server *s;
    int rc = rn_tcp_listen(&s, "127.0.0.1", opt.port);
    if (rc < 0) {
        fprintf(stderr, "listen: %s (%s)\n", rn_strerror(rc), rn_last_error());
        exit(1);
    }
    bench_serve(s, lent ? handle_client_lent : handle_client);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        int r = bench_common_option(argc, argv, &i, &opt);
        if (r < 0)
            return 2;
        if (r == 0 && !strcmp(argv[i], "--lent"))
            lent = 1;
        else if (r == 0) {
            fprintf(stderr,
                    "usage: %s [--port N] [--backend io_uring|epoll|auto] [--stack BYTES] "
                    "[--bufsize BYTES] [--lent]\n",
                    argv[0]);
            return 2;
        }
    }
    if (opt.bufsize < 1 || opt.bufsize > (1 << 20)) {
        fprintf(stderr, "--bufsize must be 1..1048576\n");
        return 2;
    }
    bench_raise_nofile("rn_echo_server");
    bench_signals(0);
    return bench_run("rn_echo_server", main_task);
}
