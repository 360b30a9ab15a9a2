/* fuzz_common.c - see fuzz_common.h. */
#include "fuzz_common.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RN_FUZZ_DEFAULT_CERTS
#define RN_FUZZ_DEFAULT_CERTS "."
#endif

struct rn_fuzz_outcome rn_fuzz_last;

void rn_fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: check failed: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

/* ---- a repeatable /dev/urandom for wolfSSL ---------------------------------------- */

static atomic_ulong rng_opens;  /* since the last reset: picks the stream */
static atomic_ulong rng_total;  /* ever, for the report */

/* wolfSSL keeps process-wide state made at first use (ECDHE on the NIST
 * curves draws from a generator of its own): each input brings the library
 * up itself and takes it down to nothing afterwards (rn_fuzz_wolf_down),
 * so that every input finds it as the first one did. Up and down inside
 * one input also keep libFuzzer's malloc/free count per input honest: a
 * leak is reported against the input that made it. No wolfSSL object
 * lives between inputs (the configs are made per input). */
void rn_fuzz_rng_reset(void)
{
    atomic_store(&rng_opens, 0);
    wolfSSL_Init();
}

void rn_fuzz_wolf_down(void)
{
    /* ringnet's own wolfSSL_Init (once, at its first config) is the
     * reference the first call gives back; after that each input's. */
    wolfSSL_Cleanup();
}

