/* tls_record.c - records seeds for the TLS targets: ringnet's side of a
 * TLS exchange with a real peer (openssl s_server / s_client, started by
 * make_corpus.sh), run exactly as the fuzz target runs it (the same code in
 * fuzz_common.c, the same repeatable random stream), with the peer's bytes
 * relayed through the target's socketpair and written down, one chunk per
 * TCP read, in the target's input format. Replayed into the target, such a
 * seed meets the same ClientHello (or ServerHello) again and so finishes
 * the handshake and reads the application data.
 *
 *   tls_record client MODE PORT OUT  ringnet client -> s_server on 127.0.0.1:PORT
 *   tls_record server MODE OUT       ringnet server on a free port (printed
 *                                    "port N" on stdout) <- one s_client
 * MODE: the mode byte (fuzz_common.h), written first.
 *
 * Prints the outcome (handshake=0 ...); exits 0 when it could record. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *out;
static rn_conn *tcp, *relay; /* the real peer; our end of the socketpair */
static int done_relays;

static void finish_relay(void)
{
    if (++done_relays == 2) {
        (void)rn_conn_close(tcp);
        (void)rn_conn_close(relay);
    }
}

/* From the real peer into the socketpair, written down. */
static void inbound_main(void *arg)
{
    (void)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = rn_conn_read(tcp, buf, sizeof buf);
        if (n <= 0)
            break;
        unsigned char len[2] = {(unsigned char)(n >> 8), (unsigned char)n};
        if (fwrite(len, 1, 2, out) != 2 || fwrite(buf, 1, (size_t)n, out) != (size_t)n) {
            perror("tls_record: writing the seed");
            exit(1);
        }
        if (rn_conn_write_all(relay, buf, (size_t)n) < 0)
            break;
    }
    (void)rn_conn_shutdown_write(relay);
    finish_relay();
}

/* What ringnet sends, to the real peer. */
static void outbound_main(void *arg)
{
    (void)arg;
    char buf[65536];
    for (;;) {
        ssize_t n = rn_conn_read(relay, buf, sizeof buf);
        if (n <= 0 || rn_conn_write_all(tcp, buf, (size_t)n) < 0)
            break;
    }
    (void)rn_conn_shutdown_write(tcp);
    finish_relay();
}

struct job {
    bool server;
    unsigned mode;
    int port;
};

static void main_task(void *arg)
{
    struct job *j = arg;
    int rc;
    if (j->server) {
        rn_server *s;
        rc = rn_tcp_listen(&s, "127.0.0.1", 0);
        if (rc < 0) {
            fprintf(stderr, "tls_record: %s\n", rn_last_error());
            exit(1);
        }
        const char *a = rn_server_addr(s);
        printf("port %s\n", strrchr(a, ':') + 1);
        fflush(stdout);
        rn_set_connect_timeout(10000);
        rc = rn_server_accept(s, &tcp);
        rn_server_close(s);
    } else {
        rc = rn_tcp_connect(&tcp, "127.0.0.1", j->port);
    }
    if (rc < 0) {
        fprintf(stderr, "tls_record: %s\n", rn_last_error());
        exit(1);
    }
    rn_conn_set_deadline(tcp, 10000); /* a silent peer ends the recording */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        exit(1);
    }
    if (rn__conn_new(rn__loop_get(), sv[1], false, &relay) < 0) {
        fprintf(stderr, "tls_record: %s\n", rn_last_error());
        exit(1);
    }
    if (rn_spawn(inbound_main, NULL) < 0 || rn_spawn(outbound_main, NULL) < 0) {
        fprintf(stderr, "tls_record: %s\n", rn_last_error());
        exit(1);
    }
    if (j->server)
        rn_fuzz_tls_server_side(sv[0], j->mode);
    else
        rn_fuzz_tls_client_side(sv[0], j->mode);
}

int main(int argc, char **argv)
{
    struct job j = {0};
    const char *path;
    if (argc == 5 && strcmp(argv[1], "client") == 0) {
        j.mode = (unsigned)atoi(argv[2]) & 0xffu;
        j.port = atoi(argv[3]);
        path = argv[4];
    } else if (argc == 4 && strcmp(argv[1], "server") == 0) {
        j.server = true;
        j.mode = (unsigned)atoi(argv[2]) & 0xffu;
        path = argv[3];
    } else {
        fprintf(stderr, "usage: tls_record client MODE PORT OUT | tls_record server MODE OUT\n");
        return 2;
    }
    /* The certificates load (as the targets check in LLVMFuzzerInitialize). */
    if (j.server)
        rn_tls_config_free(rn_fuzz_server_config(j.mode)); /* fails early, with the reason, if the certificates are missing */
    else
        rn_tls_config_free(rn_fuzz_client_config(j.mode)); /* fails early, with the reason, if the certificates are missing */
    rn_fuzz_wolf_down();
    out = fopen(path, "wb");
    if (!out || fputc((int)j.mode, out) == EOF) {
        perror(path);
        return 1;
    }
    int rc = rn_run(main_task, &j);
    if (fclose(out) != 0 || rc < 0) {
        fprintf(stderr, "tls_record: %d %s\n", rc, rn_last_error());
        return 1;
    }
    printf("%s: mode=%u handshake=%d plain=%zu end=%d%s%s\n", j.server ? "server" : "client",
           j.mode, rn_fuzz_last.handshake, rn_fuzz_last.plain, rn_fuzz_last.end,
           rn_fuzz_last.error[0] ? " error: " : "", rn_fuzz_last.error);
    return 0; /* make_corpus.sh checks the outcome it expects */
}
