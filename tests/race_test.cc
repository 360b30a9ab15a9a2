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

/* How long a call may take to return once the close that ends it ran. */
constexpr int64_t kPromptMs = 200;

std::string Err(int rc) {
    return std::to_string(rc) + " (" + rn_strerror(rc) + "): " + rn_last_error();
}

/* "RN_ECLOSED x120, -ETIMEDOUT x80": what the rounds ended with. */
std::string Tally(const std::map<int, int> &seen) {
    std::string s;
    for (const auto &kv : seen) {
        if (!s.empty())
            s += ", ";
        s += std::string(rn_strerror(kv.first)) + " (" + std::to_string(kv.first) + ") x" + std::to_string(kv.second);
    }
    return s;
}

/* The closer's delay in round i: none (the call is just parked), or 1-3 ms,
 * so that a 2 ms deadline expires before, with, or after the close. */
void RaceDelay(int i) {
    int d = i % 4;
    if (d == 0)
        rn_yield();
    else
        rn_sleep(d);
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

TEST_P(RaceTest, CloseRacingAnExpiringReadDeadline400TimesIsEclosedOrEtimedoutAndLeaksNothing) {
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        int fds_before = -1;
        std::map<int, int> seen;
        std::string first_bad;
        for (int i = 0; i < 401; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_conn *cli = nullptr, *acc = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&cli, "127.0.0.1", port)) << "round " << i << ": " << rn_last_error();
            ASSERT_EQ(0, rn_server_accept(s, &acc)) << "round " << i << ": " << rn_last_error();
            rn_conn_set_read_deadline(cli, 2);
            ssize_t rc = 1;
            bool started = false;
            int64_t done_at = -1;
            RNT_SPAWN([&] {
                started = true;
                char buf[8];
                rc = rn_conn_read(cli, buf, sizeof buf);
                done_at = NowMs();
            });
            rn_yield(); /* the reader enters its read and parks */
            ASSERT_TRUE(started);
            RaceDelay(i);
            int64_t t0 = NowMs();
            ASSERT_EQ(0, rn_conn_close(cli)) << "round " << i << ": " << rn_last_error();
            ASSERT_TRUE(WaitUntil([&] { return done_at >= 0; }, 2000)) << "round " << i << ": the read never returned";
            EXPECT_LE(done_at - t0, kPromptMs) << "round " << i;
            seen[(int)rc]++;
            if (rc != RN_ECLOSED && rc != -ETIMEDOUT && first_bad.empty())
                first_bad = "round " + std::to_string(i) + ": " + Err((int)rc);
            EXPECT_EQ(0, rn_conn_close(acc));
        }
        EXPECT_EQ("", first_bad) << Tally(seen);
        EXPECT_EQ(fds_before, CountOpenFds()) << "descriptors leaked; rounds ended " << Tally(seen);
        EXPECT_EQ(0, rn_server_close(s));
        printf("[ringnet] %s reads: %s\n", GetParam(), Tally(seen).c_str());
    });
}

TEST_P(RaceTest, CloseRacingAnExpiringWriteDeadline200TimesIsEclosedOrEtimedoutAndLeaksNothing) {
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        const std::string data(16u << 20, 'w'); /* more than the socket buffers: the peer never reads */
        int fds_before = -1;
        std::map<int, int> seen;
        std::string first_bad;
        for (int i = 0; i < 201; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_conn *cli = nullptr, *acc = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&cli, "127.0.0.1", port)) << "round " << i << ": " << rn_last_error();
            ASSERT_EQ(0, rn_server_accept(s, &acc)) << "round " << i << ": " << rn_last_error();
            rn_conn_set_write_deadline(cli, 2);
            int rc = 1;
            bool started = false;
            int64_t done_at = -1;
            RNT_SPAWN([&] {
                started = true;
                rc = rn_conn_write_all(cli, data.data(), data.size());
                done_at = NowMs();
            });
            rn_yield();
            ASSERT_TRUE(started);
            RaceDelay(i);
            int64_t t0 = NowMs();
            ASSERT_EQ(0, rn_conn_close(cli)) << "round " << i << ": " << rn_last_error();
            ASSERT_TRUE(WaitUntil([&] { return done_at >= 0; }, 2000)) << "round " << i << ": the write never returned";
            EXPECT_LE(done_at - t0, kPromptMs) << "round " << i;
            seen[rc]++;
            if (rc != RN_ECLOSED && rc != -ETIMEDOUT && first_bad.empty())
                first_bad = "round " + std::to_string(i) + ": " + Err(rc);
            EXPECT_EQ(0, rn_conn_close(acc));
        }
        EXPECT_EQ("", first_bad) << Tally(seen);
        EXPECT_EQ(fds_before, CountOpenFds()) << "descriptors leaked; rounds ended " << Tally(seen);
        EXPECT_EQ(0, rn_server_close(s));
        printf("[ringnet] %s writes: %s\n", GetParam(), Tally(seen).c_str());
    });
}

