/* tls.h - what the files of tls/ share: the config object behind
 * rn_tls_config and the per-connection session (struct rn__tls) that runs
 * wolfSSL over memory buffers. Private to tls/: the connection sees TLS
 * only as the stream operations rn__tls_ops, and tls/ reaches the socket
 * only through the transport helpers of api.h. */
#ifndef RN_TLS_H
#define RN_TLS_H

#include "api.h"

#include <pthread.h>
#include <stdatomic.h>

/* wolfSSL's headers must see the options its library was built with first,
 * or the structures they declare do not match the library's. */
/* clang-format off */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
/* clang-format on */

/* A shared configuration: one WOLFSSL_CTX and what was said about it.
 * Mutable through the rn_tls_config_set_* calls until the first connection
 * uses it ("frozen"), read-only afterwards, so any number of threads may use
 * it at once. Freed when the last reference goes: the caller's (dropped by
 * rn_tls_config_free), one per session and one per TLS listener. */
struct rn__tls;

/* One certificate chain of a server config and the names it answers to
 * (sni.c): its subjectAltName dNSNames, or its subject CN if it has none,
 * lower case; "*.example.com" is a one-label wildcard. */
struct rn__tls_cert {
    WOLFSSL_CTX *ctx; /* the first chain's is the config's own ctx */
    char **names;
    size_t n_names;
};

/* A session ticket key of a server config (resume.c). */
struct rn__tls_ticket_key {
    unsigned char name[16]; /* random: which key a ticket names */
    unsigned char key[32];  /* ChaCha20-Poly1305 */
    int64_t born_ns;        /* CLOCK_MONOTONIC; 0 = no key */
};

/* A client config's session cache (resume.c), behind its own mutex. */
struct rn__tls_cache;

struct rn_tls_config {
    atomic_int refs;
    atomic_bool frozen;
    pthread_mutex_t freeze_mu; /* serialises the one-time work of freezing */
    bool server;
    WOLFSSL_CTX *ctx;
    bool ca_set;  /* set_ca_file / require_client_cert gave the anchors */
    int load_err; /* freezing failed (no trust store): every use fails so */
    char load_msg[320];
    char trust[200]; /* where the trust anchors came from, for messages */
    char *alpn;      /* "h2,http/1.1", or NULL */
    /* Server: the chains, certs[0] the first (rn_tls_server_config's). */
    struct rn__tls_cert *certs;
    size_t n_certs;
    char *client_ca; /* mTLS: the CA file every chain's ctx verifies clients with */
    /* Server: the ticket keys, current and previous, shared by every
     * thread and every chain of the config. */
    pthread_mutex_t ticket_mu;
    struct rn__tls_ticket_key tk_cur, tk_prev;
    bool tk_test_clock; /* made under RN_TEST_TICKET_CLOCK_MS (resume.c; tests only) */
    /* Client: sessions to resume, per host and port; NULL = off. */
    size_t cache_entries;
    struct rn__tls_cache *cache;
};

/* A TLS listener's current config (tls.c): rn_server_set_tls_config
 * replaces it; each session it accepted holds a reference until its
 * handshake starts, and then takes the config current at that moment. */
struct rn__tls_listener {
    atomic_int refs;
    pthread_mutex_t mu;
    rn_tls_config *cfg; /* a reference */
};
void rn__tls_listener_unref(struct rn__tls_listener *l);

/* config.c: a wolfSSL context with ringnet's defaults (versions, suites,
 * groups, I/O and verify callbacks); NULL with *failed saying what. */
WOLFSSL_CTX *rn__tls_ctx_new(bool server, const char **failed);
/* Load a PEM chain and its key into ctx (checked to match). 0 or an error
 * with its sentence (what names the call). */
int rn__tls_ctx_use_cert(WOLFSSL_CTX *ctx, const char *cert_pem, const char *key_pem,
                         const char *what);

/* keycheck.c: whether the EC key in key_pem is the one of the leaf in
 * cert_pem: 1, 0 (it is not), -1 (not an EC pair, or unreadable: no
 * verdict; wolfSSL's own check stands). */
int rn__tls_ec_key_check(const char *cert_pem, const char *key_pem);

