/* race_test.cc - closes racing the calls they end, hundreds of times over:
 * a close from another task while a read, write, accept, connect or TLS
 * handshake is in flight, with and without a deadline expiring at the same
 * moment. Every round must end with one of the results the header promises
 * (RN_ECLOSED for the call the close ended, -ETIMEDOUT when the deadline won,
 * the call's own result when it finished first), promptly, and with every
 * descriptor given back. close_test.cc has the single, unhurried cases. */
#include "tls_helpers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace rnt;

namespace {

class RaceTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(RaceTest);

/* How soon the call a close ends must return: kPromptMs (harness.h). The
 * rounds' deadlines are 2 ms, so a call the close did not wake would still
 * return by its deadline; the bound's point is that nothing waits for
 * longer (a lost wake-up leaves the task parked: the round fails after
 * kPromptMs). */

std::string Err(int rc) { return std::to_string(rc) + " (" + rn_strerror(rc) + "): " + rn_last_error(); }

/* The closer's delay in round i: none (the call is just parked), or 1-3 ms,
 * so that a 2 ms deadline expires before, with, or after the close. */
void RaceDelay(int i) {
    int d = i % 4;
    if (d == 0)
        rn_yield();
    else
        rn_sleep(d);
}

/* One round of "a close races the call blocked on c": call runs in a task
 * (it has entered the call once rn_yield returns), RaceDelay(i), then c is
 * closed; the call must return within kPromptMs of the close. */
void CloseRacing(int i, Conn *c, Fn call) {
    Blocked blocked(std::move(call));
    rn_yield(); /* the task enters its call and parks */
    ASSERT_TRUE(blocked.Started()) << "round " << i;
    RaceDelay(i);
    ASSERT_TRUE(blocked.ReturnsPromptlyAfter([&] {
        EXPECT_EQ(0, c->Close()) << "round " << i << ": " << rn_last_error();
    })) << "round "
        << i;
}

/* A read on *cli with a 2 ms deadline, its close racing the deadline:
 * RN_ECLOSED or -ETIMEDOUT. */
void CloseRacingAnExpiringRead(int i, Conn *cli, RaceRounds *rounds) {
    rn_conn_set_read_deadline(*cli, 2);
    ssize_t rc = 1;
    rn_conn *c = *cli;
    CloseRacing(i, cli, [&] {
        char buf[8];
        rc = rn_conn_read(c, buf, sizeof buf);
    });
    rounds->Saw(i, (int)rc, rc == RN_ECLOSED || rc == -ETIMEDOUT);
}

/* "3 -> socket:[123]" for each open descriptor: what a leak check prints. */
std::string FdList() {
    std::string out;
    DIR *d = opendir("/proc/self/fd");
    if (d == nullptr)
        return "?";
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        char target[256] = "";
        std::string path = std::string("/proc/self/fd/") + e->d_name;
        ssize_t n = readlink(path.c_str(), target, sizeof target - 1);
        if (n > 0)
            target[n] = '\0';
        out += std::string(e->d_name) + " -> " + target + "\n";
    }
    closedir(d);
    return out;
}

/* ---- plain reads and writes: close racing an expiring deadline ---------------------------- */

/* A listener and, per round, a fresh connected pair through it. */
struct RoundPairs {
    Server srv;
    int port = 0;
    ::testing::AssertionResult Listen() {
        int rc = rn_tcp_listen(srv.out(), "127.0.0.1", 0);
        if (rc != 0)
            return ::testing::AssertionFailure() << "listen: " << Err(rc);
        port = PortOf(rn_server_addr(srv));
        return ::testing::AssertionSuccess();
    }
    ::testing::AssertionResult Connect(int i, Conn *cli, Conn *acc) {
        int rc = rn_tcp_connect(cli->out(), "127.0.0.1", port);
        if (rc == 0)
            rc = rn_server_accept(srv, acc->out());
        if (rc != 0)
            return ::testing::AssertionFailure() << "round " << i << ": " << Err(rc);
        return ::testing::AssertionSuccess();
    }
};

