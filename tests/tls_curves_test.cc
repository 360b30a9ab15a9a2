/* tls_curves_test.cc - modern curves only: ringnet's client and server
 * offer and accept X25519, P-256 and P-384 and nothing else, over TLS 1.2
 * and 1.3. A peer (openssl s_server / s_client) restricted to another
 * group is refused with an RN_ETLS sentence that says what ringnet offers;
 * restricted to each of the three, it works. */
#include "tls_helpers.h"

#include <mutex>
#include <string>
#include <vector>

using namespace rnt;

namespace {

class TlsCurvesTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(TlsCurvesTest);

const char kOffers[] = "X25519, P-256 and P-384";

/* A self-signed RSA certificate for localhost, made once: with an ECDSA
 * P-256 certificate a TLS 1.2 client restricted to P-521 gives up on the
 * certificate's curve before the key exchange is tried at all. */
struct RsaCert {
    std::string cert, key;
};
const RsaCert *Rsa(const TestCerts *certs, std::string *why) {
    static std::mutex mu;
    static RsaCert made;
    static bool ok = false;
    std::lock_guard<std::mutex> lock(mu);
    if (ok)
        return &made;
    RsaCert r{certs->dir + "/rsa.pem", certs->dir + "/rsa.key"};
    Proc p;
    if (!p.Start({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", r.key, "-out", r.cert, "-days",
                  "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"},
                 why))
        return nullptr;
    if (p.Wait(60000) != 0) {
        *why = "openssl req (RSA) failed: " + p.Output();
        return nullptr;
    }
    made = r;
    ok = true;
    return &made;
}

struct Proto {
    const char *flag, *name;
};
const Proto kProtos[] = {{"-tls1_2", "TLSv1.2"}, {"-tls1_3", "TLSv1.3"}};

/* ---- ringnet's client -------------------------------------------------------------------------- */

TEST_P(TlsCurvesTest, ClientRefusesAServerThatTakesOnlyAnotherGroupAndSaysWhatItOffers) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig cfg = ClientConfig(c->ca);
        for (const Proto &v : kProtos) {
            for (const char *g : {"P-521", "X448", "ffdhe2048"}) {
                SCOPED_TRACE(std::string(v.name) + " " + g);
                Proc s;
                std::string why;
                int port = StartSServer(&s, c->server, c->server_key, {v.flag, "-groups", g, "-www"}, &why);
                ASSERT_GT(port, 0) << why;
                rn_conn *conn = nullptr;
                int rc = rn_tls_connect_with(&conn, "localhost", port, cfg);
                EXPECT_EQ(RN_ETLS, rc) << rn_last_error();
                EXPECT_EQ(nullptr, conn);
                std::string msg = rn_last_error();
                EXPECT_NE(std::string::npos, msg.find("handshake_failure")) << msg;
                EXPECT_NE(std::string::npos, msg.find(kOffers)) << msg;
                if (conn)
                    rn_conn_close(conn);
            }
        }
    });
}

TEST_P(TlsCurvesTest, ClientWorksWithAServerTakingOnlyX25519OrP256OrP384) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        TlsConfig cfg = ClientConfig(c->ca);
        for (const Proto &v : kProtos) {
            for (const char *g : {"X25519", "P-256", "P-384"}) {
                SCOPED_TRACE(std::string(v.name) + " " + g);
                Proc s;
                std::string why;
                int port = StartSServer(&s, c->server, c->server_key, {v.flag, "-groups", g, "-www"}, &why);
                ASSERT_GT(port, 0) << why;
                Conn conn;
                int rc = rn_tls_connect_with(conn.out(), "localhost", port, cfg);
                ASSERT_EQ(0, rc) << rn_last_error();
                const char req[] = "GET / HTTP/1.0\r\n\r\n";
                ASSERT_EQ(0, rn_conn_write_all(conn, req, sizeof req - 1));
                std::string page;
                char buf[4096];
                ssize_t n;
                while ((n = rn_conn_read(conn, buf, sizeof buf)) > 0)
                    page.append(buf, (size_t)n);
                EXPECT_NE(std::string::npos, page.find(v.name)) << page.substr(0, 1500);
            }
        }
    });
}

/* ---- ringnet's server -------------------------------------------------------------------------- */

/* One s_client restricted to group g against a ringnet server with cfg:
 * the server's handshake result and sentence, and s_client's output and
 * exit status. */
