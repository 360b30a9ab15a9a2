/* tls_starttls_test.cc - STARTTLS on both sides: ringnet's server against
 * `openssl s_client -starttls smtp`, ringnet's client against ringnet's
 * server and a real PostgreSQL started by the test, and the injection
 * cases (plaintext pipelined past the upgrade point is never taken as
 * protected: CVE-2011-0411, CVE-2021-23214/23222). */
#include "tls_helpers.h"

#include <arpa/inet.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace rnt;

namespace {

class StarttlsTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(StarttlsTest);

std::string Err(int rc) { return std::to_string(rc) + " (" + rn_strerror(rc) + "): " + rn_last_error(); }

/* One line, a byte at a time, so that nothing past it leaves the kernel:
 * what follows the upgrade point stays where the TLS layer will see it. */
bool ReadLine(rn_conn *c, std::string *line) {
    line->clear();
    char ch;
    while (rn_conn_read(c, &ch, 1) == 1) {
        line->push_back(ch);
        if (ch == '\n')
            return true;
    }
    return false;
}

bool Send(rn_conn *c, const std::string &s) { return rn_conn_write_all(c, s.data(), s.size()) == 0; }

/* A tiny SMTP server: banner, EHLO, STARTTLS, then over TLS answers each
 * line with "250 got <line>". What it saw goes to the result. */
struct Smtp {
    rn_server *srv = nullptr;
    int port = 0;
    int tls_rc = 1; /* rn_conn_accept_tls's result; 1 = not reached */
    std::vector<std::string> plain_commands;
    std::vector<std::string> tls_lines;
    bool done = false;
};

void StartSmtp(Smtp *m, const rn_tls_config *cfg) {
    ASSERT_EQ(0, rn_tcp_listen(&m->srv, "127.0.0.1", 0));
    m->port = PortOf(rn_server_addr(m->srv));
    RNT_SPAWN([m, cfg] {
        rn_conn *c = nullptr;
        if (rn_server_accept(m->srv, &c) != 0) {
            m->done = true;
            return;
        }
        rn_conn_set_read_deadline(c, 10000);
        std::string line;
        Send(c, "220 ringnet.test ESMTP\r\n");
        while (ReadLine(c, &line)) {
            m->plain_commands.push_back(line);
            if (line.rfind("EHLO", 0) == 0 || line.rfind("ehlo", 0) == 0) {
                Send(c, "250-ringnet.test\r\n250 STARTTLS\r\n");
            } else if (line.rfind("STARTTLS", 0) == 0) {
                Send(c, "220 2.0.0 ready to start TLS\r\n");
                m->tls_rc = rn_conn_accept_tls(c, cfg);
                if (m->tls_rc != 0)
                    break;
                while (ReadLine(c, &line)) {
                    m->tls_lines.push_back(line);
                    Send(c, "250 got " + line);
                }
                break;
            } else {
                Send(c, "503 say STARTTLS first\r\n");
            }
        }
        rn_conn_close(c);
        m->done = true;
    });
}

rn_tls_config *ServerCfg(const TestCerts *c) {
    rn_tls_config *cfg = rn_tls_server_config(c->server.c_str(), c->server_key.c_str());
    EXPECT_NE(nullptr, cfg) << rn_last_error();
    return cfg;
}

rn_tls_config *ClientCfg(const TestCerts *c) {
    rn_tls_config *cfg = rn_tls_client_config();
    EXPECT_EQ(0, rn_tls_config_set_ca_file(cfg, c->ca.c_str())) << rn_last_error();
    return cfg;
}

/* ---- server side ------------------------------------------------------------------------- */

TEST_P(StarttlsTest, SmtpServerUpgradesForOpensslSClient) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        rn_tls_config *scfg = ServerCfg(c);
        Smtp m;
        StartSmtp(&m, scfg);
        Proc cl;
        std::string why;
        ASSERT_TRUE(cl.Start({"openssl", "s_client", "-starttls", "smtp", "-connect",
                              "127.0.0.1:" + std::to_string(m.port), "-servername", "localhost", "-verify_hostname",
                              "localhost", "-CAfile", c->ca, "-verify_return_error", "-crlf"},
                             &why))
            << why;
        EXPECT_TRUE(cl.WaitOutput("Verify return code: 0 (ok)")) << cl.Output();
        ASSERT_TRUE(cl.Write("NOOP over tls\n"));
        EXPECT_TRUE(cl.WaitOutput("250 got NOOP over tls")) << cl.Output();
        cl.CloseStdin();
        EXPECT_EQ(0, cl.Wait());
        EXPECT_TRUE(WaitUntil([&] { return m.done; }));
        EXPECT_EQ(0, m.tls_rc) << rn_strerror(m.tls_rc);
        ASSERT_EQ(1u, m.tls_lines.size());
        EXPECT_EQ("NOOP over tls\r\n", m.tls_lines[0]);
        rn_server_close(m.srv);
        rn_tls_config_free(scfg);
    });
}

