/* sockets_test.cc - socket options and resets: rn_conn_set_nodelay and
 * rn_conn_set_keepalive checked against what the kernel reports for the
 * connection's own descriptor, rn_conn_abort seen from a plain socket peer,
 * a ringnet peer and a TLS peer (ECONNRESET, never an orderly end, no
 * close_notify). Drains are in drain_test.cc. */
#include "harness.h"
#include "sockets_util.h"
#if RINGNET_TEST_TLS
#include "tls_helpers.h"
#endif

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

using namespace rnt;

namespace {

class SocketsTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(SocketsTest);

int IntOpt(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, name, &v, &len) != 0)
        return -1000 - errno;
    return v;
}

bool Says(const std::string &needle) { return std::string(rn_last_error()).find(needle) != std::string::npos; }

/* ---- TCP_NODELAY ------------------------------------------------------------------------ */

TEST_P(SocketsTest, NodelayIsOnByDefaultOnBothEndsAndCanBeTurnedOffAndOn) {
    OnPair([&](Pair &p) {
        int cfd = ConnFd(p.cli), afd = ConnFd(p.acc);
        ASSERT_GE(cfd, 0);
        ASSERT_GE(afd, 0);
        EXPECT_NE(cfd, afd);
        EXPECT_EQ(1, IntOpt(cfd, IPPROTO_TCP, TCP_NODELAY));
        EXPECT_EQ(1, IntOpt(afd, IPPROTO_TCP, TCP_NODELAY));
        EXPECT_EQ(0, rn_conn_set_nodelay(p.cli, false)) << rn_last_error();
        EXPECT_EQ(0, IntOpt(cfd, IPPROTO_TCP, TCP_NODELAY));
        EXPECT_EQ(1, IntOpt(afd, IPPROTO_TCP, TCP_NODELAY)); /* only the one asked */
        EXPECT_EQ(0, rn_conn_set_nodelay(p.cli, true)) << rn_last_error();
        EXPECT_EQ(1, IntOpt(cfd, IPPROTO_TCP, TCP_NODELAY));
        /* Still a working connection. */
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "ok", 2));
        char b[2];
        ASSERT_EQ(0, rn_conn_read_exact(p.acc, b, 2));
        EXPECT_EQ(-EINVAL, rn_conn_set_nodelay(nullptr, true));
        EXPECT_TRUE(Says("NULL")) << rn_last_error();
    });
}

/* ---- keepalive -------------------------------------------------------------------------- */

TEST_P(SocketsTest, KeepaliveSetsTheKernelsIdleIntervalAndCountAndTurnsOff) {
    OnPair([&](Pair &p) {
        int fd = ConnFd(p.acc);
        ASSERT_GE(fd, 0);
        EXPECT_EQ(0, IntOpt(fd, SOL_SOCKET, SO_KEEPALIVE)); /* off by default */
        ASSERT_EQ(0, rn_conn_set_keepalive(p.acc, 30, 5, 4)) << rn_last_error();
        EXPECT_EQ(1, IntOpt(fd, SOL_SOCKET, SO_KEEPALIVE));
        EXPECT_EQ(30, IntOpt(fd, IPPROTO_TCP, TCP_KEEPIDLE));
        EXPECT_EQ(5, IntOpt(fd, IPPROTO_TCP, TCP_KEEPINTVL));
        EXPECT_EQ(4, IntOpt(fd, IPPROTO_TCP, TCP_KEEPCNT));
        /* The limits are accepted. */
        ASSERT_EQ(0, rn_conn_set_keepalive(p.acc, 32767, 32767, 127)) << rn_last_error();
        EXPECT_EQ(32767, IntOpt(fd, IPPROTO_TCP, TCP_KEEPIDLE));
        EXPECT_EQ(32767, IntOpt(fd, IPPROTO_TCP, TCP_KEEPINTVL));
        EXPECT_EQ(127, IntOpt(fd, IPPROTO_TCP, TCP_KEEPCNT));
        ASSERT_EQ(0, rn_conn_set_keepalive(p.acc, 1, 1, 1)) << rn_last_error();
        EXPECT_EQ(1, IntOpt(fd, IPPROTO_TCP, TCP_KEEPIDLE));
        /* idle 0: off; the other two are not looked at. */
        ASSERT_EQ(0, rn_conn_set_keepalive(p.acc, 0, 0, 0)) << rn_last_error();
        EXPECT_EQ(0, IntOpt(fd, SOL_SOCKET, SO_KEEPALIVE));
        ASSERT_EQ(0, rn_conn_set_keepalive(p.acc, 0, 99999, 99999)) << rn_last_error();
        EXPECT_EQ(0, IntOpt(fd, SOL_SOCKET, SO_KEEPALIVE));
        /* The other end was never touched. */
        EXPECT_EQ(0, IntOpt(ConnFd(p.cli), SOL_SOCKET, SO_KEEPALIVE));
    });
}