struct Outcome {
    int hs = 1;
    std::string err, out;
    int exit = -1;
};
Outcome Against(rn_tls_config *cfg, const Proto &v, const char *g) {
    Outcome o;
    Server s;
    int port = ListenTls(&s, cfg);
    if (port <= 0)
        return o;
    RNT_SPAWN([&] {
        rn_conn *a = nullptr;
        if (rn_server_accept(s, &a) != 0) {
            o.err = rn_last_error();
            return;
        }
        o.hs = rn_conn_handshake(a);
        o.err = rn_last_error();
        if (o.hs == 0) {
            char buf[64];
            (void)rn_conn_read(a, buf, sizeof buf); /* until s_client leaves */
        }
        rn_conn_close(a);
    });
    Proc cl;
    std::string why;
    if (!cl.Start({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-servername", "localhost",
                   v.flag, "-groups", g},
                  &why)) {
        ADD_FAILURE() << why;
        return o;
    }
    EXPECT_TRUE(WaitUntil([&] { return o.hs != 1; })) << cl.Output();
    cl.CloseStdin();
    o.exit = cl.Wait();
    o.out = cl.Output();
    return o;
}

TEST_P(TlsCurvesTest, ServerRefusesAClientOfferingOnlyAnotherGroupAndSaysWhatItOffers) {
    RNT_NEED_CERTS(c);
    std::string why;
    const RsaCert *rsa = Rsa(c, &why);
    ASSERT_NE(nullptr, rsa) << why;
    OnLoopRun([&] {
        /* RSA (a 1.2 client offering only P-521 still reaches the key
         * exchange) and the ECDSA P-256 test certificate. */
        TlsConfig rsa_cfg(rn_tls_server_config(rsa->cert.c_str(), rsa->key.c_str()));
        ASSERT_NE(nullptr, rsa_cfg.get()) << rn_last_error();
        TlsConfig ec_cfg = ServerConfig(c);
        for (rn_tls_config *cfg : {rsa_cfg.get(), ec_cfg.get()}) {
            for (const Proto &v : kProtos) {
                /* secp256k1 and brainpool exist in TLS 1.2 only. */
                std::vector<const char *> groups = {"P-521", "X448"};
                if (std::string(v.flag) == "-tls1_2")
                    groups.insert(groups.end(), {"secp256k1", "brainpoolP256r1", "brainpoolP384r1"});
                for (const char *g : groups) {
                    SCOPED_TRACE(std::string(cfg == rsa_cfg.get() ? "RSA " : "ECDSA ") + v.name + " " + g);
                    Outcome o = Against(cfg, v, g);
                    EXPECT_EQ(RN_ETLS, o.hs) << o.err;
                    EXPECT_NE(std::string::npos, o.err.find(kOffers)) << o.err;
                    EXPECT_EQ(std::string::npos, o.out.find("Server Temp Key")) << o.out;
                    EXPECT_NE(0, o.exit) << o.out;
                }
            }
        }
    });
}

TEST_P(TlsCurvesTest, ServerWorksWithAClientOfferingOnlyX25519OrP256OrP384) {
    RNT_NEED_CERTS(c);
    std::string why;
    const RsaCert *rsa = Rsa(c, &why);
    ASSERT_NE(nullptr, rsa) << why;
    OnLoopRun([&] {
        TlsConfig rsa_cfg(rn_tls_server_config(rsa->cert.c_str(), rsa->key.c_str()));
        ASSERT_NE(nullptr, rsa_cfg.get()) << rn_last_error();
        struct Want {
            const char *group, *temp_key;
        } wants[] = {{"X25519", "Server Temp Key: X25519"},
                     {"P-256", "Server Temp Key: ECDH, prime256v1"},
                     {"P-384", "Server Temp Key: ECDH, secp384r1"}};
        for (const Proto &v : kProtos) {
            for (const Want &w : wants) {
                SCOPED_TRACE(std::string(v.name) + " " + w.group);
                Outcome o = Against(rsa_cfg, v, w.group);
                EXPECT_EQ(0, o.hs) << o.err;
                EXPECT_NE(std::string::npos, o.out.find(w.temp_key)) << o.out;
                EXPECT_NE(std::string::npos, o.out.find(std::string("Protocol  : ") + v.name)) << o.out;
            }
        }
    });
}

} // namespace