unsigned long rn_fuzz_rng_opens(void)
{
    return atomic_load(&rng_total);
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* A memfd holding 4 KiB of the stream for this open (wolfSSL reads its
 * seed and nonce, then closes it). */
static int fake_urandom(int flags)
{
    int fd = (int)syscall(SYS_memfd_create, "rn-fuzz-urandom",
                          (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0u);
    if (fd < 0)
        return -1;
    uint64_t s = 0x726e2d66757a7aULL + atomic_fetch_add(&rng_opens, 1) * 0x100000001b3ULL;
    atomic_fetch_add(&rng_total, 1);
    uint64_t block[512];
    for (size_t i = 0; i < sizeof block / sizeof block[0]; i++)
        block[i] = splitmix64(&s);
    if (write(fd, block, sizeof block) != (ssize_t)sizeof block || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Replaces libc's open for this program (wolfSSL's shared library binds to
 * it): /dev/urandom gets the stream, every other path the real call. */
int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (strcmp(path, "/dev/urandom") == 0)
        return fake_urandom(flags);
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

/* ---- input format --------------------------------------------------------------- */

size_t rn_fuzz_split(const uint8_t *data, size_t size, struct rn_fuzz_chunk *out, size_t max)
{
    size_t n = 0, off = 0;
    while (off < size && n < max) {
        if (n == max - 1 || size - off < 2) {
            out[n].p = data + off; /* the rest */
            out[n].len = size - off;
            n++;
            break;
        }
        size_t len = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        if (len > 0) {
            out[n].p = data + off;
            out[n].len = len;
            n++;
        }
        off += len;
    }
    return n;
}

/* ---- configs -------------------------------------------------------------------- */

const char *rn_fuzz_cert_dir(void)
{
    const char *d = getenv("RN_FUZZ_CERTS");
    return d && *d ? d : RN_FUZZ_DEFAULT_CERTS;
}

static void cert_path(char *out, size_t len, const char *name)
{
    int n = snprintf(out, len, "%s/%s", rn_fuzz_cert_dir(), name);
    FUZZ_CHECK(n > 0 && (size_t)n < len, "certificate path too long");
}

rn_tls_config *rn_fuzz_client_config(unsigned mode)
{
    char ca[4096], cert[4096], key[4096];
    cert_path(ca, sizeof ca, "ca.pem");
    cert_path(cert, sizeof cert, "client.pem");
    cert_path(key, sizeof key, "client.key");
    rn_tls_config *c = rn_tls_client_config();
    FUZZ_CHECK(c != NULL, "rn_tls_client_config: %s", rn_last_error());
    int rc = rn_tls_config_set_ca_file(c, ca);
    FUZZ_CHECK(rc == 0, "%s (make the certificates with tests/fuzz/make_corpus.sh, or set RN_FUZZ_CERTS)",
               rn_last_error());
    if (mode & RN_FUZZ_CLIENT_CERT) {
        rc = rn_tls_config_set_cert(c, cert, key);
        FUZZ_CHECK(rc == 0, "%s", rn_last_error());
    }
    rc = rn_tls_config_set_alpn(c, "h2,http/1.1");
    FUZZ_CHECK(rc == 0, "%s", rn_last_error());
    wolfSSL_CTX_set_session_cache_mode(c->ctx, WOLFSSL_SESS_CACHE_OFF);
    return c;
}

rn_tls_config *rn_fuzz_server_config(unsigned mode)
{
    char cert[4096], key[4096], ca[4096];
    cert_path(cert, sizeof cert, "server.pem");
    cert_path(key, sizeof key, "server.key");
    cert_path(ca, sizeof ca, "ca.pem");
    rn_tls_config *c = rn_tls_server_config(cert, key);
    FUZZ_CHECK(c != NULL, "%s (make the certificates with tests/fuzz/make_corpus.sh, or set RN_FUZZ_CERTS)",
               rn_last_error());
    int rc;
    if (mode & RN_FUZZ_SERVER_MTLS) {
        rc = rn_tls_config_require_client_cert(c, ca);
        FUZZ_CHECK(rc == 0, "%s", rn_last_error());
    }
    rc = rn_tls_config_set_alpn(c, "h2,http/1.1");
    FUZZ_CHECK(rc == 0, "%s", rn_last_error());
    wolfSSL_CTX_set_session_cache_mode(c->ctx, WOLFSSL_SESS_CACHE_OFF);
    return c;
}

/* ---- the ringnet side -------------------------------------------------------------- */

/* The input being run (NULL in the recorder): a peer may put "(null)" in
 * its certificate's subject itself. */
static const uint8_t *cur_input;
static size_t cur_len;

/* A failed call must say why: a code the header lists for it and a
 * sentence in rn_last_error, with no NULL string printed into it. */
static void check_failure(const char *call, int rc, const int *allowed)
{
    bool ok = false;
    for (const int *a = allowed; *a; a++)
        ok = ok || rc == *a;
    const char *msg = rn_last_error();
    FUZZ_CHECK(ok, "%s returned %d (%s), not a code it may return; detail: %s", call, rc,
               rn_strerror(rc), msg ? msg : "(none)");
    FUZZ_CHECK(msg && *msg, "%s failed with %d and no detail", call, rc);
    FUZZ_CHECK(strstr(msg, "(null)") == NULL ||
                   (cur_input && memmem(cur_input, cur_len, "(null)", 6) != NULL),
               "%s: a NULL string in the detail: %s", call, msg);
    for (const char *q = msg; *q; q++)
        FUZZ_CHECK((unsigned char)*q >= 0x20 && *q != 0x7f, "%s: a control byte (%d) in the detail", call,
                   (int)(unsigned char)*q);
    snprintf(rn_fuzz_last.error, sizeof rn_fuzz_last.error, "%s", msg);
}

/* Read until the end or an error; the end must stay the end, and a TLS
 * failure must stay one (sticky). */
static void read_to_end(rn_conn *c)
{
    static const int read_errors[] = {RN_ETLS, RN_ETLS_TRUNCATED, 0};
    char buf[4096];
    for (int i = 0; i < 100000; i++) {
        ssize_t r = rn_conn_read(c, buf, sizeof buf);
        if (r > 0) {
            FUZZ_CHECK((size_t)r <= sizeof buf, "read returned %zd for a %zu-byte buffer", r, sizeof buf);
            rn_fuzz_last.plain += (size_t)r;
            continue;
        }
        rn_fuzz_last.end = (int)r;
        ssize_t again = rn_conn_read(c, buf, sizeof buf);
        if (r == 0) {
            FUZZ_CHECK(again == 0, "read after the clean end returned %zd", again);
            return;
        }
        check_failure("rn_conn_read", (int)r, read_errors);
        if (r == RN_ETLS)
            FUZZ_CHECK(again == RN_ETLS, "read after a TLS failure returned %zd", again);
        else
            FUZZ_CHECK(again < 0, "read after a truncation returned %zd", again);
        return;
    }
    FUZZ_CHECK(false, "read never ended");
}

/* accepted=false: the epoll backend makes the blocking socketpair end
 * non-blocking. */
static rn_conn *wrap(int fd)
{
    struct rn__loop *loop = rn__loop_get();
    FUZZ_CHECK(loop != NULL, "no loop: %s", rn_last_error());
    rn_conn *c = NULL;
    int rc = rn__conn_new(loop, fd, false, &c);
    FUZZ_CHECK(rc == 0, "rn__conn_new: %s", rn_last_error());
    return c;
}

void rn_fuzz_tls_client_side(int fd, unsigned mode)
{
    static const int hs_errors[] = {RN_ETLS, RN_ETLS_VERIFY, 0};
    static const int write_errors[] = {RN_ETLS, 0};
    static const char request[] = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
    memset(&rn_fuzz_last, 0, sizeof rn_fuzz_last);
    rn_conn *c = wrap(fd);
    rn_fuzz_rng_reset();
    rn_tls_config *cfg = rn_fuzz_client_config(mode);
    int rc = rn_conn_upgrade_to_tls_with(c, (mode & RN_FUZZ_CLIENT_IP) ? "127.0.0.1" : "localhost",
                                         cfg);
    rn_tls_config_free(cfg); /* the session holds its own reference */
    rn_fuzz_last.handshake = rc;
    if (rc < 0) {
        check_failure("rn_conn_upgrade_to_tls_with", rc, hs_errors);
        FUZZ_CHECK(rn_conn_is_tls(c), "a failed upgrade left the connection plain");
        FUZZ_CHECK(rn_conn_alpn(c) == NULL, "ALPN reported after a failed handshake");
        char b[16];
        ssize_t r = rn_conn_read(c, b, sizeof b);
        FUZZ_CHECK(r == rc, "read after a failed handshake returned %zd, not %d", r, rc);
    } else {
        const char *alpn = rn_conn_alpn(c);
        FUZZ_CHECK(!alpn || strcmp(alpn, "h2") == 0 || strcmp(alpn, "http/1.1") == 0,
                   "negotiated ALPN \"%s\" was never offered", alpn);
        rc = rn_conn_write_all(c, request, sizeof request - 1);
        if (rc < 0)
            check_failure("rn_conn_write_all", rc, write_errors);
        read_to_end(c);
    }
    rc = rn_conn_close(c);
    FUZZ_CHECK(rc == 0, "rn_conn_close: %s", rn_last_error());
}

void rn_fuzz_tls_server_side(int fd, unsigned mode)
{
    static const int hs_errors[] = {RN_ETLS, RN_ETLS_VERIFY, 0};
    static const int write_errors[] = {RN_ETLS, 0};
    static const char answer[] = "ringnet fuzz server\n";
    memset(&rn_fuzz_last, 0, sizeof rn_fuzz_last);
    rn_conn *c = wrap(fd);
    rn_fuzz_rng_reset();
    rn_tls_config *cfg = rn_fuzz_server_config(mode);
    int rc = rn_conn_accept_tls(c, cfg);
    rn_tls_config_free(cfg); /* the session holds its own reference */
    rn_fuzz_last.handshake = rc;
    if (rc < 0) {
        check_failure("rn_conn_accept_tls", rc, hs_errors);
        char b[16];
        ssize_t r = rn_conn_read(c, b, sizeof b);
        FUZZ_CHECK(r == rc, "read after a failed handshake returned %zd, not %d", r, rc);
    } else {
        const char *alpn = rn_conn_alpn(c);
        FUZZ_CHECK(!alpn || strcmp(alpn, "h2") == 0 || strcmp(alpn, "http/1.1") == 0,
                   "negotiated ALPN \"%s\" is not one of ours", alpn);
        rc = rn_conn_write_all(c, answer, sizeof answer - 1);
        if (rc < 0)
            check_failure("rn_conn_write_all", rc, write_errors);
        read_to_end(c);
    }
    rc = rn_conn_close(c);
    FUZZ_CHECK(rc == 0, "rn_conn_close: %s", rn_last_error());
}

/* ---- one input against the ringnet side -------------------------------------------- */

struct exec {
    struct rn_fuzz_chunk chunks[RN_FUZZ_MAX_CHUNKS];
    size_t n;
    unsigned mode;
    int fd, peer_fd;
    bool server;
};

/* The peer: for a client, waits for the ClientHello first (STARTTLS
 * refuses bytes that arrive before it); sends each chunk as one message,
 * then ends its side, and drains what ringnet sends until it closes. */
static void peer_main(void *arg)
{
    struct exec *e = arg;
    rn_conn *p = wrap(e->peer_fd);
    char buf[16384];
    bool go = e->server || rn_conn_read(p, buf, sizeof buf) > 0;
    for (size_t i = 0; go && i < e->n; i++)
        if (rn_conn_write_all(p, e->chunks[i].p, e->chunks[i].len) < 0)
            break;
    (void)rn_conn_shutdown_write(p);
    while (rn_conn_read(p, buf, sizeof buf) > 0) {
    }
    FUZZ_CHECK(rn_conn_close(p) == 0, "closing the peer: %s", rn_last_error());
}

static void exec_main(void *arg)
{
    struct exec *e = arg;
    FUZZ_CHECK(rn_spawn(peer_main, e) == 0, "rn_spawn: %s", rn_last_error());
    if (e->server)
        rn_fuzz_tls_server_side(e->fd, e->mode);
    else
        rn_fuzz_tls_client_side(e->fd, e->mode);
}

static void report(const char *side, unsigned mode)
{
    if (!getenv("RN_FUZZ_VERBOSE"))
        return;
    fprintf(stderr, "rn_fuzz %s: mode=%u rng_opens=%lu handshake=%d plain=%zu end=%d%s%s\n", side,
            mode, (unsigned long)atomic_load(&rng_opens), rn_fuzz_last.handshake,
            rn_fuzz_last.plain, rn_fuzz_last.end, rn_fuzz_last.error[0] ? " error: " : "",
            rn_fuzz_last.error);
}

int rn_fuzz_tls_exec(const uint8_t *data, size_t size, bool server)
{
    struct exec e = {.server = server};
    if (size > 0) {
        e.mode = data[0];
        data++;
        size--;
    }
    cur_input = data;
    cur_len = size;
    e.n = rn_fuzz_split(data, size, e.chunks, RN_FUZZ_MAX_CHUNKS);
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
               strerror(errno));
    e.fd = sv[0];
    e.peer_fd = sv[1];
    int rc = rn_run(exec_main, &e);
    FUZZ_CHECK(rc == 0, "rn_run: %d: %s", rc, rn_last_error());
    rn_fuzz_wolf_down();
    cur_input = NULL;
    report(server ? "server" : "client", e.mode);
    return 0;
}
