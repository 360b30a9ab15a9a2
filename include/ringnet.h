/* ringnet.h - the one public header of ringnet: blocking-style TCP, TLS and
 * DNS calls run by a per-thread io_uring (or epoll) completion engine.
 *
 * Conventions, stated once and kept everywhere below:
 *  - A call that can fail returns int (or ssize_t): >= 0 is success, a
 *    negative value is an error: -errno for system errors (-ECONNREFUSED,
 *    -ETIMEDOUT, -EPIPE, -EINVAL, ...) or one of the RN_E* codes below.
 *    errno is never the only report, and no call raises a signal (a write to
 *    a peer that is gone is -EPIPE or -ECONNRESET, never SIGPIPE).
 *  - Every failure also leaves a sentence in rn_last_error() (thread-local)
 *    naming what failed and why.
 *  - A blocking call blocks only the calling task; while it waits, the
 *    thread's loop runs the other tasks and batches their I/O. Called outside
 *    any task (plain main()), it runs this thread's loop, spawned tasks
 *    included, until its own operation is done.
 *  - Handles (rn_conn, rn_server) belong to the thread that made them; a call
 *    on one from another thread fails with -EXDEV.
 *  - A thread's loop starts at its first blocking call (or rn_spawn, rn_run,
 *    rn_backend_name, rn_loop_stats). If it cannot start, that call fails
 *    with RN_EBACKEND (io_uring forced where it cannot run), -EINVAL
 *    (RN_BACKEND is not io_uring/epoll/auto), -ERANGE (RN_URING_ENTRIES out
 *    of range), -ENOMEM, or the -errno of a resource error; the loop start
 *    is tried again at the next call.
 *  - -ENOMEM and -EMFILE/-ENFILE can come from any call that allocates or
 *    opens a descriptor; they are listed below only where they matter.
 *
 * The full reference is docs/ (one page per object). */
#ifndef RINGNET_H
#define RINGNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RINGNET_VERSION_MAJOR 0
#define RINGNET_VERSION_MINOR 1
#define RINGNET_VERSION_PATCH 0

/* ---- Errors ------------------------------------------------------------ */

/* Codes with no errno. They are negative, like -errno values, and far from
 * any errno so the two never collide. */
/* a name did not resolve */
#define RN_EDNS (-20001)
/* TLS protocol or handshake failure; STARTTLS over unread plaintext */
#define RN_ETLS (-20002)
/* the peer's certificate was refused (chain, expiry, name) */
#define RN_ETLS_VERIFY (-20003)
/* the stream ended before read_exact got its length */
#define RN_EEOF (-20004)
/* the connection or server was closed, also while blocked in the call */
#define RN_ECLOSED (-20005)
/* the requested I/O backend cannot run here (see rn_backend_reason) */
#define RN_EBACKEND (-20006)
/* the TLS peer ended the TCP stream without close_notify */
#define RN_ETLS_TRUNCATED (-20007)

/* A stable, static message for any code this library returns (RN_E* or
 * -errno). Never NULL. */
const char *rn_strerror(int err);

/* A human-readable detail of the most recent failure on this thread, naming
 * what failed and why ("connect to 127.0.0.1 port 1: Connection refused").
 * A successful call does not clear it: read it right after the failure. The
 * text stays valid until the next failure on this thread. Empty string if
 * this thread has not failed yet. */
const char *rn_last_error(void);

/* ---- Tasks ------------------------------------------------------------- */

typedef void (*rn_task_fn)(void *arg);

/* Run fn(arg) as a task on this thread's loop and return once no task is
 * left on the loop (fn's and every task spawned meanwhile). 0; -EINVAL if
 * fn is NULL; -EBUSY from inside a task (use rn_spawn there); -ENOMEM (no
 * stack for fn); the loop's start error if it cannot start; -EDEADLK if
 * every remaining task waits with nothing in flight that could wake it (a
 * task waiting on itself); those tasks stay parked. */
int rn_run(rn_task_fn fn, void *arg);

/* Start fn(arg) as a new task on this thread's loop. It first runs when the
 * caller next blocks or yields; tasks spawned from plain main() run during
 * main's next blocking call or rn_run, and never if there is none.
 * 0, -EINVAL (fn NULL), -ENOMEM (no stack: address space, memory, or
 * memory mappings ran out; each live task takes two, so vm.max_map_count,
 * 65530 by default, bounds a thread's process to about 32,000 tasks; the
 * message says which), RN_EBACKEND. */
int rn_spawn(rn_task_fn fn, void *arg);

