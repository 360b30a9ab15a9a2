/* resume.c - session resumption, both sides.
 *
 * Client: a config keeps the sessions its connections got (TLS 1.3
 * tickets, which arrive after the handshake, and TLS 1.2 tickets or
 * session ids), one per host and port, in a bounded LRU cache behind a
 * mutex: every thread using the config shares it. A new connection to the
 * same host and port offers the cached session; the server decides.
 *
 * Server: ticket keys of our own (wolfSSL's default keys belong to one
 * context, and a config has one context per certificate chain): tickets
 * are sealed with ChaCha20-Poly1305 under the config's current key; a new
 * key takes over every TICKET_PERIOD_S seconds and the one before still
 * opens the tickets it sealed. A ticket no key opens (another server's,
 * an older config's, a tampered one) is refused quietly: a full handshake. */
#include "tls.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <wolfssl/wolfcrypt/chacha20_poly1305.h>

#define TICKET_PERIOD_S       3600 /* a key seals new tickets this long; tickets live as long */
#define DEFAULT_CACHE_ENTRIES 256
#define MAX_CACHE_ENTRIES     (1u << 20)

/* ---- server: ticket keys ------------------------------------------------- */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The ticket keys' clock. Tests only: a server config made while the
 * environment has RN_TEST_TICKET_CLOCK_MS reads that variable again at
 * every ticket it seals or opens and adds its value (milliseconds) to the
 * clock, so that a test can move its keys through the hourly schedule
 * without waiting (tests/tls_prod_test.cc,
 * TicketKeysRotateHourly...). Without the variable at
 * creation (every real program) the config reads the monotonic clock and
 * never looks at the environment again. */
#define TEST_CLOCK_ENV "RN_TEST_TICKET_CLOCK_MS"

static int64_t ticket_now_ns(const rn_tls_config *cfg)
{
    int64_t now = mono_ns();
    if (cfg->tk_test_clock) {
        const char *v = getenv(TEST_CLOCK_ENV);
        if (v)
            now += (int64_t)strtoll(v, NULL, 10) * 1000000;
    }
    return now;
}

static bool fill_random(void *p, size_t n)
{
    unsigned char *b = p;
    while (n > 0) {
        ssize_t r = getrandom(b, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        b += r;
        n -= (size_t)r;
    }
    return true;
}

/* The key that seals a ticket now (ticket_mu held): the current one,
 * replaced when it is TICKET_PERIOD_S old (the old one becomes previous). */
static const struct rn__tls_ticket_key *sealing_key(rn_tls_config *cfg)
{
    int64_t now = ticket_now_ns(cfg);
    struct rn__tls_ticket_key *cur = &cfg->tk_cur;
    if (cur->born_ns == 0 || now - cur->born_ns >= (int64_t)TICKET_PERIOD_S * 1000000000) {
        struct rn__tls_ticket_key k = {.born_ns = now};
        if (!fill_random(k.name, sizeof k.name) || !fill_random(k.key, sizeof k.key))
            return cur->born_ns ? cur : NULL;
        cfg->tk_prev = *cur;
        *cur = k;
    }
    return cur;
}

/* The additional data: the key's name, the nonce, the sealed length. */
static void ticket_aad(unsigned char aad[34], const unsigned char *name, const unsigned char *iv,
                       int len)
{
    memcpy(aad, name, 16);
    memcpy(aad + 16, iv, 16);
    aad[32] = (unsigned char)(len >> 8);
    aad[33] = (unsigned char)len;
}

/* wolfSSL's ticket callback: seal (enc) or open the ticket in place. The
 * nonce is the first 12 of iv's 16 random bytes; the tag is the first 16
 * of mac's 32 (the rest zero). */
static int ticket_cb(WOLFSSL *ssl, unsigned char name[WOLFSSL_TICKET_NAME_SZ],
                     unsigned char iv[WOLFSSL_TICKET_IV_SZ],
                     unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *ticket,
                     int len, int *out_len, void *arg)
{
    (void)ssl;
    rn_tls_config *cfg = arg;
    unsigned char aad[34], key[32];
    if (len <= 0 || len > 0xffff)
        return WOLFSSL_TICKET_RET_REJECT;
    if (enc) {
        if (!fill_random(iv, WOLFSSL_TICKET_IV_SZ))
            return WOLFSSL_TICKET_RET_REJECT;
        pthread_mutex_lock(&cfg->ticket_mu);
        const struct rn__tls_ticket_key *k = sealing_key(cfg);
        if (k) {
            memcpy(name, k->name, 16);
            memcpy(key, k->key, 32);
        }
        pthread_mutex_unlock(&cfg->ticket_mu);
        if (!k)
            return WOLFSSL_TICKET_RET_REJECT;
        ticket_aad(aad, name, iv, len);
        memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
        int r =
            wc_ChaCha20Poly1305_Encrypt(key, iv, aad, sizeof aad, ticket, (word32)len, ticket, mac);
        memset(key, 0, sizeof key);
        if (r != 0)
            return WOLFSSL_TICKET_RET_REJECT;
        *out_len = len;
        return WOLFSSL_TICKET_RET_OK;
    }
    /* Open: find the key the ticket names (current or previous, and only
     * while it is at most two periods old). */
    int which = 0;
    int64_t now = ticket_now_ns(cfg), life = 2 * (int64_t)TICKET_PERIOD_S * 1000000000;
    pthread_mutex_lock(&cfg->ticket_mu);
    const struct rn__tls_ticket_key *ks[2] = {&cfg->tk_cur, &cfg->tk_prev};
    for (int i = 0; i < 2 && !which; i++) {
        if (ks[i]->born_ns && now - ks[i]->born_ns < life && memcmp(ks[i]->name, name, 16) == 0) {
            memcpy(key, ks[i]->key, 32);
            which = i + 1;
        }
    }
    pthread_mutex_unlock(&cfg->ticket_mu);
    if (!which)
        return WOLFSSL_TICKET_RET_REJECT;
    ticket_aad(aad, name, iv, len);
    int r = wc_ChaCha20Poly1305_Decrypt(key, iv, aad, sizeof aad, ticket, (word32)len, mac, ticket);
    memset(key, 0, sizeof key);
    if (r != 0)
        return WOLFSSL_TICKET_RET_REJECT; /* tampered with, or not ours: a full handshake */
    *out_len = len;
    /* Sealed under the previous key: good, and worth a fresh ticket. */
    return which == 1 ? WOLFSSL_TICKET_RET_OK : WOLFSSL_TICKET_RET_CREATE;
}

/* ---- client: the session cache ------------------------------------------- */

struct entry {
    struct entry *hnext;       /* bucket chain */
    struct entry *prev, *next; /* LRU list, most recent first */
    uint32_t hash;
    int port;
    unsigned char *der; /* the session, serialised (a few KB, against the
                           37.5 KB of a WOLFSSL_SESSION in Debian's build) */
    int der_len;
    char host[];
};

struct rn__tls_cache {
    pthread_mutex_t mu;
    size_t max, n, n_buckets;
    struct entry **buckets;
    struct entry lru; /* sentinel */
};

static uint32_t key_hash(const char *host, int port)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)host; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (h ^ (uint32_t)port) * 16777619u;
}

