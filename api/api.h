/* api.h - the objects behind the public handles (rn_conn, rn_server) and
 * the seams between the connection and its stream layers (tls/). Private. */
#ifndef RN_API_H
#define RN_API_H

#include "rn.h"

#include <netinet/in.h>
#include <sys/socket.h>

/* A connection's stream operations: what rn_conn_read, _write, ... run
 * once the conn layer has done its checks. The plain table (api/conn.c)
 * moves the caller's bytes over the socket; a stream layer such as TLS
 * (tls/) puts its own table in c->ops and its state in c->layer, and moves
 * its bytes through the transport helpers below. Entries marked optional
 * may be NULL. Deadlines are absolute (0 = none); results as the transport
 * helpers give them (bytes, 0 at the end, or an error). */
struct rn__stream_ops {
    ssize_t (*read)(rn_conn *c, void *buf, size_t max, int64_t deadline);
    /* Bytes in a buffer of RN__LEND_SIZE bytes the caller releases with
     * rn__lend_release: > 0 with *out set, 0 at the end, or an error. */
    ssize_t (*read_lent)(rn_conn *c, void **out, int64_t deadline);
    /* Some of buf (> 0 bytes, counted as written) or an error. */
    ssize_t (*write)(rn_conn *c, const void *buf, size_t len, int64_t deadline);
    /* All of buf, sent (not merely queued) when it returns 0; or an
     * error. *done gets the bytes counted as written either way. */
    int (*write_all)(rn_conn *c, const void *buf, size_t len, int64_t deadline, size_t *done);
    /* Optional: end the layer's outbound stream, before SHUT_WR. */
    int (*shutdown_write)(rn_conn *c, int64_t deadline);
    /* Optional: a bounded goodbye, before the descriptor closes. */
    void (*close)(rn_conn *c);
    /* Optional: free c->layer, once no call uses the connection any more. */
    void (*free)(rn_conn *c);
    /* Optional: the task rn__conn_spawn_background starts runs this. */
    void (*background)(rn_conn *c);
    /* Optional: c leaves its thread (rn_conn_detach; no call is in flight,
     * c->loop is still the old loop): give back every buffer the layer
     * holds from that loop's backend, keeping every byte (received bytes
     * not yet processed go back to the transport with rn__conn_unread).
     * 0, or -ENOMEM with the layer as it was. */
    int (*detach)(rn_conn *c);
    /* Optional: c was attached to this thread (c->loop is the new loop). */
    void (*attach)(rn_conn *c);
};

/* The plain table: bytes straight to and from the socket. */
extern const struct rn__stream_ops rn__plain_ops;

struct rn_conn {
    struct rn__fd f;
    const struct rn__stream_ops *ops; /* &rn__plain_ops, or a stream layer's */
    void *layer;                      /* that layer's state, NULL for plain */
    struct rn__loop *loop;            /* the owning thread's loop */
    int calls;                        /* public calls in progress on this handle */
    struct rn__task *close_waiter;    /* close waits for calls to leave */
    int64_t rd_ms, wr_ms;             /* deadlines per call, 0 = none */
    /* Bytes received but not yet handed to the caller (a failed read_exact
     * gives its bytes back here), above any stream layer. */
    char *kept;
    size_t kept_off, kept_len, kept_cap;
    void *lent;                /* the buffer the last rn_conn_read_lent handed out, or NULL */
    char laddr[64], raddr[64]; /* formatted on first use */
    /* The server that accepted it, while that server lives (its list of
     * open connections, for rn_server_drain: api/drain.c). */
    struct rn_server *srv;
    struct rn_conn *srv_prev, *srv_next;
    /* Bytes taken off the socket on a thread c left (api/move.c), below
     * any stream layer: the transport serves them before the socket, then
     * rx_end once (the stream's last word that came after them: 0 EOF or
     * -errno) when rx_has_end. */
    char *rx;
    size_t rx_off, rx_len, rx_cap;
    int rx_end;
    bool rx_has_end;
    bool detached;      /* rn_conn_detach: c->loop is NULL, only attach or close */
    bool detaching;     /* rn_conn_detach waits for the backend to let go of the fd */
    bool detach_cancel; /* a close came meanwhile: the detach gives way to it */
    bool destroying;    /* rn__conn_destroy has begun */
    bool reset;         /* rn_server_drain reset it: calls fail, its owner's close frees it */
    bool no_goodbye;    /* rn_conn_abort: no stream-layer goodbye (TLS close_notify) */
};

