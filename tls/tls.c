/* tls.c - placeholder until the wolfSSL engine lands (issue 3): every TLS
 * call fails with RN_ETLS and says so; nothing pretends to be encrypted. */
#include "api.h"

#include <stdlib.h>

#define NOT_YET(what) rn__err(RN_ETLS, "%s: TLS is not built into this version of ringnet yet", what)

ssize_t rn__tls_read(rn_conn *c, void *buf, size_t max, int64_t deadline)
{
    (void)c, (void)buf, (void)max, (void)deadline;
    return NOT_YET("read");
}
ssize_t rn__tls_write(rn_conn *c, const void *buf, size_t len, int64_t deadline)
{
    (void)c, (void)buf, (void)len, (void)deadline;
    return NOT_YET("write");
}
void rn__tls_close(rn_conn *c)
{
    (void)c;
}
int rn__tls_attach_server(rn_conn *c, const struct rn_tls_config *cfg)
{
    (void)c, (void)cfg;
    return NOT_YET("accept");
}
RN_EXPORT rn_tls_config *rn_tls_client_config(void)
{
    NOT_YET("tls_client_config");
    return NULL;
}
RN_EXPORT rn_tls_config *rn_tls_server_config(const char *cert_pem, const char *key_pem)
{
    (void)cert_pem, (void)key_pem;
    NOT_YET("tls_server_config");
    return NULL;
}
RN_EXPORT int rn_tls_config_set_ca_file(rn_tls_config *cfg, const char *f)
{
    (void)cfg, (void)f;
    return NOT_YET("tls_config_set_ca_file");
}
RN_EXPORT int rn_tls_config_set_cert(rn_tls_config *cfg, const char *c, const char *k)
{
    (void)cfg, (void)c, (void)k;
    return NOT_YET("tls_config_set_cert");
}
RN_EXPORT int rn_tls_config_require_client_cert(rn_tls_config *cfg, const char *f)
{
    (void)cfg, (void)f;
    return NOT_YET("tls_config_require_client_cert");
}
RN_EXPORT int rn_tls_config_set_alpn(rn_tls_config *cfg, const char *p)
{
    (void)cfg, (void)p;
    return NOT_YET("tls_config_set_alpn");
}
RN_EXPORT void rn_tls_config_free(rn_tls_config *cfg)
{
    (void)cfg;
}
RN_EXPORT int rn_tls_connect(rn_conn **out, const char *host, int port)
{
    (void)out, (void)host, (void)port;
    return NOT_YET("tls_connect");
}
RN_EXPORT int rn_tls_connect_with(rn_conn **out, const char *host, int port, const rn_tls_config *cfg)
{
    (void)out, (void)host, (void)port, (void)cfg;
    return NOT_YET("tls_connect_with");
}
RN_EXPORT int rn_conn_upgrade_to_tls(rn_conn *c, const char *host)
{
    (void)c, (void)host;
    return NOT_YET("upgrade_to_tls");
}
RN_EXPORT int rn_conn_upgrade_to_tls_with(rn_conn *c, const char *host, const rn_tls_config *cfg)
{
    (void)c, (void)host, (void)cfg;
    return NOT_YET("upgrade_to_tls_with");
}
RN_EXPORT int rn_tls_listen(rn_server **out, const char *host, int port, const rn_tls_config *cfg)
{
    (void)out, (void)host, (void)port, (void)cfg;
    return NOT_YET("tls_listen");
}
RN_EXPORT int rn_conn_accept_tls(rn_conn *c, const rn_tls_config *cfg)
{
    (void)c, (void)cfg;
    return NOT_YET("accept_tls");
}
RN_EXPORT const char *rn_conn_alpn(const rn_conn *c)
{
    (void)c;
    return NULL;
}
RN_EXPORT int rn_conn_handshake(rn_conn *c)
{
    return c && !c->tls ? 0 : NOT_YET("handshake");
}