/* Let the other ready tasks run, then continue. Outside a task: runs one
 * pass of the loop without waiting. */
void rn_yield(void);

/* Sleep ms milliseconds (ms <= 0 returns at once after a yield). 0 when the
 * time has passed. */
int rn_sleep(int64_t ms);

/* Stack size of tasks spawned later on this thread (rn_run's included),
 * rounded up to pages. Pages are committed only when touched (mmap), so a
 * large size costs address space, not memory. A guard page below each stack
 * turns an overflow into SIGSEGV instead of silent corruption. Default
 * 256 KiB. 0, or -EINVAL outside 16 KiB .. 1 GiB. */
int rn_set_task_stack_size(size_t bytes);

/* ---- Backend ----------------------------------------------------------- */

/* "io_uring" or "epoll": the backend of this thread's loop (starting the
 * loop if needed; NULL if it cannot start, with rn_last_error saying why). */
const char *rn_backend_name(void);

/* Choose this thread's backend in code, before its loop starts: "io_uring",
 * "epoll" or "auto" (NULL = "auto"). Overrides RN_BACKEND for this thread.
 * 0; -EINVAL for an unknown name; -EBUSY once this thread's loop runs. */
int rn_set_backend(const char *name);

/* Why this thread's loop runs the backend it runs ("io_uring: probe passed",
 * "epoll: io_uring unavailable (io_uring_setup failed: EPERM (Operation not
 * permitted))", ...). Starts the loop if needed; if it cannot start, the
 * sentence saying why. Never NULL. */
const char *rn_backend_reason(void);

/* The loop's own counters, for benchmarks and tuning. */
typedef struct rn_stats {
    uint64_t ops_submitted; /* operations handed to the kernel (SQEs, or syscalls tried on epoll) */
    uint64_t enter_calls;   /* io_uring_enter / epoll_wait calls */
    uint64_t completions;   /* operations completed (by a CQE, or by a syscall on epoll) */
    uint64_t task_switches; /* context switches into tasks */
    uint64_t tasks_spawned;
    uint64_t accept_backoffs; /* accepts delayed by EMFILE/ENFILE */
    uint64_t xwakeups;        /* wake-ups other threads sent this loop: one per batch of posts
                               * (rn_loop_spawn, rn_task_wake, channels) between two passes */
    uint64_t xwakes_by_ring;  /* wake-ups this loop sent other io_uring loops ring to ring
                               * (IORING_OP_MSG_RING, with its next kernel call) instead of
                               * writing their eventfd */
} rn_stats;

/* Copy this thread's loop counters (since its loop started; never reset)
 * into *out, starting the loop if needed. 0, -EINVAL if out is NULL,
 * RN_EBACKEND. */
int rn_loop_stats(rn_stats *out);

/* ---- Connections ------------------------------------------------------- */

typedef struct rn_conn rn_conn;

/* Connect to host:port (host: a name, or a numeric IPv4/IPv6 address, with
 * or without [brackets]). Names are resolved without blocking the loop;
 * every address is tried in turn, IPv4 first, until one connects; if none
 * does, the last address's error is returned. The whole call is bounded by
 * rn_set_connect_timeout. TCP_NODELAY is set. -EINVAL (NULL/empty host,
 * port outside 1..65535), RN_EDNS, -ECONNREFUSED, -ENETUNREACH,
 * -EHOSTUNREACH, -ETIMEDOUT, -EMFILE, -ENOMEM, RN_EBACKEND. */
int rn_tcp_connect(rn_conn **out, const char *host, int port);

/* Connect, then a TLS handshake verified against the system trust store
 * (or SSL_CERT_FILE / SSL_CERT_DIR), SNI = host, certificate checked for
 * host. As rn_tcp_connect plus RN_ETLS and RN_ETLS_VERIFY. */
int rn_tls_connect(rn_conn **out, const char *host, int port);

/* Write up to len bytes; returns the count written (> 0; 0 when len is 0).
 * -EINVAL (NULL buf with len > 0, NULL c), -ETIMEDOUT (write deadline),
 * -EPIPE/-ECONNRESET (peer gone), RN_ECLOSED (closed, also meanwhile),
 * -EXDEV (other thread); on TLS connections also RN_ETLS, RN_ETLS_VERIFY
 * (a deferred server handshake runs here). */
ssize_t rn_conn_write(rn_conn *c, const void *buf, size_t len);

/* Write all len bytes, looping over short writes; 0 once all are written.
 * Errors as rn_conn_write. The deadline bounds the whole call. On failure a
 * prefix may have been sent: rn_conn_write_all_n says how long. */