TEST_P(RaceTest, CloseRacingAnExpiringReadDeadline400TimesIsEclosedOrEtimedoutAndLeaksNothing) {
    OnLoopRun([&] {
        RoundPairs pairs;
        ASSERT_TRUE(pairs.Listen());
        RaceRounds rounds("reads");
        rounds.Run(400, [&](int i) {
            Conn cli, acc;
            ASSERT_TRUE(pairs.Connect(i, &cli, &acc));
            CloseRacingAnExpiringRead(i, &cli, &rounds);
        });
    });
}

TEST_P(RaceTest, CloseRacingAnExpiringWriteDeadline200TimesIsEclosedOrEtimedoutAndLeaksNothing) {
    OnLoopRun([&] {
        RoundPairs pairs;
        ASSERT_TRUE(pairs.Listen());
        const std::string data(16u << 20, 'w'); /* more than the socket buffers: the peer never reads */
        RaceRounds rounds("writes");
        rounds.Run(200, [&](int i) {
            Conn cli, acc;
            ASSERT_TRUE(pairs.Connect(i, &cli, &acc));
            rn_conn_set_write_deadline(cli, 2);
            int rc = 1;
            rn_conn *c = cli;
            CloseRacing(i, &cli, [&] { rc = rn_conn_write_all(c, data.data(), data.size()); });
            rounds.Saw(i, rc, rc == RN_ECLOSED || rc == -ETIMEDOUT);
        });
    });
}

TEST_P(RaceTest, CloseWhileAReadAndAWriteWithoutDeadlinesAreInFlight300TimesLeaksNothing) {
    OnLoopRun([&] {
        RoundPairs pairs;
        ASSERT_TRUE(pairs.Listen());
        const std::string data(16u << 20, 'x');
        RaceRounds rounds;
        rounds.Run(300, [&](int i) {
            Conn cli, acc;
            ASSERT_TRUE(pairs.Connect(i, &cli, &acc));
            rn_conn *c = cli;
            ssize_t rrc = 1;
            int wrc = 1;
            Blocked read([&] {
                char buf[8];
                rrc = rn_conn_read(c, buf, sizeof buf);
            });
            Blocked write([&] { wrc = rn_conn_write_all(c, data.data(), data.size()); });
            RaceDelay(i);
            ASSERT_TRUE(read.ReturnsPromptlyAfter([&] { ASSERT_EQ(0, cli.Close()); })) << "round " << i;
            ASSERT_TRUE(WaitUntil([&] { return write.Returned(); }, kPromptMs)) << "round " << i << ": the write";
            rounds.Saw(i, (int)rrc, rrc == RN_ECLOSED, "the read; the write " + Err(wrc));
            rounds.Saw(i, wrc, wrc == RN_ECLOSED, "the write");
        });
    });
}

TEST_P(RaceTest, SecondCloseWhileTheFirstWaitsForABlockedCallIsEclosedAndFreesOnce) {
    OnPair([&](Pair &p) {
        int fds_before = CountOpenFds();
        ssize_t rrc = 1;
        int first = 1, second = 1;
        std::string second_msg;
        Blocked read([&] {
            char buf[8];
            rrc = rn_conn_read(p.cli, buf, sizeof buf);
        });
        rn_yield();
        Blocked close([&] { first = rn_conn_close(p.cli); });
        rn_yield(); /* the first close marked the handle and waits for the read to leave */
        second = rn_conn_close(p.cli);
        second_msg = rn_last_error();
        EXPECT_EQ(RN_ECLOSED, second) << Err(second);
        EXPECT_NE(std::string::npos, second_msg.find("already being closed")) << second_msg;
        ASSERT_TRUE(WaitUntil([&] { return read.Returned() && close.Returned(); }, kPromptMs));
        EXPECT_EQ(RN_ECLOSED, rrc);
        EXPECT_EQ(0, first);
        p.cli = nullptr;
        EXPECT_EQ(fds_before - 1, CountOpenFds());
    });
}

