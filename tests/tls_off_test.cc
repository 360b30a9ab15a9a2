/* tls_off_test.cc - a library built with RINGNET_TLS=OFF (compiled only
 * then): every public TLS call exists and fails with -EOPNOTSUPP and a
 * sentence naming the build option; a connection is never TLS. */
#include "harness.h"

#include <cerrno>
#include <cstring>
#include <string>

using namespace rnt;

namespace {

class TlsOffTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(TlsOffTest);

::testing::AssertionResult SaysBuiltWithoutTls(const char *what) {
    const char *e = rn_last_error();
    if (strstr(e, "RINGNET_TLS=OFF") == nullptr || strstr(e, what) == nullptr)
        return ::testing::AssertionFailure() << "rn_last_error: \"" << e << "\"";
    return ::testing::AssertionSuccess();
}

TEST_P(TlsOffTest, EveryTlsCallIsEopnotsuppNamingTheBuildOption) {
    OnLoopRun([&] {
        rn_conn *out = reinterpret_cast<rn_conn *>(1);
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_connect(&out, "localhost", 443));
        EXPECT_EQ(nullptr, out);
        EXPECT_TRUE(SaysBuiltWithoutTls("tls_connect"));
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_connect_with(&out, "localhost", 443, nullptr));
        rn_server *s = reinterpret_cast<rn_server *>(1);
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_listen(&s, "127.0.0.1", 0, nullptr));
        EXPECT_EQ(nullptr, s);
        EXPECT_TRUE(SaysBuiltWithoutTls("tls_listen"));
        EXPECT_EQ(nullptr, rn_tls_client_config());
        EXPECT_TRUE(SaysBuiltWithoutTls("tls_client_config"));
        EXPECT_EQ(nullptr, rn_tls_server_config("cert.pem", "key.pem"));
        EXPECT_TRUE(SaysBuiltWithoutTls("tls_server_config"));
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_config_set_ca_file(nullptr, "ca.pem"));
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_config_set_cert(nullptr, "c.pem", "k.pem"));
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_config_require_client_cert(nullptr, "ca.pem"));
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_config_set_alpn(nullptr, "h2"));
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_config_add_cert(nullptr, "c.pem", "k.pem"));
        EXPECT_TRUE(SaysBuiltWithoutTls("tls_config_add_cert"));
        EXPECT_EQ(-EOPNOTSUPP, rn_tls_config_set_session_cache(nullptr, 10));
        EXPECT_TRUE(SaysBuiltWithoutTls("tls_config_set_session_cache"));
        EXPECT_EQ(-EOPNOTSUPP, rn_server_set_tls_config(nullptr, nullptr));
        EXPECT_TRUE(SaysBuiltWithoutTls("server_set_tls_config"));
        rn_tls_config_free(nullptr);
    });
}

TEST_P(TlsOffTest, PlainConnectionsWorkAndRefuseAnUpgrade) {
    OnLoopRun([&] {
        Pair p;
        ASSERT_TRUE(MakePair(&p));
        EXPECT_FALSE(rn_conn_is_tls(p.cli));
        EXPECT_EQ(nullptr, rn_conn_alpn(p.cli));
        EXPECT_FALSE(rn_conn_tls_resumed(p.cli));
        EXPECT_EQ(0, rn_conn_handshake(p.cli)) << rn_last_error();
        EXPECT_EQ(-EOPNOTSUPP, rn_conn_upgrade_to_tls(p.cli, "localhost"));
        EXPECT_TRUE(SaysBuiltWithoutTls("upgrade_to_tls"));
        EXPECT_EQ(-EOPNOTSUPP, rn_conn_accept_tls(p.acc, nullptr));
        EXPECT_TRUE(SaysBuiltWithoutTls("accept_tls"));
        /* The connection is as it was: plain bytes still flow. */
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "ping", 4)) << rn_last_error();
        char buf[4];
        ASSERT_EQ(0, rn_conn_read_exact(p.acc, buf, 4)) << rn_last_error();
        EXPECT_EQ(0, memcmp(buf, "ping", 4));
        ClosePair(&p);
    });
}

} // namespace