int rn_conn_write_all(rn_conn *c, const void *buf, size_t len);

/* rn_conn_write_all that also stores in *written (if not NULL) how many
 * bytes were handed to the connection, on success (len) and on failure
 * (the prefix sent before the error), so a caller can resume after a
 * -ETIMEDOUT without losing or repeating a byte. */
int rn_conn_write_all_n(rn_conn *c, const void *buf, size_t len, size_t *written);

/* Read up to max bytes: the count (> 0), or 0 at end of stream. Bytes kept
 * by a failed read_exact come first. -EINVAL (NULL c or buf, max 0: a 0
 * return means end of stream only), -ETIMEDOUT (read deadline),
 * -ECONNRESET, RN_ECLOSED, -EXDEV; on TLS connections also RN_ETLS,
 * RN_ETLS_VERIFY and a truncation error for an end without close_notify. */
ssize_t rn_conn_read(rn_conn *c, void *buf, size_t max);

/* Read without a buffer of your own: waits as rn_conn_read does, then
 * points *data at the bytes received (1 to RN_LENT_MAX of them) in a buffer
 * the library lends, and returns their count; 0 at end of stream and
 * negative errors leave *data NULL. A task waiting here holds no buffer: on
 * io_uring the kernel takes one from a ring shared by the thread's
 * connections only when bytes arrive (on epoll, once the socket is
 * readable), so thousands of idle connections cost no buffer memory. On
 * request/response traffic over io_uring the bytes are lent where a
 * multishot recv put them: one arrival per read, never more than
 * RN_LENT_MAX (a read is short whenever less has arrived). The
 * bytes are yours, read-only, until the next read of any kind on c
 * (rn_conn_read, rn_conn_read_exact, rn_conn_read_lent), rn_conn_release_lent
 * or rn_conn_close; writing them back with rn_conn_write_all before that
 * is fine. Bytes kept by a failed read_exact come first. Deadlines and
 * errors as rn_conn_read (-EINVAL for a NULL data), plus -ENOMEM when no
 * buffer can be had. Works on TLS connections too (the plaintext is lent). */
#define RN_LENT_MAX 16384
ssize_t rn_conn_read_lent(rn_conn *c, const void **data);

/* Give the bytes of the last rn_conn_read_lent back before the next read
 * (say, before a long wait elsewhere). Nothing for NULL, for a connection
 * with nothing lent, or when called from another thread. */
void rn_conn_release_lent(rn_conn *c);

/* Read exactly len bytes; 0 once they are in buf (len 0: 0 at once).
 * RN_EEOF if the stream ends first; -ETIMEDOUT past the read deadline,
 * which bounds the whole call; otherwise the errors of rn_conn_read. On
 * failure the bytes taken so far are kept and the next read returns them
 * first: nothing is lost (except after RN_ECLOSED: the handle is gone, and
 * -ENOMEM: no memory to keep them in). */
int rn_conn_read_exact(rn_conn *c, void *buf, size_t len);

/* Close and free the handle. Calls blocked on c in other tasks return
 * RN_ECLOSED promptly; the handle is freed only after every one of them has
 * returned. On TLS, close_notify is sent first (best effort, at most
 * 200 ms, skipped while a write is in progress). 0 (also for NULL); -EXDEV
 * (other thread; nothing is closed); RN_ECLOSED if a close of c is already
 * in progress in another task (that one frees it). A connection that
 * rn_server_drain reset is freed here as usual (0, nothing sent). */
int rn_conn_close(rn_conn *c);

/* Reset instead of an orderly close, and free the handle as rn_conn_close
 * does: SO_LINGER {1, 0}, then close(2), so the kernel drops unsent bytes
 * and sends RST (the peer's reads and writes fail with ECONNRESET). Never
 * blocks on a linger. Calls blocked on c in other tasks return RN_ECLOSED
 * first, as with rn_conn_close. On TLS no close_notify is sent. 0 (also for
 * NULL); -EXDEV (other thread; nothing is done); RN_ECLOSED if a close or
 * an abort of c is already in progress. */
int rn_conn_abort(rn_conn *c);

/* TCP_NODELAY on (the default for every connection: small writes go out at
 * once) or off (Nagle's algorithm coalesces them). 0; -EINVAL (NULL),
 * -EXDEV, RN_ECLOSED, or setsockopt's -errno. */
int rn_conn_set_nodelay(rn_conn *c, bool on);

