/* tls_idle.c - opens N TLS connections to a server, finishes each handshake,
 * then keeps them idle, so a script can read the server's memory per idle
 * TLS connection. A ringnet client (its own process; the server is what is
 * measured): up to 64 handshakes at a time on one loop.
 *
 * Usage: tls_idle --port P --ca PEM [--conns N] [--hold SECONDS] [--host NAME]
 * Prints "connected N" once every handshake is done, then holds them until
 * SIGTERM or --hold runs out (default 60 s) and closes them.
 * Exit status: 0, or 1 if a connection or handshake failed (the first error
 * is printed). */
#define _GNU_SOURCE
#include <ringnet.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define PARALLEL 64

static volatile sig_atomic_t stop;
static int port;
static long conns = 1000, hold = 60;
static const char *ca, *host = "localhost";
static rn_tls_config *cfg;
static rn_conn **held;
static long next_slot, made, failed;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

/* One of PARALLEL connectors: takes slots until all are taken. */
static void connector(void *arg)
{
    (void)arg;
    while (!stop && next_slot < conns) {
        long i = next_slot++;
        rn_conn *c;
        int rc = rn_tls_connect_with(&c, host, port, cfg);
        if (rc < 0) {
            if (failed++ == 0)
                fprintf(stderr, "tls_idle: connection %ld: %s (%s)\n", i, rn_strerror(rc), rn_last_error());
            continue;
        }
        held[i] = c;
        made++;
    }
}

static void main_task(void *arg)
{
    (void)arg;
    for (int i = 0; i < PARALLEL; i++)
        rn_spawn(connector, NULL);
    while (!stop && made + failed < conns)
        rn_sleep(10);
    printf("connected %ld\n", made);
    fflush(stdout);
    for (long t = 0; !stop && t < hold * 20; t++)
        rn_sleep(50);
    for (long i = 0; i < conns; i++)
        rn_conn_close(held[i]);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--conns"))
            conns = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--hold"))
            hold = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--ca"))
            ca = argv[i + 1];
        else if (!strcmp(argv[i], "--host"))
            host = argv[i + 1];
        else
            port = -1;
    }
    if (port <= 0 || port > 65535 || !ca || conns < 1 || conns > 100000 || hold < 1) {
        fprintf(stderr, "usage: %s --port P --ca PEM [--conns 1..100000] [--hold SECONDS] [--host NAME]\n",
                argv[0]);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    cfg = rn_tls_client_config();
    if (!cfg || rn_tls_config_set_ca_file(cfg, ca) < 0) {
        fprintf(stderr, "tls_idle: client config: %s\n", rn_last_error());
        return 1;
    }
    held = calloc((size_t)conns, sizeof *held);
    if (!held)
        return 1;
    rn_set_connect_timeout(30000);
    int rc = rn_run(main_task, NULL);
    free(held);
    rn_tls_config_free(cfg);
    if (rc < 0) {
        fprintf(stderr, "tls_idle: rn_run: %s (%s)\n", rn_strerror(rc), rn_last_error());
        return 1;
    }
    return failed ? 1 : 0;
}
