/* tls_prod_test.cc - production TLS: certificates chosen by SNI
 * (rn_tls_config_add_cert), rotation without a restart
 * (rn_server_set_tls_config), client session resumption against ringnet,
 * openssl s_server and gnutls-serv (rn_tls_config_set_session_cache,
 * rn_conn_tls_resumed), and the hostile cases: tickets from another
 * server or tampered with, SNI names of 255 bytes or with control bytes,
 * a rotation during 100 handshakes. */
#include "tls_helpers.h"

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace rnt;

namespace {

class TlsProdTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(TlsProdTest);

std::string Err(int rc) { return std::to_string(rc) + " (" + rn_strerror(rc) + "): " + rn_last_error(); }

/* More certificates, signed by the test CA: alpha (DNS:alpha.test), wild
 * (DNS:*.wild.test), cnonly (CN=cnonly.test, no subjectAltName), rsa (an
 * RSA key, DNS:rsa.test); both.pem trusts ca and ca2. */
struct ProdCerts {
    std::string alpha, alpha_key, wild, wild_key, cnonly, cnonly_key, rsa, rsa_key, both;
};

const char kMakeProdCerts[] = R"SH(
set -e
leaf() { # name algorithm-args subject ext
  openssl genpkey $2 -out "$1.key" 2>/dev/null
  openssl req -new -key "$1.key" -out "$1.csr" -subj "$3"
  printf '%b' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ../ca.pem -CAkey ../ca.key -CAcreateserial -days 825 \
    -out "$1.pem" -extfile "$1.ext" 2>/dev/null
}
EC="-algorithm EC -pkeyopt ec_paramgen_curve:P-256"
leaf alpha "$EC" /CN=alpha.test 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:alpha.test\n'
leaf wild "$EC" /CN=wild.test 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:*.wild.test\n'
leaf cnonly "$EC" /CN=cnonly.test 'basicConstraints=CA:FALSE\n'
leaf rsa "-algorithm RSA -pkeyopt rsa_keygen_bits:2048" /CN=rsa.test \
  'basicConstraints=CA:FALSE\nsubjectAltName=DNS:rsa.test\n'
cat ../ca.pem ../ca2.pem > both.pem
)SH";

const ProdCerts *Prod(const TestCerts *c, std::string *why) {
    static std::mutex mu;
    static bool tried = false;
    static ProdCerts pc;
    static std::string err;
    std::lock_guard<std::mutex> lock(mu);
    if (!tried) {
        tried = true;
        std::string dir = c->dir + "/prod";
        std::string script = c->dir + "/prod.sh";
        std::ofstream(script) << kMakeProdCerts;
        std::string cmd = "mkdir -p '" + dir + "' && cd '" + dir + "' && sh '" + script + "' >'" + dir + "/log' 2>&1";
        if (system(cmd.c_str()) != 0) {
            err = "making the SNI test certificates failed (see " + dir + "/log)";
        } else {
            for (auto [s, k, n] :
                 {std::tuple{&pc.alpha, &pc.alpha_key, "alpha"}, std::tuple{&pc.wild, &pc.wild_key, "wild"},
                  std::tuple{&pc.cnonly, &pc.cnonly_key, "cnonly"}, std::tuple{&pc.rsa, &pc.rsa_key, "rsa"}}) {
                *s = dir + "/" + n + ".pem";
                *k = dir + "/" + n + ".key";
            }
            pc.both = dir + "/both.pem";
        }
    }
    if (!err.empty()) {
        *why = err;
        return nullptr;
    }
    return &pc;
}

