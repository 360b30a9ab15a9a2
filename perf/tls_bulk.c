/* tls_bulk.c - ringnet as the TLS client of perf/run --tls-compare: bulk data
 * over one connection (the "ringnet client, ringnet server" figure, against
 * perf/rn_tls_server, which reads and drops), or full handshakes from
 * several connections at once, enough to keep one server core busy.
 *
 * Usage: tls_bulk --port N --ca PEM [--host H] [--bytes B] [--chunk C]
 *                 [--backend B]
 *        tls_bulk --port N --ca PEM --handshakes SECONDS [--conns K] [--host H]
 *   Connects to H (default 127.0.0.1) on port N over TLS, verifying the
 *   server against the CA certificate(s) in PEM, writes B bytes (default
 *   1 GiB) in C-byte rn_conn_write_all calls (default 64 KiB), sends
 *   close_notify (rn_conn_shutdown_write) and reads until the server ends
 *   the connection, so the time covers the server's last read. Prints
 *   RESULT bytes=.. seconds=.. mb_per_s=.. cpu_s=.. handshake_ms=..
 *   seconds: handshake done to the server's end; cpu_s: this process's
 *   user+system time for the whole run.
 *   With --handshakes: K tasks (default 8) each connect, finish the
 *   handshake (verified, no resumption) and close, over and over, for
 *   SECONDS; prints RESULT handshakes=.. seconds=.. per_s=.. cpu_s=..
 * Exit 0 on success. */
#define _GNU_SOURCE
#include <ringnet.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *host = "127.0.0.1", *ca;
static int port;
static uint64_t total = UINT64_C(1) << 30;
static size_t chunk = 64 * 1024;
static int status = 1;
static double hs_seconds; /* > 0: the handshake mode */
static int hs_conns = 8;
static rn_tls_config *hs_cfg;
static double hs_end;
static long hs_done, hs_failed;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* One of the handshake mode's tasks. All run on the one loop thread, so
 * the counters need no atomics. */
static void handshaker(void *arg)
{
    (void)arg;
    while (now_s() < hs_end) {
        rn_conn *c;
        int rc = rn_tls_connect_with(&c, host, port, hs_cfg);
        if (rc < 0) {
            if (hs_failed++ == 0)
                fprintf(stderr, "tls_bulk: connect: %s (%s)\n", rn_strerror(rc), rn_last_error());
            continue;
        }
        hs_done++;
        rn_conn_close(c);
    }
}

/* The handshake mode's first task: the config, then K handshakers (itself
 * one of them). rn_run returns when the last one ends. */
static void handshakes(void *arg)
{
    (void)arg;
    hs_cfg = rn_tls_client_config();
    if (!hs_cfg || rn_tls_config_set_ca_file(hs_cfg, ca) < 0) {
        fprintf(stderr, "tls_bulk: client config: %s\n", rn_last_error());
        rn_tls_config_free(hs_cfg);
        hs_cfg = NULL;
        return;
    }
    hs_end = now_s() + hs_seconds;
    for (int i = 1; i < hs_conns; i++)
        if (rn_spawn(handshaker, NULL) < 0)
            fprintf(stderr, "tls_bulk: spawn: %s\n", rn_last_error());
    handshaker(NULL);
}

static void client(void *arg)
{
    (void)arg;
    rn_tls_config *cfg = rn_tls_client_config();
    if (!cfg || rn_tls_config_set_ca_file(cfg, ca) < 0) {
        fprintf(stderr, "tls_bulk: client config: %s\n", rn_last_error());
        rn_tls_config_free(cfg);
        return;
    }
    char *buf = malloc(chunk);
    if (!buf) {
        rn_tls_config_free(cfg);
        return;
    }
    memset(buf, 'x', chunk);
    double t_conn = now_s();
    rn_conn *c;
    int rc = rn_tls_connect_with(&c, host, port, cfg);
    rn_tls_config_free(cfg);
    if (rc < 0) {
        fprintf(stderr, "tls_bulk: connect: %s (%s)\n", rn_strerror(rc), rn_last_error());
        free(buf);
        return;
    }
    double t0 = now_s();
    uint64_t sent = 0;
    while (sent < total) {
        size_t n = total - sent < chunk ? (size_t)(total - sent) : chunk;
        if ((rc = rn_conn_write_all(c, buf, n)) < 0) {
            fprintf(stderr, "tls_bulk: write: %s (%s)\n", rn_strerror(rc), rn_last_error());
            break;
        }
        sent += n;
    }
    if (sent == total && (rc = rn_conn_shutdown_write(c)) < 0)
        fprintf(stderr, "tls_bulk: shutdown: %s (%s)\n", rn_strerror(rc), rn_last_error());
    /* The server reads to the end, then closes: its close (with
     * close_notify or not) is the end of the transfer. */
    ssize_t r;
    while ((r = rn_conn_read(c, buf, chunk)) > 0)
        ;
    double secs = now_s() - t0;
    rn_conn_close(c);
    free(buf);
    if (sent != total || rc < 0)
        return;
    if (r < 0 && r != RN_ETLS_TRUNCATED && r != -ECONNRESET) {
        fprintf(stderr, "tls_bulk: waiting for the server's end: %s (%s)\n", rn_strerror((int)r),
                rn_last_error());
        return;
    }
    printf("RESULT bytes=%" PRIu64 " seconds=%.4f mb_per_s=%.1f cpu_s=%.3f handshake_ms=%.2f\n",
           sent, secs, (double)sent / secs / 1e6, cpu_s(), (t0 - t_conn) * 1e3);
    status = 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "tls_bulk: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--ca"))
            ca = v;
        else if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--bytes"))
            total = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--chunk"))
            chunk = (size_t)strtoull(v, NULL, 0);
        else if (!strcmp(a, "--backend"))
            rn_set_backend(v);
        else if (!strcmp(a, "--handshakes"))
            hs_seconds = atof(v);
        else if (!strcmp(a, "--conns"))
            hs_conns = atoi(v);
        else {
            fprintf(stderr,
                    "usage: %s --port N --ca PEM [--host H] [--bytes B] [--chunk C] [--backend B]\n"
                    "       %s --port N --ca PEM --handshakes SECONDS [--conns K] [--host H]\n",
                    argv[0], argv[0]);
            return 2;
        }
    }
    if (!port || !ca || !chunk || hs_conns < 1) {
        fprintf(stderr, "tls_bulk: --port and --ca are needed (and --chunk, --conns > 0)\n");
        return 2;
    }
    if (hs_seconds > 0) {
        double t0 = now_s();
        int rc = rn_run(handshakes, NULL);
        double secs = now_s() - t0;
        if (rc < 0 || !hs_cfg) {
            fprintf(stderr, "tls_bulk: rn_run: %s (%s)\n", rn_strerror(rc), rn_last_error());
            return 1;
        }
        rn_tls_config_free(hs_cfg);
        printf("RESULT handshakes=%ld seconds=%.4f per_s=%.1f cpu_s=%.3f failed=%ld\n", hs_done,
               secs, (double)hs_done / secs, cpu_s(), hs_failed);
        return hs_done > 0 && hs_failed == 0 ? 0 : 1;
    }
    int rc = rn_run(client, NULL);
    if (rc < 0) {
        fprintf(stderr, "tls_bulk: rn_run: %s (%s)\n", rn_strerror(rc), rn_last_error());
        return 1;
    }
    return status;
}
