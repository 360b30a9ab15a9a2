/* close_test.cc - closing a connection or server while other tasks are
 * blocked in calls on it: they wake promptly with RN_ECLOSED, nothing leaks,
 * and a close from another thread is refused. */
#include "harness.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace rnt;

namespace {

class CloseTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(CloseTest);

/* How soon a blocked call must return once its handle is closed: kPromptMs
 * (harness.h: 2 s, for a wake-up that takes under 10 ms idle and ~200 ms
 * under memcheck on a loaded machine). No deadline is set and the peer
 * sends nothing, so a call the close did not wake would never return. */

TEST_P(CloseTest, CloseFromAnotherTaskWakesABlockedReadWithEclosedPromptly) {
    OnPair([&](Pair &p) {
        ssize_t rc = 1;
        rn_conn *c = p.cli;
        Blocked read([&] {
            char buf[16];
            rc = rn_conn_read(c, buf, sizeof buf);
        });
        rn_sleep(50);
        ASSERT_FALSE(read.Returned()) << "the read returned before the close: " << rc;
        ASSERT_TRUE(read.ReturnsPromptlyAfter([&] {
            EXPECT_EQ(0, rn_conn_close(p.cli));
            p.cli = nullptr;
        }));
        EXPECT_EQ(RN_ECLOSED, rc) << rn_strerror((int)rc);
    });
}

TEST_P(CloseTest, CloseFromAnotherTaskWakesABlockedWriteWithEclosedPromptly) {
    OnPair([&](Pair &p) {
        const std::string data(64u << 20, 'c'); /* more than the buffers hold: the peer never reads */
        int rc = 1;
        rn_conn *c = p.cli;
        Blocked write([&] { rc = rn_conn_write_all(c, data.data(), data.size()); });
        rn_sleep(100);
        ASSERT_FALSE(write.Returned()) << "the write returned before the close: " << rc;
        ASSERT_TRUE(write.ReturnsPromptlyAfter([&] {
            EXPECT_EQ(0, rn_conn_close(p.cli));
            p.cli = nullptr;
        }));
        EXPECT_EQ(RN_ECLOSED, rc) << rn_strerror(rc);
    });
}

TEST_P(CloseTest, CloseWakesEveryTaskBlockedOnTheConnection) {
    OnPair([&](Pair &p) {
        const std::string data(64u << 20, 'c');
        ssize_t read_rc = 1;
        int write_rc = 1, exact_rc = 1, woken = 0;
        RNT_SPAWN([&] {
            char buf[16];
            read_rc = rn_conn_read(p.cli, buf, sizeof buf);
            woken++;
        });
        RNT_SPAWN([&] {
            write_rc = rn_conn_write_all(p.cli, data.data(), data.size());
            woken++;
        });
        RNT_SPAWN([&] {
            char buf[16];
            exact_rc = rn_conn_read_exact(p.cli, buf, sizeof buf);
            woken++;
        });
        rn_sleep(100);
        ASSERT_EQ(0, woken);
        EXPECT_EQ(0, rn_conn_close(p.cli));
        p.cli = nullptr;
        EXPECT_TRUE(WaitUntil([&] { return woken == 3; })) << woken << " of 3 woke";
        EXPECT_EQ(RN_ECLOSED, read_rc);
        EXPECT_EQ(RN_ECLOSED, write_rc);
        EXPECT_EQ(RN_ECLOSED, exact_rc);
    });
}

TEST_P(CloseTest, ServerCloseWakesABlockedAcceptWithEclosedPromptly) {
    OnLoopRun([&] {
        Server s;
        ASSERT_EQ(0, rn_tcp_listen(s.out(), "127.0.0.1", 0)) << rn_last_error();
        int rc = 1;
        rn_conn *c = nullptr;
        rn_server *srv = s;
        Blocked accept([&] { rc = rn_server_accept(srv, &c); });
        rn_sleep(50);
        ASSERT_FALSE(accept.Returned()) << "accept returned with no client: " << rc;
        ASSERT_TRUE(accept.ReturnsPromptlyAfter([&] { EXPECT_EQ(0, s.Close()); }));
        EXPECT_EQ(RN_ECLOSED, rc) << rn_strerror(rc);
        EXPECT_EQ(nullptr, c);
    });
}

TEST_P(CloseTest, ClosingTwoHundredConnectionsWithReadsPendingLeaksNoDescriptor) {
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        int fds_before = -1, bad = 0;
        std::string first_bad;
        for (int i = 0; i < 201; i++) {
            if (i == 1)
                fds_before = CountOpenFds(); /* after one round warmed the loop up */
            rn_conn *cli = nullptr, *acc = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&cli, "127.0.0.1", port)) << "round " << i << ": " << rn_last_error();
            ASSERT_EQ(0, rn_server_accept(s, &acc)) << "round " << i << ": " << rn_last_error();
            ssize_t cli_rc = 1, acc_rc = 1;
            int done = 0;
            RNT_SPAWN([&] {
                char buf[8];
                cli_rc = rn_conn_read(cli, buf, sizeof buf);
                done++;
            });
            RNT_SPAWN([&] {
                char buf[8];
                acc_rc = rn_conn_read(acc, buf, sizeof buf);
                done++;
            });
            rn_sleep(1); /* both reads are blocked in the backend now */
            EXPECT_EQ(0, rn_conn_close(cli));
            EXPECT_EQ(0, rn_conn_close(acc));
            ASSERT_TRUE(WaitUntil([&] { return done == 2; })) << "round " << i;
            /* The peer's read may see the end of stream before its own close. */
            if (cli_rc != RN_ECLOSED || (acc_rc != RN_ECLOSED && acc_rc != 0)) {
                if (bad++ == 0)
                    first_bad = "round " + std::to_string(i) + ": cli read " + std::to_string(cli_rc) + ", acc read " +
                                std::to_string(acc_rc);
            }
        }
        EXPECT_EQ(0, bad) << first_bad;
        EXPECT_EQ(fds_before, CountOpenFds()) << "descriptors leaked over 200 closes";
        EXPECT_EQ(0, rn_server_close(s));
    });
}

TEST_P(CloseTest, CloseFromAnotherThreadIsExdevAndClosesNothing) {
    OnPair([&](Pair &p) {
        int conn_rc = 1, srv_rc = 1;
        std::string err;
        std::thread([&] {
            conn_rc = rn_conn_close(p.cli);
            srv_rc = rn_server_close(p.srv);
            err = rn_last_error();
        }).join();
        EXPECT_EQ(-EXDEV, conn_rc);
        EXPECT_EQ(-EXDEV, srv_rc);
        EXPECT_FALSE(err.empty());
        /* Both still work on their own thread. */
        EXPECT_EQ(0, rn_conn_write_all(p.cli, "alive", 5));
        char buf[5];
        EXPECT_EQ(0, rn_conn_read_exact(p.acc, buf, 5)) << rn_last_error();
        EXPECT_EQ(0, memcmp(buf, "alive", 5));
        Conn c2, a2;
        EXPECT_EQ(0, rn_tcp_connect(c2.out(), "127.0.0.1", p.port));
        EXPECT_EQ(0, rn_server_accept(p.srv, a2.out())) << rn_last_error();
    });
}

} // namespace
