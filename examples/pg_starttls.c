/* pg_starttls.c - PostgreSQL's STARTTLS flow over ringnet: SSLRequest, the
 * server's 'S', rn_conn_upgrade_to_tls, the startup message, then one
 * simple query whose answer shows the session is encrypted.
 *
 * Usage: pg_starttls host port user [database [query]]
 *   query defaults to: SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()
 *   The server's certificate is verified for host against the system
 *   trust store, or SSL_CERT_FILE / SSL_CERT_DIR when set.
 * Only "trust" authentication is spoken (no password exchange).
 * Exit status: 0 when the query ran, 1 otherwise. */
#include <ringnet.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, int err)
{
    fprintf(stderr, "pg_starttls: %s: %s (%s)\n", what, rn_strerror(err), rn_last_error());
    return 1;
}

static size_t put32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
    return 4;
}

/* One backend message into body (malloc'd; the caller frees). */
static int read_msg(rn_conn *c, char *type, char **body, uint32_t *len)
{
    char head[5];
    int err = rn_conn_read_exact(c, head, 5);
    if (err < 0)
        return err;
    *type = head[0];
    memcpy(len, head + 1, 4);
    *len = ntohl(*len);
    if (*len < 4 || *len > (1u << 24))
        return -EPROTO;
    *len -= 4;
    *body = malloc(*len + 1);
    if (!*body)
        return -ENOMEM;
    (*body)[*len] = '\0';
    return *len ? rn_conn_read_exact(c, *body, *len) : 0;
}

/* The 'M' (message) field of an ErrorResponse. */
static const char *error_text(const char *body, uint32_t len)
{
    for (uint32_t i = 0; i < len && body[i]; i += (uint32_t)strlen(body + i + 1) + 2)
        if (body[i] == 'M')
            return body + i + 1;
    return "(no message)";
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s host port user [database [query]]\n", argv[0]);
        return 1;
    }
    const char *host = argv[1], *user = argv[3];
    const char *db = argc > 4 ? argv[4] : user;
    const char *sql =
        argc > 5 ? argv[5] : "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

    rn_conn *c;
    int err = rn_tcp_connect(&c, host, atoi(argv[2]));
    if (err < 0)
        return fail("connect", err);
    rn_conn_set_deadline(c, 15000);

    /* SSLRequest: length 8, code 80877103. The answer is one byte. */
    char msg[1024];
    size_t n = put32(msg, 8);
    n += put32(msg + n, 80877103);
    char answer;
    if ((err = rn_conn_write_all(c, msg, n)) < 0 || (err = rn_conn_read_exact(c, &answer, 1)) < 0) {
        fail("SSLRequest", err);
        rn_conn_close(c);
        return 1;
    }
    if (answer != 'S') {
        fprintf(stderr, "pg_starttls: the server does not do TLS (answered '%c')\n", answer);
        rn_conn_close(c);
        return 1;
    }
    /* Read exactly one byte above: anything after 'S' stays in the kernel,
     * and ringnet refuses to upgrade over it (CVE-2021-23222). */
    if ((err = rn_conn_upgrade_to_tls(c, host)) < 0) {
        fail("TLS upgrade", err);
        rn_conn_close(c);
        return 1;
    }

    /* StartupMessage: length, protocol 3.0, then name/value pairs. */
    n = 4;
    n += put32(msg + n, 196608);
    n += (size_t)snprintf(msg + n, sizeof msg - n - 2, "user%c%s%cdatabase%c%s%c", 0, user, 0, 0,
                          db, 0);
    msg[n++] = '\0';
    put32(msg, (uint32_t)n);
    if ((err = rn_conn_write_all(c, msg, n)) < 0) {
        fail("startup", err);
        rn_conn_close(c);
        return 1;
    }

    int status = 0, queried = 0;
    for (;;) {
        char type, *body = NULL;
        uint32_t len = 0;
        if ((err = read_msg(c, &type, &body, &len)) < 0) {
            status = fail("read", err);
            free(body);
            break;
        }
        if (type == 'E') {
            fprintf(stderr, "pg_starttls: server error: %s\n", error_text(body, len));
            status = 1;
        } else if (type == 'R' && len >= 4 && ntohl(*(uint32_t *)body) != 0) {
            fprintf(stderr,
                    "pg_starttls: the server wants a password; only trust auth is spoken here\n");
            status = 1;
        } else if (type == 'T') {
            /* RowDescription: print the column names. */
            uint16_t cols;
            memcpy(&cols, body, 2);
            const char *p = body + 2;
            for (int i = 0; i < ntohs(cols) && p < body + len; i++) {
                printf("%s%s", i ? " | " : "", p);
                p += strlen(p) + 1 + 18;
            }
            printf("\n");
        } else if (type == 'D') {
            uint16_t cols;
            memcpy(&cols, body, 2);
            const char *p = body + 2;
            for (int i = 0; i < ntohs(cols); i++) {
                int32_t l;
                memcpy(&l, p, 4);
                l = (int32_t)ntohl((uint32_t)l);
                p += 4;
                printf("%s%.*s", i ? " | " : "", l < 0 ? 4 : l, l < 0 ? "NULL" : p);
                if (l > 0)
                    p += l;
            }
            printf("\n");
        }
        free(body);
        if (status)
            break;
        if (type == 'Z') { /* ReadyForQuery */
            if (queried)
                break;
            queried = 1;
            n = 0;
            msg[n++] = 'Q';
            size_t sl = strlen(sql) + 1;
            if (sl > sizeof msg - 5) {
                fprintf(stderr, "pg_starttls: the query is too long\n");
                status = 1;
                break;
            }
            n += put32(msg + n, (uint32_t)(4 + sl));
            memcpy(msg + n, sql, sl);
            n += sl;
            if ((err = rn_conn_write_all(c, msg, n)) < 0) {
                status = fail("query", err);
                break;
            }
        }
    }
    char terminate[5] = {'X'};
    put32(terminate + 1, 4);
    rn_conn_write_all(c, terminate, 5);
    rn_conn_close(c);
    return status;
}