TEST_P(RaceTest, CloseWhileAReadAndAWriteWithoutDeadlinesAreInFlight300TimesLeaksNothing) {
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        const std::string data(16u << 20, 'x');
        int fds_before = -1, bad = 0;
        std::string first_bad;
        for (int i = 0; i < 301; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_conn *cli = nullptr, *acc = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&cli, "127.0.0.1", port)) << "round " << i << ": " << rn_last_error();
            ASSERT_EQ(0, rn_server_accept(s, &acc)) << "round " << i << ": " << rn_last_error();
            ssize_t rrc = 1;
            int wrc = 1, done = 0;
            RNT_SPAWN([&] {
                char buf[8];
                rrc = rn_conn_read(cli, buf, sizeof buf);
                done++;
            });
            RNT_SPAWN([&] {
                wrc = rn_conn_write_all(cli, data.data(), data.size());
                done++;
            });
            RaceDelay(i);
            ASSERT_EQ(0, rn_conn_close(cli));
            ASSERT_TRUE(WaitUntil([&] { return done == 2; }, 2000)) << "round " << i << ": " << done << " of 2";
            if ((rrc != RN_ECLOSED || wrc != RN_ECLOSED) && bad++ == 0)
                first_bad = "round " + std::to_string(i) + ": read " + Err((int)rrc) + "; write " + Err(wrc);
            EXPECT_EQ(0, rn_conn_close(acc));
        }
        EXPECT_EQ(0, bad) << first_bad;
        EXPECT_EQ(fds_before, CountOpenFds());
        EXPECT_EQ(0, rn_server_close(s));
    });
}

TEST_P(RaceTest, SecondCloseWhileTheFirstWaitsForABlockedCallIsEclosedAndFreesOnce) {
    OnLoopRun([&] {
        Pair p;
        ASSERT_TRUE(MakePair(&p));
        int fds_before = CountOpenFds();
        ssize_t rrc = 1;
        int first = 1, second = 1;
        bool rdone = false, cdone = false;
        std::string second_msg;
        RNT_SPAWN([&] {
            char buf[8];
            rrc = rn_conn_read(p.cli, buf, sizeof buf);
            rdone = true;
        });
        rn_yield();
        RNT_SPAWN([&] {
            first = rn_conn_close(p.cli);
            cdone = true;
        });
        rn_yield(); /* the first close marked the handle and waits for the read to leave */
        second = rn_conn_close(p.cli);
        second_msg = rn_last_error();
        EXPECT_EQ(RN_ECLOSED, second) << Err(second);
        EXPECT_NE(std::string::npos, second_msg.find("already being closed")) << second_msg;
        ASSERT_TRUE(WaitUntil([&] { return rdone && cdone; }, 2000));
        EXPECT_EQ(RN_ECLOSED, rrc);
        EXPECT_EQ(0, first);
        p.cli = nullptr;
        EXPECT_EQ(fds_before - 1, CountOpenFds());
        ClosePair(&p);
    });
}

/* ---- accept: the server closed as a client arrives ---------------------------------------------- */