/* TCP keepalive: after idle_s seconds without traffic, a probe every
 * interval_s seconds; after count unanswered probes the kernel resets the
 * connection (blocked and later calls fail with -ETIMEDOUT). idle_s 0 turns
 * keepalive off (interval_s and count are not used). Ranges (Linux's):
 * idle_s 1..32767, interval_s 1..32767, count 1..127; off by default.
 * 0; -EINVAL with the reason for a NULL c, a negative or out-of-range
 * value; -EXDEV, RN_ECLOSED, or setsockopt's -errno. */
int rn_conn_set_keepalive(rn_conn *c, int idle_s, int interval_s, int count);

/* Shut down the sending side (half-close): the peer reads end of stream,
 * reads here keep working. On TLS, close_notify goes first (under the write
 * deadline; a pending server handshake runs here). 0, -EINVAL, -EXDEV,
 * RN_ECLOSED, -ENOTCONN; on TLS also -ETIMEDOUT, RN_ETLS, RN_ETLS_VERIFY,
 * -EPIPE, -ECONNRESET. */
int rn_conn_shutdown_write(rn_conn *c);

/* "127.0.0.1:5432", "[::1]:5432"; "" for NULL. Valid until c is closed. */
const char *rn_conn_remote_addr(const rn_conn *c);
const char *rn_conn_local_addr(const rn_conn *c);
bool rn_conn_is_tls(const rn_conn *c);

/* Deadlines, in ms from the start of each later blocking call to its end
 * as a whole; 0 removes the deadline; negative is treated as 0. A call past
 * its deadline fails with -ETIMEDOUT, loses nothing, and leaves the
 * connection usable. A deadline set while a call is blocked applies to the
 * next call, not to the one in progress. Setting is a plain store: do it
 * from the connection's own thread. NULL c is ignored. */
void rn_conn_set_deadline(rn_conn *c, int64_t ms); /* reads and writes */
void rn_conn_set_read_deadline(rn_conn *c, int64_t ms);
void rn_conn_set_write_deadline(rn_conn *c, int64_t ms);

/* STARTTLS, client side: TLS handshake over this connection, verified as in
 * rn_tls_connect. RN_ETLS if unread plaintext is held (never taken as
 * protected), RN_ETLS_VERIFY, -ETIMEDOUT. */
int rn_conn_upgrade_to_tls(rn_conn *c, const char *host);

/* This thread's bound on every later rn_*_connect* call as a whole (name
 * resolution, every address tried, the TLS handshake). 0 = no bound;
 * default 30000 ms; negative is treated as 0. */
void rn_set_connect_timeout(int64_t ms);

/* ---- Servers ----------------------------------------------------------- */

typedef struct rn_server rn_server;

/* Listen on host:port ("0.0.0.0", "::", "127.0.0.1", a name: its first
 * address, IPv4 first; NULL or "" = all IPv4 addresses). "::" takes the
 * system's IPV6_V6ONLY default (dual-stack on Linux). Port 0 picks a free
 * port (see rn_server_addr). SO_REUSEADDR is set, SO_REUSEPORT is not.
 * -EINVAL (port outside 0..65535, NULL out), -EADDRINUSE, -EACCES,
 * -EADDRNOTAVAIL, RN_EDNS, -ETIMEDOUT (a name's lookup, bounded by
 * rn_set_connect_timeout), -EMFILE, -ENOMEM. */
int rn_tcp_listen(rn_server **out, const char *host, int port);

/* As rn_tcp_listen with SO_REUSEPORT, so one listener per thread can share a
 * port (multi-core servers). */
int rn_tcp_listen_reuseport(rn_server **out, const char *host, int port);

/* Wait for the next client. 0 and *out set; RN_ECLOSED if the server is
 * closed (also while blocked here); -EXDEV; -EINVAL. Out of descriptors
 * (EMFILE/ENFILE) never fails nor spins: accept backs off (1 ms doubling to
 * 500 ms) and goes on once a descriptor is free; clients wait in the
 * kernel's backlog meanwhile. A client gone before it was taken
 * (ECONNABORTED) is skipped, not reported. No deadline applies. -ENOMEM if
 * the new connection cannot be set up (the client is then dropped). */
int rn_server_accept(rn_server *s, rn_conn **out);

/* "0.0.0.0:9000", "[::]:9000": the real port when 0 was asked. Valid until
 * the server is closed; "" for NULL. */
const char *rn_server_addr(const rn_server *s);

