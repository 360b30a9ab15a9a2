/* lent_test.cc - rn_conn_read_lent: reads into buffers the library lends.
 * The bytes are right and stay put until the next read, end of stream and
 * errors leave no buffer behind, kept bytes come first, deadlines and close
 * behave as for rn_conn_read, and more holders than the io_uring buffer
 * ring has entries (64) still get their own bytes (the heap fallback). */
#include "harness.h"
#include "tls_helpers.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace rnt;

namespace {

class LentTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(LentTest);

TEST_P(LentTest, LendsTheBytesSentAndEndOfStreamLeavesDataNull) {
    OnPair([&](Pair &p) {
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "hello", 5));
        const void *data = nullptr;
        ssize_t n = rn_conn_read_lent(p.acc, &data);
        ASSERT_EQ(5, n) << rn_last_error();
        ASSERT_NE(nullptr, data);
        EXPECT_EQ(0, memcmp(data, "hello", 5));
        ASSERT_EQ(0, rn_conn_shutdown_write(p.cli));
        data = &n; /* must be reset */
        EXPECT_EQ(0, rn_conn_read_lent(p.acc, &data));
        EXPECT_EQ(nullptr, data);
    });
}

TEST_P(LentTest, FourMebibytesArriveInOrderInPiecesOfAtMostRnLentMax) {
    OnPair([&](Pair &p) {
        const size_t total = 4u << 20;
        const std::string data = Pattern(total, 7);
        int wrc = 1;
        RNT_SPAWN([&] {
            wrc = rn_conn_write_all(p.cli, data.data(), data.size());
            rn_conn_shutdown_write(p.cli);
        });
        size_t got = 0;
        size_t reads = 0;
        for (;;) {
            const void *d = nullptr;
            ssize_t n = rn_conn_read_lent(p.acc, &d);
            ASSERT_GE(n, 0) << rn_last_error();
            if (n == 0)
                break;
            ASSERT_LE((size_t)n, (size_t)RN_LENT_MAX);
            ASSERT_EQ(-1, FirstPatternMismatch(d, (size_t)n, got, 7)) << "at offset " << got;
            got += (size_t)n;
            reads++;
        }
        EXPECT_EQ(total, got);
        EXPECT_GE(reads, total / RN_LENT_MAX);
        EXPECT_EQ(0, wrc) << rn_strerror(wrc);
    });
}

TEST_P(LentTest, LentBytesStayPutWhileOtherConnectionsCycleTheBuffers) {
    OnLoopRun([&] {
        Pair a, b;
        ASSERT_TRUE(MakePair(&a));
        ASSERT_TRUE(MakePair(&b));
        const std::string msg = Pattern(3000, 3);
        ASSERT_EQ(0, rn_conn_write_all(a.cli, msg.data(), msg.size()));
        const void *held = nullptr;
        ssize_t n = rn_conn_read_lent(a.acc, &held);
        ASSERT_GT(n, 0) << rn_last_error();
        /* 300 lent reads on another connection go round the 64-entry ring
         * several times; a buffer given back too early would be refilled. */
        for (int i = 0; i < 300; i++) {
            std::string m = Pattern(1000, 100 + (uint32_t)i);
            ASSERT_EQ(0, rn_conn_write_all(b.cli, m.data(), m.size()));
            size_t got = 0;
            while (got < m.size()) {
                const void *d = nullptr;
                ssize_t k = rn_conn_read_lent(b.acc, &d);
                ASSERT_GT(k, 0) << rn_last_error();
                ASSERT_EQ(-1, FirstPatternMismatch(d, (size_t)k, got, 100 + (uint32_t)i));
                got += (size_t)k;
            }
        }
        ASSERT_EQ(-1, FirstPatternMismatch(held, (size_t)n, 0, 3)) << "the held bytes changed";
        /* An echo: the lent bytes go out as they are. */
        ASSERT_EQ(0, rn_conn_write_all(a.acc, held, (size_t)n)) << rn_last_error();
        std::string back((size_t)n, '\0');
        ASSERT_EQ(0, rn_conn_read_exact(a.cli, &back[0], back.size())) << rn_last_error();
        EXPECT_EQ(msg.substr(0, (size_t)n), back);
        ClosePair(&a);
        ClosePair(&b);
    });
}

