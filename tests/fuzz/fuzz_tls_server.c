/* fuzz_tls_server.c - libFuzzer target: the bytes a TLS client sends, as
 * chunks (fuzz_common.h), into ringnet's server side: rn_conn_accept_tls
 * on a connection over a socketpair, the real session code and wolfSSL
 * behind it, then an answer and reads to the end. Seeds: what openssl
 * s_client sent to this very server (make_corpus.sh). */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rn_tls_config_free(rn_fuzz_server_config(0)); /* fails early, with the reason, if the certificates are missing */
    rn_fuzz_wolf_down();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return rn_fuzz_tls_exec(data, size, true);
}