#define RNT_NEED_PROD(c, p)                                                                                            \
    RNT_NEED_CERTS(c);                                                                                                 \
    std::string p##_why;                                                                                               \
    const ProdCerts *p = Prod(c, &p##_why);                                                                            \
    ASSERT_NE(nullptr, p) << p##_why

/* A ringnet TLS server on 127.0.0.1: each connection gets "hello\n" after
 * its handshake, then an echo (echo) or a close. Counters for the test. */
struct ProdServer {
    rn_server *srv = nullptr;
    int port = 0;
    bool echo = false;
    std::atomic<int> accepted{0}, done{0}, failures{0}, resumed{0}, last_error{0};
};

void StartProd(ProdServer *e, const rn_tls_config *cfg, bool echo = false) {
    e->echo = echo;
    int rc = rn_tls_listen(&e->srv, "127.0.0.1", 0, cfg);
    ASSERT_EQ(0, rc) << Err(rc);
    e->port = PortOf(rn_server_addr(e->srv));
    RNT_SPAWN([e] {
        for (;;) {
            rn_conn *c = nullptr;
            if (rn_server_accept(e->srv, &c) != 0)
                return; /* closed */
            e->accepted++;
            RNT_SPAWN([e, c] {
                int hs = rn_conn_handshake(c);
                if (hs != 0) {
                    e->failures++;
                    e->last_error = hs;
                } else {
                    if (rn_conn_tls_resumed(c))
                        e->resumed++;
                    if (rn_conn_write_all(c, "hello\n", 6) == 0 && e->echo) {
                        char buf[4096];
                        for (;;) {
                            ssize_t n = rn_conn_read(c, buf, sizeof buf);
                            if (n <= 0 || rn_conn_write_all(c, buf, (size_t)n) != 0)
                                break;
                        }
                    }
                }
                rn_conn_close(c);
                e->done++;
            });
        }
    });
}

void StopProd(ProdServer *e) {
    EXPECT_TRUE(WaitUntil([&] { return e->done == e->accepted; }));
    rn_server_close(e->srv);
    e->srv = nullptr;
}

/* Connect to 127.0.0.1:port in plain TCP and start TLS naming host (so
 * that any name reaches the test server); 0 and *out, or an error. */
int ConnectNaming(rn_conn **out, int port, const char *host, const rn_tls_config *cfg) {
    rn_conn *c = nullptr;
    int rc = rn_tcp_connect(&c, "127.0.0.1", port);
    if (rc != 0)
        return rc;
    rc = rn_conn_upgrade_to_tls_with(c, host, cfg);
    if (rc != 0) {
        rn_conn_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* One visit to a ProdServer: connect naming host, read the greeting (the
 * TLS 1.3 ticket comes before it), close. 0, or an error; *resumed. */
int Visit(int port, const char *host, const rn_tls_config *cfg, bool *resumed) {
    rn_conn *c = nullptr;
    int rc = ConnectNaming(&c, port, host, cfg);
    if (rc != 0)
        return rc;
    char buf[6];
    rc = rn_conn_read_exact(c, buf, 6);
    *resumed = rn_conn_tls_resumed(c);
    rn_conn_close(c);
    return rc;
}

/* `openssl s_client` against 127.0.0.1:port with the given SNI name (and
 * extra arguments); its output once it exits. -ign_eof: it stays until
 * the server closes, so that it reads the TLS 1.3 ticket too. */
std::string SClient(int port, const std::string &sni, const std::vector<std::string> &extra = {}) {
    Proc p;
    std::string why;
    std::vector<std::string> argv = {"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port),
                                     "-ign_eof"};
    if (!sni.empty()) {
        argv.push_back("-servername");
        argv.push_back(sni);
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!p.Start(argv, &why)) {
        ADD_FAILURE() << why;
        return "";
    }
    p.CloseStdin();
    EXPECT_EQ(0, p.Wait()) << p.Output();
    return p.Output();
}

/* ---- certificates by SNI ------------------------------------------------------------------------------ */

TEST_P(TlsProdTest, SniPicksTheChainWhoseNamesMatchAndTheFirstOtherwise) {
    RNT_NEED_PROD(c, p);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c); /* localhost first */
        ASSERT_EQ(0, rn_tls_config_add_cert(scfg, p->alpha.c_str(), p->alpha_key.c_str())) << rn_last_error();
        ASSERT_EQ(0, rn_tls_config_add_cert(scfg, p->wild.c_str(), p->wild_key.c_str())) << rn_last_error();
        TlsConfig ccfg = ClientConfig(c);
        ProdServer e;
        StartProd(&e, scfg);
        bool resumed;
        /* The client verifies the name: each succeeds only with its own chain. */
        for (const char *host : {"localhost", "alpha.test", "ALPHA.Test", "x.wild.test", "Mail.WILD.test"})
            EXPECT_EQ(0, Visit(e.port, host, ccfg, &resumed)) << host << ": " << rn_last_error();
        /* One label only, and never the bare domain: these get the first chain (localhost). */
        for (const char *host : {"wild.test", "a.b.wild.test", "nomatch.test", "alpha.test.evil"}) {
            int rc = Visit(e.port, host, ccfg, &resumed);
            EXPECT_EQ(RN_ETLS_VERIFY, rc) << host << ": " << Err(rc);
            EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("localhost")) << rn_last_error();
        }
        StopProd(&e);
    });
}

TEST_P(TlsProdTest, SniChainsOverStarttlsOnBothSides) {
    RNT_NEED_PROD(c, p);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c);
        ASSERT_EQ(0, rn_tls_config_add_cert(scfg, p->alpha.c_str(), p->alpha_key.c_str())) << rn_last_error();
        TlsConfig ccfg = ClientConfig(c);
        Server srv;
        ASSERT_EQ(0, rn_tcp_listen(srv.out(), "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(srv));
        std::atomic<int> served{0}, ok{0};
        RNT_SPAWN([&] {
            for (int i = 0; i < 2; i++) {
                rn_conn *a = nullptr;
                ASSERT_EQ(0, rn_server_accept(srv, &a)) << rn_last_error();
                RNT_SPAWN([&, a] {
                    char line[9];
                    /* "STARTTLS\n" in plaintext, the go-ahead, then TLS. */
                    if (rn_conn_read_exact(a, line, 9) == 0 && rn_conn_write_all(a, "GO\n", 3) == 0 &&
                        rn_conn_accept_tls(a, scfg) == 0 && rn_conn_write_all(a, "hello\n", 6) == 0)
                        ok++;
                    rn_conn_close(a);
                    served++;
                });
            }
        });
        for (const char *host : {"alpha.test", "localhost"}) {
            rn_conn *cl = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&cl, "127.0.0.1", port)) << rn_last_error();
            char go[3], hello[6];
            ASSERT_EQ(0, rn_conn_write_all(cl, "STARTTLS\n", 9));
            ASSERT_EQ(0, rn_conn_read_exact(cl, go, 3));
            EXPECT_EQ(0, rn_conn_upgrade_to_tls_with(cl, host, ccfg)) << host << ": " << rn_last_error();
            EXPECT_EQ(0, rn_conn_read_exact(cl, hello, 6)) << rn_last_error();
            rn_conn_close(cl);
        }
        EXPECT_TRUE(WaitUntil([&] { return served == 2; }));
        EXPECT_EQ(2, ok.load());
    });
}

