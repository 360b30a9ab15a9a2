/* echo_server.c - the std/net "complete example: echo server" in C: one task
 * accepts, and every client gets a task of its own that echoes what it reads.
 *
 * Usage: echo_server [port] [--quiet]
 *   port     TCP port on 0.0.0.0 (default 9000; 0 picks a free one)
 *   --quiet  no line per client (for load tests)
 */
#include <ringnet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct server_args {
    int port;
    int status; /* exit status of main_task, read after rn_run returns */
};

static bool quiet;

/* handleClient: owns the connection it is given and closes it. */
static void handle_client(void *arg)
{
    rn_conn *client = arg;
    char buf[4096]; /* on the task's stack: no allocation per client */

    if (!quiet)
        printf("Client connected: %s\n", rn_conn_remote_addr(client));

    for (;;) {
        ssize_t n = rn_conn_read(client, buf, sizeof buf);
        if (n == 0) {
            if (!quiet)
                printf("Client disconnected\n");
            break;
        }
        if (n < 0) {
            /* A reset peer is ordinary for an echo server; say so and move on. */
            if (!quiet)
                fprintf(stderr, "read from %s: %s (%s)\n", rn_conn_remote_addr(client),
                        rn_strerror((int)n), rn_last_error());
            break;
        }
        int err = rn_conn_write_all(client, buf, (size_t)n);
        if (err < 0) {
            if (!quiet)
                fprintf(stderr, "write to %s: %s (%s)\n", rn_conn_remote_addr(client),
                        rn_strerror(err), rn_last_error());
            break;
        }
    }
    rn_conn_close(client);
}

static void main_task(void *arg)
{
    struct server_args *args = arg;
    rn_server *server;

    int err = rn_tcp_listen(&server, "0.0.0.0", args->port);
    if (err < 0) {
        fprintf(stderr, "listen on 0.0.0.0:%d: %s (%s)\n", args->port, rn_strerror(err),
                rn_last_error());
        args->status = 1;
        return;
    }
    printf("Echo server listening on %s\n", rn_server_addr(server));

    for (;;) {
        rn_conn *client;
        err = rn_server_accept(server, &client);
        if (err == RN_ECLOSED)
            break;
        if (err < 0) {
            /* A client that gave up before we took it (-ECONNABORTED) must not
             * stop the server: report and keep accepting. */
            fprintf(stderr, "accept: %s (%s)\n", rn_strerror(err), rn_last_error());
            continue;
        }
        err = rn_spawn(handle_client, client);
        if (err < 0) {
            fprintf(stderr, "spawn a task for %s: %s (%s)\n", rn_conn_remote_addr(client),
                    rn_strerror(err), rn_last_error());
            rn_conn_close(client);
        }
    }
    rn_server_close(server);
}

static int parse_port(const char *s, int *port)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    struct server_args args = {.port = 9000, .status = 0};
    bool have_port = false;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            quiet = true;
        } else if (!have_port && parse_port(argv[i], &args.port) == 0) {
            have_port = true;
        } else {
            fprintf(stderr, "usage: %s [port] [--quiet]\n", argv[0]);
            return 1;
        }
    }
    /* Line-buffered even when piped, so a script sees the address at once. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    int err = rn_run(main_task, &args);
    if (err < 0) {
        fprintf(stderr, "echo_server: %s (%s)\n", rn_strerror(err), rn_last_error());
        return 1;
    }
    return args.status;
}
