/* rn_tls_server.c - the TLS server of the benchmarks: a task per connection
 * that completes the handshake and reads (and drops) whatever the client
 * sends until it ends, so the same client can measure full handshakes per
 * second (openssl s_time -new) and bulk throughput (openssl s_client) against
 * it and against openssl s_server.
 *
 * Usage: rn_tls_server --cert PEM --key PEM [--port N] [--backend B] [--lent] [--http] [--probe]
 * --lent reads with rn_conn_read_lent instead of into a 16 KiB buffer on
 * the task's stack. --http answers the first read with the bytes `openssl
 * s_server -WWW` sends for a file holding "hello\n", then closes: what
 * `openssl s_time -www /hello` needs, and TLS 1.3 clients read their
 * session ticket meanwhile (perf/tls_resume.sh).
 * Prints "listening <addr> backend <name>" once ready. --probe only checks
 * that a TLS listener can be made (exit 0) or says why not (exit 1): the
 * benchmark script skips TLS when it cannot. SIGTERM/SIGINT end it. */
#define _GNU_SOURCE
#include <ringnet.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bench_server.h"

static struct bench_opts opt = {0, 16384};
static const char *cert, *key;
static bool probe, lent, http;
static int status;

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

static void handle_client_http(void *arg)
{
    rn_conn *c = arg;
    static const char answer[] = "HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\nhello\n";
    char buf[4096];
    if (rn_conn_read(c, buf, sizeof buf) > 0)
        (void)rn_conn_write_all(c, answer, sizeof answer - 1);
    rn_conn_close(c);
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
    int rc = rn_tls_listen(&s, "127.0.0.1", opt.port, cfg);
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
    bench_serve(s, http ? handle_client_http : lent ? handle_client_lent : handle_client);
    rn_tls_config_free(cfg);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = bench_common_option(argc, argv, &i, &opt);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (!strcmp(a, "--probe")) {
            probe = true;
            continue;
        }
        if (!strcmp(a, "--lent")) {
            lent = true;
            continue;
        }
        if (!strcmp(a, "--http")) {
            http = true;
            continue;
        }
        if (i + 1 < argc && !strcmp(a, "--cert"))
            cert = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--key"))
            key = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s --cert PEM --key PEM [--port N] [--backend B] [--lent] [--http] "
                    "[--probe]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!cert || !key) {
        fprintf(stderr, "rn_tls_server: --cert and --key are needed\n");
        return 2;
    }
    bench_signals(0);
    int rc = bench_run("rn_tls_server", main_task);
    return rc ? rc : status;
}