TEST_P(TlsProdTest, SniMatchesTheCommonNameOfAChainWithoutSubjectAltNameAndAnRsaChainBesideEc) {
    RNT_NEED_PROD(c, p);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c);
        ASSERT_EQ(0, rn_tls_config_add_cert(scfg, p->cnonly.c_str(), p->cnonly_key.c_str())) << rn_last_error();
        ASSERT_EQ(0, rn_tls_config_add_cert(scfg, p->rsa.c_str(), p->rsa_key.c_str())) << rn_last_error();
        ProdServer e;
        StartProd(&e, scfg);
        std::string out = SClient(e.port, "cnonly.test");
        EXPECT_NE(std::string::npos, out.find("subject=CN = cnonly.test")) << out;
        out = SClient(e.port, "rsa.test", {"-tls1_3"});
        EXPECT_NE(std::string::npos, out.find("subject=CN = rsa.test")) << out;
        out = SClient(e.port, "rsa.test", {"-tls1_2"});
        EXPECT_NE(std::string::npos, out.find("subject=CN = rsa.test")) << out;
        EXPECT_NE(std::string::npos, out.find("ECDHE-RSA")) << out;
        out = SClient(e.port, "");
        EXPECT_NE(std::string::npos, out.find("subject=CN = localhost")) << out;
        StopProd(&e);
        EXPECT_EQ(0, e.failures.load()) << Err(e.last_error);
    });
}

/* mTLS applies to every chain, whichever the name picks. */
TEST_P(TlsProdTest, EveryChainRequiresTheClientCertificateOfAnMtlsConfig) {
    RNT_NEED_PROD(c, p);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c);
        ASSERT_EQ(0, rn_tls_config_add_cert(scfg, p->alpha.c_str(), p->alpha_key.c_str())) << rn_last_error();
        ASSERT_EQ(0, rn_tls_config_require_client_cert(scfg, c->ca.c_str())) << rn_last_error();
        TlsConfig anon = ClientConfig(c), with_cert = ClientConfig(c);
        ASSERT_EQ(0, rn_tls_config_set_cert(with_cert, c->client.c_str(), c->client_key.c_str())) << rn_last_error();
        ASSERT_EQ(0, rn_tls_config_set_session_cache(anon, 0));
        ProdServer e;
        StartProd(&e, scfg);
        bool resumed;
        for (const char *host : {"alpha.test", "localhost"}) {
            EXPECT_EQ(0, Visit(e.port, host, with_cert, &resumed)) << host << ": " << rn_last_error();
            EXPECT_NE(0, Visit(e.port, host, anon, &resumed)) << host;
        }
        StopProd(&e);
        EXPECT_EQ(2, e.failures.load());
        EXPECT_EQ(RN_ETLS_VERIFY, e.last_error.load()) << rn_strerror(e.last_error);
    });
}

/* Hostile: names no certificate could carry get the first chain and a
 * handshake as usual, never a crash or a refusal. */
TEST_P(TlsProdTest, SniOf255BytesAndSniWithControlBytesGetTheFirstChain) {
    RNT_NEED_PROD(c, p);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c);
        ASSERT_EQ(0, rn_tls_config_add_cert(scfg, p->alpha.c_str(), p->alpha_key.c_str())) << rn_last_error();
        ProdServer e;
        StartProd(&e, scfg);
        std::string long_name = std::string(251, 'a') + ".tes"; /* 255 bytes */
        ASSERT_EQ(255u, long_name.size());
        for (const std::string &sni :
             {long_name, std::string("alpha.test\x01\x7f"), std::string("\x1b[31m.test"), std::string("alpha.test.")}) {
            std::string out = SClient(e.port, sni);
            EXPECT_NE(std::string::npos, out.find("subject=CN = localhost")) << out;
        }
        /* ringnet's own client sends a 255-byte name too; the server's
         * certificate then fails the client's name check, not the server. */
        TlsConfig ccfg = ClientConfig(c);
        bool resumed;
        int rc = Visit(e.port, long_name.c_str(), ccfg, &resumed);
        EXPECT_EQ(RN_ETLS_VERIFY, rc) << Err(rc);
        StopProd(&e);
    });
}