TEST_P(SocketsTest, KeepaliveRefusesBadValuesWithTheReasonAndChangesNothing) {
    OnPair([&](Pair &p) {
        int fd = ConnFd(p.cli);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(0, rn_conn_set_keepalive(p.cli, 60, 10, 5)) << rn_last_error();
        struct Bad {
            int idle, intvl, cnt;
            const char *says;
        } bad[] = {
            {-1, 10, 5, "idle_s is negative"},
            {60, -1, 5, "interval_s is negative"},
            {60, 10, -1, "count is negative"},
            {0, -1, 0, "interval_s is negative"}, /* negatives are refused even when turning off */
            {32768, 10, 5, "idle_s 32768 is outside 1..32767"},
            {60, 0, 5, "interval_s 0 is outside 1..32767"},
            {60, 32768, 5, "interval_s 32768 is outside 1..32767"},
            {60, 10, 0, "count 0 is outside 1..127"},
            {60, 10, 128, "count 128 is outside 1..127"},
            {INT32_MIN, INT32_MIN, INT32_MIN, "negative"},
            {INT32_MAX, INT32_MAX, INT32_MAX, "outside"},
        };
        for (const Bad &b : bad) {
            EXPECT_EQ(-EINVAL, rn_conn_set_keepalive(p.cli, b.idle, b.intvl, b.cnt))
                << b.idle << " " << b.intvl << " " << b.cnt;
            EXPECT_TRUE(Says(b.says)) << "wanted \"" << b.says << "\" in: " << rn_last_error();
        }
        EXPECT_EQ(1, IntOpt(fd, SOL_SOCKET, SO_KEEPALIVE));
        EXPECT_EQ(60, IntOpt(fd, IPPROTO_TCP, TCP_KEEPIDLE));
        EXPECT_EQ(10, IntOpt(fd, IPPROTO_TCP, TCP_KEEPINTVL));
        EXPECT_EQ(5, IntOpt(fd, IPPROTO_TCP, TCP_KEEPCNT));
        EXPECT_EQ(-EINVAL, rn_conn_set_keepalive(nullptr, 60, 10, 5));
    });
}

TEST_P(SocketsTest, SocketOptionsFromAnotherThreadAreRefused) {
    OnPair([&](Pair &p) {
        int nd = 0, ka = 0, ab = 0;
        std::thread t([&] {
            nd = rn_conn_set_nodelay(p.cli, false);
            ka = rn_conn_set_keepalive(p.cli, 60, 10, 5);
            ab = rn_conn_abort(p.cli);
        });
        t.join();
        EXPECT_EQ(-EXDEV, nd);
        EXPECT_EQ(-EXDEV, ka);
        EXPECT_EQ(-EXDEV, ab);
        EXPECT_EQ(1, IntOpt(ConnFd(p.cli), IPPROTO_TCP, TCP_NODELAY));
        EXPECT_EQ(0, IntOpt(ConnFd(p.cli), SOL_SOCKET, SO_KEEPALIVE));
    });
}

/* ---- rn_conn_abort ---------------------------------------------------------------------- */

