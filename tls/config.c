/* config.c - rn_tls_config: the shared, reference-counted wolfSSL context
 * with ringnet's secure defaults, the trust store (loaded once per config),
 * certificates, mTLS, ALPN. Verification's callback and messages are in
 * verify.c. */
#include "tls.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/ecc.h>

#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
#define SYSTEM_CA_DIR  "/etc/ssl/certs"

/* AEAD suites with forward secrecy only: no RC4, NULL, anonymous, export or
 * CBC suites, although Debian's wolfSSL compiles all of them in. TLS 1.3's
 * three first. Without AES-NI, AES-GCM is 2.4x slower than ChaCha20-Poly1305
 * in Debian's build (see docs/tls.md), so ChaCha20 leads there. */
#define SUITES_AES_FIRST                                                                           \
    "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define SUITES_CHACHA_FIRST                                                                        \
    "TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"              \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;
static pthread_key_t thread_key;

/* Debian's wolfSSL keeps a per-thread cache of ECC fixed-point tables
 * (FP_ECC) that only wc_ecc_fp_free, called on that thread, releases: every
 * thread that ran a handshake would leak it when it exits. */
static void thread_done(void *p)
{
    (void)p;
#ifdef FP_ECC
    wc_ecc_fp_free();
#endif
}

/* The thread that calls exit() (usually main) runs no key destructor. */
static void process_done(void)
{
    thread_done(NULL);
}

static char init_msg[400] = "wolfSSL_Init failed";

/* The wolfSSL loaded must be the build whose headers (options.h) ringnet was
 * compiled with, or the structures' layouts differ and memory is corrupted.
 * Debian's library and one built with AES-NI (RINGNET_WOLFSSL_PREFIX, see
 * docs/tls.md) share the soname; the AES-NI build exports
 * AES_128_Key_Expansion. False when they disagree, with the reason. */
static bool wolf_matches_headers(void)
{
    if (wolfSSL_lib_version_hex() != LIBWOLFSSL_VERSION_HEX) {
        snprintf(init_msg, sizeof init_msg, "wolfSSL %s is loaded, ringnet was built for %s",
                 wolfSSL_lib_version(), LIBWOLFSSL_VERSION_STRING);
        return false;
    }
    Dl_info info;
    if (!dladdr((void *)wolfSSL_Init, &info) || !info.dli_fname ||
        !strstr(info.dli_fname, "libwolfssl.so"))
        return true; /* linked statically: nothing to compare */
    void *h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    bool lib_aesni = h && dlsym(h, "AES_128_Key_Expansion");
    if (h)
        dlclose(h);
#ifdef WOLFSSL_AESNI
    const bool hdr_aesni = true;
#else
    const bool hdr_aesni = false;
#endif
    if (lib_aesni == hdr_aesni)
        return true;
    snprintf(init_msg, sizeof init_msg,
             "ringnet was built for a wolfSSL %s AES-NI, but the one loaded, %s, %s it: "
             "refused, since mismatched wolfSSL headers and library corrupt memory",
             hdr_aesni ? "with" : "without", info.dli_fname, lib_aesni ? "has" : "lacks");
    return false;
}

static void wolf_init(void)
{
    if (!wolf_matches_headers()) {
        init_rc = RN_ETLS;
        return;
    }
    init_rc = wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -ENOMEM;
    if (init_rc == 0) {
        (void)pthread_key_create(&thread_key, thread_done);
        (void)atexit(process_done);
    }
}

void rn__tls_thread_used(void)
{
    static __thread bool marked;
    if (!marked) {
        marked = true;
        (void)pthread_setspecific(thread_key, &marked);
    }
}

/* AES-GCM goes first only where it is fast: a wolfSSL built with AES-NI
 * (which also checks the CPU at run time) on a CPU that has it. */