TEST(TlsProdConfigTest, AddCertFailsAtTheCallWithTheReason) {
    RNT_NEED_PROD(c, p);
    TlsConfig scfg = ServerConfig(c);
    ASSERT_NE(nullptr, scfg.get());
    EXPECT_EQ(-ENOENT, rn_tls_config_add_cert(scfg, "/nonexistent/x.pem", p->alpha_key.c_str()));
    EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("/nonexistent/x.pem")) << rn_last_error();
    EXPECT_EQ(RN_ETLS, rn_tls_config_add_cert(scfg, p->alpha.c_str(), p->wild_key.c_str()));
    EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("does not belong")) << rn_last_error();
    EXPECT_EQ(RN_ETLS, rn_tls_config_add_cert(scfg, c->empty.c_str(), p->alpha_key.c_str()));
    EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("certificate chain")) << rn_last_error();
    EXPECT_EQ(-EINVAL, rn_tls_config_add_cert(scfg, nullptr, p->alpha_key.c_str()));
    EXPECT_EQ(-EINVAL, rn_tls_config_add_cert(nullptr, p->alpha.c_str(), p->alpha_key.c_str()));
    /* The same check guards the first chain: any P-256 key would pass wolfSSL's own. */
    EXPECT_EQ(nullptr, rn_tls_server_config(c->server.c_str(), c->client_key.c_str()));
    EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("does not belong")) << rn_last_error();
    TlsConfig ccfg = ClientConfig(c);
    EXPECT_EQ(-EINVAL, rn_tls_config_add_cert(ccfg, p->alpha.c_str(), p->alpha_key.c_str()));
    EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("client config")) << rn_last_error();
    /* The failures left the config as it was: it still takes a good chain. */
    EXPECT_EQ(0, rn_tls_config_add_cert(scfg, p->alpha.c_str(), p->alpha_key.c_str())) << rn_last_error();
}

/* ---- rotation ---------------------------------------------------------------------------------------- */

/* The Let's Encrypt case: the certificate is replaced, every open
 * connection goes on, new ones get the new certificate. */
TEST_P(TlsProdTest, RotationKeepsEveryOpenConnectionAndNewOnesGetTheNewCertificate) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig old_cfg = ServerConfig(c);
        ProdServer e;
        StartProd(&e, old_cfg, true);
        TlsConfig trust_ca = ClientConfig(c->ca), trust_ca2 = ClientConfig(c->ca2);
        const int kOpen = 5;
        std::vector<rn_conn *> open(kOpen, nullptr);
        char buf[6];
        for (auto &o : open) {
            ASSERT_EQ(0, ConnectNaming(&o, e.port, "localhost", trust_ca)) << rn_last_error();
            ASSERT_EQ(0, rn_conn_read_exact(o, buf, 6));
        }
        /* Before: the server's certificate is ca's, so a ca2 client refuses it. */
        bool resumed;
        EXPECT_EQ(RN_ETLS_VERIFY, Visit(e.port, "localhost", trust_ca2, &resumed));
        /* The renewed certificate: same name, another issuer. */
        TlsConfig new_cfg(rn_tls_server_config(c->untrusted.c_str(), c->untrusted_key.c_str()));
        ASSERT_NE(nullptr, new_cfg.get()) << rn_last_error();
        ASSERT_EQ(0, rn_server_set_tls_config(e.srv, new_cfg)) << rn_last_error();
        new_cfg.reset(); /* the server holds its own reference */
        EXPECT_EQ(0, Visit(e.port, "localhost", trust_ca2, &resumed)) << rn_last_error();
        EXPECT_EQ(RN_ETLS_VERIFY, Visit(e.port, "localhost", trust_ca, &resumed));
        old_cfg.reset(); /* the open connections keep theirs */
        for (int i = 0; i < kOpen; i++) {
            std::string msg = "conn" + std::to_string(i);
            ASSERT_EQ(0, rn_conn_write_all(open[i], msg.data(), msg.size())) << rn_last_error();
            std::string got(msg.size(), '\0');
            ASSERT_EQ(0, rn_conn_read_exact(open[i], got.data(), got.size())) << rn_last_error();
            EXPECT_EQ(msg, got);
            rn_conn_close(open[i]);
        }
        StopProd(&e);
    });
}

/* Accepted before the rotation, handshake after: the new config. */
TEST_P(TlsProdTest, AConnectionAcceptedBeforeARotationWhoseHandshakeBeginsAfterGetsTheNewConfig) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig old_cfg = ServerConfig(c);
        TlsConfig new_cfg(rn_tls_server_config(c->untrusted.c_str(), c->untrusted_key.c_str()));
        ASSERT_NE(nullptr, new_cfg.get()) << rn_last_error();
        Server srv;
        int port = ListenTls(&srv, old_cfg);
        ASSERT_GT(port, 0);
        rn_conn *cl = nullptr, *acc = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&cl, "127.0.0.1", port)) << rn_last_error();
        ASSERT_EQ(0, rn_server_accept(srv, &acc)) << rn_last_error(); /* a session under old_cfg */
        ASSERT_EQ(0, rn_server_set_tls_config(srv, new_cfg)) << rn_last_error();
        int server_rc = 1;
        RNT_SPAWN([&] { server_rc = rn_conn_handshake(acc); });
        TlsConfig trust_ca2 = ClientConfig(c->ca2);
        EXPECT_EQ(0, rn_conn_upgrade_to_tls_with(cl, "localhost", trust_ca2)) << rn_last_error();
        EXPECT_TRUE(WaitUntil([&] { return server_rc != 1; }));
        EXPECT_EQ(0, server_rc) << Err(server_rc);
        rn_conn_close(cl);
        rn_conn_close(acc);
    });
}