/* sni.c: (re)read the names of chain i from cert_pem (server configs);
 * install the SNI callback; bring every chain's ctx in line with the
 * first's client verification when the config freezes; free the chains. */
int rn__tls_cert_names(rn_tls_config *cfg, size_t i, const char *cert_pem, const char *what);
int rn__tls_sni_freeze(rn_tls_config *cfg);
void rn__tls_certs_free(rn_tls_config *cfg);

/* resume.c: set up tickets (server) or the session cache (client) on a
 * new config; at freeze, the client cache; in a new client session, the
 * cached session for its host and port; free. */
void rn__tls_resume_init(rn_tls_config *cfg, WOLFSSL_CTX *ctx);
int rn__tls_resume_freeze(rn_tls_config *cfg);
void rn__tls_resume_offer(struct rn__tls *t);
void rn__tls_resume_free(rn_tls_config *cfg);

/* Freeze cfg for use by a connection (loading the system trust store into a
 * client config that was given no CA file, once). 0, or an error with its
 * detail in rn_last_error. */
int rn__tls_config_use(rn_tls_config *cfg, const char *what);
void rn__tls_config_ref(rn_tls_config *cfg);
void rn__tls_config_unref(rn_tls_config *cfg);
/* The process-wide client config behind rn_tls_connect: the system trust
 * store as SSL_CERT_FILE / SSL_CERT_DIR say now (rebuilt when they change).
 * Returned with a reference the caller drops; NULL with rn_last_error set. */
rn_tls_config *rn__tls_default_client(void);

/* wolfSSL's words for err, in buf. */
const char *rn__tls_errstr(int err, char *buf, size_t len);

/* Mark this thread as one that ran wolfSSL, so that its per-thread caches
 * are freed when it exits. */
void rn__tls_thread_used(void);

/* A growable byte buffer: bytes [off, off + len) of p are live. */
struct rn__tls_buf {
    char *p;
    size_t off, len, cap;
};

/* A task waiting for its turn on one side of a session. */
struct rn__tls_waiter {
    struct rn__task *task;
    struct rn__tls_waiter *next;
};

/* What a failed session says about itself (allocated at the first failure
 * or refusal: an idle session that never failed carries none of it). */
struct rn__tls_diag {
    char fatal_msg[400];
    /* The first refusal the verify callback saw, for the message. */
    char verify_subject[160], verify_issuer[160], verify_not_after[40];
    char verify_names[200]; /* the leaf's SANs (or CN) when it was refused at depth 0 */
};

/* The longest host name a client session takes (DNS: 253, and room). */
#define RN_TLS_MAX_HOST 255

/* One TLS session over one connection. wolfSSL never sees the socket: its
 * receive callback takes ciphertext from `in`, its send callback appends to
 * `q`. Tasks take turns per direction (rd_busy: one task receives and runs
 * wolfSSL_read; wr_busy: one task sends), and a wolfSSL call never parks,
 * so wolfSSL is never entered twice at once. */
struct rn__tls {
    rn_conn *c;
    rn_tls_config *cfg; /* a reference, dropped when the session is freed */
    WOLFSSL *ssl;
    bool server;
    bool hs_done; /* the handshake finished */
    int fatal;    /* sticky failure (RN_ETLS, RN_ETLS_VERIFY): every later call returns it */
    struct rn__tls_diag *diag; /* NULL until something failed (rn__tls_diag) */
    bool in_eof;               /* the peer ended the TCP stream */
    bool got_close_notify;     /* ... after its close_notify: a clean end */
    bool sent_close_notify;
    bool rd_busy, wr_busy; /* a task owns the inbound / outbound side */
    bool flusher;          /* a background flush task is scheduled */
    struct rn__tls_waiter *waiters;
    struct rn__tls_buf in; /* received ciphertext not yet given to wolfSSL (fixed size) */
    struct rn__tls_buf q;  /* ciphertext wolfSSL produced, not yet handed to the kernel */
    struct rn__tls_buf tx; /* ciphertext a send is working through; never moves while it does */
    /* The first refusal the verify callback saw (its words: diag). */
    int verify_err, verify_depth;
    bool host_is_ip;
    int port;                          /* client: the peer's port (the session cache's key) */
    bool resumed;                      /* the handshake resumed a session */
    struct rn__tls_listener *listener; /* server: until the handshake begins */
    char alpn[64];                     /* negotiated protocol, "" if none */
    char host[]; /* client: the name asked for (SNI, name check); server: "" */
};

