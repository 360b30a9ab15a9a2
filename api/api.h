/* api.h - the objects behind the public handles (rn_conn, rn_server) and
 * the seams between the api layer and tls/. Private. */
#ifndef RN_API_H
#define RN_API_H

#include "rn.h"

#include <netinet/in.h>
#include <sys/socket.h>

struct rn__tls; /* tls/: one wolfSSL session over a connection's bytes */

struct rn_conn {
    struct rn__fd f;
    struct rn__loop *loop;         /* the owning thread's loop */
    int calls;                     /* public calls in progress on this handle */
    struct rn__task *close_waiter; /* close waits for calls to leave */
    int64_t rd_ms, wr_ms;          /* deadlines per call, 0 = none */
    /* Bytes received but not yet handed to the caller (a failed read_exact
     * gives its bytes back here). Plaintext only; see tls/ for ciphertext. */
    char *kept;
    size_t kept_off, kept_len, kept_cap;
    void *lent;                /* the buffer the last rn_conn_read_lent handed out, or NULL */
    struct rn__tls *tls;       /* NULL for plain TCP */
    char laddr[64], raddr[64]; /* formatted on first use */
};

struct rn_server {
    struct rn__fd f;
    struct rn__loop *loop;
    int calls;
    struct rn__task *close_waiter;
    const struct rn_tls_config *tls_cfg; /* rn_tls_listen: accepted conns are TLS */
    char addr[64];
};

/* Enter/leave a public call on c: checks the thread (-EXDEV) and closing
 * (RN_ECLOSED), and counts the call so close can wait for it. */
int rn__conn_enter(rn_conn *c, const char *what);
void rn__conn_leave(rn_conn *c);

/* Plain-socket transfers with an absolute deadline (0 = none): what both
 * plain calls and the TLS layer's ciphertext I/O use. recv: bytes (> 0),
 * 0 at EOF, or an error. send_all: 0 or an error; *sent (if not NULL) gets
 * the bytes sent either way. */
ssize_t rn__conn_recv(rn_conn *c, void *buf, size_t len, int64_t deadline);
/* rn__conn_recv into a lent buffer (rn__lend_release it): bytes (> 0) at
 * *buf, 0 at EOF, or an error; *buf is NULL unless bytes came. */
ssize_t rn__conn_recv_lent(rn_conn *c, void **buf, int64_t deadline);
int rn__conn_send_all(rn_conn *c, const void *buf, size_t len, int64_t deadline, size_t *sent);

/* Wrap an open, connected descriptor into a new conn (fd_open done). */
int rn__conn_new(struct rn__loop *loop, int fd, bool accepted, rn_conn **out);
/* Close and free c, without the thread/enter checks (internal paths). */
void rn__conn_destroy(rn_conn *c);

/* Address helpers (api/addr.c). */
/* "1.2.3.4" / "::1" into sa with port; 1 if numeric, 0 if not a literal. */
int rn__addr_parse_numeric(const char *host, int port, struct sockaddr_storage *sa, socklen_t *len);
/* "1.2.3.4:80" / "[::1]:80" into out. */
void rn__addr_format(const struct sockaddr *sa, char *out, size_t outlen);
/* Every address of host (numeric or resolved on a resolver thread, IPv4
 * first), bounded by the absolute deadline. Caller frees *out. */
int rn__resolve_all(struct rn__loop *loop, const char *host, int port, int64_t deadline,
                    struct sockaddr_storage **out, size_t *n);
/* Validate, resolve and connect to host:port, every address in turn, all
 * before the absolute deadline (0 = none). what names the call in errors. */
int rn__connect(rn_conn **out, const char *host, int port, int64_t deadline, const char *what);
/* This thread's connect timeout as an absolute deadline from now. */
int64_t rn__connect_deadline(void);

/* Listen (tls_cfg non-NULL: accepted conns are TLS, handshake deferred). */
int rn__listen(rn_server **out, const char *host, int port, const rn_tls_config *tls_cfg);

/* TLS seams (tls/). On a conn with c->tls set, the plain read/write paths
 * call these instead of the socket. */
ssize_t rn__tls_read(rn_conn *c, void *buf, size_t max, int64_t deadline);
ssize_t rn__tls_write(rn_conn *c, const void *buf, size_t len, int64_t deadline);
/* rn__tls_read into a lent buffer (RN__LEND_SIZE bytes), taken only once
 * ciphertext is there: > 0 with *out set (the caller releases it), 0 at the
 * end, or an error (*out NULL). */
ssize_t rn__tls_read_lent(rn_conn *c, void **out, int64_t deadline);
/* Hand the ciphertext still queued to the kernel (write_all ends with it,
 * so that its 0 means sent, not queued). 0 or an error. */
int rn__tls_flush(rn_conn *c, int64_t deadline);
/* Queue close_notify and flush it (shutdown_write, before SHUT_WR). */
int rn__tls_shutdown_write(rn_conn *c, int64_t deadline);
/* Best-effort close_notify, bounded; before the descriptor closes. */
void rn__tls_close(rn_conn *c);
/* Free the session, once no call uses the connection any more. */
void rn__tls_free(rn_conn *c);
/* Server side: make c a TLS conn whose handshake runs at first use. */
int rn__tls_attach_server(rn_conn *c, const struct rn_tls_config *cfg);
/* Drop a TLS listener's reference on its config (rn_server_close). */
void rn__tls_config_release(const struct rn_tls_config *cfg);

#endif /* RN_API_H */