/* ---- accept: the server closed as a client arrives ---------------------------------------------- */

TEST_P(RaceTest, ServerCloseRacingAnArrivingClient300TimesEitherAcceptsOrIsEclosedAndLeaksNothing) {
    OnLoopRun([&] {
        RaceRounds rounds("accepts");
        rounds.Run(300, [&](int i) {
            Server s;
            ASSERT_EQ(0, rn_tcp_listen(s.out(), "127.0.0.1", 0)) << rn_last_error();
            int port = PortOf(rn_server_addr(s));
            int rc = 1;
            rn_conn *got = nullptr;
            rn_server *srv = s;
            Blocked accept([&] { rc = rn_server_accept(srv, &got); });
            rn_yield(); /* the accept is parked (io_uring: its multishot armed) */
            int raw = RawConnect(port);
            ASSERT_GE(raw, 0) << strerror(errno);
            if (i % 3 == 1)
                rn_yield(); /* sometimes let the completion in first */
            else if (i % 3 == 2)
                rn_sleep(1);
            bool prompt = accept.ReturnsPromptlyAfter([&] { EXPECT_EQ(0, s.Close()) << rn_last_error(); });
            close(raw);
            ASSERT_TRUE(prompt) << "round " << i;
            Conn accepted(got); /* closed at the end of the round */
            rounds.Saw(i, rc, rc == 0 || rc == RN_ECLOSED);
            if (rc == 0)
                EXPECT_NE(nullptr, got);
            else
                EXPECT_EQ(nullptr, got);
        });
    });
}

TEST_P(RaceTest, ServerCloseWithClientsQueuedButNotAcceptedClosesThemAll) {
    OnLoopRun([&] {
        int fds_before = CountOpenFds();
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        /* One accept takes one client; the multishot (io_uring) may take
         * the others into its queue meanwhile. */
        std::vector<int> raws;
        for (int i = 0; i < 20; i++) {
            int fd = RawConnect(port);
            ASSERT_GE(fd, 0);
            raws.push_back(fd);
        }
        rn_conn *one = nullptr;
        ASSERT_EQ(0, rn_server_accept(s, &one)) << rn_last_error();
        rn_sleep(10);
        ASSERT_EQ(0, rn_conn_close(one));
        ASSERT_EQ(0, rn_server_close(s));
        /* Every client sees its connection end: none is held open by a
         * descriptor nobody took. */
        for (int fd : raws) {
            struct pollfd pfd = {fd, POLLIN, 0};
            ASSERT_EQ(1, poll(&pfd, 1, 2000)) << "a queued client was left hanging";
            char b;
            ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);
            EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << strerror(errno);
            close(fd);
        }
        EXPECT_EQ(fds_before, CountOpenFds());
    });
}

/* ---- connect in flight ---------------------------------------------------------------------------- */

/* A connect has no handle to close until it returns, so what can end it
 * from outside is the connect timeout expiring, or the listener it is
 * aimed at closing. */

TEST_P(RaceTest, ConnectTimeoutExpiringAgainstAListenerThatNeverAnswers100TimesIsEtimedoutAndLeaksNothing) {
    RNT_NEED_BLACKHOLE(hole, port);
    OnLoopRun([&] {
        RaceRounds rounds;
        rounds.Run(100, [&](int i) {
            int timeout = 1 + i % 3;
            rn_set_connect_timeout(timeout);
            Conn c;
            int rc = 0;
            int64_t took = MsTaken([&] { rc = rn_tcp_connect(c.out(), "127.0.0.1", port); });
            rounds.Saw(i, rc, rc == -ETIMEDOUT);
            EXPECT_EQ(nullptr, c.get());
            /* The connect timeout ended it: the kernel's own ends a connect
             * only after about two minutes of SYN retries. */
            EXPECT_LE(took, timeout + kPromptMs) << "round " << i;
        });
        rn_set_connect_timeout(30000);
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("timed out")) << rn_last_error();
    });
}

