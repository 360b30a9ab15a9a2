/* bench_server.h - what the ringnet benchmark servers share (rn_http_server,
 * rn_echo_server, rn_tls_server; soak_server takes the signal and descriptor
 * parts): the common options, the "listening" line, the STATS line on
 * SIGUSR1, the watcher task and the accept loop. Header-only: each server is
 * one .c file including it. The lines printed here are parsed by perf/run
 * (perf/bench/) and perf/soak: keep them as they are.
 *
 *   listening <addr> backend <name>                         (stdout)
 *   STATS ops_submitted=.. enter_calls=.. completions=.. task_switches=.. tasks_spawned=..
 *                                                           (stderr, on SIGUSR1) */
#ifndef RINGNET_PERF_BENCH_SERVER_H
#define RINGNET_PERF_BENCH_SERVER_H

#include <ringnet.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static volatile sig_atomic_t bench_want_stats, bench_want_stop, bench_want_trim;

static inline void bench_on_signal(int sig)
{
    if (sig == SIGUSR1)
        bench_want_stats = 1;
    else if (sig == SIGUSR2)
        bench_want_trim = 1;
    else
        bench_want_stop = 1;
}

/* SIGTERM and SIGINT ask the server to stop, SIGUSR1 for a STATS line,
 * SIGUSR2 (when trim is set) for what the server makes of it. */
static inline void bench_signals(int trim)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = bench_on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (trim)
        sigaction(SIGUSR2, &sa, NULL);
}

/* Thousands of connections: the soft descriptor limit up to the hard one. */
static inline void bench_raise_nofile(const char *prog)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fprintf(stderr, "%s: setrlimit(RLIMIT_NOFILE): %s\n", prog, strerror(errno));
    }
}

struct bench_opts {
    int port;
    size_t bufsize;
};

/* One of the options every benchmark server takes, at argv[*i]: --port N,
 * --backend io_uring|epoll|auto, --stack BYTES, --bufsize BYTES. Returns 1
 * when it was one (*i moved past its value), 0 when it was not, -1 for a bad
 * value (said on stderr). */
static inline int bench_common_option(int argc, char **argv, int *i, struct bench_opts *o)
{
    const char *a = argv[*i];
    if (strcmp(a, "--port") && strcmp(a, "--backend") && strcmp(a, "--stack") &&
        strcmp(a, "--bufsize"))
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: %s needs a value\n", argv[0], a);
        return -1;
    }
    const char *v = argv[++*i];
    if (!strcmp(a, "--port"))
        o->port = atoi(v);
    else if (!strcmp(a, "--bufsize"))
        o->bufsize = (size_t)atol(v);
    else if (!strcmp(a, "--backend") && rn_set_backend(v) < 0) {
        fprintf(stderr, "%s: unknown backend %s (%s)\n", argv[0], v, rn_last_error());
        return -1;
    } else if (!strcmp(a, "--stack") && rn_set_task_stack_size((size_t)atol(v)) < 0) {
        fprintf(stderr, "%s: --stack %s: %s\n", argv[0], v, rn_last_error());
        return -1;
    }
    return 1;
}

static inline void bench_print_listening(rn_server *s)
{
    printf("listening %s backend %s\n", rn_server_addr(s), rn_backend_name());
    fflush(stdout);
}

static inline void bench_print_stats(void)
{
    rn_stats st;
    rn_loop_stats(&st);
    fprintf(stderr,
            "STATS ops_submitted=%" PRIu64 " enter_calls=%" PRIu64 " completions=%" PRIu64
            " task_switches=%" PRIu64 " tasks_spawned=%" PRIu64 "\n",
            st.ops_submitted, st.enter_calls, st.completions, st.task_switches, st.tasks_spawned);
    fflush(stderr);
}

/* A task: signals land while the loop waits in the kernel; this notices them
 * within 20 ms without adding anything to the measured path. Prints STATS
 * when asked; on stop closes the server (arg), which ends the accept loop. */
static inline void bench_watcher(void *arg)
{
    rn_server *s = arg;
    while (!bench_want_stop) {
        rn_sleep(20);
        /* Under rn_run_threads every thread has a watcher; thread 0's answers. */
        if (bench_want_stats && rn_thread_index() <= 0) {
            bench_want_stats = 0;
            bench_print_stats();
        }
    }
    rn_server_close(s);
}

/* Print the listening line, start the watcher, and run a task per accepted
 * connection (handler gets the rn_conn and closes it) until the server is
 * closed. */
static inline void bench_serve(rn_server *s, void (*handler)(void *))
{
    bench_print_listening(s);
    rn_spawn(bench_watcher, s);
    for (;;) {
        rn_conn *c;
        int rc = rn_server_accept(s, &c);
        if (rc == RN_ECLOSED)
            break;
        if (rc < 0)
            continue;
        if (rn_spawn(handler, c) < 0)
            rn_conn_close(c);
    }
}

/* rn_run(main_task) and its failure said as the servers say it. */
static inline int bench_run(const char *prog, void (*main_task)(void *))
{
    int rc = rn_run(main_task, NULL);
    if (rc < 0) {
        fprintf(stderr, "%s: rn_run: %s (%s)\n", prog, rn_strerror(rc), rn_last_error());
        return 1;
    }
    return 0;
}

#endif