TEST_P(SocketsTest, AbortResetsAPlainSocketPeer) {
    OnLoopRun([&] {
        Server s;
        ASSERT_EQ(0, rn_tcp_listen(s.out(), "127.0.0.1", 0)) << rn_last_error();
        RawPeer peer(PortOf(rn_server_addr(s)));
        ASSERT_GE(peer.fd, 0) << strerror(errno);
        rn_conn *a = nullptr;
        ASSERT_EQ(0, rn_server_accept(s, &a)) << rn_last_error();
        /* Bytes both ways first: a connection in use, not a fresh one. */
        ASSERT_EQ(2, send(peer.fd, "hi", 2, 0));
        char b[2];
        ASSERT_EQ(0, rn_conn_read_exact(a, b, 2));
        ASSERT_EQ(0, rn_conn_write_all(a, "yo", 2));
        ASSERT_EQ(2, recv(peer.fd, b, 2, MSG_WAITALL));
        EXPECT_EQ(0, rn_conn_abort(a)) << rn_last_error();
        EXPECT_EQ(-ECONNRESET, peer.ReadToEnd()) << "an orderly end (0) is not a reset";
    });
}

TEST_P(SocketsTest, AbortDropsUnsentBytesWithoutLingeringAndWakesABlockedWrite) {
    OnLoopRun([&] {
        Server s;
        ASSERT_EQ(0, rn_tcp_listen(s.out(), "127.0.0.1", 0)) << rn_last_error();
        RawPeer peer(PortOf(rn_server_addr(s)));
        ASSERT_GE(peer.fd, 0) << strerror(errno);
        rn_conn *a = nullptr;
        ASSERT_EQ(0, rn_server_accept(s, &a)) << rn_last_error();
        /* More than the socket buffers hold, the peer not reading: a
         * close with a linger would wait here; an orderly close would
         * leave the bytes to be sent. */
        const std::string data(64u << 20, 'a');
        int rc = 1;
        Blocked write([&] { rc = rn_conn_write_all(a, data.data(), data.size()); });
        rn_sleep(100);
        ASSERT_FALSE(write.Returned()) << rc;
        int ab = 1;
        int64_t took = -1;
        ASSERT_TRUE(write.ReturnsPromptlyAfter([&] { took = MsTaken([&] { ab = rn_conn_abort(a); }); }));
        EXPECT_EQ(0, ab) << rn_last_error();
        EXPECT_LT(took, kPromptMs);
        EXPECT_EQ(RN_ECLOSED, rc) << rn_last_error();
        /* The peer may read some of what was queued before the reset, then
         * the reset: never the end of a stream. */
        EXPECT_EQ(-ECONNRESET, peer.ReadToEnd());
    });
}

TEST_P(SocketsTest, AbortWakesABlockedReadAndTheRingnetPeerSeesEconnreset) {
    OnPair([&](Pair &p) {
        ssize_t rc = 1;
        rn_conn *a = p.acc;
        Blocked read([&] {
            char buf[16];
            rc = rn_conn_read(a, buf, sizeof buf);
        });
        rn_sleep(50);
        ASSERT_FALSE(read.Returned()) << rc;
        ASSERT_TRUE(read.ReturnsPromptlyAfter([&] {
            EXPECT_EQ(0, rn_conn_abort(p.acc)) << rn_last_error();
            p.acc = nullptr;
        }));
        EXPECT_EQ(RN_ECLOSED, rc);
        char buf[16];
        EXPECT_EQ(-ECONNRESET, rn_conn_read(p.cli, buf, sizeof buf)) << rn_last_error();
    });
}

TEST_P(SocketsTest, AResetThatArrivesWhileNobodyReadsIsSeenByTheNextRead) {
    OnPair([&](Pair &p) {
        /* A short read first: the socket was emptied, so the next read on
         * io_uring arms a multishot recv (POLL_FIRST) on a socket whose
         * reset is already in. */
        char buf[16];
        ASSERT_EQ(0, rn_conn_write_all(p.acc, "hi", 2));
        ASSERT_EQ(2, rn_conn_read(p.cli, buf, sizeof buf));
        EXPECT_EQ(0, rn_conn_abort(p.acc)) << rn_last_error();
        p.acc = nullptr;
        rn_sleep(50);                               /* the RST is in before the read */
        rn_conn_set_read_deadline(p.cli, kNeverMs); /* a lost reset fails, not hangs */
        EXPECT_EQ(-ECONNRESET, rn_conn_read(p.cli, buf, sizeof buf)) << rn_last_error();
    });
}

