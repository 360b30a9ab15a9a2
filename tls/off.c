/* off.c - the public TLS calls of a library built with RINGNET_TLS=OFF
 * (compiled instead of the rest of tls/): each one exists and fails with
 * -EOPNOTSUPP and a sentence that says why; a connection is never TLS. */
#include "api.h"

#define NO_TLS "ringnet was built without TLS (RINGNET_TLS=OFF)"

static int no_tls(const char *what)
{
    return rn__err(-EOPNOTSUPP, "%s: " NO_TLS, what);
}

RN_EXPORT int rn_tls_connect_with(rn_conn **out, const char *host, int port,
                                  const rn_tls_config *cfg)
{
    if (out)
        *out = NULL;
    return no_tls("tls_connect");
}

RN_EXPORT int rn_tls_connect(rn_conn **out, const char *host, int port)
{
    return rn_tls_connect_with(out, host, port, NULL);
}

RN_EXPORT int rn_conn_upgrade_to_tls_with(rn_conn *c, const char *host, const rn_tls_config *cfg)
{
    return no_tls("upgrade_to_tls");
}

RN_EXPORT int rn_conn_upgrade_to_tls(rn_conn *c, const char *host)
{
    return no_tls("upgrade_to_tls");
}

RN_EXPORT int rn_tls_listen(rn_server **out, const char *host, int port, const rn_tls_config *cfg)
{
    if (out)
        *out = NULL;
    return no_tls("tls_listen");
}

RN_EXPORT int rn_conn_accept_tls(rn_conn *c, const rn_tls_config *cfg)
{
    return no_tls("accept_tls");
}

/* Every connection is plain: its handshake is done (the header's 0 for a
 * plain connection), after the checks every call makes. */
RN_EXPORT int rn_conn_handshake(rn_conn *c)
{
    int rc = rn__conn_enter(c, "handshake");
    if (rc == 0)
        rn__conn_leave(c);
    return rc;
}

RN_EXPORT const char *rn_conn_alpn(const rn_conn *c)
{
    return NULL;
}

RN_EXPORT bool rn_conn_is_tls(const rn_conn *c)
{
    return false;
}

RN_EXPORT rn_tls_config *rn_tls_client_config(void)
{
    (void)no_tls("tls_client_config");
    return NULL;
}

RN_EXPORT rn_tls_config *rn_tls_server_config(const char *cert_pem, const char *key_pem)
{
    (void)no_tls("tls_server_config");
    return NULL;
}

RN_EXPORT int rn_tls_config_set_ca_file(rn_tls_config *cfg, const char *pem_file)
{
    return no_tls("tls_config_set_ca_file");
}

RN_EXPORT int rn_tls_config_set_cert(rn_tls_config *cfg, const char *cert_pem, const char *key_pem)
{
    return no_tls("tls_config_set_cert");
}

RN_EXPORT int rn_tls_config_require_client_cert(rn_tls_config *server_cfg, const char *ca_pem_file)
{
    return no_tls("tls_config_require_client_cert");
}

RN_EXPORT int rn_tls_config_set_alpn(rn_tls_config *cfg, const char *protocols)
{
    return no_tls("tls_config_set_alpn");
}

/* No config can exist: nothing to free. */
RN_EXPORT void rn_tls_config_free(rn_tls_config *cfg)
{
}

RN_EXPORT int rn_tls_config_add_cert(rn_tls_config *cfg, const char *cert_pem, const char *key_pem)
{
    return no_tls("tls_config_add_cert");
}

RN_EXPORT int rn_server_set_tls_config(rn_server *s, const rn_tls_config *cfg)
{
    return no_tls("server_set_tls_config");
}

RN_EXPORT int rn_tls_config_set_session_cache(rn_tls_config *cfg, size_t entries)
{
    return no_tls("tls_config_set_session_cache");
}

RN_EXPORT bool rn_conn_tls_resumed(const rn_conn *c)
{
    return false;
}
