/* verify.c - certificate verification: the callback that records the first
 * refusal in the session, and the sentence that explains it. */
#include "tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/wolfcrypt/asn.h>

/* The callback below finds its session through the store's ex_data and
 * must see the leaf even when wolfSSL accepts it (the IP literal check):
 * a wolfSSL without either would skip that check silently. */
#if !defined(HAVE_EX_DATA) || !defined(WOLFSSL_ALWAYS_VERIFY_CB)
#error                                                                                             \
    "ringnet needs a wolfSSL with HAVE_EX_DATA and WOLFSSL_ALWAYS_VERIFY_CB (see ci/build-wolfssl-aesni.sh)"
#endif

/* ---- verification -------------------------------------------------------- */

/* "DNS:localhost, IP:127.0.0.1" (the SANs), else "CN=..." of the leaf x,
 * the verify callback's current certificate. Read there, when the leaf is
 * refused, rather than afterwards from the session: the peer's chain stays
 * in the session only in builds with SESSION_CERTS (Debian's, not the fast
 * build's), and wolfSSL_get_peer_certificate is no way either (after some
 * refusals wolfSSL 5.5 has filled ssl->peerCert only partly, and it then
 * decodes the leaf over it, losing what was there: 19 KB a handshake,
 * found by tests/fuzz/fuzz_tls_client). */
static void leaf_names(WOLFSSL_X509 *x, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!x)
        return;
    size_t used = 0;
    WOLFSSL_GENERAL_NAMES *gns = wolfSSL_X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int n = gns ? wolfSSL_sk_GENERAL_NAME_num(gns) : 0;
    for (int i = 0; i < n && used + 1 < outlen; i++) {
        WOLFSSL_GENERAL_NAME *gn = wolfSSL_sk_GENERAL_NAME_value(gns, i);
        char one[80] = "";
        if (gn && gn->type == GEN_DNS && gn->d.dNSName) {
            snprintf(one, sizeof one, "DNS:%.*s", wolfSSL_ASN1_STRING_length(gn->d.dNSName),
                     (const char *)wolfSSL_ASN1_STRING_data(gn->d.dNSName));
        } else if (gn && gn->type == GEN_IPADD && gn->d.iPAddress) {
            int len = wolfSSL_ASN1_STRING_length(gn->d.iPAddress);
            const unsigned char *b = wolfSSL_ASN1_STRING_data(gn->d.iPAddress);
            char ip[INET6_ADDRSTRLEN] = "?";
            if (len == 4 || len == 16)
                inet_ntop(len == 4 ? AF_INET : AF_INET6, b, ip, sizeof ip);
            snprintf(one, sizeof one, "IP:%s", ip);
        }
        if (one[0])
            used += (size_t)snprintf(out + used, outlen - used, "%s%s", used ? ", " : "", one);
    }
    if (gns)
        wolfSSL_GENERAL_NAMES_free(gns);
    if (used == 0) {
        char cn[128] = "";
        WOLFSSL_X509_NAME *sn = wolfSSL_X509_get_subject_name(x);
        if (sn && wolfSSL_X509_NAME_get_text_by_NID(sn, NID_commonName, cn, (int)sizeof cn) > 0)
            snprintf(out, outlen, "CN=%s (no subjectAltName)", cn);
        else
            snprintf(out, outlen, "none");
    }
}

/* The refused certificate x, at depth, in words for the message. */
static void record_cert(struct rn__tls *t, WOLFSSL_X509 *x, int depth)
{
    struct rn__tls_diag *d = rn__tls_diag(t);
    if (!x || !d)
        return;
    WOLFSSL_X509_NAME *n = wolfSSL_X509_get_subject_name(x);
    if (n)
        wolfSSL_X509_NAME_oneline(n, d->verify_subject, (int)sizeof d->verify_subject);
    n = wolfSSL_X509_get_issuer_name(x);
    if (n)
        wolfSSL_X509_NAME_oneline(n, d->verify_issuer, (int)sizeof d->verify_issuer);
    WOLFSSL_ASN1_TIME *na = wolfSSL_X509_get_notAfter(x);
    if (na)
        wolfSSL_ASN1_TIME_to_string(na, d->verify_not_after, (int)sizeof d->verify_not_after);
    if (depth == 0)
        leaf_names(x, d->verify_names, sizeof d->verify_names);
}

/* Called for every certificate of the chain (WOLFSSL_ALWAYS_VERIFY_CB and
 * WOLFSSL_VERIFY_CB_ALL_CERTS, in both builds), ok or not: keeps the
 * first refusal for the message, and checks an IP literal against the
 * leaf itself, because wolfSSL 5.5's own address check (set1_ip_asc) lets
 * a certificate without the address through. */