TEST_P(RaceTest, ServerCloseRacingAnArrivingClient300TimesEitherAcceptsOrIsEclosedAndLeaksNothing) {
    OnLoopRun([&] {
        int fds_before = -1;
        std::map<int, int> seen;
        std::string first_bad;
        for (int i = 0; i < 301; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_server *s = nullptr;
            ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
            int port = PortOf(rn_server_addr(s));
            int rc = 1;
            rn_conn *got = nullptr;
            int64_t done_at = -1;
            RNT_SPAWN([&] {
                rc = rn_server_accept(s, &got);
                done_at = NowMs();
            });
            rn_yield(); /* the accept is parked (io_uring: its multishot armed) */
            int raw = RawConnect(port);
            ASSERT_GE(raw, 0) << strerror(errno);
            if (i % 3 == 1)
                rn_yield(); /* sometimes let the completion in first */
            else if (i % 3 == 2)
                rn_sleep(1);
            int64_t t0 = NowMs();
            ASSERT_EQ(0, rn_server_close(s)) << rn_last_error();
            ASSERT_TRUE(WaitUntil([&] { return done_at >= 0; }, 2000)) << "round " << i;
            EXPECT_LE(done_at - t0, kPromptMs);
            seen[rc]++;
            if (rc == 0) {
                EXPECT_NE(nullptr, got);
                EXPECT_EQ(0, rn_conn_close(got));
            } else {
                EXPECT_EQ(nullptr, got);
                if (rc != RN_ECLOSED && first_bad.empty())
                    first_bad = "round " + std::to_string(i) + ": " + Err(rc);
            }
            close(raw);
        }
        EXPECT_EQ("", first_bad) << Tally(seen);
        EXPECT_EQ(fds_before, CountOpenFds()) << "an accepted descriptor leaked; rounds ended " << Tally(seen);
        printf("[ringnet] %s accepts: %s\n", GetParam(), Tally(seen).c_str());
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
    /* listen(fd, 0) with its one queue slot filled: further SYNs are dropped. */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(lfd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    ASSERT_EQ(0, bind(lfd, (struct sockaddr *)&a, sizeof a));
    ASSERT_EQ(0, listen(lfd, 0));
    ASSERT_EQ(0, getsockname(lfd, (struct sockaddr *)&a, &alen));
    std::vector<int> fillers;
    bool hung = false;
    for (int i = 0; i < 8 && !hung; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        fillers.push_back(fd);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        struct pollfd pfd = {fd, POLLOUT, 0};
        hung = errno == EINPROGRESS && poll(&pfd, 1, 100) == 0;
    }
    int port = ntohs(a.sin_port);
    if (!hung) {
        for (int fd : fillers)
            close(fd);
        close(lfd);
        GTEST_SKIP() << "a listener with listen(fd, 0) kept answering SYNs: no loopback connect hangs here";
    }
    OnLoopRun([&] {
        int fds_before = -1;
        std::map<int, int> seen;
        for (int i = 0; i < 101; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_set_connect_timeout(1 + i % 3);
            rn_conn *c = nullptr;
            int64_t t0 = NowMs();
            int rc = rn_tcp_connect(&c, "127.0.0.1", port);
            int64_t took = NowMs() - t0;
            seen[rc]++;
            EXPECT_EQ(-ETIMEDOUT, rc) << "round " << i << ": " << Err(rc);
            EXPECT_EQ(nullptr, c);
            EXPECT_LE(took, 3 + kPromptMs) << "round " << i;
            if (c)
                rn_conn_close(c);
        }
        rn_set_connect_timeout(30000);
        EXPECT_EQ(fds_before, CountOpenFds()) << "a connecting socket leaked";
        EXPECT_NE(std::string::npos, std::string(rn_last_error()).find("timed out")) << rn_last_error();
    });
    for (int fd : fillers)
        close(fd);
    close(lfd);
}

TEST_P(RaceTest, ServerClosedWhileAConnectToItIsInFlight200TimesConnectsOrIsRefusedAndLeaksNothing) {
    OnLoopRun([&] {
        int fds_before = -1;
        std::map<int, int> seen, after;
        std::string first_bad;
        for (int i = 0; i < 201; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_server *s = nullptr;
            ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
            int port = PortOf(rn_server_addr(s));
            bool closed = false;
            RNT_SPAWN([&, i] {
                if (i % 2)
                    rn_yield();
                EXPECT_EQ(0, rn_server_close(s));
                closed = true;
            });
            rn_conn *c = nullptr;
            int rc = rn_tcp_connect(&c, "127.0.0.1", port);
            seen[rc]++;
            ASSERT_TRUE(WaitUntil([&] { return closed; }, 2000));
            if (rc == 0) {
                /* Connected into the backlog of a listener that then closed:
                 * the kernel resets it. */
                rn_conn_set_read_deadline(c, 2000);
                char b;
                ssize_t n = rn_conn_read(c, &b, 1);
                after[(int)n]++;
                if (n != -ECONNRESET && n != 0 && first_bad.empty())
                    first_bad = "round " + std::to_string(i) + ": read after " + Err((int)n);
                EXPECT_EQ(0, rn_conn_close(c));
            } else {
                EXPECT_EQ(nullptr, c);
                if (rc != -ECONNREFUSED && first_bad.empty())
                    first_bad = "round " + std::to_string(i) + ": connect " + Err(rc);
            }
        }
        EXPECT_EQ("", first_bad) << "connects: " << Tally(seen) << "; reads: " << Tally(after);
        EXPECT_EQ(fds_before, CountOpenFds());
        printf("[ringnet] %s connects: %s; reads after: %s\n", GetParam(), Tally(seen).c_str(), Tally(after).c_str());
    });
}

#if RINGNET_TEST_TLS
/* ---- TLS handshakes in flight ------------------------------------------------------------------------ */

/* The TLS clients below connect to "127.0.0.1" (the test certificate has it
 * as an IP subjectAltName), so that no resolver thread is involved in what
 * the descriptor counts measure. */

rn_tls_config *ClientCfg(const TestCerts *c) {
    rn_tls_config *cfg = rn_tls_client_config();
    EXPECT_NE(nullptr, cfg) << rn_last_error();
    if (cfg != nullptr) {
        EXPECT_EQ(0, rn_tls_config_set_ca_file(cfg, c->ca.c_str())) << rn_last_error();
    }
    return cfg;
}

TEST_P(RaceTest, CloseDuringAServerHandshakeWithASilentClient200TimesIsEclosedOrEtimedout) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        rn_tls_config *scfg = rn_tls_server_config(certs->server.c_str(), certs->server_key.c_str());
        ASSERT_NE(nullptr, scfg) << rn_last_error();
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tls_listen(&s, "127.0.0.1", 0, scfg)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        int fds_before = -1;
        std::map<int, int> seen;
        std::string first_bad, msg_closed, msg_timeout;
        for (int i = 0; i < 201; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            int raw = RawConnect(port); /* says nothing: the handshake waits for its ClientHello */
            ASSERT_GE(raw, 0);
            rn_conn *acc = nullptr;
            ASSERT_EQ(0, rn_server_accept(s, &acc)) << rn_last_error();
            if (i % 2)
                rn_conn_set_deadline(acc, 2); /* odd rounds: the deadline races the close */
            int rc = 1;
            int64_t done_at = -1;
            std::string msg;
            RNT_SPAWN([&] {
                rc = rn_conn_handshake(acc);
                msg = rn_last_error();
                done_at = NowMs();
            });
            rn_yield();
            RaceDelay(i);
            int64_t t0 = NowMs();
            ASSERT_EQ(0, rn_conn_close(acc));
            ASSERT_TRUE(WaitUntil([&] { return done_at >= 0; }, 2000)) << "round " << i;
            EXPECT_LE(done_at - t0, kPromptMs);
            seen[rc]++;
            if (rc == RN_ECLOSED)
                msg_closed = msg;
            else if (rc == -ETIMEDOUT && i % 2)
                msg_timeout = msg;
            else if (first_bad.empty())
                first_bad = "round " + std::to_string(i) + ": " + std::to_string(rc) + " " + msg;
            close(raw);
        }
        EXPECT_EQ("", first_bad) << Tally(seen);
        EXPECT_NE(std::string::npos, msg_closed.find("closed during the TLS handshake")) << msg_closed;
        EXPECT_EQ(fds_before, CountOpenFds()) << Tally(seen);
        EXPECT_EQ(0, rn_server_close(s));
        rn_tls_config_free(scfg);
        printf("[ringnet] %s handshakes: %s\n  closed: %s\n  timed out: %s\n", GetParam(), Tally(seen).c_str(),
               msg_closed.c_str(), msg_timeout.c_str());
    });
}