static const char *suite_list(void)
{
#if defined(WOLFSSL_AESNI)
    if (__builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul"))
        return SUITES_AES_FIRST;
#endif
    return SUITES_CHACHA_FIRST;
}

static bool config_frozen(rn_tls_config *cfg, const char *what, int *rc)
{
    if (!cfg) {
        *rc = rn__err(-EINVAL, "%s: the config is NULL", what);
        return true;
    }
    if (atomic_load(&cfg->frozen)) {
        *rc = rn__err(-EBUSY, "%s: the config is in use by a connection and can no longer change",
                      what);
        return true;
    }
    return false;
}

const char *rn__tls_errstr(int err, char *buf, size_t len)
{
    wolfSSL_ERR_error_string_n((unsigned long)err, buf, (unsigned long)len);
    return buf;
}

/* Mozilla's intermediate set: the only key exchange groups offered and
 * accepted. */
#define CURVES "X25519:P-256:P-384"

WOLFSSL_CTX *rn__tls_ctx_new(bool server, const char **failed)
{
    WOLFSSL_CTX *ctx =
        wolfSSL_CTX_new(server ? wolfSSLv23_server_method() : wolfSSLv23_client_method());
    *failed = NULL;
    if (!ctx) {
        *failed = "making a context (out of memory)";
        return NULL;
    }
    int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1};
    if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS)
        *failed = "setting TLS 1.2 as the minimum version";
    else if (wolfSSL_CTX_set_cipher_list(ctx, suite_list()) != WOLFSSL_SUCCESS)
        *failed = "setting the cipher suites";
    /* Modern curves only, both sides: set1_curves_list also disables the
     * others for the curve a TLS 1.2 server picks from the client's list
     * (without it, a server takes P-521, X448, brainpool or secp256k1 when
     * the client offers only those). Then the order, X25519 first. */
    else if (wolfSSL_CTX_set1_curves_list(ctx, CURVES) != WOLFSSL_SUCCESS)
        *failed = "restricting the curves to " CURVES;
    else if (wolfSSL_CTX_set_groups(ctx, groups, (int)(sizeof groups / sizeof groups[0])) !=
             WOLFSSL_SUCCESS)
        *failed = "setting the key exchange groups";
    /* TLS 1.2's supported_groups extension: the same curves, X25519 first. */
    for (size_t i = 0; !*failed && i < sizeof groups / sizeof groups[0]; i++)
        if (wolfSSL_CTX_UseSupportedCurve(ctx, (word16)groups[i]) != WOLFSSL_SUCCESS)
            *failed = "setting the supported curves";
    if (*failed) {
        wolfSSL_CTX_free(ctx);
        return NULL;
    }
    wolfSSL_CTX_SetIORecv(ctx, rn__tls_cb_recv);
    wolfSSL_CTX_SetIOSend(ctx, rn__tls_cb_send);
    /* Debian builds wolfSSL with verification off by default: a client
     * must ask for it, always. A server asks only with
     * rn_tls_config_require_client_cert. */
    if (server)
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
    else
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, rn__tls_verify_cb);
    return ctx;
}