/* A new client-CA list takes effect for the handshakes after the call. */
TEST_P(TlsProdTest, RotationToAConfigThatRequiresClientCertificates) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig open_cfg = ServerConfig(c), mtls = ServerConfig(c);
        ASSERT_EQ(0, rn_tls_config_require_client_cert(mtls, c->ca.c_str())) << rn_last_error();
        ProdServer e;
        StartProd(&e, open_cfg);
        TlsConfig anon = ClientConfig(c), with_cert = ClientConfig(c);
        ASSERT_EQ(0, rn_tls_config_set_cert(with_cert, c->client.c_str(), c->client_key.c_str())) << rn_last_error();
        bool resumed;
        EXPECT_EQ(0, Visit(e.port, "localhost", anon, &resumed)) << rn_last_error();
        ASSERT_EQ(0, rn_server_set_tls_config(e.srv, mtls)) << rn_last_error();
        /* anon's cached session was sealed by open_cfg's keys: it does not
         * let it past the new config's certificate check. */
        EXPECT_NE(0, Visit(e.port, "localhost", anon, &resumed));
        EXPECT_EQ(0, Visit(e.port, "localhost", with_cert, &resumed)) << rn_last_error();
        StopProd(&e);
        EXPECT_EQ(1, e.failures.load());
        EXPECT_EQ(RN_ETLS_VERIFY, e.last_error.load()) << rn_strerror(e.last_error);
    });
}

/* Hostile: rotations from another thread while 100 handshakes run. Every
 * handshake completes, with one config or the other. */
TEST_P(TlsProdTest, RotationsFromAnotherThreadDuring100ConcurrentHandshakes) {
    RNT_NEED_PROD(c, p);
    const int kClients = 100;
    TlsConfig a = ServerConfig(c);
    TlsConfig b(rn_tls_server_config(c->untrusted.c_str(), c->untrusted_key.c_str()));
    ASSERT_NE(nullptr, b.get()) << rn_last_error();
    TlsConfig ccfg = ClientConfig(p->both);
    ASSERT_EQ(0, rn_tls_config_set_session_cache(ccfg, 0)); /* full handshakes only */
    std::atomic<rn_server *> srv{nullptr};
    std::atomic<bool> stop{false};
    std::atomic<int> rotations{0};
    std::atomic<bool> rotator_done{false};
    std::thread rotator([&] {
        while (srv == nullptr)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        for (int i = 0; !stop; i++) {
            EXPECT_EQ(0, rn_server_set_tls_config(srv, i % 2 ? a : b)) << rn_last_error();
            rotations++;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        rotator_done = true;
    });
    OnLoopRun([&] {
        ProdServer e;
        StartProd(&e, a);
        std::atomic<int> ok{0}, finished{0};
        srv = e.srv;
        for (int i = 0; i < kClients; i++) {
            RNT_SPAWN([&] {
                bool resumed;
                int rc = Visit(e.port, "localhost", ccfg, &resumed);
                if (rc == 0)
                    ok++;
                else
                    ADD_FAILURE() << Err(rc);
                finished++;
            });
        }
        EXPECT_TRUE(WaitUntil([&] { return finished == kClients; }));
        stop = true;
        /* No rotation may race the close (the header says so). */
        EXPECT_TRUE(WaitUntil([&] { return rotator_done.load(); }));
        StopProd(&e);
        EXPECT_EQ(kClients, ok.load());
        EXPECT_EQ(0, e.failures.load()) << Err(e.last_error);
    });
    stop = true;
    rotator.join();
    EXPECT_GT(rotations.load(), 0);
}

TEST_P(TlsProdTest, SetTlsConfigRefusesAPlainServerAndAClientConfig) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c), ccfg = ClientConfig(c);
        Server plain, tls;
        ASSERT_EQ(0, rn_tcp_listen(plain.out(), "127.0.0.1", 0)) << rn_last_error();
        EXPECT_EQ(-EINVAL, rn_server_set_tls_config(plain, scfg));
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("rn_tls_listen")) << rn_last_error();
        ASSERT_GT(ListenTls(&tls, scfg), 0);
        EXPECT_EQ(-EINVAL, rn_server_set_tls_config(tls, ccfg));
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("client config")) << rn_last_error();
        EXPECT_EQ(-EINVAL, rn_server_set_tls_config(tls, nullptr));
        EXPECT_EQ(-EINVAL, rn_server_set_tls_config(nullptr, scfg));
        EXPECT_EQ(0, rn_server_set_tls_config(tls, scfg)) << rn_last_error();
    });
}

/* ---- session resumption ------------------------------------------------------------------------------ */

TEST_P(TlsProdTest, SecondConnectionResumesAgainstARingnetServer) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c), ccfg = ClientConfig(c);
        ProdServer e;
        StartProd(&e, scfg);
        bool r1 = true, r2 = false, r3 = false;
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r1)) << rn_last_error();
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r2)) << rn_last_error();
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r3)) << rn_last_error();
        EXPECT_FALSE(r1);
        EXPECT_TRUE(r2);
        EXPECT_TRUE(r3); /* the resumed connection's new ticket resumes in turn */
        StopProd(&e);
        EXPECT_EQ(2, e.resumed.load());
    });
}