TEST_P(LentTest, BytesKeptByAFailedReadExactComeFirst) {
    OnPair([&](Pair &p) {
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "0123456789", 10));
        rn_conn_set_read_deadline(p.acc, 100);
        char buf[20];
        ASSERT_EQ(-ETIMEDOUT, rn_conn_read_exact(p.acc, buf, sizeof buf));
        const void *d = nullptr;
        ASSERT_EQ(10, rn_conn_read_lent(p.acc, &d)) << rn_last_error();
        EXPECT_EQ(0, memcmp(d, "0123456789", 10));
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "abc", 3));
        ASSERT_EQ(3, rn_conn_read_lent(p.acc, &d)) << rn_last_error();
        EXPECT_EQ(0, memcmp(d, "abc", 3));
    });
}

TEST_P(LentTest, ReadDeadlineGivesEtimedoutAndTheConnectionStillWorks) {
    OnPair([&](Pair &p) {
        rn_conn_set_read_deadline(p.acc, 80);
        const void *d = &p;
        int64_t took = MsTaken([&] { EXPECT_EQ(-ETIMEDOUT, rn_conn_read_lent(p.acc, &d)); });
        EXPECT_EQ(nullptr, d);
        EXPECT_GE(took, 70);
        /* Nothing else would end the read (no bytes come): the bound proves
         * the deadline fired, kPromptMs (harness.h) past it. */
        EXPECT_LE(took, 80 + kPromptMs);
        EXPECT_NE(nullptr, strstr(rn_last_error(), "read_lent")) << rn_last_error();
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "late", 4));
        ASSERT_EQ(4, rn_conn_read_lent(p.acc, &d)) << rn_last_error();
        EXPECT_EQ(0, memcmp(d, "late", 4));
    });
}

TEST_P(LentTest, CloseFromAnotherTaskWakesABlockedLentReadWithEclosed) {
    OnPair([&](Pair &p) {
        ssize_t rc = 1;
        const void *d = &rc;
        bool done = false;
        RNT_SPAWN([&] {
            rc = rn_conn_read_lent(p.acc, &d);
            done = true;
        });
        rn_sleep(30);
        ASSERT_FALSE(done);
        EXPECT_EQ(0, rn_conn_close(p.acc));
        p.acc = nullptr;
        ASSERT_TRUE(WaitUntil([&] { return done; }));
        EXPECT_EQ(RN_ECLOSED, rc) << rn_strerror((int)rc);
        EXPECT_EQ(nullptr, d);
    });
}

TEST_P(LentTest, NullArgumentsAreRefusedWithEinval) {
    OnLoopRun([&] {
        const void *d = &d;
        EXPECT_EQ(-EINVAL, rn_conn_read_lent(nullptr, &d));
        EXPECT_EQ(nullptr, d);
        Pair p;
        ASSERT_TRUE(MakePair(&p));
        EXPECT_EQ(-EINVAL, rn_conn_read_lent(p.acc, nullptr));
        EXPECT_NE(nullptr, strstr(rn_last_error(), "data is NULL")) << rn_last_error();
        rn_conn_release_lent(nullptr); /* harmless */
        rn_conn_release_lent(p.acc);   /* nothing lent: harmless */
    });
}

/* From another thread: a lent read is -EXDEV with data NULL, and a release
 * does nothing: the owner's bytes stay put. */