/* What a listener does to each connection it accepts (rn_tls_listen makes
 * them TLS): on_accept runs once the conn exists, before accept returns it
 * (an error closes the conn and is accept's); release runs at server close. */
struct rn__accept_hook {
    int (*on_accept)(rn_conn *c, void *data);
    void (*release)(void *data);
    void *data;
};

struct rn_server {
    struct rn__fd f;
    struct rn__loop *loop;
    int calls;
    struct rn__task *close_waiter;
    struct rn__accept_hook hook; /* on_accept NULL: plain conns */
    char addr[64];
    rn_conn *conns;                /* the connections it accepted that are still open */
    struct rn__task *drain_waiter; /* rn_server_drain, woken as they close */
};

/* Enter/leave a public call on c: checks the thread (-EXDEV) and closing
 * (RN_ECLOSED), and counts the call so close can wait for it. */
int rn__conn_enter(rn_conn *c, const char *what);
void rn__conn_leave(rn_conn *c);

/* The transport: plain-socket transfers with an absolute deadline (0 =
 * none), what the plain table and a stream layer's own I/O use. recv:
 * bytes (> 0), 0 at EOF, or an error. send: some bytes (> 0) or an error.
 * send_all: 0 or an error; *sent (if not NULL) gets the bytes sent either
 * way. */
ssize_t rn__conn_recv(rn_conn *c, void *buf, size_t len, int64_t deadline);
/* rn__conn_recv into a lent buffer (rn__lend_release it): bytes (> 0) at
 * *buf, 0 at EOF, or an error; *buf is NULL unless bytes came. */
ssize_t rn__conn_recv_lent(rn_conn *c, void **buf, int64_t deadline);
ssize_t rn__conn_send(rn_conn *c, const void *buf, size_t len, int64_t deadline);
int rn__conn_send_all(rn_conn *c, const void *buf, size_t len, int64_t deadline, size_t *sent);
/* Bytes that arrived and nobody has read yet: in the socket and those the
 * backend took off it for a read to come. */
size_t rn__conn_pending(rn_conn *c);
/* Put n received bytes back in front of those the transport serves first
 * (c->rx): 0 or -ENOMEM. */
int rn__conn_unread(rn_conn *c, const void *buf, size_t n);
/* Moving connections (api/move.c): close a detached c from any thread
 * (abort: with a reset); and make a close that comes while a detach waits
 * wait for it to give way. */
void rn__conn_close_detached(rn_conn *c, bool abort);
void rn__conn_wait_detach(rn_conn *c);

/* Bytes the conn layer holds above the stream (a failed read_exact's). */
static inline size_t rn__conn_kept(const rn_conn *c)
{
    return c->kept_len;
}
/* Whether close has begun: every blocked call is on its way out. */
static inline bool rn__conn_closing(const rn_conn *c)
{
    return c->f.closing;
}
/* The earlier of the read and the write deadline as an absolute one, for
 * work that both reads and writes (a handshake). */
int64_t rn__conn_io_deadline(const rn_conn *c);
/* Run c->ops->background(c) in a task of its own, counted as a call on c
 * (close waits for it). 0, or -ENOMEM with nothing started. */
int rn__conn_spawn_background(rn_conn *c);

/* Wrap an open, connected descriptor into a new conn (fd_open done). */
int rn__conn_new(struct rn__loop *loop, int fd, bool accepted, rn_conn **out);
/* Close and free c, without the thread/enter checks (internal paths). */
void rn__conn_destroy(rn_conn *c);

/* The server's list of open connections (api/drain.c): an accepted conn
 * joins s's list; destroy takes it out (waking a drain); a server that goes
 * first lets go of them all. */
void rn__server_track(rn_server *s, rn_conn *c);
void rn__server_untrack(rn_conn *c);
void rn__server_forget_all(rn_server *s);

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

/* Listen; hook (may be NULL) is copied into the server. what names the
 * call in errors. */
int rn__listen(rn_server **out, const char *host, int port, const struct rn__accept_hook *hook,
               const char *what);

#endif /* RN_API_H */
