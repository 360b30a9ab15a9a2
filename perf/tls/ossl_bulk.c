/* ossl_bulk.c - the bulk client of perf/run --tls-compare: one OpenSSL
 * connection that sends BYTES to a TLS server which reads and drops them
 * (perf/rn_tls_server, openssl s_server), offering only SUITE, so that
 * every server is driven by the same client with the same cipher. It links
 * OpenSSL, not ringnet: perf/CMakeLists.txt builds it when OpenSSL is found.
 *
 * Usage: ossl_bulk PORT SUITE BYTES
 *   Connects to 127.0.0.1:PORT with TLS 1.3 offering SUITE only (no
 *   certificate check, as openssl s_time), writes BYTES in 16 KiB records,
 *   sends close_notify and reads until the server ends the connection, so
 *   the time covers the server's last read. Prints
 *   RESULT bytes=.. seconds=.. mb_per_s=.. suite=.. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int fail(const char *what)
{
    fprintf(stderr, "ossl_bulk: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: ossl_bulk PORT SUITE BYTES\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *suite = argv[2];
    unsigned long long total = strtoull(argv[3], NULL, 0);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(ctx, suite))
        return fail("SSL_CTX set-up (is the suite a TLS 1.3 one?)");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return fail("connect");
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1)
        return fail("handshake");

    static char buf[16384];
    memset(buf, 'x', sizeof buf);
    double t0 = now_s();
    unsigned long long sent = 0;
    while (sent < total) {
        int n = total - sent < sizeof buf ? (int)(total - sent) : (int)sizeof buf;
        int w = SSL_write(ssl, buf, n);
        if (w <= 0)
            return fail("write");
        sent += (unsigned long long)w;
    }
    SSL_shutdown(ssl); /* close_notify */
    while (SSL_read(ssl, buf, sizeof buf) > 0)
        ; /* until the server's end */
    double secs = now_s() - t0;
    printf("RESULT bytes=%llu seconds=%.4f mb_per_s=%.1f suite=%s\n", sent, secs,
           (double)sent / secs / 1e6, SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return 0;
}