/* Stop listening and free the server; a blocked accept returns RN_ECLOSED
 * and the handle is freed once it has. 0 (also for NULL), -EXDEV, or
 * RN_ECLOSED if a close is already in progress (or a drain). Connections
 * accepted from it stay open: closing them is their owners' business. */
int rn_server_close(rn_server *s);

/* Graceful stop. No new connection is accepted (the listener closes; a
 * blocked rn_server_accept returns RN_ECLOSED); the connections accepted
 * from s and still open get until ms (from now) to finish; then each one
 * still open is reset (RST, as rn_conn_abort): calls blocked on it, and
 * later ones, return RN_ECLOSED, and its owner's rn_conn_close frees it as
 * usual. Returns once the owners have closed every one, with s closed and
 * freed as by rn_server_close: the number of connections that had to be
 * reset (0 when all finished in time). ms 0 resets at once. Runs the loop
 * meanwhile (call it from a task, or from outside with the owners in
 * tasks). -EINVAL (NULL s, ms < 0), -EXDEV (other thread), RN_ECLOSED (a
 * close or drain of s is in progress); on these s is untouched. */
int rn_server_drain(rn_server *s, int64_t ms);

/* ---- TLS configuration -------------------------------------------------- */

/* A shared TLS configuration (docs/tls.md). Built by one thread, then
 * shared by any number of connections and threads; frozen by its first use
 * (a setter after that is -EBUSY); reference-counted: rn_tls_config_free
 * drops the caller's reference, connections and TLS listeners hold their
 * own. Secure defaults always: TLS 1.2 minimum, AEAD suites with forward
 * secrecy only, X25519 first, clients always verify chain and name. */
typedef struct rn_tls_config rn_tls_config;

/* Client config trusting the system store (or SSL_CERT_FILE /
 * SSL_CERT_DIR), loaded once, at first use. NULL only if wolfSSL cannot
 * start. */
rn_tls_config *rn_tls_client_config(void);
/* Server config from a PEM chain (leaf first) and PEM key; NULL with the
 * reason (which file, what is wrong) in rn_last_error. */
rn_tls_config *rn_tls_server_config(const char *cert_pem, const char *key_pem);
/* Trust exactly the CAs in pem_file (replaces the system store). 0,
 * -ENOENT/-EACCES, RN_ETLS (no certificate in it: the config then trusts
 * nothing), -EINVAL, -EBUSY. */
int rn_tls_config_set_ca_file(rn_tls_config *cfg, const char *pem_file);
/* The certificate a client presents (mTLS), or a server's. 0, -ENOENT,
 * -EACCES, RN_ETLS, -EINVAL, -EBUSY. */
int rn_tls_config_set_cert(rn_tls_config *cfg, const char *cert_pem, const char *key_pem);
/* mTLS: clients must present a certificate signed by a CA in ca_pem_file.
 * As set_ca_file; -EINVAL on a client config. */
int rn_tls_config_require_client_cert(rn_tls_config *server_cfg, const char *ca_pem_file);
/* ALPN protocols in order of preference, "h2,http/1.1"; NULL or "" for
 * none. 0, -EINVAL (an empty or > 255-byte name, a list over 1024 bytes or
 * over 257 names), -EBUSY. */
int rn_tls_config_set_alpn(rn_tls_config *cfg, const char *protocols);
/* Another certificate chain (PEM, leaf first) and its key for a server
 * config: a client whose SNI matches one of the chain's names (its
 * subjectAltName dNSNames, or its subject CN when it has none; exact, any
 * case, or a one-label wildcard "*.example.com", which covers
 * a.example.com but neither example.com nor a.b.example.com) gets it; the
 * chains are tried in the order given, rn_tls_server_config's first, and a
 * client whose SNI matches none (or who sends none) gets the first.
 * Checked at the call: 0, -ENOENT/-EACCES (a file cannot be read),
 * RN_ETLS (not a PEM chain or key, or the key is not the certificate's),
 * -EINVAL (NULL, a client config, over 1024 names), -EBUSY (in use). */
int rn_tls_config_add_cert(rn_tls_config *server_cfg, const char *cert_pem, const char *key_pem);
/* Client session resumption: a client config keeps the last session of
 * each host and port it connected to (TLS 1.3 tickets, TLS 1.2 tickets and
 * session ids), at most entries of them, the least recently used going
 * first, and offers it on the next connection there. On by default with
 * 256 entries; shared by every thread using the config (a mutex).
 * entries == 0 turns it off. A TLS 1.3 ticket arrives after the handshake
 * and is kept when the connection reads. 0, -EINVAL (NULL, a server
 * config, over 1048576 entries), -EBUSY (in use). */
