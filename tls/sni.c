/* sni.c - several certificate chains in one server config, chosen by the
 * name the client asks for (SNI). Each chain added with
 * rn_tls_config_add_cert gets a wolfSSL context of its own, made like the
 * config's; the servername callback, which wolfSSL runs once it has read
 * the ClientHello's extensions, moves the session to the context of the
 * first chain whose names match (wolfSSL_set_SSL_CTX changes only the
 * certificate, key and session id context, which is all it has to). No
 * match, or no SNI: the first chain. */
#include "tls.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/openssl/x509v3.h>

#define MAX_NAMES 1024 /* names kept per chain; a certificate with more is refused */

static void free_names(struct rn__tls_cert *c)
{
    for (size_t i = 0; i < c->n_names; i++)
        free(c->names[i]);
    free(c->names);
    c->names = NULL;
    c->n_names = 0;
}

/* A name from a certificate, lower case; NULL (skipped) for one no SNI
 * could ask for: empty, over 253 bytes, or bytes outside printable ASCII. */
static char *name_copy(const unsigned char *p, int len)
{
    if (len <= 0 || len > 253)
        return NULL;
    char *s = malloc((size_t)len + 1);
    if (!s)
        return NULL;
    for (int i = 0; i < len; i++) {
        if (p[i] <= 0x20 || p[i] >= 0x7f) {
            free(s);
            return NULL;
        }
        s[i] = (char)tolower(p[i]);
    }
    s[len] = '\0';
    return s;
}

static int add_name(struct rn__tls_cert *c, char *name)
{
    if (!name)
        return 0;
    if (c->n_names == MAX_NAMES) {
        free(name);
        return -E2BIG;
    }
    char **n = realloc(c->names, (c->n_names + 1) * sizeof *n);
    if (!n) {
        free(name);
        return -ENOMEM;
    }
    c->names = n;
    c->names[c->n_names++] = name;
    return 0;
}

/* The dNSNames of the leaf's subjectAltName; its CN only when it has no
 * dNSName (RFC 6125 6.4.4). */
static int read_names(struct rn__tls_cert *c, const char *cert_pem)
{
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(cert_pem, WOLFSSL_FILETYPE_PEM);
    if (!x)
        return RN_ETLS;
    int rc = 0;
    WOLF_STACK_OF(WOLFSSL_GENERAL_NAME) *sans =
        wolfSSL_X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int n = sans ? wolfSSL_sk_GENERAL_NAME_num(sans) : 0;
    for (int i = 0; i < n && rc == 0; i++) {
        WOLFSSL_GENERAL_NAME *g = wolfSSL_sk_GENERAL_NAME_value(sans, i);
        if (!g || g->type != GEN_DNS || !g->d.dNSName)
            continue;
        rc = add_name(c, name_copy(wolfSSL_ASN1_STRING_data(g->d.dNSName),
                                   wolfSSL_ASN1_STRING_length(g->d.dNSName)));
    }
    if (sans)
        wolfSSL_GENERAL_NAMES_free(sans);
    if (rc == 0 && c->n_names == 0) {
        char cn[256];
        WOLFSSL_X509_NAME *subj = wolfSSL_X509_get_subject_name(x);
        int len =
            subj ? wolfSSL_X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof cn) : -1;
        if (len > 0)
            rc = add_name(c, name_copy((const unsigned char *)cn, len));
    }
    wolfSSL_X509_free(x);
    return rc;
}

int rn__tls_cert_names(rn_tls_config *cfg, size_t i, const char *cert_pem, const char *what)
{
    if (i >= cfg->n_certs) { /* the first chain: its entry is made on first use */
        struct rn__tls_cert *c = realloc(cfg->certs, (i + 1) * sizeof *c);
        if (!c)
            return rn__err(-ENOMEM, "%s: out of memory", what);
        cfg->certs = c;
        memset(&c[i], 0, sizeof c[i]);
        c[i].ctx = cfg->ctx;
        cfg->n_certs = i + 1;
    }
    struct rn__tls_cert *c = &cfg->certs[i];
    free_names(c);
    int rc = read_names(c, cert_pem);
    if (rc == -E2BIG)
        return rn__err(-EINVAL, "%s: %s names more than %d hosts", what, cert_pem, MAX_NAMES);
    if (rc == -ENOMEM)
        return rn__err(-ENOMEM, "%s: out of memory", what);
    if (rc < 0)
        return rn__err(RN_ETLS, "%s: cannot read the names of the certificate in %s", what,
                       cert_pem);
    return 0;
}

void rn__tls_certs_free(rn_tls_config *cfg)
{
    for (size_t i = 0; i < cfg->n_certs; i++) {
        free_names(&cfg->certs[i]);
        if (cfg->certs[i].ctx != cfg->ctx)
            wolfSSL_CTX_free(cfg->certs[i].ctx);
    }
    free(cfg->certs);
    cfg->certs = NULL;
    cfg->n_certs = 0;
}