static rn_tls_config *config_new(bool server, const char *what)
{
    pthread_once(&init_once, wolf_init);
    if (init_rc < 0) {
        rn__err(RN_ETLS, "%s: %s", what, init_msg);
        return NULL;
    }
    rn__tls_thread_used(); /* loading keys runs ECC code on this thread */
    rn_tls_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        rn__err(-ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    const char *failed;
    cfg->ctx = rn__tls_ctx_new(server, &failed);
    if (!cfg->ctx) {
        free(cfg);
        rn__err(strstr(failed, "memory") ? -ENOMEM : RN_ETLS, "%s: wolfSSL refused %s", what,
                failed);
        return NULL;
    }
    atomic_init(&cfg->refs, 1);
    atomic_init(&cfg->frozen, false);
    pthread_mutex_init(&cfg->freeze_mu, NULL);
    cfg->server = server;
    rn__tls_resume_init(cfg, cfg->ctx);
    return cfg;
}

void rn__tls_config_ref(rn_tls_config *cfg)
{
    atomic_fetch_add(&cfg->refs, 1);
}

void rn__tls_config_unref(rn_tls_config *cfg)
{
    if (!cfg || atomic_fetch_sub(&cfg->refs, 1) != 1)
        return;
    rn__tls_certs_free(cfg);
    rn__tls_resume_free(cfg);
    wolfSSL_CTX_free(cfg->ctx);
    pthread_mutex_destroy(&cfg->freeze_mu);
    free(cfg->alpn);
    free(cfg->client_ca);
    free(cfg);
}

RN_EXPORT void rn_tls_config_free(rn_tls_config *cfg)
{
    rn__tls_config_unref(cfg);
}

/* ---- trust anchors ------------------------------------------------------- */

static int count_anchors(WOLFSSL_CTX *ctx)
{
    WOLFSSL_CERT_MANAGER *cm = wolfSSL_CTX_GetCertManager(ctx);
    WOLF_STACK_OF(WOLFSSL_X509) *sk = cm ? wolfSSL_CertManagerGetCerts(cm) : NULL;
    if (!sk)
        return 0;
    int n = wolfSSL_sk_X509_num(sk);
    wolfSSL_sk_X509_pop_free(sk, wolfSSL_X509_free);
    return n;
}

/* Loading ignores a bad directory and one with no certificate in it (the
 * count of anchors below decides); wolfSSL defines these two flags only
 * in builds with its Qt support (Debian's, not the fast build's), and
 * otherwise has no such failures to ignore. */
#ifndef WOLFSSL_LOAD_FLAG_IGNORE_BAD_PATH_ERR
#define WOLFSSL_LOAD_FLAG_IGNORE_BAD_PATH_ERR 0
#endif
#ifndef WOLFSSL_LOAD_FLAG_IGNORE_ZEROFILE
#define WOLFSSL_LOAD_FLAG_IGNORE_ZEROFILE 0
#endif

/* The system trust store, or what SSL_CERT_FILE / SSL_CERT_DIR (a
 * colon-separated list, as OpenSSL reads it) name instead. Certificates
 * wolfSSL cannot parse are skipped rather than failing the whole store. */
static int load_system_trust(rn_tls_config *cfg)
{
    const char *file = getenv("SSL_CERT_FILE");
    const char *dirs = getenv("SSL_CERT_DIR");
    if (file && !*file)
        file = NULL;
    if (dirs && !*dirs)
        dirs = NULL;
    bool system = !file && !dirs;
    if (system) {
        if (access(SYSTEM_CA_FILE, R_OK) == 0)
            file = SYSTEM_CA_FILE;
        else
            dirs = SYSTEM_CA_DIR;
        snprintf(cfg->trust, sizeof cfg->trust, "the system trust store %s", file ? file : dirs);
    } else {
        snprintf(cfg->trust, sizeof cfg->trust, "%s%s%s%s%s", file ? "SSL_CERT_FILE=" : "",
                 file ? file : "", file && dirs ? ", " : "", dirs ? "SSL_CERT_DIR=" : "",
                 dirs ? dirs : "");
    }
    const int flags = WOLFSSL_LOAD_FLAG_IGNORE_ERR | WOLFSSL_LOAD_FLAG_IGNORE_BAD_PATH_ERR |
                      WOLFSSL_LOAD_FLAG_IGNORE_ZEROFILE;
    if (file)
        (void)wolfSSL_CTX_load_verify_locations_ex(cfg->ctx, file, NULL, flags);
    if (dirs) {
        char *copy = strdup(dirs), *save = NULL;
        if (!copy)
            return rn__err(-ENOMEM, "out of memory");
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save))
            (void)wolfSSL_CTX_load_verify_locations_ex(cfg->ctx, NULL, d, flags);
        free(copy);
    }
    if (count_anchors(cfg->ctx) == 0) {
        /* Fail closed, and say so: without anchors no server can be verified. */
        return rn__err(RN_ETLS_VERIFY,
                       "no trusted CA certificate could be loaded from %s, "
                       "so no server certificate can be verified",
                       cfg->trust);
    }
    return 0;
}

int rn__tls_config_use(rn_tls_config *cfg, const char *what)
{
    if (!atomic_load_explicit(&cfg->frozen, memory_order_acquire)) {
        pthread_mutex_lock(&cfg->freeze_mu);
        if (!atomic_load_explicit(&cfg->frozen, memory_order_relaxed)) {
            if (!cfg->server && !cfg->ca_set)
                cfg->load_err = load_system_trust(cfg);
            if (cfg->load_err == 0)
                cfg->load_err = cfg->server ? rn__tls_sni_freeze(cfg) : rn__tls_resume_freeze(cfg);
            if (cfg->load_err < 0)
                snprintf(cfg->load_msg, sizeof cfg->load_msg, "%s", rn_last_error());
            atomic_store_explicit(&cfg->frozen, true, memory_order_release);
        }
        pthread_mutex_unlock(&cfg->freeze_mu);
    }
    if (cfg->load_err < 0)
        return rn__err(cfg->load_err, "%s: %s", what, cfg->load_msg);
    return 0;
}

/* Replace cfg's anchors with the certificates of pem_file. On any failure
 * the config trusts nothing (fail closed), never the system store. */