TEST_P(RaceTest, ServerClosedWhileAConnectToItIsInFlight200TimesConnectsOrIsRefusedAndLeaksNothing) {
    OnLoopRun([&] {
        RaceRounds connects("connects"), reads_after;
        connects.Run(200, [&](int i) {
            Server s;
            ASSERT_EQ(0, rn_tcp_listen(s.out(), "127.0.0.1", 0)) << rn_last_error();
            int port = PortOf(rn_server_addr(s));
            Blocked closer([&, i] {
                if (i % 2)
                    rn_yield();
                EXPECT_EQ(0, s.Close());
            });
            Conn c;
            int rc = rn_tcp_connect(c.out(), "127.0.0.1", port);
            connects.Saw(i, rc, rc == 0 || rc == -ECONNREFUSED);
            ASSERT_TRUE(WaitUntil([&] { return closer.Returned(); }, kPromptMs));
            if (rc == 0) {
                /* Connected into the backlog of a listener that then closed:
                 * the kernel resets it. */
                rn_conn_set_read_deadline(c, 2000);
                char b;
                ssize_t n = rn_conn_read(c, &b, 1);
                reads_after.Saw(i, (int)n, n == -ECONNRESET || n == 0, "read after the connect");
            } else {
                EXPECT_EQ(nullptr, c.get());
            }
        });
        EXPECT_EQ("", reads_after.FirstBad()) << "reads after: " << reads_after.Tally();
        printf("[ringnet] %s reads after: %s\n", GetParam(), reads_after.Tally().c_str());
    });
}

#if RINGNET_TEST_TLS
/* ---- TLS handshakes in flight ------------------------------------------------------------------------ */

/* The TLS clients below connect to "127.0.0.1" (the test certificate has it
 * as an IP subjectAltName), so that no resolver thread is involved in what
 * the descriptor counts measure. */

TEST_P(RaceTest, CloseDuringAServerHandshakeWithASilentClient200TimesIsEclosedOrEtimedout) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs);
        Server s;
        const int port = ListenTls(&s, scfg);
        ASSERT_GT(port, 0);
        std::string msg_closed, msg_timeout;
        RaceRounds rounds("handshakes");
        rounds.Run(200, [&](int i) {
            int raw = RawConnect(port); /* says nothing: the handshake waits for its ClientHello */
            ASSERT_GE(raw, 0);
            Conn acc;
            ASSERT_EQ(0, rn_server_accept(s, acc.out())) << rn_last_error();
            if (i % 2)
                rn_conn_set_deadline(acc, 2); /* odd rounds: the deadline races the close */
            int rc = 1;
            std::string msg;
            rn_conn *c = acc;
            CloseRacing(i, &acc, [&] {
                rc = rn_conn_handshake(c);
                msg = rn_last_error();
            });
            if (rc == RN_ECLOSED)
                msg_closed = msg;
            else if (rc == -ETIMEDOUT && i % 2)
                msg_timeout = msg;
            rounds.Saw(i, rc, rc == RN_ECLOSED || (rc == -ETIMEDOUT && i % 2), msg);
            close(raw);
        });
        EXPECT_NE(std::string::npos, msg_closed.find("closed during the TLS handshake")) << msg_closed;
        printf("[ringnet]   closed: %s\n  timed out: %s\n", msg_closed.c_str(), msg_timeout.c_str());
    });
}

