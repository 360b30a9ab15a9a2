/* fuzz_tls_client.c - libFuzzer target: the bytes a TLS server sends, as
 * chunks (fuzz_common.h), into ringnet's client: STARTTLS
 * (rn_conn_upgrade_to_tls_with) on a connection over a socketpair, the
 * real session code (tls/session.c) and wolfSSL behind it, then a request
 * and reads to the end. Seeds: what openssl s_server sent to this very
 * client (make_corpus.sh), so they replay to finished handshakes. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rn_tls_config_free(rn_fuzz_client_config(0)); /* fails early, with the reason, if the certificates are missing */
    rn_fuzz_wolf_down();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return rn_fuzz_tls_exec(data, size, false);
}
