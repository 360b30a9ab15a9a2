/* https_get.c - the std/net "HTTP client over TLS" example in C: connect
 * with TLS (system trust store, or SSL_CERT_FILE / SSL_CERT_DIR), send a
 * GET, print the whole response. Plain top-level calls, no rn_run.
 *
 * Usage: https_get host [path [port]]   (default path "/", port 443)
 * Exit status: 0 when a response was read to its end, 1 on any error.
 *
 * Many HTTPS servers close the TCP connection after a "Connection: close"
 * response without sending TLS close_notify. ringnet reports that as
 * RN_ETLS_TRUNCATED (the response might have been cut short); this
 * program prints what it got, says so on stderr, and still exits 0 when
 * the response had a Content-Length that was met. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <ringnet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(const char *what, int err)
{
    fprintf(stderr, "https_get: %s: %s (%s)\n", what, rn_strerror(err), rn_last_error());
    return 1;
}

/* Whether buf holds a full header block and a body of Content-Length. */
static int complete(const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - buf) + 4;
    for (const char *p = buf; p < end; p++) {
        if ((p == buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0)
            return len - head >= strtoull(p + 15, NULL, 10);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s host [path [port]]\n", argv[0]);
        return 1;
    }
    const char *host = argv[1];
    const char *path = argc > 2 ? argv[2] : "/";
    int port = argc > 3 ? atoi(argv[3]) : 443;

    rn_conn *conn;
    int err = rn_tls_connect(&conn, host, port);
    if (err < 0)
        return fail("connect", err);

    char req[2048];
    int n = snprintf(
        req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: ringnet-https_get\r\n\r\n",
        path, host);
    if (n < 0 || (size_t)n >= sizeof req) {
        rn_conn_close(conn);
        fprintf(stderr, "https_get: the path is too long\n");
        return 1;
    }
    err = rn_conn_write_all(conn, req, (size_t)n);
    if (err < 0) {
        fail("write", err);
        rn_conn_close(conn);
        return 1;
    }

    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r = 0;
    while (buf) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
        r = rn_conn_read(conn, buf + len, cap - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    if (!buf) {
        rn_conn_close(conn);
        fprintf(stderr, "https_get: out of memory\n");
        return 1;
    }
    fwrite(buf, 1, len, stdout);
    int status = 0;
    if (r == RN_ETLS_TRUNCATED) {
        fprintf(stderr, "https_get: note: %s\n", rn_last_error());
        status = complete(buf, len) ? 0 : 1;
    } else if (r < 0) {
        status = fail("read", (int)r);
    }
    free(buf);
    rn_conn_close(conn);
    return status;
}
