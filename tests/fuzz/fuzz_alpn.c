/* fuzz_alpn.c - libFuzzer target: the ALPN list string of
 * rn_tls_config_set_alpn ("h2,http/1.1"), the one string of the TLS API
 * that ringnet parses itself before wolfSSL sees it.
 *
 * Input: the string (up to the first NUL). Checks: set_alpn accepts it
 * exactly when every comma-separated name is 1..255 bytes, the whole list
 * at most 1024 bytes and 257 names (the header's rule), and refuses it
 * with -EINVAL and a sentence otherwise. An accepted, non-empty list must then work: a client
 * with that config starts a handshake over a socketpair, and the
 * ClientHello it sends must carry an ALPN extension holding exactly those
 * names, in that order (the peer parses it, then hangs up; the handshake
 * must fail as RN_ETLS with a sentence). */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool list_valid(const char *s)
{
    if (!*s)
        return true; /* "" means no ALPN */
    if (strlen(s) > 1024)
        return false;
    size_t run = 0, names = 0;
    for (const char *p = s;; p++) {
        if (*p == ',' || *p == '\0') {
            if (run == 0 || run > 255)
                return false;
            run = 0;
            if (++names > WOLFSSL_MAX_ALPN_NUMBER) /* 257: wolfSSL offers no more */
                return false;
            if (!*p)
                return true;
        } else {
            run++;
        }
    }
}

/* RFC 7301's ProtocolNameList for s: each name with its length byte. */
static size_t encode_list(const char *s, uint8_t *out)
{
    size_t n = 0;
    const char *start = s;
    for (const char *p = s;; p++) {
        if (*p == ',' || *p == '\0') {
            out[n++] = (uint8_t)(p - start);
            memcpy(out + n, start, (size_t)(p - start));
            n += (size_t)(p - start);
            start = p + 1;
            if (!*p)
                return n;
        }
    }
}

static size_t get16(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

/* The ALPN extension's body in a ClientHello record; NULL if none. */
static const uint8_t *find_alpn(const uint8_t *rec, size_t len, size_t *alpn_len)
{
    /* record header (5), handshake header (4), version (2), random (32) */
    size_t off = 5 + 4 + 2 + 32;
    FUZZ_CHECK(len > off && rec[0] == 22 && rec[5] == 1, "not a ClientHello record");
    off += 1 + rec[off]; /* session id */
    FUZZ_CHECK(off + 2 <= len, "short ClientHello");
    off += 2 + get16(rec + off); /* cipher suites */
    FUZZ_CHECK(off + 1 <= len, "short ClientHello");
    off += 1 + rec[off]; /* compression methods */
    FUZZ_CHECK(off + 2 <= len, "ClientHello without extensions");
    size_t end = off + 2 + get16(rec + off);
    FUZZ_CHECK(end <= len, "extensions past the record");
    for (off += 2; off + 4 <= end;) {
        size_t type = get16(rec + off), elen = get16(rec + off + 2);
        FUZZ_CHECK(off + 4 + elen <= end, "extension past the end");
        if (type == 16) {
            *alpn_len = elen;
            return rec + off + 4;
        }
        off += 4 + elen;
    }
    return NULL;
}

/* Names in a ProtocolNameList. */
static size_t count_names(const uint8_t *p, size_t len)
{
    size_t n = 0;
    for (size_t off = 0; off < len; off += 1 + p[off])
        n++;
    return n;
}

struct exec {
    rn_tls_config *cfg;
    const char *list;
    int fd, peer_fd;
};

static void peer_main(void *arg)
{
    struct exec *e = arg;
    rn_conn *p = NULL;
    FUZZ_CHECK(rn__conn_new(rn__loop_get(), e->peer_fd, false, &p) == 0, "%s", rn_last_error());
    static uint8_t hello[65536];
    ssize_t n = rn_conn_read(p, hello, sizeof hello);
    FUZZ_CHECK(n > 0, "no ClientHello: %zd (%s)", n, rn_last_error());
    size_t alen = 0;
    const uint8_t *alpn = find_alpn(hello, (size_t)n, &alen);
    FUZZ_CHECK(alpn != NULL, "ALPN \"%s\" accepted but not offered", e->list);
    static uint8_t want[2048];
    size_t wl = encode_list(e->list, want);
    FUZZ_CHECK(alen == wl + 2 && get16(alpn) == wl && memcmp(alpn + 2, want, wl) == 0,
               "the ClientHello offers %zu ALPN names in %zu bytes, not the %zu names in %zu "
               "bytes of \"%s\"",
               count_names(alpn + 2, alen - 2), alen - 2, count_names(want, wl), wl, e->list);
    FUZZ_CHECK(rn_conn_close(p) == 0, "%s", rn_last_error());
}

static void exec_main(void *arg)
{
    struct exec *e = arg;
    FUZZ_CHECK(rn_spawn(peer_main, e) == 0, "rn_spawn: %s", rn_last_error());
    rn_conn *c = NULL;
    FUZZ_CHECK(rn__conn_new(rn__loop_get(), e->fd, false, &c) == 0, "%s", rn_last_error());
    int rc = rn_conn_upgrade_to_tls_with(c, "localhost", e->cfg);
    const char *msg = rn_last_error();
    FUZZ_CHECK(rc == RN_ETLS && msg && *msg,
               "handshake against a peer that hangs up: %d (%s), ALPN \"%s\"", rc, msg, e->list);
    FUZZ_CHECK(rn_conn_close(c) == 0, "%s", rn_last_error());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2048)
        return -1;
    char *list = malloc(size + 1);
    if (!list)
        return 0;
    memcpy(list, data, size);
    list[size] = '\0';

    char ca[4096];
    snprintf(ca, sizeof ca, "%s/ca.pem", rn_fuzz_cert_dir());
    rn_tls_config *cfg = rn_tls_client_config();
    FUZZ_CHECK(cfg != NULL, "%s", rn_last_error());
    FUZZ_CHECK(rn_tls_config_set_ca_file(cfg, ca) == 0, "%s", rn_last_error());

    int rc = rn_tls_config_set_alpn(cfg, list);
    bool valid = list_valid(list);
    if (!valid) {
        const char *msg = rn_last_error();
        FUZZ_CHECK(rc == -EINVAL && msg && *msg, "set_alpn of an invalid list = %d", rc);
    } else {
        FUZZ_CHECK(rc == 0, "set_alpn refused a valid list: %d (%s)", rc, rn_last_error());
        if (*list) {
            int sv[2];
            FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
            struct exec e = {.cfg = cfg, .list = list, .fd = sv[0], .peer_fd = sv[1]};
            rc = rn_run(exec_main, &e);
            FUZZ_CHECK(rc == 0, "rn_run: %d", rc);
        }
    }
    rn_tls_config_free(cfg);
    free(list);
    return 0;
}