TEST_P(RaceTest, ServerEndClosedAtAnyPointOfARingnetHandshake150TimesEndsBothSidesCleanly) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
        Server s;
        const int port = ListenTls(&s, scfg);
        ASSERT_GT(port, 0);
        std::string fds_list = FdList();
        RaceRounds srv_seen("server"), cli_seen("client");
        srv_seen.Run(150, [&](int i) {
            if (i == 1)
                fds_list = FdList();
            rn_conn *acc = nullptr;
            int src = 1, crc = 1;
            bool closed = false;
            Conn cli;
            /* The server's side: accept, handshake; closed by a third task
             * after a varying number of loop passes. */
            Blocked server([&, i] {
                ASSERT_EQ(0, rn_server_accept(s, &acc)) << rn_last_error();
                /* The closer first runs when the handshake first parks. */
                RNT_SPAWN([&, i] {
                    for (int k = 0; k < i % 12; k++)
                        rn_yield();
                    EXPECT_EQ(0, rn_conn_close(acc));
                    closed = true;
                });
                src = rn_conn_handshake(acc);
            });
            Blocked client([&] { crc = rn_tls_connect_with(cli.out(), "127.0.0.1", port, ccfg); });
            ASSERT_TRUE(WaitUntil([&] { return server.Returned() && client.Returned() && closed; })) << "round " << i;
            /* The server: finished before the close, or ended by it. The
             * client: connected, or saw the server go mid-handshake. */
            srv_seen.Saw(i, src, src == 0 || src == RN_ECLOSED, "server; client " + Err(crc));
            cli_seen.Saw(i, crc, crc == 0 || crc == RN_ETLS || crc == -ECONNRESET || crc == -EPIPE,
                         "client; server " + Err(src));
            if (crc == 0) {
                EXPECT_NE(nullptr, cli.get());
                /* The server is gone: the client's next read ends. */
                rn_conn_set_read_deadline(cli, 2000);
                char b;
                ssize_t n = rn_conn_read(cli, &b, 1);
                EXPECT_TRUE(n == 0 || n == RN_ETLS_TRUNCATED || n == -ECONNRESET || n == RN_ETLS) << Err((int)n);
            } else {
                EXPECT_EQ(nullptr, cli.get());
            }
        });
        EXPECT_EQ("", cli_seen.FirstBad()) << "client: " << cli_seen.Tally();
        if (HasFailure())
            printf("descriptors after round 0:\n%snow:\n%s", fds_list.c_str(), FdList().c_str());
        printf("[ringnet] %s client: %s\n", GetParam(), cli_seen.Tally().c_str());
    });
}

TEST_P(RaceTest, CloseDuringAClientStarttlsHandshakeIsEclosedPromptly) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig ccfg = ClientConfig(certs);
        RoundPairs pairs;
        ASSERT_TRUE(pairs.Listen());
        RaceRounds rounds;
        rounds.Run(50, [&](int i) {
            Conn cli, acc;
            ASSERT_TRUE(pairs.Connect(i, &cli, &acc));
            /* The server never answers the ClientHello. */
            int rc = 1;
            std::string msg;
            rn_conn *c = cli;
            CloseRacing(i, &cli, [&] {
                rc = rn_conn_upgrade_to_tls_with(c, "localhost", ccfg);
                msg = rn_last_error();
            });
            rounds.Saw(i, rc, rc == RN_ECLOSED, msg);
            EXPECT_NE(std::string::npos, msg.find("closed during the TLS handshake")) << msg;
        });
    });
}

/* ---- TLS reads: close racing an expiring deadline on an established session ------------------- */

TEST_P(RaceTest, CloseRacingAnExpiringTlsReadDeadline100TimesIsEclosedOrEtimedout) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
        Server s;
        const int port = ListenTls(&s, scfg);
        ASSERT_GT(port, 0);
        RaceRounds rounds("TLS reads");
        rounds.Run(100, [&](int i) {
            Conn acc, cli;
            int src = 1;
            Blocked server([&] {
                src = rn_server_accept(s, acc.out());
                if (src == 0)
                    src = rn_conn_handshake(acc);
            });
            ASSERT_EQ(0, rn_tls_connect_with(cli.out(), "127.0.0.1", port, ccfg)) << rn_last_error();
            ASSERT_TRUE(WaitUntil([&] { return server.Returned(); }, kPromptMs));
            ASSERT_EQ(0, src) << Err(src);
            CloseRacingAnExpiringRead(i, &cli, &rounds);
        });
    });
}
#endif /* RINGNET_TEST_TLS */

} // namespace
