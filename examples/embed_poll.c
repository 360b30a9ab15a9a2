/* embed_poll.c - ringnet inside someone else's event loop. The host here is
 * a plain poll(2) loop that also watches its own descriptor (stdin); the
 * ringnet loop joins it through three calls: rn_loop_fd (watch it for
 * POLLIN), rn_loop_timeout (sleep no longer than this) and
 * rn_loop_run_once(0) (run what is ready). The ringnet side is an echo
 * server and, unless --serve-only, a client task that sends a few lines
 * through it and prints them as they come back.
 *
 * Usage: embed_poll [port] [--serve-only]
 *   port          TCP port on 127.0.0.1 (default 0: a free one, printed)
 *   --serve-only  no client: serve until stdin closes (try nc 127.0.0.1 PORT)
 * A line typed on stdin is handled by the host itself; end of input (^D)
 * stops it.
 */
#include <ringnet.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static rn_server *server;
static bool client_done;

static void echo_client(void *arg)
{
    rn_conn *c = arg;
    char buf[4096];
    ssize_t n;
    while ((n = rn_conn_read(c, buf, sizeof buf)) > 0)
        if (rn_conn_write_all(c, buf, (size_t)n) < 0)
            break;
    rn_conn_close(c);
}

static void accept_loop(void *arg)
{
    (void)arg;
    rn_conn *c;
    /* Ends with RN_ECLOSED once the host closes the server. */
    while (rn_server_accept(server, &c) == 0)
        if (rn_spawn(echo_client, c) < 0)
            rn_conn_close(c);
}

static void demo_client(void *arg)
{
    int port = *(int *)arg;
    rn_conn *c;
    if (rn_tcp_connect(&c, "127.0.0.1", port) < 0) {
        fprintf(stderr, "connect: %s\n", rn_last_error());
        client_done = true;
        return;
    }
    for (int i = 1; i <= 3; i++) {
        char line[64], back[64];
        int len = snprintf(line, sizeof line, "line %d through the embedded loop\n", i);
        if (rn_conn_write_all(c, line, (size_t)len) < 0 ||
            rn_conn_read_exact(c, back, (size_t)len) < 0) {
            fprintf(stderr, "echo: %s\n", rn_last_error());
            break;
        }
        printf("echoed: %.*s", len, back);
        fflush(stdout);
        rn_sleep(100); /* a deadline: the host sleeps on rn_loop_timeout */
    }
    rn_conn_close(c);
    client_done = true;
}

int main(int argc, char **argv)
{
    int port = 0;
    bool serve_only = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--serve-only") == 0)
            serve_only = true;
        else
            port = atoi(argv[i]);
    }
    if (rn_tcp_listen(&server, "127.0.0.1", port) < 0) {
        fprintf(stderr, "listen: %s\n", rn_last_error());
        return 1;
    }
    const char *addr = rn_server_addr(server);
    port = atoi(strrchr(addr, ':') + 1);
    printf("echo server on %s (%s backend)\n", addr, rn_backend_name());
    fflush(stdout);
    if (rn_spawn(accept_loop, NULL) < 0 || (!serve_only && rn_spawn(demo_client, &port) < 0)) {
        fprintf(stderr, "spawn: %s\n", rn_last_error());
        return 1;
    }
    int loop_fd = rn_loop_fd();
    if (loop_fd < 0) {
        fprintf(stderr, "rn_loop_fd: %s\n", rn_last_error());
        return 1;
    }

    /* The host's loop: its own descriptor and ringnet's. */
    struct pollfd fds[2] = {{loop_fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    unsigned long wakeups = 0;
    bool stdin_open = true;
    for (;;) {
        int left = rn_loop_run_once(0);
        if (left < 0) {
            fprintf(stderr, "rn_loop_run_once: %s\n", rn_last_error());
            return 1;
        }
        if (!serve_only && client_done)
            break;
        if (serve_only && !stdin_open)
            break;
        int64_t timeout = rn_loop_timeout(); /* -1: only the descriptors */
        fds[1].fd = stdin_open ? STDIN_FILENO : -1;
        int n = poll(fds, 2, timeout > 60000 ? 60000 : (int)timeout);
        if (n < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        wakeups++;
        if (fds[1].revents) {
            char line[256];
            ssize_t r = read(STDIN_FILENO, line, sizeof line);
            if (r <= 0)
                stdin_open = false;
            else
                printf("host read %zd bytes from stdin\n", r);
        }
        /* fds[0] readable or a deadline due: the next rn_loop_run_once runs it. */
    }

    /* Shut down: the accept task sees RN_ECLOSED, the echo tasks end as
     * their clients go; the host runs the loop until no task is left. */
    rn_server_close(server);
    int left;
    while ((left = rn_loop_run_once(-1)) > 0) {
    }
    printf("host woke %lu times\n", wakeups);
    return left < 0 ? 1 : 0;
}
