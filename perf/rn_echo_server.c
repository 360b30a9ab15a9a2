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

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static volatile sig_atomic_t want_stats, want_stop;
static size_t bufsize = 4096;
static int lent;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        want_stats = 1;
    else
        want_stop = 1;
}

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
    char *buf = __builtin_alloca(bufsize); /* on the task's stack, as a user would */
    for (;;) {
        ssize_t n = rn_conn_read(c, buf, bufsize);
        if (n <= 0 || rn_conn_write_all(c, buf, (size_t)n) < 0)
            break;
    }
    rn_conn_close(c);
}

/* Signals land while the loop waits in the kernel; this task notices them
 * within 20 ms without adding anything to the measured path. */
static void watcher(void *arg)
{
    rn_server *s = arg;
    while (!want_stop) {
        rn_sleep(20);
        if (want_stats) {
            want_stats = 0;
            rn_stats st;
            rn_loop_stats(&st);
            fprintf(stderr,
                    "STATS ops_submitted=%" PRIu64 " enter_calls=%" PRIu64 " completions=%" PRIu64
                    " task_switches=%" PRIu64 " tasks_spawned=%" PRIu64 "\n",
                    st.ops_submitted, st.enter_calls, st.completions, st.task_switches, st.tasks_spawned);
            fflush(stderr);
        }
    }
    rn_server_close(s);
}

static int port = 9000;

static void main_task(void *arg)
{
    (void)arg;
    rn_server *s;
    int rc = rn_tcp_listen(&s, "127.0.0.1", port);
    if (rc < 0) {
        fprintf(stderr, "listen: %s (%s)\n", rn_strerror(rc), rn_last_error());
        exit(1);
    }
    printf("listening %s backend %s\n", rn_server_addr(s), rn_backend_name());
    fflush(stdout);
    rn_spawn(watcher, s);
    for (;;) {
        rn_conn *c;
        rc = rn_server_accept(s, &c);
        if (rc == RN_ECLOSED)
            break;
        if (rc < 0)
            continue;
        if (rn_spawn(lent ? handle_client_lent : handle_client, c) < 0)
            rn_conn_close(c);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            if (rn_set_backend(argv[++i]) < 0) {
                fprintf(stderr, "%s\n", rn_last_error());
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--stack") && i + 1 < argc)
            rn_set_task_stack_size((size_t)atol(argv[++i]));
        else if (!strcmp(argv[i], "--bufsize") && i + 1 < argc)
            bufsize = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--lent"))
            lent = 1;
        else {
            fprintf(stderr, "usage: %s [--port N] [--backend io_uring|epoll|auto] [--stack BYTES] [--bufsize BYTES] [--lent]\n",
                    argv[0]);
            return 2;
        }
    }
    if (bufsize < 1 || bufsize > (1 << 20)) {
        fprintf(stderr, "--bufsize must be 1..1048576\n");
        return 2;
    }
    /* Thousands of connections: the soft descriptor limit up to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = rn_run(main_task, NULL);
    if (rc < 0) {
        fprintf(stderr, "rn_run: %s (%s)\n", rn_strerror(rc), rn_last_error());
        return 1;
    }
    return 0;
}