TEST_P(StarttlsTest, ServerRefusesPlaintextPipelinedAfterStarttls) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        rn_tls_config *scfg = ServerCfg(c);
        Smtp m;
        StartSmtp(&m, scfg);
        rn_conn *cl = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&cl, "127.0.0.1", m.port));
        /* An attacker's commands right behind STARTTLS, in the same
         * segment: they must never run as if they came over TLS. */
        ASSERT_TRUE(Send(cl, "EHLO evil\r\nSTARTTLS\r\nRCPT TO:<victim@example>\r\n"));
        EXPECT_TRUE(WaitUntil([&] { return m.done; }));
        EXPECT_EQ(RN_ETLS, m.tls_rc) << rn_strerror(m.tls_rc);
        EXPECT_TRUE(m.tls_lines.empty());
        ASSERT_EQ(2u, m.plain_commands.size());
        EXPECT_EQ("STARTTLS\r\n", m.plain_commands[1]);
        rn_conn_close(cl);
        rn_server_close(m.srv);
        rn_tls_config_free(scfg);
    });
}

TEST_P(StarttlsTest, AcceptTlsRefusesWhileReceivedPlaintextIsUnread) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        rn_tls_config *scfg = ServerCfg(c);
        Pair p;
        ASSERT_TRUE(MakePair(&p));
        ASSERT_TRUE(Send(p.cli, "STARTTLS\r\nRSET\r\n"));
        /* A read_exact that times out keeps what it took: the library now
         * holds plaintext from before the upgrade point. */
        rn_conn_set_read_deadline(p.acc, 100);
        char buf[64];
        ASSERT_EQ(-ETIMEDOUT, rn_conn_read_exact(p.acc, buf, sizeof buf));
        int rc = rn_conn_accept_tls(p.acc, scfg);
        EXPECT_EQ(RN_ETLS, rc) << Err(rc);
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("unread")) << rn_last_error();
        EXPECT_FALSE(rn_conn_is_tls(p.acc));
        /* The bytes are still there for the caller. */
        EXPECT_EQ(16, rn_conn_read(p.acc, buf, sizeof buf));
        ClosePair(&p);
        rn_tls_config_free(scfg);
    });
}

/* ---- client side --------------------------------------------------------------------------- */

/* Speak SMTP up to the go-ahead; the 220 line, or "" on failure. */
std::string SmtpToGoAhead(rn_conn *cl) {
    std::string line;
    if (!ReadLine(cl, &line) || line.rfind("220", 0) != 0)
        return "";
    Send(cl, "EHLO ringnet\r\n");
    while (ReadLine(cl, &line) && line.rfind("250-", 0) == 0) {
    }
    Send(cl, "STARTTLS\r\n");
    if (!ReadLine(cl, &line))
        return "";
    return line;
}

