/* tls_echo_server.c - a TLS echo server: one task per client, each echoing
 * what it reads until the client ends. The handshake of each client runs
 * in its own task at its first read, never in the accept loop.
 *
 * Usage: tls_echo_server cert.pem key.pem [port [client-ca.pem]]
 *   port defaults to 9443 (0 picks a free one; the address is printed);
 *   with client-ca.pem, clients must present a certificate it signed.
 * Try it: openssl s_client -connect 127.0.0.1:9443 -CAfile ca.pem
 * Runs until killed. Exit status 1 if it cannot start. */
#include <ringnet.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static void serve(void *arg)
{
    rn_conn *c = arg;
    char buf[16384];
    ssize_t n;
    rn_conn_set_deadline(c, 60000); /* an idle client is dropped after a minute */
    while ((n = rn_conn_read(c, buf, sizeof buf)) > 0) {
        if (rn_conn_write_all(c, buf, (size_t)n) < 0)
            break;
    }
    if (n < 0 && n != -ETIMEDOUT)
        fprintf(stderr, "tls_echo_server: %s: %s\n", rn_conn_remote_addr(c), rn_last_error());
    rn_conn_close(c); /* sends close_notify */
}

static void accept_loop(void *arg)
{
    rn_server *srv = arg;
    for (;;) {
        rn_conn *c;
        int err = rn_server_accept(srv, &c);
        if (err < 0) {
            fprintf(stderr, "tls_echo_server: accept: %s\n", rn_last_error());
            return;
        }
        if (rn_spawn(serve, c) < 0)
            rn_conn_close(c);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s cert.pem key.pem [port [client-ca.pem]]\n", argv[0]);
        return 1;
    }
    rn_tls_config *cfg = rn_tls_server_config(argv[1], argv[2]);
    if (!cfg) {
        fprintf(stderr, "tls_echo_server: %s\n", rn_last_error());
        return 1;
    }
    if (argc > 4 && rn_tls_config_require_client_cert(cfg, argv[4]) < 0) {
        fprintf(stderr, "tls_echo_server: %s\n", rn_last_error());
        return 1;
    }
    rn_server *srv;
    int err = rn_tls_listen(&srv, "0.0.0.0", argc > 3 ? atoi(argv[3]) : 9443, cfg);
    rn_tls_config_free(cfg); /* the listener keeps its own reference */
    if (err < 0) {
        fprintf(stderr, "tls_echo_server: listen: %s\n", rn_last_error());
        return 1;
    }
    printf("listening on %s\n", rn_server_addr(srv));
    fflush(stdout);
    return rn_run(accept_loop, srv) < 0;
}