static int load_ca_file(rn_tls_config *cfg, const char *pem_file, const char *what)
{
    wolfSSL_CTX_UnloadCAs(cfg->ctx);
    cfg->ca_set = true;
    snprintf(cfg->trust, sizeof cfg->trust, "the CA file %s", pem_file);
    if (access(pem_file, R_OK) != 0) {
        int e = -errno;
        return rn__err(e, "%s: cannot read %s: %s", what, pem_file, rn_strerror(e));
    }
    int r = wolfSSL_CTX_load_verify_locations(cfg->ctx, pem_file, NULL);
    if (r != WOLFSSL_SUCCESS || count_anchors(cfg->ctx) == 0) {
        char eb[120];
        return rn__err(
            RN_ETLS, "%s: %s holds no usable PEM CA certificate (%s); the config now trusts no CA",
            what, pem_file, r != WOLFSSL_SUCCESS ? rn__tls_errstr(r, eb, sizeof eb) : "empty");
    }
    return 0;
}

/* ---- public calls -------------------------------------------------------- */

RN_EXPORT rn_tls_config *rn_tls_client_config(void)
{
    /* The trust store is loaded when the config is first used, so that
     * rn_tls_config_set_ca_file can replace it without the cost. */
    return config_new(false, "tls_client_config");
}

int rn__tls_ctx_use_cert(WOLFSSL_CTX *ctx, const char *cert_pem, const char *key_pem,
                         const char *what)
{
    if (!cert_pem || !key_pem)
        return rn__err(-EINVAL, "%s: %s is NULL", what, !cert_pem ? "cert_pem" : "key_pem");
    const char *files[2] = {cert_pem, key_pem};
    for (int i = 0; i < 2; i++) {
        if (access(files[i], R_OK) != 0) {
            int e = -errno;
            return rn__err(e, "%s: cannot read %s: %s", what, files[i], rn_strerror(e));
        }
    }
    char eb[120];
    int r = wolfSSL_CTX_use_certificate_chain_file(ctx, cert_pem);
    if (r != WOLFSSL_SUCCESS)
        return rn__err(RN_ETLS, "%s: %s is not a usable PEM certificate chain (%s)", what, cert_pem,
                       r < 0 ? rn__tls_errstr(r, eb, sizeof eb) : "no certificate found");
    r = wolfSSL_CTX_use_PrivateKey_file(ctx, key_pem, WOLFSSL_FILETYPE_PEM);
    if (r != WOLFSSL_SUCCESS)
        return rn__err(RN_ETLS, "%s: %s is not a usable PEM private key (%s)", what, key_pem,
                       r < 0 ? rn__tls_errstr(r, eb, sizeof eb) : "no key found");
    r = wolfSSL_CTX_check_private_key(ctx);
    if (r != WOLFSSL_SUCCESS || rn__tls_ec_key_check(cert_pem, key_pem) == 0)
        return rn__err(RN_ETLS, "%s: the key in %s does not belong to the certificate in %s", what,
                       key_pem, cert_pem);
    return 0;
}

static int use_cert(rn_tls_config *cfg, const char *cert_pem, const char *key_pem, const char *what)
{
    int rc = rn__tls_ctx_use_cert(cfg->ctx, cert_pem, key_pem, what);
    if (rc == 0 && cfg->server)
        rc = rn__tls_cert_names(cfg, 0, cert_pem, what);
    return rc;
}

RN_EXPORT rn_tls_config *rn_tls_server_config(const char *cert_pem, const char *key_pem)
{
    rn_tls_config *cfg = config_new(true, "tls_server_config");
    if (cfg && use_cert(cfg, cert_pem, key_pem, "tls_server_config") < 0) {
        rn__tls_config_unref(cfg);
        return NULL;
    }
    return cfg;
}

RN_EXPORT int rn_tls_config_set_ca_file(rn_tls_config *cfg, const char *pem_file)
{
    int rc;
    if (config_frozen(cfg, "tls_config_set_ca_file", &rc))
        return rc;
    if (!pem_file || !*pem_file)
        return rn__err(-EINVAL, "tls_config_set_ca_file: pem_file is NULL or empty");
    if (cfg->server && cfg->client_ca) { /* mTLS: every chain's context verifies with it */
        char *copy = strdup(pem_file);
        if (!copy)
            return rn__err(-ENOMEM, "tls_config_set_ca_file: out of memory");
        free(cfg->client_ca);
        cfg->client_ca = copy;
    }
    return load_ca_file(cfg, pem_file, "tls_config_set_ca_file");
}