/* ---- matching ------------------------------------------------------------ */

/* Whether the certificate name pattern (lower case) covers host (len
 * bytes, any case): equal ignoring ASCII case, or "*.rest" where host is
 * one non-empty label, then ".rest" (RFC 6125 6.4.3: the wildcard stands
 * for exactly one whole label, and never for the last two). */
static bool name_matches(const char *pattern, const char *host, size_t len)
{
    size_t pl = strlen(pattern);
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *rest = pattern + 1; /* ".example.com" */
        size_t rl = pl - 1;
        if (!strchr(rest + 1, '.'))
            return false; /* "*.com": no wildcard over a top-level domain */
        const char *dot = memchr(host, '.', len);
        if (!dot || dot == host)
            return false;
        size_t tail = len - (size_t)(dot - host);
        return tail == rl && strncasecmp(dot, rest, rl) == 0;
    }
    if (strchr(pattern, '*'))
        return false; /* partial-label wildcards ("f*.example.com") match nothing */
    return pl == len && strncasecmp(pattern, host, len) == 0;
}

/* The chain for host: the first whose names cover it; the first chain
 * when none does. */
static size_t pick_cert(const rn_tls_config *cfg, const char *host, size_t len)
{
    /* A DNS name is at most 253 bytes of printable ASCII; anything else
     * (control bytes, NUL, a 255-byte name) matches no certificate. */
    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)host[i] <= 0x20 || (unsigned char)host[i] >= 0x7f)
            return 0;
    for (size_t i = 0; i < cfg->n_certs; i++)
        for (size_t k = 0; k < cfg->certs[i].n_names; k++)
            if (name_matches(cfg->certs[i].names[k], host, len))
                return i;
    return 0;
}

/* wolfSSL's servername callback (the config is its argument). Never
 * fails the handshake: a name no chain answers to gets the first one,
 * and the client decides whether it will accept it. */
static int on_servername(WOLFSSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const rn_tls_config *cfg = arg;
    void *name = NULL;
    unsigned short len = wolfSSL_SNI_GetRequest(ssl, WOLFSSL_SNI_HOST_NAME, &name);
    size_t i = name ? pick_cert(cfg, name, len) : 0;
    if (i != 0 && wolfSSL_set_SSL_CTX(ssl, cfg->certs[i].ctx) == NULL)
        return 0; /* out of memory for a reference: stay with the first chain */
    return 0;
}

/* ---- freezing and the public call ---------------------------------------- */

/* Every chain's context verifies clients as the config does (mTLS): the
 * session moves to that context, and wolfSSL then checks the client's
 * certificate against its anchors. */
int rn__tls_sni_freeze(rn_tls_config *cfg)
{
    if (cfg->n_certs < 2)
        return 0;
    for (size_t i = 1; i < cfg->n_certs; i++) {
        WOLFSSL_CTX *ctx = cfg->certs[i].ctx;
        if (!cfg->client_ca)
            continue;
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                               rn__tls_verify_cb);
        if (wolfSSL_CTX_load_verify_locations(ctx, cfg->client_ca, NULL) != WOLFSSL_SUCCESS)
            return rn__err(RN_ETLS, "tls: the client CA file %s no longer loads", cfg->client_ca);
    }
    wolfSSL_CTX_set_servername_callback(cfg->ctx, on_servername);
    (void)wolfSSL_CTX_set_servername_arg(cfg->ctx, cfg);
    return 0;
}

RN_EXPORT int rn_tls_config_add_cert(rn_tls_config *cfg, const char *cert_pem, const char *key_pem)
{
    const char *what = "tls_config_add_cert";
    if (!cfg)
        return rn__err(-EINVAL, "%s: the config is NULL", what);
    if (!cfg->server)
        return rn__err(-EINVAL,
                       "%s: a client config presents one certificate (use rn_tls_config_set_cert)",
                       what);
    if (atomic_load(&cfg->frozen))
        return rn__err(-EBUSY, "%s: the config is in use and can no longer change", what);
    const char *failed;
    WOLFSSL_CTX *ctx = rn__tls_ctx_new(true, &failed);
    if (!ctx)
        return rn__err(-ENOMEM, "%s: wolfSSL refused %s", what, failed);
    rn__tls_resume_init(cfg, ctx);
    int rc = rn__tls_ctx_use_cert(ctx, cert_pem, key_pem, what);
    size_t i = cfg->n_certs;
    if (rc == 0)
        rc = rn__tls_cert_names(cfg, i, cert_pem, what);
    if (rc < 0) {
        if (i < cfg->n_certs) { /* its entry was made: take it out again */
            free_names(&cfg->certs[i]);
            cfg->n_certs = i;
        }
        wolfSSL_CTX_free(ctx);
        return rc;
    }
    cfg->certs[i].ctx = ctx;
    return 0;
}
