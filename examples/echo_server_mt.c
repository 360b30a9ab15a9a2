/* echo_server_mt.c - the echo server on every core: rn_run_threads starts
 * one pinned thread per CPU, and each listens on the same port with
 * SO_REUSEPORT (rn_tcp_listen_reuseport), so the kernel spreads the clients
 * over the threads and no state is shared between them.
 *
 * Usage: echo_server_mt [port] [threads] [--quiet]
 *   port     TCP port on 0.0.0.0 (default 9000; 0 is refused: every thread
 *            must listen on the same port)
 *   threads  how many threads (default 0: one per CPU)
 *   --quiet  no line per client (for load tests)
 */
#include <ringnet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool quiet;
static int port = 9000;

static void handle_client(void *arg)
{
    rn_conn *client = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = rn_conn_read(client, buf, sizeof buf);
        if (n <= 0)
            break; /* 0: the client is done; < 0: a reset, ordinary for an echo server */
        if (rn_conn_write_all(client, buf, (size_t)n) < 0)
            break;
    }
    rn_conn_close(client);
}

/* The first task of each thread: its own listener on the shared port. */
static void thread_task(void *arg)
{
    (void)arg;
    rn_server *server;
    int err = rn_tcp_listen_reuseport(&server, "0.0.0.0", port);
    if (err < 0) {
        fprintf(stderr, "thread %d: listen on 0.0.0.0:%d: %s (%s)\n", rn_thread_index(), port,
                rn_strerror(err), rn_last_error());
        return;
    }
    printf("thread %d (%s) listening on %s\n", rn_thread_index(), rn_backend_name(),
           rn_server_addr(server));
    for (;;) {
        rn_conn *client;
        err = rn_server_accept(server, &client);
        if (err == RN_ECLOSED)
            break;
        if (err < 0) {
            fprintf(stderr, "thread %d: accept: %s (%s)\n", rn_thread_index(), rn_strerror(err),
                    rn_last_error());
            continue;
        }
        if (!quiet)
            printf("thread %d: client %s\n", rn_thread_index(), rn_conn_remote_addr(client));
        if (rn_spawn(handle_client, client) < 0)
            rn_conn_close(client);
    }
    rn_server_close(server);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 0, positional = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            quiet = true;
        } else if (positional == 0 && parse_int(argv[i], 1, 65535, &port) == 0) {
            positional++;
        } else if (positional == 1 && parse_int(argv[i], 0, 4096, &threads) == 0) {
            positional++;
        } else {
            fprintf(stderr, "usage: %s [port (1-65535)] [threads (0 = one per CPU)] [--quiet]\n",
                    argv[0]);
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int err = rn_run_threads(threads, thread_task, NULL);
    if (err < 0) {
        fprintf(stderr, "echo_server_mt: %s (%s)\n", rn_strerror(err), rn_last_error());
        return 1;
    }
    return 0;
}