TEST_P(LentTest, AnotherThreadCanNeitherReadLentNorReleaseTheOwnersBytes) {
    OnPair([&](Pair &p) {
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "mine", 4));
        const void *held = nullptr;
        ASSERT_EQ(4, rn_conn_read_lent(p.acc, &held)) << rn_last_error();
        ssize_t other = 1;
        const void *od = &other;
        std::string msg;
        std::thread([&] {
            other = rn_conn_read_lent(p.acc, &od);
            msg = rn_last_error();
            rn_conn_release_lent(p.acc);
        }).join();
        EXPECT_EQ(-EXDEV, other);
        EXPECT_EQ(nullptr, od);
        EXPECT_NE(std::string::npos, msg.find("another thread")) << msg;
        /* Bytes from another connection reuse no buffer the owner holds. */
        Pair q;
        ASSERT_TRUE(MakePair(&q));
        for (int i = 0; i < 100; i++) {
            ASSERT_EQ(0, rn_conn_write_all(q.cli, "zzzz", 4));
            const void *d = nullptr;
            ASSERT_EQ(4, rn_conn_read_lent(q.acc, &d));
        }
        EXPECT_EQ(0, memcmp(held, "mine", 4));
        ClosePair(&q);
    });
}

/* 150 connections each hold a lent buffer at once: more than the io_uring
 * ring's 64, so most come from the heap fallback. Every holder's bytes stay
 * its own while the others arrive; three rounds show the buffers return. */
TEST_P(LentTest, MoreHoldersThanRingBuffersEachKeepTheirOwnBytes) {
    OnLoopRun([&] {
        constexpr int kConns = 150;
        constexpr size_t kMsg = 5000;
        rn_server *srv = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&srv, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(srv));
        std::vector<rn_conn *> cli(kConns, nullptr), acc(kConns, nullptr);
        for (int i = 0; i < kConns; i++) {
            ASSERT_EQ(0, rn_tcp_connect(&cli[i], "127.0.0.1", port)) << rn_last_error();
            ASSERT_EQ(0, rn_server_accept(srv, &acc[i])) << rn_last_error();
        }
        for (int round = 0; round < 3; round++) {
            std::vector<const void *> held(kConns, nullptr);
            std::vector<size_t> len(kConns, 0);
            int arrived = 0, failures = 0;
            bool all_in = false;
            int checked = 0;
            for (int i = 0; i < kConns; i++) {
                RNT_SPAWN([&, i] {
                    const void *d = nullptr;
                    ssize_t n = rn_conn_read_lent(acc[i], &d);
                    if (n <= 0) {
                        failures++;
                        arrived++;
                        return;
                    }
                    held[i] = d;
                    len[i] = (size_t)n;
                    arrived++;
                    /* Hold the buffer until every connection has its own. */
                    while (!all_in)
                        rn_sleep(1);
                    if (FirstPatternMismatch(d, (size_t)n, 0, (uint32_t)(round * 1000 + i)) != -1)
                        failures++;
                    checked++;
                });
            }
            for (int i = 0; i < kConns; i++) {
                /* Less than one buffer, so that one read takes it all. */
                std::string m = Pattern(kMsg, (uint32_t)(round * 1000 + i));
                ASSERT_EQ(0, rn_conn_write_all(cli[i], m.data(), m.size())) << rn_last_error();
            }
            ASSERT_TRUE(WaitUntil([&] { return arrived == kConns; })) << arrived << " of " << kConns;
            all_in = true;
            ASSERT_TRUE(WaitUntil([&] { return checked + failures >= kConns; }));
            EXPECT_EQ(0, failures) << "round " << round;
            for (int i = 0; i < kConns; i++) {
                EXPECT_EQ(kMsg, len[i]) << "conn " << i << " round " << round;
                for (int j = 0; j < i; j++)
                    ASSERT_NE(held[i], held[j]) << "two holders share a buffer";
            }
            for (int i = 0; i < kConns; i++)
                rn_conn_release_lent(acc[i]);
        }
        for (int i = 0; i < kConns; i++) {
            EXPECT_EQ(0, rn_conn_close(cli[i]));
            EXPECT_EQ(0, rn_conn_close(acc[i]));
        }
        EXPECT_EQ(0, rn_server_close(srv));
    });
}