TEST_P(RaceTest, ServerEndClosedAtAnyPointOfARingnetHandshake150TimesEndsBothSidesCleanly) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        rn_tls_config *scfg = rn_tls_server_config(certs->server.c_str(), certs->server_key.c_str());
        ASSERT_NE(nullptr, scfg) << rn_last_error();
        rn_tls_config *ccfg = ClientCfg(certs);
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tls_listen(&s, "127.0.0.1", 0, scfg)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        int fds_before = -1;
        std::string fds_list;
        std::map<int, int> cli_seen, srv_seen;
        std::string first_bad;
        for (int i = 0; i < 151; i++) {
            if (i == 1) {
                fds_before = CountOpenFds();
                fds_list = FdList();
            }
            rn_conn *acc = nullptr;
            int src = 1, crc = 1;
            bool sdone = false, cdone = false;
            rn_conn *cli = nullptr;
            /* The server's side: accept, handshake; closed by a third task
             * after a varying number of loop passes. */
            bool closed = false;
            RNT_SPAWN([&, i] {
                ASSERT_EQ(0, rn_server_accept(s, &acc)) << rn_last_error();
                /* The closer first runs when the handshake first parks. */
                RNT_SPAWN([&, i] {
                    for (int k = 0; k < i % 12; k++)
                        rn_yield();
                    EXPECT_EQ(0, rn_conn_close(acc));
                    closed = true;
                });
                src = rn_conn_handshake(acc);
                sdone = true;
            });
            RNT_SPAWN([&] {
                crc = rn_tls_connect_with(&cli, "127.0.0.1", port, ccfg);
                cdone = true;
            });
            ASSERT_TRUE(WaitUntil([&] { return sdone && cdone && closed; }, 3000)) << "round " << i;
            srv_seen[src]++;
            cli_seen[crc]++;
            /* The server: finished before the close, or ended by it. The
             * client: connected, or saw the server go mid-handshake. */
            bool ok = (src == 0 || src == RN_ECLOSED) &&
                      (crc == 0 || crc == RN_ETLS || crc == -ECONNRESET || crc == -EPIPE);
            if (!ok && first_bad.empty())
                first_bad = "round " + std::to_string(i) + ": server " + std::to_string(src) + ", client " +
                            std::to_string(crc);
            if (crc == 0) {
                EXPECT_NE(nullptr, cli);
                /* The server is gone: the client's next read ends. */
                rn_conn_set_read_deadline(cli, 2000);
                char b;
                ssize_t n = rn_conn_read(cli, &b, 1);
                EXPECT_TRUE(n == 0 || n == RN_ETLS_TRUNCATED || n == -ECONNRESET || n == RN_ETLS) << Err((int)n);
                EXPECT_EQ(0, rn_conn_close(cli));
            } else {
                EXPECT_EQ(nullptr, cli);
            }
        }
        EXPECT_EQ("", first_bad) << "server: " << Tally(srv_seen) << "; client: " << Tally(cli_seen);
        EXPECT_EQ(fds_before, CountOpenFds()) << "before:\n" << fds_list << "after:\n" << FdList();
        EXPECT_EQ(0, rn_server_close(s));
        rn_tls_config_free(scfg);
        rn_tls_config_free(ccfg);
        printf("[ringnet] %s server: %s; client: %s\n", GetParam(), Tally(srv_seen).c_str(), Tally(cli_seen).c_str());
    });
}