/* Bytes the peer sent and nobody read yet, then its reset: the reads
 * return the bytes, then -ECONNRESET. On io_uring the next read arms the
 * stream's multishot recv on a socket that holds both already; armed
 * poll-first (as it once was) the multishot took the bytes and never
 * reported the reset, and the read waited for its deadline (uring/stream.c,
 * sr_arm). */
TEST_P(SocketsTest, AResetBehindUnreadBytesIsSeenByTheNextRead) {
    OnPair([&](Pair &p) {
        /* A short read first: the socket was emptied, so the next read on
         * io_uring arms a multishot recv (POLL_FIRST) on a socket whose
         * reset is already in. */
        char buf[16];
        ASSERT_EQ(0, rn_conn_write_all(p.acc, "hi", 2));
        ASSERT_EQ(2, rn_conn_read(p.cli, buf, sizeof buf));
        /* Then bytes nobody reads before the reset. */
        ASSERT_EQ(0, rn_conn_write_all(p.acc, "unread", 6));
        rn_sleep(20);
        EXPECT_EQ(0, rn_conn_abort(p.acc)) << rn_last_error();
        p.acc = nullptr;
        rn_sleep(50);                               /* the RST is in before the read */
        rn_conn_set_read_deadline(p.cli, kNeverMs); /* a lost reset fails, not hangs */
        ssize_t r;
        while ((r = rn_conn_read(p.cli, buf, sizeof buf)) > 0) {
        }
        EXPECT_EQ(-ECONNRESET, r) << rn_last_error();
    });
}

TEST_P(SocketsTest, AbortOfNullIsNothingAndAnOrderlyCloseIsNoReset) {
    OnPair([&](Pair &p) {
        EXPECT_EQ(0, rn_conn_abort(nullptr));
        /* The control: rn_conn_close ends the stream in order. */
        EXPECT_EQ(0, rn_conn_close(p.acc));
        p.acc = nullptr;
        char buf[16];
        EXPECT_EQ(0, rn_conn_read(p.cli, buf, sizeof buf)) << rn_last_error();
    });
}

#if RINGNET_TEST_TLS

TEST_P(SocketsTest, AbortOfATlsConnectionSendsNoCloseNotify) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs);
        TlsConfig ccfg = ClientConfig(certs);
        Server s;
        int port = ListenTls(&s, scfg);
        ASSERT_GT(port, 0);
        for (bool abort : {false, true}) {
            rn_conn *a = nullptr;
            int hs = 1;
            RNT_SPAWN([&] {
                ASSERT_EQ(0, rn_server_accept(s, &a)) << rn_last_error();
                hs = rn_conn_handshake(a);
            });
            Conn c;
            ASSERT_EQ(0, rn_tls_connect_with(c.out(), "localhost", port, ccfg)) << rn_last_error();
            ASSERT_TRUE(WaitUntil([&] { return hs != 1; }));
            ASSERT_EQ(0, hs) << rn_last_error();
            ASSERT_EQ(0, rn_conn_write_all(a, "hello", 5));
            char buf[16];
            ASSERT_EQ(0, rn_conn_read_exact(c, buf, 5));
            EXPECT_EQ(0, abort ? rn_conn_abort(a) : rn_conn_close(a)) << rn_last_error();
            ssize_t r = rn_conn_read(c, buf, sizeof buf);
            if (abort)
                EXPECT_EQ(-ECONNRESET, r) << rn_last_error();
            else
                EXPECT_EQ(0, r) << "close sends close_notify: " << rn_last_error();
        }
    });
}

#endif

} // namespace