/* 32 echo clients of 256 KiB each through lent reads, concurrently: the
 * buffers cycle through the ring thousands of times and nothing is lost. */
TEST_P(LentTest, ConcurrentEchoesThroughLentReadsLoseNoByte) {
    OnLoopRun([&] {
        constexpr int kConns = 32;
        constexpr size_t kBytes = 256u << 10;
        rn_server *srv = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&srv, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(srv));
        RNT_SPAWN([&] {
            for (int i = 0; i < kConns; i++) {
                rn_conn *c = nullptr;
                if (rn_server_accept(srv, &c) < 0)
                    return;
                RNT_SPAWN([c] {
                    for (;;) {
                        const void *d = nullptr;
                        ssize_t n = rn_conn_read_lent(c, &d);
                        if (n <= 0 || rn_conn_write_all(c, d, (size_t)n) < 0)
                            break;
                    }
                    rn_conn_close(c);
                });
            }
        });
        int ok = 0, bad = 0;
        for (int i = 0; i < kConns; i++) {
            RNT_SPAWN([&, i] {
                rn_conn *c = nullptr;
                if (rn_tcp_connect(&c, "127.0.0.1", port) < 0) {
                    bad++;
                    return;
                }
                std::string out = Pattern(kBytes, (uint32_t)i);
                bool good = true;
                RNT_SPAWN([&, c] {
                    rn_conn_write_all(c, out.data(), out.size());
                    rn_conn_shutdown_write(c);
                });
                size_t got = 0;
                char buf[8192];
                while (got < kBytes) {
                    ssize_t n = rn_conn_read(c, buf, sizeof buf);
                    if (n <= 0 || FirstPatternMismatch(buf, (size_t)n, got, (uint32_t)i) != -1) {
                        good = false;
                        break;
                    }
                    got += (size_t)n;
                }
                char end;
                if (good && rn_conn_read(c, &end, 1) != 0)
                    good = false;
                rn_conn_close(c);
                good ? ok++ : bad++;
            });
        }
        ASSERT_TRUE(WaitUntil([&] { return ok + bad == kConns; }, 30000));
        EXPECT_EQ(kConns, ok);
        EXPECT_EQ(0, bad);
        EXPECT_EQ(0, rn_server_close(srv));
    });
}

#if RINGNET_TEST_TLS
TEST_P(LentTest, TlsConnectionsLendThePlaintext) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
        ASSERT_TRUE(scfg.get() != nullptr && ccfg.get() != nullptr) << "no TLS configs";
        rn_server *srv = nullptr;
        ASSERT_EQ(0, rn_tls_listen(&srv, "127.0.0.1", 0, scfg)) << rn_last_error();
        int port = PortOf(rn_server_addr(srv));
        const std::string msg = Pattern(100000, 9);
        std::string got;
        int src = 1;
        bool done = false;
        RNT_SPAWN([&] {
            rn_conn *c = nullptr;
            if ((src = rn_server_accept(srv, &c)) < 0) {
                done = true;
                return;
            }
            for (;;) {
                const void *d = nullptr;
                ssize_t n = rn_conn_read_lent(c, &d);
                if (n <= 0) {
                    src = (int)n;
                    break;
                }
                got.append((const char *)d, (size_t)n);
            }
            rn_conn_close(c);
            done = true;
        });
        rn_conn *c = nullptr;
        ASSERT_EQ(0, rn_tls_connect_with(&c, "localhost", port, ccfg)) << rn_last_error();
        ASSERT_EQ(0, rn_conn_write_all(c, msg.data(), msg.size())) << rn_last_error();
        EXPECT_EQ(0, rn_conn_close(c));
        ASSERT_TRUE(WaitUntil([&] { return done; }));
        EXPECT_EQ(0, src) << rn_strerror(src);
        EXPECT_EQ(msg.size(), got.size());
        EXPECT_TRUE(msg == got);
        EXPECT_EQ(0, rn_server_close(srv));
    });
}
#endif /* RINGNET_TEST_TLS */

} // namespace
