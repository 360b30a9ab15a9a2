/* keycheck.c - does an EC private key belong to a certificate? wolfSSL
 * 5.5's wolfSSL_CTX_check_private_key, built as Debian builds it, imports
 * the private scalar beside the certificate's public point and checks the
 * pair only as far as the point lies on the curve: any P-256 key passes
 * for any P-256 certificate. Here the public point is computed from the
 * private key and compared with the certificate's. (RSA keys wolfSSL
 * checks itself: it compares the modulus.) */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>

#define MAX_KEY_FILE (64 * 1024)

static unsigned char *read_small_file(const char *path, long *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = malloc(MAX_KEY_FILE);
    size_t n = buf ? fread(buf, 1, MAX_KEY_FILE, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n == MAX_KEY_FILE) {
        free(buf);
        return NULL;
    }
    *len = (long)n;
    return buf;
}

/* The uncompressed point of key into out; its length, or -1. */
static int point_of(ecc_key *key, unsigned char *out, word32 cap)
{
    word32 len = cap;
    return wc_ecc_export_x963(key, out, &len) == 0 ? (int)len : -1;
}

int rn__tls_ec_key_check(const char *cert_pem, const char *key_pem)
{
    int verdict = -1; /* not an EC pair we could read: no opinion */
    long pem_len = 0;
    unsigned char *pem = read_small_file(key_pem, &pem_len);
    unsigned char *der = pem ? malloc((size_t)pem_len) : NULL;
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(cert_pem, WOLFSSL_FILETYPE_PEM);
    ecc_key priv, pub;
    bool priv_init = false, pub_init = false;
    unsigned char spki[1024], a[200], b[200];
    int spki_len = (int)sizeof spki;
    if (!pem || !der || !x)
        goto out;
    int der_len = wc_KeyPemToDer(pem, (int)pem_len, der, (int)pem_len, NULL);
    if (der_len <= 0 || wolfSSL_X509_get_pubkey_buffer(x, spki, &spki_len) != WOLFSSL_SUCCESS)
        goto out;
    if (wc_ecc_init(&priv) != 0)
        goto out;
    priv_init = true;
    word32 idx = 0;
    if (wc_EccPrivateKeyDecode(der, &idx, &priv, (word32)der_len) != 0)
        goto out; /* not an EC key */
    if (wc_ecc_init(&pub) != 0)
        goto out;
    pub_init = true;
    idx = 0;
    if (wc_EccPublicKeyDecode(spki, &idx, &pub, (word32)spki_len) != 0) {
        verdict = 0; /* an EC key for a certificate whose key is not EC */
        goto out;
    }
    /* The point the private key makes, not one stored beside it. */
    if (wc_ecc_make_pub(&priv, NULL) != 0)
        goto out;
    int la = point_of(&priv, a, sizeof a), lb = point_of(&pub, b, sizeof b);
    if (la > 0 && lb > 0)
        verdict = la == lb && memcmp(a, b, (size_t)la) == 0;
out:
    if (priv_init)
        wc_ecc_free(&priv);
    if (pub_init)
        wc_ecc_free(&pub);
    if (x)
        wolfSSL_X509_free(x);
    if (der)
        memset(der, 0, (size_t)pem_len);
    if (pem)
        memset(pem, 0, (size_t)pem_len);
    free(der);
    free(pem);
    return verdict;
}