TEST_P(TlsProdTest, SessionsAreNotResumedWithTheCacheOffOrAcrossHostNames) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c), off = ClientConfig(c), on = ClientConfig(c);
        ASSERT_EQ(0, rn_tls_config_set_session_cache(off, 0));
        ProdServer e;
        StartProd(&e, scfg);
        bool r = true;
        for (int i = 0; i < 2; i++) {
            ASSERT_EQ(0, Visit(e.port, "localhost", off, &r)) << rn_last_error();
            EXPECT_FALSE(r) << "cache off, visit " << i;
        }
        /* The server's certificate holds both names: a session made for one
         * is not offered to the other. */
        ASSERT_EQ(0, Visit(e.port, "localhost", on, &r)) << rn_last_error();
        ASSERT_EQ(0, Visit(e.port, "127.0.0.1", on, &r)) << rn_last_error();
        EXPECT_FALSE(r);
        ASSERT_EQ(0, Visit(e.port, "localhost", on, &r)) << rn_last_error();
        EXPECT_TRUE(r);
        StopProd(&e);
    });
}

TEST_P(TlsProdTest, TheSessionCacheKeepsItsBoundAndDropsTheLeastRecentlyUsed) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(c), ccfg = ClientConfig(c);
        ASSERT_EQ(0, rn_tls_config_set_session_cache(ccfg, 1));
        ProdServer e;
        StartProd(&e, scfg);
        bool r = false;
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r));
        ASSERT_EQ(0, Visit(e.port, "127.0.0.1", ccfg, &r)); /* evicts localhost's */
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r));
        EXPECT_FALSE(r);
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r));
        EXPECT_TRUE(r);
        StopProd(&e);
    });
}

/* Hostile: the server behind the address changed its keys (a restart, a
 * rotation, another server): the old ticket is refused quietly and the
 * handshake is a full one. */
TEST_P(TlsProdTest, ATicketFromAnotherServerOrAChangedServerKeyMeansAFullHandshake) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig one = ServerConfig(c), two = ServerConfig(c), ccfg = ClientConfig(c);
        ProdServer e;
        StartProd(&e, one);
        bool r = false;
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r));
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r));
        ASSERT_TRUE(r);
        ASSERT_EQ(0, rn_server_set_tls_config(e.srv, two)) << rn_last_error();
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r)) << rn_last_error();
        EXPECT_FALSE(r);
        ASSERT_EQ(0, Visit(e.port, "localhost", ccfg, &r)) << rn_last_error();
        EXPECT_TRUE(r); /* the new server's ticket */
        StopProd(&e);
        EXPECT_EQ(0, e.failures.load()) << Err(e.last_error);
    });
}

/* The ticket keys' schedule (tls/resume.c: a key seals for an hour, the
 * previous one still opens). RN_TEST_TICKET_CLOCK_MS, present when the
 * server config is made, lets the test move that config's ticket clock
 * forward (milliseconds added to the monotonic clock); the period is the
 * real one. Three clients: a and c take tickets under the first key; b
 * makes the server seal after each step, which is when a key rotates. */
struct TicketClock {
    TicketClock() { setenv("RN_TEST_TICKET_CLOCK_MS", "0", 1); }
    ~TicketClock() { unsetenv("RN_TEST_TICKET_CLOCK_MS"); }
    void Set(long long ms) { setenv("RN_TEST_TICKET_CLOCK_MS", std::to_string(ms).c_str(), 1); }
};

TEST_P(TlsProdTest, TicketKeysRotateHourlyAndAKeyOpensItsTicketsUntilItIsRetired) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        const long long kHourMs = 3600LL * 1000;
        TicketClock clock;
        TlsConfig scfg = ServerConfig(c);
        TlsConfig a = ClientConfig(c), b = ClientConfig(c), cc = ClientConfig(c);
        ProdServer e;
        StartProd(&e, scfg);
        bool r = true;
        /* Key 1 is made by the first ticket sealed; a and cc hold tickets under it. */
        ASSERT_EQ(0, Visit(e.port, "localhost", a, &r)) << rn_last_error();
        EXPECT_FALSE(r);
        ASSERT_EQ(0, Visit(e.port, "localhost", cc, &r)) << rn_last_error();
        EXPECT_FALSE(r);
        /* An hour and a second on: b's full handshake seals under a new key 2;
         * key 1 is the previous key now and still opens a's ticket. */
        clock.Set(kHourMs + 1000);
        ASSERT_EQ(0, Visit(e.port, "localhost", b, &r)) << rn_last_error();
        EXPECT_FALSE(r);
        ASSERT_EQ(0, Visit(e.port, "localhost", a, &r)) << rn_last_error();
        EXPECT_TRUE(r) << "a ticket under the previous key did not resume after one rotation";
        /* Two hours and two seconds: b resumes under key 2 and its new ticket
         * is sealed under key 3, which retires key 1. cc's ticket (key 1)
         * means a full handshake, with no error on either side. */
        clock.Set(2 * kHourMs + 2000);
        ASSERT_EQ(0, Visit(e.port, "localhost", b, &r)) << rn_last_error();
        EXPECT_TRUE(r) << "b's ticket under key 2 did not resume";
        ASSERT_EQ(0, Visit(e.port, "localhost", cc, &r)) << rn_last_error();
        EXPECT_FALSE(r) << "a ticket under a retired key resumed";
        /* ... and cc's new ticket (key 3) resumes. */
        ASSERT_EQ(0, Visit(e.port, "localhost", cc, &r)) << rn_last_error();
        EXPECT_TRUE(r);
        StopProd(&e);
        EXPECT_EQ(0, e.failures.load()) << Err(e.last_error);
        EXPECT_EQ(3, e.resumed.load());
    });
}