int rn_tls_config_set_session_cache(rn_tls_config *cfg, size_t entries);
void rn_tls_config_free(rn_tls_config *cfg);

/* rn_tls_connect with cfg (a client config; NULL = the default). */
int rn_tls_connect_with(rn_conn **out, const char *host, int port, const rn_tls_config *cfg);
/* rn_conn_upgrade_to_tls with cfg. Also refused (RN_ETLS) when bytes
 * arrived after the server's go-ahead: they can only be injected. After a
 * handshake failure the connection stays TLS and failed, never plaintext;
 * a refusal before the handshake (held plaintext, NULL host) leaves it
 * plain and unchanged. -EINVAL, RN_ECLOSED, -EXDEV as other calls. */
int rn_conn_upgrade_to_tls_with(rn_conn *c, const char *host, const rn_tls_config *cfg);
/* Listen as rn_tcp_listen; accepted connections are TLS, their handshake
 * deferred to the first read/write or rn_conn_handshake (never inside
 * accept). Holds a reference on server_cfg until rn_server_close. */
int rn_tls_listen(rn_server **out, const char *host, int port, const rn_tls_config *server_cfg);
/* Certificate rotation without a restart: connections s accepts whose
 * handshake begins after this call use cfg (its certificates, its
 * client-CA list for mTLS, its ticket keys); connections whose handshake
 * began already keep the config they had. s holds a reference on cfg (the
 * caller may free its own) and drops the old config's. Safe while tasks
 * accept and handshake on s, and from any thread, but not during
 * rn_server_close(s). Sessions resumed under the old config's tickets do
 * not carry over: a new config has new ticket keys. 0; -EINVAL (NULL, a
 * server not made by rn_tls_listen, a client config); RN_ETLS as
 * rn_tls_listen. */
int rn_server_set_tls_config(rn_server *s, const rn_tls_config *cfg);
/* STARTTLS, server side: a server handshake now, under c's deadlines.
 * RN_ETLS if unread plaintext is held (CVE-2011-0411), RN_ETLS_VERIFY
 * (mTLS refusal), -ETIMEDOUT, -EINVAL. */
int rn_conn_accept_tls(rn_conn *c, const rn_tls_config *server_cfg);
/* The ALPN protocol negotiated, or NULL (none, plain, handshake pending). */
const char *rn_conn_alpn(const rn_conn *c);
/* Finish the TLS handshake now under c's deadlines (the earlier of read
 * and write); 0 at once on a plain connection or a finished handshake. A
 * timed-out handshake resumes at the next call. RN_ETLS, RN_ETLS_VERIFY,
 * -ETIMEDOUT, RN_ECLOSED. */
int rn_conn_handshake(rn_conn *c);
/* Whether this TLS connection's handshake resumed a session (a client
 * offering a cached one, a server accepting a ticket); false for plain
 * connections and before the handshake ends. */
bool rn_conn_tls_resumed(const rn_conn *c);

/* ---- Many cores, many tasks --------------------------------------------- */

/* A loop still belongs to one thread and a handle to the thread that made
 * it (-EXDEV elsewhere); the calls below are how tasks and work cross
 * threads. See docs/threads.md. */

/* Thread-per-core: n threads (0 = one per CPU of this process's affinity
 * mask), thread i pinned to the i-th CPU of that mask (round robin when n
 * is larger), each running fn(arg) as the first task of its own loop with
 * the caller's rn_set_backend choice and task stack size. Returns once
 * every one of those loops has no task left (tasks other threads spawned
 * onto them included; a spawn after that gets RN_ECLOSED). 0, or the first
 * error of any thread (its sentence in rn_last_error, with the thread's
 * index): a loop that cannot start, -EDEADLK as rn_run, a failed pin or
 * pthread_create (-EAGAIN). -EINVAL for n < 0, n > 4096 or fn NULL;
 * -EBUSY from inside a task. */
int rn_run_threads(int n, rn_task_fn fn, void *arg);
/* 0..n-1 on a thread of rn_run_threads, -1 on any other thread. */
int rn_thread_index(void);

/* A loop seen from other threads. rn_loop_self takes a reference to this
 * thread's loop (starting it, and an eventfd other threads wake it with):
 * NULL, with rn_last_error, if the loop or the eventfd cannot be made. The
 * reference stays valid after the thread ends, until rn_loop_release
 * (NULL is ignored); release each reference exactly once. */