int rn__tls_verify_cb(int ok, WOLFSSL_X509_STORE_CTX *store)
{
    WOLFSSL *ssl = wolfSSL_X509_STORE_CTX_get_ex_data(store, 0);
    struct rn__tls *t = ssl ? wolfSSL_GetIOReadCtx(ssl) : NULL;
    if (!t)
        return 0; /* no session to check the leaf against: refuse (fail closed) */
    int depth = wolfSSL_X509_STORE_CTX_get_error_depth(store);
    WOLFSSL_X509 *x = wolfSSL_X509_STORE_CTX_get_current_cert(store);
    if (ok && depth == 0 && !t->server && t->host_is_ip) {
        if (!x || wolfSSL_X509_check_ip_asc(x, t->host, 0) != WOLFSSL_SUCCESS) {
            if (t->verify_err == 0) {
                t->verify_err = IPADDR_MISMATCH;
                t->verify_depth = 0;
                record_cert(t, x, 0);
            }
            return 0;
        }
    }
    if (ok || t->verify_err != 0)
        return ok; /* keep the first reason: it is the root cause */
    t->verify_err = wolfSSL_X509_STORE_CTX_get_error(store);
    if (t->verify_err == 0)
        t->verify_err = -1;
    t->verify_depth = depth;
    record_cert(t, x, depth);
    return ok;
}

enum verify_kind { V_OTHER, V_EXPIRED, V_NOT_YET, V_ISSUER, V_NAME, V_SIGNATURE, V_NO_CERT };

static enum verify_kind classify(int e)
{
    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
    case ASN_AFTER_DATE_E:
        return V_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
    case ASN_BEFORE_DATE_E:
        return V_NOT_YET;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
    case ASN_NO_SIGNER_E:
    case ASN_SELF_SIGNED_E:
        return V_ISSUER;
    case 62: /* X509_V_ERR_HOSTNAME_MISMATCH (not in wolfSSL 5.5's table) */
    case 64: /* X509_V_ERR_IP_ADDRESS_MISMATCH */
    case DOMAIN_NAME_MISMATCH:
    case IPADDR_MISMATCH:
        return V_NAME;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case ASN_SIG_CONFIRM_E:
        return V_SIGNATURE;
    case NO_PEER_CERT:
        return V_NO_CERT;
    default:
        return V_OTHER;
    }
}

bool rn__tls_is_verify_error(struct rn__tls *t, int wolf_err)
{
    if (t->verify_err != 0)
        return true;
    if (classify(wolf_err) != V_OTHER)
        return true;
    return wolf_err == VERIFY_CERT_ERROR;
}

void rn__tls_verify_message(struct rn__tls *t, int wolf_err, char *out, size_t outlen)
{
    int e = t->verify_err ? t->verify_err : wolf_err;
    enum verify_kind k = classify(e);
    if (k == V_OTHER)
        k = classify(wolf_err);
    const struct rn__tls_diag *d = t->diag;
    const char *subj = d && d->verify_subject[0] ? d->verify_subject : "the peer's certificate";
    const char *trust = t->cfg->trust[0] ? t->cfg->trust : "the configured CAs";
    char eb[120];
    switch (k) {
    case V_EXPIRED:
        snprintf(out, outlen, "certificate expired: %s (depth %d) was valid until %s", subj,
                 t->verify_depth,
                 d && d->verify_not_after[0] ? d->verify_not_after : "a past date");
        break;
    case V_NOT_YET:
        snprintf(out, outlen, "certificate not yet valid: %s (depth %d)", subj, t->verify_depth);
        break;
    case V_ISSUER:
        snprintf(out, outlen,
                 "unknown issuer: %s, issued by %s, does not chain to a CA trusted by %s", subj,
                 d && d->verify_issuer[0] ? d->verify_issuer : "an unknown CA", trust);
        break;
    case V_NAME:
        snprintf(out, outlen, "name mismatch: expected %s %s, the certificate is for %s",
                 t->host_is_ip ? "IP address" : "host name", t->host,
                 d && d->verify_names[0] ? d->verify_names : "(unreadable)");
        break;
    case V_SIGNATURE:
        snprintf(out, outlen, "bad signature on %s (depth %d)", subj, t->verify_depth);
        break;
    case V_NO_CERT:
        snprintf(out, outlen, "the %s sent no certificate, and one is required",
                 t->server ? "client" : "server");
        break;
    default:
        snprintf(out, outlen, "certificate refused: %s (%s)",
                 t->verify_err > 0 ? wolfSSL_X509_verify_cert_error_string(t->verify_err)
                                   : rn__tls_errstr(e, eb, sizeof eb),
                 subj);
        break;
    }
}