TEST_P(StarttlsTest, ClientUpgradesAndTalksOverTls) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        rn_tls_config *scfg = ServerCfg(c);
        rn_tls_config *ccfg = ClientCfg(c);
        Smtp m;
        StartSmtp(&m, scfg);
        rn_conn *cl = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&cl, "127.0.0.1", m.port));
        rn_conn_set_deadline(cl, 10000);
        ASSERT_EQ(0u, SmtpToGoAhead(cl).rfind("220 2.0.0", 0));
        EXPECT_FALSE(rn_conn_is_tls(cl));
        int rc = rn_conn_upgrade_to_tls_with(cl, "localhost", ccfg);
        ASSERT_EQ(0, rc) << Err(rc);
        EXPECT_TRUE(rn_conn_is_tls(cl));
        ASSERT_TRUE(Send(cl, "MAIL FROM:<a@b>\r\n"));
        std::string line;
        ASSERT_TRUE(ReadLine(cl, &line)) << rn_last_error();
        EXPECT_EQ("250 got MAIL FROM:<a@b>\r\n", line);
        rn_conn_close(cl);
        EXPECT_TRUE(WaitUntil([&] { return m.done; }));
        rn_server_close(m.srv);
        rn_tls_config_free(scfg);
        rn_tls_config_free(ccfg);
    });
}

TEST_P(StarttlsTest, ClientUpgradeIsVerifiedLikeAConnect) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        rn_tls_config *scfg = rn_tls_server_config(c->wrongname.c_str(), c->wrongname_key.c_str());
        ASSERT_NE(nullptr, scfg);
        rn_tls_config *ccfg = ClientCfg(c);
        Smtp m;
        StartSmtp(&m, scfg);
        rn_conn *cl = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&cl, "127.0.0.1", m.port));
        rn_conn_set_deadline(cl, 10000);
        ASSERT_FALSE(SmtpToGoAhead(cl).empty());
        int rc = rn_conn_upgrade_to_tls_with(cl, "localhost", ccfg);
        EXPECT_EQ(RN_ETLS_VERIFY, rc) << Err(rc);
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("name mismatch"));
        /* Not usable after, and never plaintext again. */
        EXPECT_TRUE(rn_conn_is_tls(cl));
        EXPECT_EQ(RN_ETLS_VERIFY, rn_conn_write(cl, "x", 1));
        rn_conn_close(cl);
        EXPECT_TRUE(WaitUntil([&] { return m.done; }));
        rn_server_close(m.srv);
        rn_tls_config_free(scfg);
        rn_tls_config_free(ccfg);
    });
}

/* A fake server that answers the go-ahead with `reply` in one write. */
void FakeGoAhead(rn_server *srv, const std::string &reply, bool *done) {
    RNT_SPAWN([srv, reply, done] {
        rn_conn *a = nullptr;
        if (rn_server_accept(srv, &a) == 0) {
            char buf[64];
            rn_conn_set_read_deadline(a, 5000);
            (void)rn_conn_read(a, buf, sizeof buf); /* the request */
            Send(a, reply);
            (void)rn_conn_read(a, buf, sizeof buf); /* whatever comes, or the end */
            rn_conn_close(a);
        }
        *done = true;
    });
}

TEST_P(StarttlsTest, ClientRefusesUpgradeWhenBytesFollowThePostgresGoAhead) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        rn_tls_config *ccfg = ClientCfg(c);
        rn_server *srv = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&srv, "127.0.0.1", 0));
        bool done = false;
        /* 'S' (go ahead) and, in the same segment, a forged ErrorResponse
         * (CVE-2021-23222): it must not be read as if protected. */
        FakeGoAhead(srv, std::string("S") + "E\0\0\0\x0bSFATAL\0\0", &done);
        rn_conn *cl = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&cl, "127.0.0.1", PortOf(rn_server_addr(srv))));
        const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
        ASSERT_EQ(0, rn_conn_write_all(cl, ssl_request, 8));
        char s;
        ASSERT_EQ(0, rn_conn_read_exact(cl, &s, 1));
        ASSERT_EQ('S', s);
        /* Let the rest of the segment land. */
        rn_sleep(50);
        int rc = rn_conn_upgrade_to_tls_with(cl, "localhost", ccfg);
        EXPECT_EQ(RN_ETLS, rc) << Err(rc);
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("arrived")) << rn_last_error();
        rn_conn_close(cl);
        EXPECT_TRUE(WaitUntil([&] { return done; }));
        rn_server_close(srv);
        rn_tls_config_free(ccfg);
    });
}

