/* tcp_client.c - the std/net "TCP client" example in C: connect, send
 * "HELLO\n", print the reply, close. Written as plain top-level calls, with
 * no rn_run: a blocking call made outside any task runs the loop itself.
 *
 * Usage: tcp_client [host [port]]   (default: localhost 9000)
 * Exit status: 0 on success, 1 on any error.
 */
#include <ringnet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, int err)
{
    fprintf(stderr, "tcp_client: %s: %s (%s)\n", what, rn_strerror(err), rn_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    int port = 9000;

    if (argc > 3) {
        fprintf(stderr, "usage: %s [host [port]]\n", argv[0]);
        return 1;
    }
    if (argc > 2) {
        char *end;
        long v = strtol(argv[2], &end, 10);
        if (argv[2][0] == '\0' || *end != '\0' || v < 1 || v > 65535) {
            fprintf(stderr, "tcp_client: bad port '%s' (1..65535)\n", argv[2]);
            return 1;
        }
        port = (int)v;
    }

    rn_conn *conn;
    int err = rn_tcp_connect(&conn, host, port);
    if (err < 0)
        return fail("connect", err);
    printf("%s\n", rn_conn_remote_addr(conn));

    static const char hello[] = "HELLO\n";
    err = rn_conn_write_all(conn, hello, strlen(hello));
    if (err < 0) {
        fail("write", err); /* before close, which could replace rn_last_error */
        rn_conn_close(conn);
        return 1;
    }

    char response[1024];
    ssize_t n = rn_conn_read(conn, response, sizeof response);
    if (n < 0) {
        fail("read", (int)n); /* before close, which could replace rn_last_error */
        rn_conn_close(conn);
        return 1;
    }
    /* println(response.toString("utf8")): the bytes, then one newline unless
     * they already end in one. n == 0 (the peer closed) prints an empty line. */
    fwrite(response, 1, (size_t)n, stdout);
    if (n == 0 || response[n - 1] != '\n')
        putchar('\n');

    err = rn_conn_close(conn);
    if (err < 0)
        return fail("close", err);
    return 0;
}
