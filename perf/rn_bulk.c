/* rn_bulk.c - one-connection bulk transfer through ringnet, the counterpart
 * of `iperf3 -n BYTES` on loopback: a sink that reads until end of stream
 * and a source that writes BYTES with rn_conn_write_all in CHUNK-sized
 * writes (iperf3's default, 128 KiB), then half-closes.
 *
 * Usage: rn_bulk recv [--port N] [--backend B] [--chunk BYTES]
 *          prints "listening <addr> backend <name>", takes one connection,
 *          then prints "RESULT bytes=.. seconds=.. gbit_per_s=.." (first
 *          byte to end of stream; cpu_s: this process's user+system time;
 *          ops, enters: the loop's counters) and exits.
 *        rn_bulk send --port N [--bytes B] [--backend B] [--chunk BYTES]
 *          prints "RESULT bytes=.. seconds=.." (connect to last write). */
#define _GNU_SOURCE
#include <ringnet.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static int port;
static size_t chunk = 128 * 1024;
static uint64_t total = UINT64_C(1) << 30;
static int status = 1;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* This process's user+system CPU seconds so far. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The loop's counters, for the RESULT line: how many operations and kernel
 * entries the transfer took. */
static void print_result(uint64_t bytes, double secs)
{
    rn_stats st;
    rn_loop_stats(&st);
    printf("RESULT bytes=%" PRIu64 " seconds=%.4f gbit_per_s=%.3f cpu_s=%.3f ops=%" PRIu64
           " enters=%" PRIu64 "\n",
           bytes, secs, secs > 0 ? (double)bytes * 8 / secs / 1e9 : 0, cpu_s(), st.ops_submitted,
           st.enter_calls);
}

static void sink(void *arg)
{
    (void)arg;
    rn_server *s;
    int rc = rn_tcp_listen(&s, "127.0.0.1", port);
    if (rc < 0) {
        fprintf(stderr, "rn_bulk: listen: %s\n", rn_last_error());
        return;
    }
    printf("listening %s backend %s\n", rn_server_addr(s), rn_backend_name());
    fflush(stdout);
    rn_conn *c;
    rc = rn_server_accept(s, &c);
    rn_server_close(s);
    if (rc < 0) {
        fprintf(stderr, "rn_bulk: accept: %s\n", rn_last_error());
        return;
    }
    char *buf = malloc(chunk);
    if (!buf)
        return;
    uint64_t got = 0;
    double t0 = 0;
    for (;;) {
        ssize_t n = rn_conn_read(c, buf, chunk);
        if (n < 0) {
            fprintf(stderr, "rn_bulk: read: %s\n", rn_last_error());
            break;
        }
        if (n == 0) {
            status = 0;
            break;
        }
        if (got == 0)
            t0 = now_s();
        got += (uint64_t)n;
    }
    double secs = now_s() - t0;
    rn_conn_close(c);
    free(buf);
    print_result(got, secs);
}

static void source(void *arg)
{
    (void)arg;
    rn_conn *c;
    double t0 = now_s();
    int rc = rn_tcp_connect(&c, "127.0.0.1", port);
    if (rc < 0) {
        fprintf(stderr, "rn_bulk: connect: %s\n", rn_last_error());
        return;
    }
    char *buf = malloc(chunk);
    if (!buf)
        return;
    memset(buf, 'x', chunk);
    uint64_t sent = 0;
    while (sent < total) {
        size_t n = total - sent < chunk ? (size_t)(total - sent) : chunk;
        if ((rc = rn_conn_write_all(c, buf, n)) < 0) {
            fprintf(stderr, "rn_bulk: write: %s\n", rn_last_error());
            break;
        }
        sent += n;
    }
    rn_conn_shutdown_write(c);
    /* Wait for the sink's close so the time covers delivery. */
    char b;
    (void)rn_conn_read(c, &b, 1);
    double secs = now_s() - t0;
    rn_conn_close(c);
    free(buf);
    if (sent == total)
        status = 0;
    print_result(sent, secs);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "recv") && strcmp(argv[1], "send"))) {
        fprintf(stderr,
                "usage: %s recv|send [--port N] [--bytes B] [--chunk BYTES] [--backend B]\n",
                argv[0]);
        return 2;
    }
    bool recv_side = !strcmp(argv[1], "recv");
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--bytes"))
            total = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--chunk"))
            chunk = (size_t)atol(v);
        else if (!strcmp(a, "--backend"))
            rn_set_backend(v);
        else {
            fprintf(stderr, "rn_bulk: unknown option %s\n", a);
            return 2;
        }
    }
    if (chunk < 1 || chunk > (64u << 20) || (!recv_side && port <= 0)) {
        fprintf(stderr, "rn_bulk: --chunk must be 1..64 MiB; send needs --port\n");
        return 2;
    }
    int rc = rn_run(recv_side ? sink : source, NULL);
    if (rc < 0) {
        fprintf(stderr, "rn_bulk: %s (%s)\n", rn_strerror(rc), rn_last_error());
        return 1;
    }
    return status;
}
