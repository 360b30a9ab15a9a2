/* fuzz_common.h - what the fuzz targets and the seed recorder share: a
 * repeatable random stream for wolfSSL, the chunked input format of the TLS
 * targets, and the ringnet side of a TLS exchange over one end of a
 * socketpair. Private to tests/fuzz. */
#ifndef RN_FUZZ_COMMON_H
#define RN_FUZZ_COMMON_H

#include "tls.h" /* api.h, rn.h, ringnet.h, wolfSSL */

#include <stddef.h>
#include <stdint.h>

/* Abort (a finding for libFuzzer) with a message when cond is false. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            rn_fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                  \
    } while (0)
void rn_fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* wolfSSL seeds its generators from /dev/urandom (open + read). The TLS
 * targets define open() so that this path reads a fixed stream instead,
 * restarted by rn_fuzz_rng_reset: the same input then meets the same
 * ClientHello / ServerHello, and a recorded peer flight (make_corpus.sh)
 * stays valid when it is replayed. rn_fuzz_rng_reset also brings wolfSSL
 * up (wolfSSL_Init), rn_fuzz_wolf_down takes it down to nothing
 * (wolfSSL_Cleanup): one pair per input, so that no state wolfSSL makes
 * at first use carries over. Call rn_fuzz_wolf_down once after making a
 * config outside an input (ringnet's first config brings wolfSSL up). */
void rn_fuzz_rng_reset(void);
void rn_fuzz_wolf_down(void);
/* How many times wolfSSL opened /dev/urandom so far. */
unsigned long rn_fuzz_rng_opens(void);

/* The input of the TLS targets: [1 byte: mode][u16 big-endian
 * length][bytes][u16 length][bytes]... The mode's bits choose the ringnet
 * side's setup (RN_FUZZ_*); the chunks are what the peer sends, one
 * message each. A length past the end takes what is left; zero lengths
 * are skipped. At most RN_FUZZ_MAX_CHUNKS chunks; the rest of the input
 * is the last one. */
/* client: connect to "127.0.0.1" (no SNI; the certificate's IP address is
 * checked by ringnet's verify callback) instead of "localhost" */
#define RN_FUZZ_CLIENT_IP 1u
/* client: present client.pem when the server asks (mTLS) */
#define RN_FUZZ_CLIENT_CERT 2u
/* server: require a client certificate signed by ca.pem (mTLS) */
#define RN_FUZZ_SERVER_MTLS 1u
#define RN_FUZZ_MAX_CHUNKS 64
struct rn_fuzz_chunk {
    const uint8_t *p;
    size_t len;
};
size_t rn_fuzz_split(const uint8_t *data, size_t size, struct rn_fuzz_chunk *out, size_t max);

/* Directory of the certificates make_corpus.sh made (ca.pem, server.pem,
 * server.key, client.pem, client.key): $RN_FUZZ_CERTS, else the one this
 * build's corpus uses. */
const char *rn_fuzz_cert_dir(void);
/* The configs of the TLS targets, made for each input (so that nothing of
 * wolfSSL's lives from one input to the next): the client trusts ca.pem
 * and offers ALPN "h2,http/1.1"; the server serves server.pem and accepts
 * the same ALPN names; mode as above. Both with wolfSSL's session cache
 * off. Abort with the reason if they cannot be made. */
rn_tls_config *rn_fuzz_client_config(unsigned mode);
rn_tls_config *rn_fuzz_server_config(unsigned mode);

/* The ringnet side, run in a task: wrap fd (one end of a SOCK_SEQPACKET
 * socketpair) in a conn, run the client handshake (STARTTLS on that conn)
 * or the server one, then send a short request/answer
 * and read to the end; close. Every result is checked against what the
 * header promises (aborts otherwise). */
void rn_fuzz_tls_client_side(int fd, unsigned mode);
void rn_fuzz_tls_server_side(int fd, unsigned mode);

/* What one run of the ringnet side did, for the recorder's report. */
struct rn_fuzz_outcome {
    int handshake;  /* 0 or the error */
    size_t plain;   /* plaintext bytes read */
    int end;        /* 0 (clean end) or the read error that ended it */
    char error[400];
};
extern struct rn_fuzz_outcome rn_fuzz_last;

/* One input of a TLS target: take the mode, split the rest into chunks, run the ringnet side
 * (server or client) on one end of a socketpair and a peer task that sends
 * the chunks on the other, on this thread's loop. With RN_FUZZ_VERBOSE set
 * the outcome goes to stderr (make_corpus.sh checks that every seed
 * replays to a finished handshake). Always 0. */
int rn_fuzz_tls_exec(const uint8_t *data, size_t size, bool server);

#endif /* RN_FUZZ_COMMON_H */