TEST_P(RaceTest, CloseDuringAClientStarttlsHandshakeIsEclosedPromptly) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        rn_tls_config *ccfg = ClientCfg(certs);
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        int fds_before = -1;
        for (int i = 0; i < 51; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_conn *cli = nullptr, *acc = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&cli, "127.0.0.1", port));
            ASSERT_EQ(0, rn_server_accept(s, &acc));
            /* The server never answers the ClientHello. */
            int rc = 1;
            int64_t done_at = -1;
            std::string msg;
            RNT_SPAWN([&] {
                rc = rn_conn_upgrade_to_tls_with(cli, "localhost", ccfg);
                msg = rn_last_error();
                done_at = NowMs();
            });
            rn_yield();
            RaceDelay(i);
            int64_t t0 = NowMs();
            ASSERT_EQ(0, rn_conn_close(cli));
            ASSERT_TRUE(WaitUntil([&] { return done_at >= 0; }, 2000));
            EXPECT_LE(done_at - t0, kPromptMs);
            EXPECT_EQ(RN_ECLOSED, rc) << "round " << i << ": " << rc << " " << msg;
            EXPECT_NE(std::string::npos, msg.find("closed during the TLS handshake")) << msg;
            EXPECT_EQ(0, rn_conn_close(acc));
        }
        EXPECT_EQ(fds_before, CountOpenFds());
        EXPECT_EQ(0, rn_server_close(s));
        rn_tls_config_free(ccfg);
    });
}