typedef struct rn_loop rn_loop;
rn_loop *rn_loop_self(void);
void rn_loop_release(rn_loop *l);
/* From any thread: start fn(arg) as a task on l. On l's own thread it is
 * rn_spawn; from another it is queued (its stack mapped by the caller) and
 * l's thread is woken if it sleeps in the kernel; many spawns between two
 * passes of that loop cost it one wake-up. The task runs when l's loop next
 * runs (a thread that never blocks again never runs it, as with rn_spawn
 * from main). 0; -EINVAL (l or fn NULL); -ENOMEM (no stack); RN_ECLOSED
 * once l's thread has ended (or its rn_run_threads loop has finished). */
int rn_loop_spawn(rn_loop *l, rn_task_fn fn, void *arg);

/* Moving a connection to another thread (an acceptor handing connections
 * to workers). See docs/threads.md, "Moving a connection".
 *
 * rn_conn_detach, on the thread that owns c, with no call in flight on it
 * (another task's read, or the TLS layer's background flush of a
 * key-update reply): c then belongs to no thread. Every byte received and
 * not yet handed out stays with c: those a failed read_exact kept, those
 * the backend had read ahead (io_uring's stream reads: its multishot recv
 * is cancelled and reaped first, which may park the caller briefly), the
 * TLS ciphertext not yet decrypted, and the end of stream or reset that
 * came after them. Unsent TLS output, the deadlines, the TLS session and
 * the addresses stay too. A lent read (rn_conn_read_lent) ends: its bytes
 * were handed out. A connection a server accepted leaves that server's
 * list: rn_server_drain no longer waits for it or resets it. 0; -EINVAL (c
 * NULL); -EXDEV (another thread's, or detached already); -EBUSY (a call is
 * in flight, or another task is detaching it); RN_ECLOSED (closed, being
 * closed, or reset by a drain; also when a close comes while the detach
 * waits for the backend: the close wins); -ENOMEM (c stays attached and
 * whole). On a detached c every call but rn_conn_attach, rn_conn_close and
 * rn_conn_abort fails with -EXDEV (the deadline setters and address
 * getters, which return nothing or text, still work: one thread at a time).
 *
 * rn_conn_attach, on the receiving thread (any thread, the same one
 * included; hand c over through something that orders memory, such as an
 * rn_chan): c is this thread's from then on, with all of the above; its
 * first reads serve the bytes it brought, in order, before the socket's.
 * 0; -EINVAL (c NULL, or not detached); the loop's error if this thread's
 * loop cannot start (RN_EBACKEND, ...); the backend's error if it cannot
 * take the descriptor (c stays detached).
 *
 * rn_conn_close / rn_conn_abort of a detached c work on any thread, one
 * that never used ringnet included: the descriptor closes (abort: with a
 * reset) and c is freed; a TLS connection sends no close_notify then
 * (attach it first for an orderly TLS close). */
int rn_conn_detach(rn_conn *c);
int rn_conn_attach(rn_conn *c);

/* Channels: a bounded queue of pointers between tasks on any threads
 * (many senders, many receivers, FIFO). ms < 0 waits as long as needed,
 * ms == 0 never waits (-EAGAIN: full, or empty), ms > 0 gives up with
 * -ETIMEDOUT. After rn_chan_close, send is RN_ECLOSED and recv returns
 * what is still queued, then RN_ECLOSED; every waiter wakes (a blocked
 * send with RN_ECLOSED: its item was not queued). A waiter on the same
 * thread as the call that frees it is handed over without a kernel call;
 * one on another thread is woken through its loop's inbox. Outside a task
 * a call that waits runs this thread's loop, like every blocking call.
 * -EINVAL for a NULL channel (or item pointer for recv). */
typedef struct rn_chan rn_chan;
/* capacity >= 1 (up to 2^32): NULL + rn_last_error (-EINVAL, -ENOMEM). */
rn_chan *rn_chan_new(size_t capacity);
int rn_chan_send(rn_chan *ch, void *item, int64_t ms);
int rn_chan_recv(rn_chan *ch, void **item, int64_t ms);
/* Idempotent; NULL is ignored. */
void rn_chan_close(rn_chan *ch);
/* Close and free; no task may still wait on it (one that does gets
 * RN_ECLOSED and the memory goes when it leaves). NULL is ignored. */
void rn_chan_free(rn_chan *ch);

/* Park and wake: what a runtime builds its own primitives (futures,
 * mutexes) on. Each task has one wake token: rn_task_wake sets it (a wake
 * that comes before the park makes the park return at once; several
 * wakes before one park count as one), a park takes it. */