TEST_P(StarttlsTest, ClientRefusesUpgradeWhileReceivedPlaintextIsUnread) {
    RNT_NEED_CERTS(c);
    OnLoopRun([&] {
        rn_tls_config *ccfg = ClientCfg(c);
        Pair p;
        ASSERT_TRUE(MakePair(&p));
        ASSERT_TRUE(Send(p.acc, "22"));
        rn_conn_set_read_deadline(p.cli, 100);
        char buf[4];
        ASSERT_EQ(-ETIMEDOUT, rn_conn_read_exact(p.cli, buf, 4));
        int rc = rn_conn_upgrade_to_tls_with(p.cli, "localhost", ccfg);
        EXPECT_EQ(RN_ETLS, rc) << Err(rc);
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("unread")) << rn_last_error();
        EXPECT_FALSE(rn_conn_is_tls(p.cli));
        ClosePair(&p);
        rn_tls_config_free(ccfg);
    });
}

/* ---- PostgreSQL ------------------------------------------------------------------------------- */

const char kPgBin[] = "/usr/lib/postgresql/15/bin";

/* A PostgreSQL cluster in a temporary directory, ssl = on with the test
 * certificate, on 127.0.0.1:port; stopped and removed by the destructor. */
class Postgres {
  public:
    bool Start(const TestCerts *c, std::string *why) {
        if (access((std::string(kPgBin) + "/initdb").c_str(), X_OK) != 0) {
            *why = std::string("PostgreSQL 15 is not installed (") + kPgBin + "/initdb; Debian package postgresql)";
            return false;
        }
        if (geteuid() != 0 || getpwnam("postgres") == nullptr || FindTool("runuser").empty()) {
            *why = "starting PostgreSQL needs root, the postgres user and runuser";
            return false;
        }
        char tmpl[] = "/tmp/ringnet-pg-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) {
            *why = "mkdtemp failed";
            return false;
        }
        dir_ = tmpl;
        port_ = FreePort();
        std::string d = dir_;
        std::string script =
            "set -e; cd '" + d + "'; chown postgres '" + d + "'; chmod 700 '" + d + "';" + " cp '" + c->server +
            "' server.crt; cp '" + c->server_key + "' server.key;" +
            " chown postgres server.crt server.key; chmod 600 server.key;" + " runuser -u postgres -- " + kPgBin +
            "/initdb -D '" + d + "/data' -A trust -U postgres >init.log 2>&1;" +
            " printf \"ssl = on\\nssl_cert_file = '" + d + "/server.crt'\\nssl_key_file = '" + d +
            "/server.key'\\nlisten_addresses = '127.0.0.1'\\nport = " + std::to_string(port_) +
            "\\nunix_socket_directories = '" + d + "'\\n\" >> data/postgresql.conf;" + " runuser -u postgres -- " +
            kPgBin + "/pg_ctl -D '" + d + "/data' -l '" + d + "/pg.log' -w -t 30 start >start.log 2>&1";
        started_ = true;
        if (system(("bash -c \"" + Escape(script) + "\"").c_str()) != 0) {
            std::ifstream l1(d + "/init.log"), l2(d + "/pg.log"), l3(d + "/start.log");
            std::stringstream s;
            s << l1.rdbuf() << l2.rdbuf() << l3.rdbuf();
            *why = "could not start PostgreSQL: " + s.str();
            return false;
        }
        return true;
    }
    ~Postgres() {
        if (!started_)
            return;
        std::string cmd = "runuser -u postgres -- " + std::string(kPgBin) + "/pg_ctl -D '" + dir_ +
                          "/data' -m immediate -w stop >/dev/null 2>&1; rm -rf '" + dir_ + "'";
        if (system(cmd.c_str()) != 0)
            fprintf(stderr, "[ringnet] stopping PostgreSQL in %s failed\n", dir_.c_str());
    }
    int port() const { return port_; }

  private:
    static std::string Escape(const std::string &s) {
        std::string o;
        for (char ch : s) {
            if (ch == '"' || ch == '\\' || ch == '$' || ch == '`')
                o.push_back('\\');
            o.push_back(ch);
        }
        return o;
    }
    std::string dir_;
    int port_ = 0;
    bool started_ = false;
};