/* ---- TLS reads: close racing an expiring deadline on an established session ------------------- */

TEST_P(RaceTest, CloseRacingAnExpiringTlsReadDeadline100TimesIsEclosedOrEtimedout) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        rn_tls_config *scfg = rn_tls_server_config(certs->server.c_str(), certs->server_key.c_str());
        ASSERT_NE(nullptr, scfg) << rn_last_error();
        rn_tls_config *ccfg = ClientCfg(certs);
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tls_listen(&s, "127.0.0.1", 0, scfg)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        int fds_before = -1;
        std::map<int, int> seen;
        std::string first_bad;
        for (int i = 0; i < 101; i++) {
            if (i == 1)
                fds_before = CountOpenFds();
            rn_conn *acc = nullptr, *cli = nullptr;
            int src = 1;
            bool sdone = false;
            RNT_SPAWN([&] {
                src = rn_server_accept(s, &acc);
                if (src == 0)
                    src = rn_conn_handshake(acc);
                sdone = true;
            });
            ASSERT_EQ(0, rn_tls_connect_with(&cli, "127.0.0.1", port, ccfg)) << rn_last_error();
            ASSERT_TRUE(WaitUntil([&] { return sdone; }, 2000));
            ASSERT_EQ(0, src) << Err(src);
            rn_conn_set_read_deadline(cli, 2);
            ssize_t rc = 1;
            int64_t done_at = -1;
            RNT_SPAWN([&] {
                char buf[8];
                rc = rn_conn_read(cli, buf, sizeof buf);
                done_at = NowMs();
            });
            rn_yield();
            RaceDelay(i);
            int64_t t0 = NowMs();
            ASSERT_EQ(0, rn_conn_close(cli));
            ASSERT_TRUE(WaitUntil([&] { return done_at >= 0; }, 2000)) << "round " << i;
            EXPECT_LE(done_at - t0, kPromptMs);
            seen[(int)rc]++;
            if (rc != RN_ECLOSED && rc != -ETIMEDOUT && first_bad.empty())
                first_bad = "round " + std::to_string(i) + ": " + Err((int)rc);
            EXPECT_EQ(0, rn_conn_close(acc));
        }
        EXPECT_EQ("", first_bad) << Tally(seen);
        EXPECT_EQ(fds_before, CountOpenFds());
        EXPECT_EQ(0, rn_server_close(s));
        rn_tls_config_free(scfg);
        rn_tls_config_free(ccfg);
        printf("[ringnet] %s TLS reads: %s\n", GetParam(), Tally(seen).c_str());
    });
}
#endif /* RINGNET_TEST_TLS */

} // namespace