/* t's diagnostics, allocated on first use; NULL when out of memory. */
struct rn__tls_diag *rn__tls_diag(struct rn__tls *t);

/* How long close waits to hand close_notify (or a handshake's alert) to
 * the kernel. */
#define CLOSE_NOTIFY_MS 200

/* The stream operations of a TLS connection (io.c). */
extern const struct rn__stream_ops rn__tls_ops;
/* Its detach and attach entries (move.c): a connection changes threads. */
int rn__tls_detach(rn_conn *c);
void rn__tls_attach(rn_conn *c);

/* The session of a TLS connection; NULL if c is not one. */
static inline struct rn__tls *rn__tls_of(const rn_conn *c)
{
    return c->ops == &rn__tls_ops ? c->layer : NULL;
}

/* Make a session for c with cfg (frozen already) and make it c's layer
 * (c->ops = &rn__tls_ops).
 * host: the name to verify (client); NULL for servers. */
int rn__tls_session_attach(rn_conn *c, rn_tls_config *cfg, const char *host, bool server);
/* Run the handshake to its end under deadline (0 on success, sticky on
 * failure, resumable after -ETIMEDOUT). */
int rn__tls_handshake(rn_conn *c, int64_t deadline, const char *what);

/* Free c's session and give c back the plain operations (the free entry). */
void rn__tls_free(rn_conn *c);

/* session.c: errors. The peer's name for messages. */
const char *rn__tls_peer(struct rn__tls *t);
/* Make the session fail for good with code and this sentence. */
int rn__tls_fail(struct rn__tls *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The sticky failure again, as this call's error. */
int rn__tls_sticky(struct rn__tls *t);
/* A wolfSSL call failed with ret: classify, describe, make it sticky. */
int rn__tls_wolf_fail(struct rn__tls *t, int ret, const char *what);

/* io.c: turns and ciphertext. Wait until *busy is free and take it: park
 * on the session's waiter list until the holder gives the turn back, or
 * until the deadline (a timed park: a holder blocked without a deadline
 * cannot make this call late). 0, -ETIMEDOUT or RN_ECLOSED. */
int rn__tls_take(struct rn__tls *t, bool *busy, int64_t deadline);
void rn__tls_give(struct rn__tls *t, bool *busy);
/* Hand everything queued to the kernel (wr_busy held). On failure what is
 * unsent stays, in order, for the next flush. */
int rn__tls_flush_locked(struct rn__tls *t, int64_t deadline);
/* Receive more ciphertext into `in` (rd_busy held; called only when wolfSSL
 * has taken all of it, so `in` holds no buffer). The bytes land in a lent
 * buffer, which the receive callback gives back once wolfSSL has taken
 * them all: a session waiting for its peer holds no inbound buffer. Bytes
 * (> 0), 0 at end of stream, or an error. */
ssize_t rn__tls_fill_locked(struct rn__tls *t, int64_t deadline);
/* Free an outbound buffer (from the loop's cache or malloc). */
void rn__tls_outbuf_free(struct rn__tls *t, struct rn__tls_buf *b);

/* wolfSSL's I/O callbacks (session.c), installed on every context: recv
 * takes from the session's inbound buffer, send appends to its queue. */
int rn__tls_cb_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx);
int rn__tls_cb_send(WOLFSSL *ssl, char *buf, int sz, void *ctx);

/* verify.c: the sentence for a refused certificate, from what the verify
 * callback recorded and wolfSSL's error. */
void rn__tls_verify_message(struct rn__tls *t, int wolf_err, char *out, size_t outlen);
/* Whether a wolfSSL error means the peer's certificate was refused. */
bool rn__tls_is_verify_error(struct rn__tls *t, int wolf_err);
/* The verify callback installed on every context that verifies. */
int rn__tls_verify_cb(int ok, WOLFSSL_X509_STORE_CTX *store);

#endif /* RN_TLS_H */