/* A previous key is retired by age too: two periods after it was made it
 * opens nothing, even when no second rotation came to replace it. */
TEST_P(TlsProdTest, APreviousTicketKeyTwoPeriodsOldOpensNothingWithoutASecondRotation) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        const long long kHourMs = 3600LL * 1000;
        TicketClock clock;
        TlsConfig scfg = ServerConfig(c);
        TlsConfig a = ClientConfig(c), b = ClientConfig(c);
        ProdServer e;
        StartProd(&e, scfg);
        bool r = true;
        ASSERT_EQ(0, Visit(e.port, "localhost", a, &r)) << rn_last_error();
        ASSERT_EQ(0, Visit(e.port, "localhost", b, &r)) << rn_last_error();
        /* Just under two hours: key 1, current still (nothing was sealed
         * since), opens a's ticket; a's new ticket makes key 2, and key 1 is
         * the previous key. */
        clock.Set(2 * kHourMs - 60 * 1000);
        ASSERT_EQ(0, Visit(e.port, "localhost", a, &r)) << rn_last_error();
        EXPECT_TRUE(r);
        /* Two hours and a minute after key 1 was made: b's ticket under it
         * means a full handshake (key 2 is current: no rotation since). */
        clock.Set(2 * kHourMs + 60 * 1000);
        ASSERT_EQ(0, Visit(e.port, "localhost", b, &r)) << rn_last_error();
        EXPECT_FALSE(r) << "a ticket under a key two periods old resumed";
        StopProd(&e);
        EXPECT_EQ(0, e.failures.load()) << Err(e.last_error);
    });
}

TEST_P(TlsProdTest, SecondConnectionResumesAgainstOpensslSServerOverTls13AndTls12) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        for (const char *version : {"-tls1_3", "-tls1_2"}) {
            Proc s;
            std::string why;
            int port = StartSServer(&s, c->server, c->server_key, {version, "-www"}, &why);
            ASSERT_GT(port, 0) << why;
            TlsConfig ccfg = ClientConfig(c);
            for (int i = 0; i < 3; i++) {
                rn_conn *conn = nullptr;
                int rc = rn_tls_connect_with(&conn, "localhost", port, ccfg);
                ASSERT_EQ(0, rc) << version << ": " << Err(rc);
                const char req[] = "GET / HTTP/1.0\r\n\r\n";
                ASSERT_EQ(0, rn_conn_write_all(conn, req, sizeof req - 1));
                std::string page;
                char buf[16384];
                ssize_t n;
                while ((n = rn_conn_read(conn, buf, sizeof buf)) > 0)
                    page.append(buf, (size_t)n);
                EXPECT_EQ(i > 0, rn_conn_tls_resumed(conn)) << version << " visit " << i;
                /* s_server's page says it too. */
                EXPECT_NE(std::string::npos, page.find(i > 0 ? "Reused, " : "New, ")) << page;
                rn_conn_close(conn);
            }
            s.Kill(SIGTERM);
            s.Wait();
        }
    });
}

TEST_P(TlsProdTest, SecondConnectionResumesAgainstGnutlsServ) {
    RNT_NEED_CERTS(c);
    RNT_NEED_TOOL_FROM("gnutls-serv", "gnutls-bin");
    OnLoopRun([&] {
        for (const char *prio : {"NORMAL", "NORMAL:-VERS-TLS1.3"}) {
            Proc s;
            std::string why;
            int port = FreePort();
            ASSERT_TRUE(s.Start({"gnutls-serv", "--port", std::to_string(port), "--x509certfile", c->server,
                                 "--x509keyfile", c->server_key, "--echo", "--priority", prio},
                                &why))
                << why;
            ASSERT_TRUE(s.WaitOutput("listening on IPv4")) << s.Output();
            TlsConfig ccfg = ClientConfig(c);
            for (int i = 0; i < 3; i++) {
                rn_conn *conn = nullptr;
                int rc = rn_tls_connect_with(&conn, "localhost", port, ccfg);
                ASSERT_EQ(0, rc) << prio << ": " << Err(rc);
                char buf[5];
                ASSERT_EQ(0, rn_conn_write_all(conn, "ping\n", 5));
                ASSERT_EQ(0, rn_conn_read_exact(conn, buf, 5)) << rn_last_error();
                EXPECT_EQ(i > 0, rn_conn_tls_resumed(conn)) << prio << " visit " << i;
                rn_conn_close(conn);
            }
            s.Kill(SIGTERM);
            s.Wait();
        }
    });
}

/* The ticket inside an openssl session file (DER SSL_SESSION: a SEQUENCE
 * whose [10] holds an OCTET STRING): flip one of its bytes. */
bool TamperTicket(std::string *der) {
    auto len_at = [&](size_t *i, size_t *len) {
        if (*i >= der->size())
            return false;
        unsigned char b = (unsigned char)(*der)[(*i)++];
        if (b < 0x80) {
            *len = b;
            return true;
        }
        int n = b & 0x7f;
        *len = 0;
        while (n-- > 0 && *i < der->size())
            *len = (*len << 8) | (unsigned char)(*der)[(*i)++];
        return true;
    };
    size_t i = 1, len;
    if (der->empty() || (*der)[0] != 0x30 || !len_at(&i, &len))
        return false;
    while (i < der->size()) {
        unsigned char tag = (unsigned char)(*der)[i++];
        if (!len_at(&i, &len))
            return false;
        if (tag == 0xaa) { /* [10] { OCTET STRING ticket } */
            size_t j = i + 1, tl;
            if (!len_at(&j, &tl) || tl < 16 || j + tl > der->size())
                return false;
            (*der)[j + tl / 2] ^= 0x40;
            return true;
        }
        i += len;
    }
    return false;
}

