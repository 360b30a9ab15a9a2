/* rn_tls_server.c - the TLS server of the benchmarks: a task per connection
 * that completes the handshake and reads (and drops) whatever the client
 * sends until it ends, so the same client can measure full handshakes per
 * second (openssl s_time -new) and bulk throughput (openssl s_client) against
 * it and against openssl s_server.
 *
 * Usage: rn_tls_server --cert PEM --key PEM [--port N] [--backend B] [--lent] [--probe]
 * --lent reads with rn_conn_read_lent instead of into a 16 KiB buffer on
 * the task's stack.
 * Prints "listening <addr> backend <name>" once ready. --probe only checks
 * that a TLS listener can be made (exit 0) or says why not (exit 1): the
 * benchmark script skips TLS when it cannot. SIGTERM/SIGINT end it. */
#define _GNU_SOURCE
#include <ringnet.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static volatile sig_atomic_t want_stop;
static int port;
static const char *cert, *key;
static bool probe, lent;
static int status;

static void on_signal(int sig)
{
    (void)sig;
    want_stop = 1;
}

static void handle_client(void *arg)
{
    rn_conn *c = arg;
    char buf[16384]; /* one TLS record's worth */
    while (rn_conn_read(c, buf, sizeof buf) > 0)
        ;
    rn_conn_close(c);
}

static void handle_client_lent(void *arg)
{
    rn_conn *c = arg;
    const void *data;
    while (rn_conn_read_lent(c, &data) > 0)
        ;
    rn_conn_close(c);
}

static void watcher(void *arg)
{
    rn_server *s = arg;
    while (!want_stop)
        rn_sleep(20);
    rn_server_close(s);
}

static void main_task(void *arg)
{
    (void)arg;
    rn_tls_config *cfg = rn_tls_server_config(cert, key);
    if (!cfg) {
        fprintf(stderr, "rn_tls_server: server config: %s\n", rn_last_error());
        status = 1;
        return;
    }
    rn_server *s;
    int rc = rn_tls_listen(&s, "127.0.0.1", port, cfg);
    if (rc < 0) {
        fprintf(stderr, "rn_tls_server: tls_listen: %s (%s)\n", rn_strerror(rc), rn_last_error());
        rn_tls_config_free(cfg);
        status = 1;
        return;
    }
    if (probe) {
        rn_server_close(s);
        rn_tls_config_free(cfg);
        return;
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
    rn_tls_config_free(cfg);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--probe")) {
            probe = true;
            continue;
        }
        if (!strcmp(a, "--lent")) {
            lent = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "rn_tls_server: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--cert"))
            cert = v;
        else if (!strcmp(a, "--key"))
            key = v;
        else if (!strcmp(a, "--backend"))
            rn_set_backend(v);
        else {
            fprintf(stderr, "usage: %s --cert PEM --key PEM [--port N] [--backend B] [--lent] [--probe]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!cert || !key) {
        fprintf(stderr, "rn_tls_server: --cert and --key are needed\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = rn_run(main_task, NULL);
    if (rc < 0) {
        fprintf(stderr, "rn_tls_server: rn_run: %s (%s)\n", rn_strerror(rc), rn_last_error());
        return 1;
    }
    return status;
}
