/* soak_server.c - the server side of the soak (perf/soak/soak.c starts it):
 * one ringnet loop thread serving a plain TCP echo listener and a TLS echo
 * listener, a task per connection (read, then write_all what was read), as
 * a user would write it. It keeps its own account of what it served so the
 * soak can compare it with what the load generator saw.
 *
 * Usage: soak_server --cert PEM --key PEM [--backend io_uring|epoll|auto]
 *                    [--bufsize BYTES] [--stack BYTES]
 * Both listeners are on 127.0.0.1 at ports the kernel picks. Once both are up
 * it prints one line on stdout:
 *   READY plain=127.0.0.1:P tls=127.0.0.1:Q backend=<name> pid=<pid>
 * On SIGUSR2 it calls malloc_trim(0) (so the soak can tell memory glibc keeps
 * free from memory still in use) and prints "TRIMMED". On SIGTERM or SIGINT
 * it closes the listeners and prints
 *   SUMMARY accepted_plain=.. accepted_tls=.. live=.. echoed_plain=..
 *           echoed_tls=.. clean_eof=.. errors=..
 * then exits: 0 when no connection is left open and no error happened, 1
 * otherwise. Exit 77 (and a line "UNAVAILABLE <reason>") when the requested
 * backend cannot run here, 2 for bad options or a setup failure.
 *
 * An "error" is any connection that ended other than by a clean end of
 * stream from the client (for TLS: its close_notify): a failed handshake, a
 * reset, a truncated TLS stream, a failed write. The first few are described
 * on stderr. */
#define _GNU_SOURCE
#include <ringnet.h>

#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_server.h"

#define MAX_REPORTED_ERRORS 10

static const char *cert, *key;
static size_t bufsize = 16384; /* one TLS record's worth of plaintext */
static int status;

static uint64_t accepted[2], echoed[2], clean_eof, errors;
static long live;
static rn_server *servers[2];

static void report_error(rn_conn *c, const char *what, int rc)
{
    errors++;
    if (errors <= MAX_REPORTED_ERRORS)
        fprintf(stderr, "soak_server: %s connection from %s: %s failed: %s (%s)\n",
                rn_conn_is_tls(c) ? "TLS" : "plain", rn_conn_remote_addr(c), what, rn_strerror(rc),
                rn_last_error());
}

static void handle_client(void *arg)
{
    rn_conn *c = arg;
    int kind = rn_conn_is_tls(c) ? 1 : 0;
    char *buf = __builtin_alloca(bufsize);
    for (;;) {
        ssize_t n = rn_conn_read(c, buf, bufsize);
        if (n == 0) {
            clean_eof++;
            break;
        }
        if (n < 0) {
            report_error(c, "read", (int)n);
            break;
        }
        int rc = rn_conn_write_all(c, buf, (size_t)n);
        if (rc < 0) {
            report_error(c, "write", rc);
            break;
        }
        echoed[kind] += (uint64_t)n;
    }
    live--;
    rn_conn_close(c);
}

static void acceptor(void *arg)
{
    rn_server *s = arg;
    for (;;) {
        rn_conn *c;
        int rc = rn_server_accept(s, &c);
        if (rc == RN_ECLOSED)
            break;
        if (rc < 0) {
            errors++;
            fprintf(stderr, "soak_server: accept on %s: %s (%s)\n", rn_server_addr(s), rn_strerror(rc),
                    rn_last_error());
            continue;
        }
        accepted[rn_conn_is_tls(c) ? 1 : 0]++;
        live++;
        if (rn_spawn(handle_client, c) < 0) {
            errors++;
            live--;
            fprintf(stderr, "soak_server: spawn: %s\n", rn_last_error());
            rn_conn_close(c);
        }
    }
}

/* Signals land while the loop waits in the kernel; this task looks at the
 * flags every 20 ms. */
static void watcher(void *arg)
{
    (void)arg;
    while (!bench_want_stop) {
        rn_sleep(20);
        if (bench_want_trim) {
            bench_want_trim = 0;
            malloc_trim(0);
            printf("TRIMMED\n");
            fflush(stdout);
        }
    }
    rn_server_close(servers[0]);
    rn_server_close(servers[1]);
    printf("SUMMARY accepted_plain=%" PRIu64 " accepted_tls=%" PRIu64 " live=%ld echoed_plain=%" PRIu64
           " echoed_tls=%" PRIu64 " clean_eof=%" PRIu64 " errors=%" PRIu64 "\n",
           accepted[0], accepted[1], live, echoed[0], echoed[1], clean_eof, errors);
    fflush(stdout);
    /* Connections still open would keep rn_run waiting for their tasks. */
    if (live != 0 || errors != 0)
        _exit(1);
}

static void main_task(void *arg)
{
    (void)arg;
    if (!rn_backend_name()) {
        printf("UNAVAILABLE %s\n", rn_backend_reason());
        fflush(stdout);
        status = 77;
        return;
    }
    rn_tls_config *cfg = rn_tls_server_config(cert, key);
    if (!cfg) {
        fprintf(stderr, "soak_server: server config: %s\n", rn_last_error());
        status = 2;
        return;
    }
    int rc = rn_tcp_listen(&servers[0], "127.0.0.1", 0);
    if (rc == 0)
        rc = rn_tls_listen(&servers[1], "127.0.0.1", 0, cfg);
    rn_tls_config_free(cfg); /* the TLS listener holds its own reference */
    if (rc < 0) {
        fprintf(stderr, "soak_server: listen: %s (%s)\n", rn_strerror(rc), rn_last_error());
        rn_server_close(servers[0]);
        status = 2;
        return;
    }
    printf("READY plain=%s tls=%s backend=%s pid=%ld\n", rn_server_addr(servers[0]),
           rn_server_addr(servers[1]), rn_backend_name(), (long)getpid());
    fflush(stdout);
    if (rn_spawn(acceptor, servers[0]) < 0 || rn_spawn(acceptor, servers[1]) < 0 ||
        rn_spawn(watcher, NULL) < 0) {
        fprintf(stderr, "soak_server: spawn: %s\n", rn_last_error());
        exit(2);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "soak_server: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--cert"))
            cert = v;
        else if (!strcmp(a, "--key"))
            key = v;
        else if (!strcmp(a, "--backend")) {
            if (rn_set_backend(v) < 0) {
                fprintf(stderr, "soak_server: %s\n", rn_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--bufsize"))
            bufsize = (size_t)atol(v);
        else if (!strcmp(a, "--stack")) {
            if (rn_set_task_stack_size((size_t)atol(v)) < 0) {
                fprintf(stderr, "soak_server: %s\n", rn_last_error());
                return 2;
            }
        } else {
            fprintf(stderr,
                    "usage: %s --cert PEM --key PEM [--backend io_uring|epoll|auto] [--bufsize B] [--stack B]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!cert || !key) {
        fprintf(stderr, "soak_server: --cert and --key are needed\n");
        return 2;
    }
    if (bufsize < 1 || bufsize > (1 << 20)) {
        fprintf(stderr, "soak_server: --bufsize must be 1..1048576\n");
        return 2;
    }
    bench_raise_nofile("soak_server");
    bench_signals(1);
    signal(SIGPIPE, SIG_IGN);
    int rc = rn_run(main_task, NULL);
    if (rc < 0) {
        if (rc == RN_EBACKEND) {
            printf("UNAVAILABLE %s\n", rn_backend_reason());
            return 77;
        }
        fprintf(stderr, "soak_server: rn_run: %s (%s)\n", rn_strerror(rc), rn_last_error());
        return 2;
    }
    return status;
}