RN_EXPORT int rn_tls_config_set_cert(rn_tls_config *cfg, const char *cert_pem, const char *key_pem)
{
    int rc;
    if (config_frozen(cfg, "tls_config_set_cert", &rc))
        return rc;
    return use_cert(cfg, cert_pem, key_pem, "tls_config_set_cert");
}

RN_EXPORT int rn_tls_config_require_client_cert(rn_tls_config *cfg, const char *ca_pem_file)
{
    int rc;
    if (config_frozen(cfg, "tls_config_require_client_cert", &rc))
        return rc;
    if (!cfg->server)
        return rn__err(-EINVAL, "tls_config_require_client_cert: not a server config");
    if (!ca_pem_file || !*ca_pem_file)
        return rn__err(-EINVAL, "tls_config_require_client_cert: ca_pem_file is NULL or empty");
    /* Ask for the certificate and refuse a client without one even before
     * the CA file loads, so a failed call cannot leave mTLS half on. */
    wolfSSL_CTX_set_verify(cfg->ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           rn__tls_verify_cb);
    /* Every chain's context verifies clients the same way (sni.c, at
     * freeze), from the same file. */
    char *copy = strdup(ca_pem_file);
    if (!copy)
        return rn__err(-ENOMEM, "tls_config_require_client_cert: out of memory");
    free(cfg->client_ca);
    cfg->client_ca = copy;
    return load_ca_file(cfg, ca_pem_file, "tls_config_require_client_cert");
}

RN_EXPORT int rn_tls_config_set_alpn(rn_tls_config *cfg, const char *protocols)
{
    int rc;
    if (config_frozen(cfg, "tls_config_set_alpn", &rc))
        return rc;
    char *copy = NULL;
    if (protocols && *protocols) {
        /* Each name 1..255 bytes (RFC 7301), separated by single commas. */
        size_t run = 0, names = 0;
        for (const char *p = protocols;; p++) {
            if (*p == ',' || *p == '\0') {
                if (run == 0 || run > 255)
                    return rn__err(
                        -EINVAL,
                        "tls_config_set_alpn: \"%s\" has an empty or over-long protocol name",
                        protocols);
                run = 0;
                names++;
                if (*p == '\0')
                    break;
            } else {
                run++;
            }
        }
        if (strlen(protocols) > 1024)
            return rn__err(-EINVAL, "tls_config_set_alpn: the protocol list is over 1024 bytes");
        /* wolfSSL_UseALPN silently drops the names past its limit (found by
         * tests/fuzz/fuzz_alpn): refuse the list instead. */
        if (names > WOLFSSL_MAX_ALPN_NUMBER)
            return rn__err(-EINVAL,
                           "tls_config_set_alpn: the list has %zu protocol names, "
                           "more than the %d wolfSSL offers",
                           names, (int)WOLFSSL_MAX_ALPN_NUMBER);
        copy = strdup(protocols);
        if (!copy)
            return rn__err(-ENOMEM, "tls_config_set_alpn: out of memory");
    }
    free(cfg->alpn);
    cfg->alpn = copy;
    return 0;
}

/* ---- the config behind rn_tls_connect ------------------------------------ */

static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static rn_tls_config *default_cfg;
static char *default_file, *default_dir; /* the environment it was built for */

static bool same_env(const char *a, const char *b)
{
    if (!a || !*a)
        return !b || !*b;
    return b && strcmp(a, b) == 0;
}

rn_tls_config *rn__tls_default_client(void)
{
    const char *file = getenv("SSL_CERT_FILE"), *dir = getenv("SSL_CERT_DIR");
    pthread_mutex_lock(&default_mu);
    if (!default_cfg || !same_env(file, default_file) || !same_env(dir, default_dir)) {
        rn_tls_config *cfg = config_new(false, "tls_connect");
        if (!cfg) {
            pthread_mutex_unlock(&default_mu);
            return NULL;
        }
        rn__tls_config_unref(default_cfg); /* connections using it keep theirs */
        free(default_file);
        free(default_dir);
        default_cfg = cfg;
        default_file = file ? strdup(file) : NULL;
        default_dir = dir ? strdup(dir) : NULL;
    }
    rn_tls_config *cfg = default_cfg;
    rn__tls_config_ref(cfg);
    pthread_mutex_unlock(&default_mu);
    return cfg;
}