static struct entry **find_slot(struct rn__tls_cache *c, const char *host, int port, uint32_t h)
{
    struct entry **pp = &c->buckets[h & (c->n_buckets - 1)];
    while (*pp && ((*pp)->hash != h || (*pp)->port != port || strcmp((*pp)->host, host) != 0))
        pp = &(*pp)->hnext;
    return pp;
}

static void lru_unlink(struct entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_push_front(struct rn__tls_cache *c, struct entry *e)
{
    e->next = c->lru.next;
    e->prev = &c->lru;
    c->lru.next->prev = e;
    c->lru.next = e;
}

/* Take e out of the cache (mu held); the caller frees it. */
static void cache_remove(struct rn__tls_cache *c, struct entry *e)
{
    struct entry **pp = find_slot(c, e->host, e->port, e->hash);
    *pp = e->hnext;
    lru_unlink(e);
    c->n--;
}

static void entry_free(struct entry *e)
{
    if (e) {
        memset(e->der, 0, (size_t)e->der_len); /* it holds the session's secret */
        free(e->der);
        free(e);
    }
}

static struct rn__tls_cache *cache_new(size_t max)
{
    struct rn__tls_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->max = max;
    c->n_buckets = 16;
    while (c->n_buckets < max && c->n_buckets < (1u << 16))
        c->n_buckets *= 2;
    c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->lru.next = c->lru.prev = &c->lru;
    return c;
}

/* wolfSSL's new-session callback (client contexts): keep the session,
 * serialised, under the connection's host and port. Returns 0: wolfSSL
 * keeps (and drops) its own reference. */
static int on_new_session(WOLFSSL *ssl, WOLFSSL_SESSION *sess)
{
    struct rn__tls *t = wolfSSL_GetIOReadCtx(ssl);
    struct rn__tls_cache *c = t && !t->server ? t->cfg->cache : NULL;
    if (!c || !t->host[0] || t->port <= 0)
        return 0;
    int len = wolfSSL_i2d_SSL_SESSION(sess, NULL);
    if (len <= 0)
        return 0;
    size_t hl = strlen(t->host);
    struct entry *e = malloc(sizeof *e + hl + 1);
    unsigned char *der = e ? malloc((size_t)len) : NULL, *p = der;
    if (!der || wolfSSL_i2d_SSL_SESSION(sess, &p) != len) {
        free(der);
        free(e);
        return 0; /* out of memory: this session is not kept, nothing else changes */
    }
    memset(e, 0, sizeof *e);
    memcpy(e->host, t->host, hl + 1);
    e->port = t->port;
    e->hash = key_hash(e->host, e->port);
    e->der = der;
    e->der_len = len;
    struct entry *old = NULL;
    pthread_mutex_lock(&c->mu);
    struct entry **pp = find_slot(c, e->host, e->port, e->hash);
    if (*pp) {
        old = *pp;
        cache_remove(c, old);
        pp = find_slot(c, e->host, e->port, e->hash);
    }
    *pp = e;
    lru_push_front(c, e);
    c->n++;
    struct entry *evicted = NULL;
    if (c->n > c->max) {
        evicted = c->lru.prev;
        cache_remove(c, evicted);
    }
    pthread_mutex_unlock(&c->mu);
    entry_free(old);
    entry_free(evicted);
    return 0;
}

void rn__tls_resume_offer(struct rn__tls *t)
{
    struct rn__tls_cache *c = t->cfg->cache;
    if (!c || !t->host[0] || t->port <= 0)
        return;
    uint32_t h = key_hash(t->host, t->port);
    WOLFSSL_SESSION *sess = NULL;
    pthread_mutex_lock(&c->mu);
    struct entry *e = *find_slot(c, t->host, t->port, h);
    if (e) {
        const unsigned char *p = e->der;
        sess = wolfSSL_d2i_SSL_SESSION(NULL, &p, e->der_len);
        lru_unlink(e);
        lru_push_front(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    if (!e)
        return;
    /* wolfSSL refuses an expired session (or one it cannot read back):
     * the entry goes. */
    if (sess && wolfSSL_set_session(t->ssl, sess) == WOLFSSL_SUCCESS) {
        wolfSSL_SESSION_free(sess);
        return;
    }
    if (sess)
        wolfSSL_SESSION_free(sess);
    struct entry *stale = NULL;
    pthread_mutex_lock(&c->mu);
    struct entry **pp = find_slot(c, t->host, t->port, h);
    if (*pp) {
        stale = *pp;
        cache_remove(c, stale);
    }
    pthread_mutex_unlock(&c->mu);
    entry_free(stale);
}

/* ---- config lifetime and the public calls -------------------------------- */

void rn__tls_resume_init(rn_tls_config *cfg, WOLFSSL_CTX *ctx)
{
    if (ctx == cfg->ctx) {
        pthread_mutex_init(&cfg->ticket_mu, NULL);
        cfg->cache_entries = DEFAULT_CACHE_ENTRIES;
        cfg->tk_test_clock = cfg->server && getenv(TEST_CLOCK_ENV) != NULL;
    }
    (void)wolfSSL_CTX_set_timeout(ctx, TICKET_PERIOD_S);
    if (cfg->server) {
        (void)wolfSSL_CTX_set_TicketEncCb(ctx, ticket_cb);
        (void)wolfSSL_CTX_set_TicketEncCtx(ctx, cfg);
        (void)wolfSSL_CTX_set_TicketHint(ctx, TICKET_PERIOD_S);
    } else {
        wolfSSL_CTX_sess_set_new_cb(ctx, on_new_session);
    }
}

int rn__tls_resume_freeze(rn_tls_config *cfg)
{
    if (cfg->server || cfg->cache_entries == 0)
        return 0;
    /* TLS 1.2 session tickets (RFC 5077) are asked for; TLS 1.3's come
     * anyway. */
    if (wolfSSL_CTX_UseSessionTicket(cfg->ctx) != WOLFSSL_SUCCESS)
        return rn__err(RN_ETLS, "tls: wolfSSL refused to ask for session tickets");
    cfg->cache = cache_new(cfg->cache_entries);
    if (!cfg->cache)
        return rn__err(-ENOMEM, "tls: out of memory for the session cache");
    return 0;
}

void rn__tls_resume_free(rn_tls_config *cfg)
{
    struct rn__tls_cache *c = cfg->cache;
    if (c) {
        for (struct entry *e = c->lru.next, *n; e != &c->lru; e = n) {
            n = e->next;
            entry_free(e);
        }
        pthread_mutex_destroy(&c->mu);
        free(c->buckets);
        free(c);
        cfg->cache = NULL;
    }
    memset(&cfg->tk_cur, 0, sizeof cfg->tk_cur);
    memset(&cfg->tk_prev, 0, sizeof cfg->tk_prev);
    pthread_mutex_destroy(&cfg->ticket_mu);
}

RN_EXPORT int rn_tls_config_set_session_cache(rn_tls_config *cfg, size_t entries)
{
    const char *what = "tls_config_set_session_cache";
    if (!cfg)
        return rn__err(-EINVAL, "%s: the config is NULL", what);
    if (cfg->server)
        return rn__err(-EINVAL, "%s: a server config keeps no sessions (its clients hold tickets)",
                       what);
    if (entries > MAX_CACHE_ENTRIES)
        return rn__err(-EINVAL, "%s: %zu entries is more than the %u allowed", what, entries,
                       MAX_CACHE_ENTRIES);
    if (atomic_load(&cfg->frozen))
        return rn__err(-EBUSY, "%s: the config is in use and can no longer change", what);
    cfg->cache_entries = entries;
    return 0;
}

RN_EXPORT bool rn_conn_tls_resumed(const rn_conn *c)
{
    struct rn__tls *t = c ? rn__tls_of(c) : NULL;
    return t && t->hs_done && t->resumed;
}