std::string ReadFile(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/* Hostile: a client presenting a tampered ticket, or another server's,
 * gets a full handshake and no error. */
TEST_P(TlsProdTest, ATamperedTicketOrAnotherServersTicketMeansAFullHandshake) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig one = ServerConfig(c), other = ServerConfig(c);
        ProdServer e, f;
        StartProd(&e, one);
        StartProd(&f, other);
        for (const char *version : {"-tls1_3", "-tls1_2"}) {
            std::string sess = c->dir + "/sess" + version + ".pem";
            std::string out = SClient(e.port, "localhost", {version, "-sess_out", sess});
            ASSERT_NE(std::string::npos, out.find("New, TLSv1.")) << out;
            /* The untouched ticket resumes (the check below can fail). */
            out = SClient(e.port, "localhost", {version, "-sess_in", sess});
            EXPECT_NE(std::string::npos, out.find("Reused, TLSv1.")) << version << ": " << out;
            /* Another server with the same certificate: its own keys. */
            out = SClient(f.port, "localhost", {version, "-sess_in", sess});
            EXPECT_NE(std::string::npos, out.find("New, TLSv1.")) << version << ": " << out;
            /* Tampered. */
            std::string der_path = sess + ".der", bad = sess + ".bad.pem";
            ASSERT_EQ(0, system(("openssl sess_id -in '" + sess + "' -outform DER -out '" + der_path + "'").c_str()));
            std::string der = ReadFile(der_path);
            ASSERT_TRUE(TamperTicket(&der)) << "no ticket in " << der_path;
            std::ofstream(der_path, std::ios::binary) << der;
            ASSERT_EQ(0, system(("openssl sess_id -inform DER -in '" + der_path + "' -out '" + bad + "'").c_str()));
            out = SClient(e.port, "localhost", {version, "-sess_in", bad});
            EXPECT_NE(std::string::npos, out.find("New, TLSv1.")) << version << ": " << out;
        }
        StopProd(&e);
        StopProd(&f);
        EXPECT_EQ(0, e.failures.load()) << Err(e.last_error);
        EXPECT_EQ(0, f.failures.load()) << Err(f.last_error);
        EXPECT_EQ(2, e.resumed.load()); /* the two untouched tickets */
        EXPECT_EQ(0, f.resumed.load());
    });
}

/* One client config on four threads: one cache, shared (run it under TSan). */
TEST_P(TlsProdTest, OneSessionCacheSharedByFourThreads) {
    RNT_NEED_CERTS(c);
    const int kThreads = 4, kEach = 5;
    TlsConfig ccfg = ClientConfig(c);
    std::atomic<int> port{0}, ok{0}, resumed{0};
    std::atomic<bool> stop{false};
    std::thread server = LoopThread(backend(), [&] {
        rnt::RunTask([&] {
            TlsConfig scfg = ServerConfig(c);
            ProdServer e;
            StartProd(&e, scfg);
            port = e.port;
            WaitUntil([&] { return e.done == kThreads * kEach || stop; }, 60000);
            StopProd(&e);
        });
    });
    while (port == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    /* One visit first, so that every thread finds a session. */
    std::thread first = LoopThread(backend(), [&] {
        bool r;
        if (Visit(port, "localhost", ccfg, &r) == 0)
            ok++;
    });
    first.join();
    std::vector<std::thread> clients;
    for (int t = 0; t < kThreads; t++) {
        clients.push_back(LoopThread(backend(), [&, t] {
            for (int i = 0; i < kEach - (t == 0 ? 1 : 0); i++) {
                bool r = false;
                int rc = Visit(port, "localhost", ccfg, &r);
                if (rc == 0)
                    ok++;
                else
                    ADD_FAILURE() << Err(rc);
                if (r)
                    resumed++;
            }
        }));
    }
    for (auto &th : clients)
        th.join();
    stop = true;
    server.join();
    EXPECT_EQ(kThreads * kEach, ok.load());
    EXPECT_EQ(kThreads * kEach - 1, resumed.load());
}

TEST(TlsProdConfigTest, SetSessionCacheChecksItsArguments) {
    RNT_NEED_CERTS(c);
    TlsConfig scfg = ServerConfig(c), ccfg = ClientConfig(c);
    EXPECT_EQ(-EINVAL, rn_tls_config_set_session_cache(scfg, 10));
    EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("server config")) << rn_last_error();
    EXPECT_EQ(-EINVAL, rn_tls_config_set_session_cache(nullptr, 10));
    EXPECT_EQ(-EINVAL, rn_tls_config_set_session_cache(ccfg, (size_t)1 << 40));
    EXPECT_EQ(0, rn_tls_config_set_session_cache(ccfg, 0));
    EXPECT_EQ(0, rn_tls_config_set_session_cache(ccfg, 1000));
    EXPECT_FALSE(rn_conn_tls_resumed(nullptr));
}

} // namespace