typedef struct rn_task rn_task;
/* The running task; NULL outside a task (or, with rn_last_error, if the
 * loop's cross-thread eventfd cannot be made). */
rn_task *rn_task_self(void);
/* 0 once woken (the token taken); -ETIMEDOUT after ms > 0; ms < 0 no
 * bound; ms == 0: 0 if a wake was pending, else -ETIMEDOUT at once. A wake
 * that races the timeout is never lost: this park returns 0, or it returns
 * -ETIMEDOUT and the next park takes the token. -EINVAL outside a task. */
int rn_task_park(int64_t ms);
/* From any thread. t must not have finished, and must not finish before
 * this call returns (a runtime wakes a task it knows is parked, or about to
 * park, on its own primitive). On t's thread it goes straight to the run
 * queue; from another thread through t's loop's inbox. NULL is ignored. */
void rn_task_wake(rn_task *t);

/* Blocking work (a file, a CPU-heavy step, a library that blocks): fn(arg)
 * runs on a worker thread of one process-wide pool while the calling task
 * waits, and the loop goes on serving its other tasks; outside a task the
 * call runs the loop until fn is done, like every blocking call. The pool
 * starts empty, adds a worker when a job finds none idle, up to max(4,
 * 4 x the CPUs of the affinity mask) (at most 256; later jobs queue, first
 * come first served), and a worker idle for 10 s exits. Workers block
 * every signal. fn runs on another thread: it must not use this thread's
 * handles (connections, servers, channels are fine as on any thread). No
 * deadline: the call returns once fn has. 0 once fn(arg) has returned;
 * -EINVAL (fn NULL); -ENOMEM (no memory for the job, or no worker thread
 * could be started and none exists); the loop's start error, or an error
 * making its cross-thread eventfd (-EMFILE). */
int rn_offload(rn_task_fn fn, void *arg);

/* Embedding this thread's loop in a host event loop (a runtime's, a GUI's,
 * a plain poll(2)). The host watches rn_loop_fd for POLLIN, sleeps at most
 * rn_loop_timeout ms, and calls rn_loop_run_once(0) when either says so.
 * See docs/threads.md. */
/* A descriptor that turns readable whenever the loop has work: a
 * completion, a task another thread spawned or woke (the call makes the
 * loop reachable from other threads, as rn_loop_self does). Expired
 * deadlines are rn_loop_timeout's to report. io_uring: the ring's own
 * descriptor (an eventfd registered with the ring where the kernel does
 * not make a DEFER_TASKRUN ring readable); epoll: the epoll descriptor. It
 * belongs to the loop: never read, close or add it to this loop itself;
 * watch it for POLLIN only. The same value for the loop's life. >= 0; the
 * loop's start error; an error making the cross-thread eventfd. */
int rn_loop_fd(void);
/* Outside any task: take tasks spawned from other threads, run every ready
 * task, wait in the kernel for at most ms (0: not at all; < 0: until
 * something happens, but not when nothing could: no task waits on I/O, a
 * deadline or another thread), fire the deadlines that came, and run the
 * tasks that became ready, then submit what they asked for. Returns the
 * number of tasks left (0: the loop has nothing to do); -EBUSY inside a
 * task or a rn_run (nested); the loop's start error (RN_EBACKEND, ...). */
int rn_loop_run_once(int64_t ms);
/* How long the host may sleep before calling rn_loop_run_once: 0 when a
 * task is ready or another thread posted to the loop; the ms until the
 * earliest deadline (rounded up: never early); -1 when no deadline is
 * due (rn_loop_fd says when to run). -1 also when the loop cannot start
 * (rn_loop_run_once then says why). */
int64_t rn_loop_timeout(void);

/* ---- DNS --------------------------------------------------------------- */

/* Resolve host to its first IPv4 address, else its first IPv6 address, as
 * text into out. Honours /etc/hosts (getaddrinfo on a worker of the
 * rn_offload pool; the loop keeps running). Bounded by
 * rn_set_connect_timeout (a lookup that gives up leaves the worker to
 * finish and free it). RN_EDNS (does not resolve), -ENOSPC (out too
 * small), -EINVAL, -ETIMEDOUT; -EAGAIN (no worker could be started),
 * -EMFILE (the loop's cross-thread eventfd), -ENOMEM. */
int rn_resolve(const char *host, char *out, size_t outlen);

#ifdef __cplusplus
}
#endif

#endif /* RINGNET_H */