void Put32(std::string *s, uint32_t v) {
    uint32_t n = htonl(v);
    s->append(reinterpret_cast<const char *>(&n), 4);
}

/* One backend message: its type and body. */
bool ReadPgMessage(rn_conn *c, char *type, std::string *body) {
    char head[5];
    if (rn_conn_read_exact(c, head, 5) != 0)
        return false;
    *type = head[0];
    uint32_t len;
    memcpy(&len, head + 1, 4);
    len = ntohl(len);
    if (len < 4 || len > (1u << 20))
        return false;
    body->assign(len - 4, '\0');
    return len == 4 || rn_conn_read_exact(c, &(*body)[0], len - 4) == 0;
}

TEST_P(StarttlsTest, PostgresSslRequestUpgradeStartupAndAQueryThatSeesSsl) {
    RNT_NEED_CERTS(c);
    Postgres pg;
    std::string why;
    if (!pg.Start(c, &why)) {
        if (why.rfind("could not start", 0) == 0)
            FAIL() << why;
        GTEST_SKIP() << why;
    }
    OnLoopRun([&] {
        rn_tls_config *ccfg = ClientCfg(c);
        rn_conn *cl = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&cl, "127.0.0.1", pg.port())) << rn_last_error();
        rn_conn_set_deadline(cl, 10000);
        std::string req;
        Put32(&req, 8);
        Put32(&req, 80877103); /* SSLRequest */
        ASSERT_TRUE(Send(cl, req));
        char answer = 0;
        ASSERT_EQ(0, rn_conn_read_exact(cl, &answer, 1)) << rn_last_error();
        ASSERT_EQ('S', answer);
        int rc = rn_conn_upgrade_to_tls_with(cl, "localhost", ccfg);
        ASSERT_EQ(0, rc) << Err(rc);
        std::string params =
            std::string("user") + '\0' + "postgres" + '\0' + "database" + '\0' + "postgres" + '\0' + '\0';
        std::string startup;
        Put32(&startup, (uint32_t)(8 + params.size()));
        Put32(&startup, 196608); /* protocol 3.0 */
        startup += params;
        ASSERT_TRUE(Send(cl, startup));
        char type;
        std::string body;
        do {
            ASSERT_TRUE(ReadPgMessage(cl, &type, &body)) << rn_last_error();
            ASSERT_NE('E', type) << body;
        } while (type != 'Z');
        std::string sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        std::string q = "Q";
        Put32(&q, (uint32_t)(4 + sql.size() + 1));
        q += sql;
        q.push_back('\0');
        ASSERT_TRUE(Send(cl, q));
        std::string value;
        do {
            ASSERT_TRUE(ReadPgMessage(cl, &type, &body)) << rn_last_error();
            ASSERT_NE('E', type) << body;
            if (type == 'D' && body.size() >= 7) /* 2-byte count, 4-byte length, the value */
                value = body.substr(6);
        } while (type != 'Z');
        EXPECT_EQ("t", value);
        std::string term = "X";
        Put32(&term, 4);
        Send(cl, term);
        rn_conn_close(cl);
        rn_tls_config_free(ccfg);
    });
}

} // namespace
