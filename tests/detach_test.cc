/* detach_test.cc - moving a connection between threads (rn_conn_detach,
 * rn_conn_attach): the errors (NULL, not detached, another thread's, a
 * call in flight, a reset one) and what a detached connection refuses;
 * every byte received and not yet handed out follows the connection in
 * order (a failed read_exact's kept bytes, io_uring's stream-read queue,
 * TLS ciphertext and plaintext), and so do its deadlines; moves between
 * the two backends; TLS moved mid-stream on both sides; an acceptor that
 * reads a header and hands each connection to a pool of workers through a
 * channel (plain and TLS, every byte checked); a detach racing the peer's
 * reset; a moved connection leaving its server's drain; and closing a
 * detached connection from a thread that never used ringnet. */
#include "harness.h"
#if RINGNET_TEST_TLS
#include "tls_helpers.h"
#endif

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

using namespace rnt;

namespace {

class DetachTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(DetachTest);

std::string Err(int64_t rc) { return std::to_string(rc) + " (" + rn_strerror((int)rc) + "): " + rn_last_error(); }

const char *OtherBackend(const char *b) { return strcmp(b, "io_uring") == 0 ? "epoll" : "io_uring"; }

bool Has(const char *needle) { return strstr(rn_last_error(), needle) != nullptr; }

/* Read n bytes from c (in reads of at most chunk bytes) and check each
 * against the pattern of seed at offset. */
::testing::AssertionResult ReadPattern(rn_conn *c, uint64_t offset, size_t n, uint32_t seed, size_t chunk = 4096) {
    std::vector<char> buf(chunk);
    size_t got = 0;
    while (got < n) {
        size_t want = n - got < chunk ? n - got : chunk;
        ssize_t r = rn_conn_read(c, buf.data(), want);
        if (r <= 0)
            return ::testing::AssertionFailure() << "read after " << got << " of " << n << " bytes: " << Err(r);
        int64_t bad = FirstPatternMismatch(buf.data(), (size_t)r, offset + got, seed);
        if (bad >= 0)
            return ::testing::AssertionFailure() << "byte " << offset + got + (uint64_t)bad << " differs";
        got += (size_t)r;
    }
    return ::testing::AssertionSuccess();
}

bool RawWriteAll(int fd, const std::string &s) {
    size_t done = 0;
    while (done < s.size()) {
        ssize_t r = write(fd, s.data() + done, s.size() - done);
        if (r <= 0)
            return false;
        done += (size_t)r;
    }
    return true;
}

/* Run body on a new thread whose loop runs backend, after attaching c
 * there (body gets whether the attach worked), and join it. */
void OnThread(const char *backend, const Fn &body) {
    std::thread t = LoopThread(backend, [&] { EXPECT_EQ(0, RunTask(body)) << rn_last_error(); });
    t.join();
}

TEST_P(DetachTest, NullNotDetachedAndAnotherThreadsAreRefusedWithASentence) {
    OnPair([&](Pair &p) {
        EXPECT_EQ(-EINVAL, rn_conn_detach(nullptr));
        EXPECT_TRUE(Has("NULL")) << rn_last_error();
        EXPECT_EQ(-EINVAL, rn_conn_attach(nullptr));
        EXPECT_TRUE(Has("NULL")) << rn_last_error();
        EXPECT_EQ(-EINVAL, rn_conn_attach(p.acc));
        EXPECT_TRUE(Has("not detached")) << rn_last_error();
        int rc = 0;
        std::string msg;
        std::thread([&] {
            rc = rn_conn_detach(p.acc);
            msg = rn_last_error();
        }).join();
        EXPECT_EQ(-EXDEV, rc);
        EXPECT_NE(std::string::npos, msg.find("another thread")) << msg;
        /* Nothing changed: it still talks. */
        ASSERT_EQ(3, rn_conn_write(p.cli, "abc", 3));
        char buf[8];
        ASSERT_EQ(3, rn_conn_read(p.acc, buf, sizeof buf)) << rn_last_error();
        EXPECT_EQ(0, memcmp(buf, "abc", 3));
    });
}

TEST_P(DetachTest, DetachWithAReadInFlightIsEbusyAndWorksOnceItReturned) {
    OnPair([&](Pair &p) {
        ssize_t got = 0;
        char buf[16];
        Blocked read([&] { got = rn_conn_read(p.acc, buf, sizeof buf); });
        ASSERT_TRUE(WaitUntil([&] { return read.Started(); }));
        EXPECT_EQ(-EBUSY, rn_conn_detach(p.acc));
        EXPECT_TRUE(Has("in flight")) << rn_last_error();
        ASSERT_EQ(1, rn_conn_write(p.cli, "x", 1));
        ASSERT_TRUE(WaitUntil([&] { return read.Returned(); }));
        EXPECT_EQ(1, got) << rn_last_error();
        /* The read is over: the detach goes through, and an attach on the
         * same thread takes it back. */
        ASSERT_EQ(0, rn_conn_detach(p.acc)) << rn_last_error();
        ASSERT_EQ(0, rn_conn_attach(p.acc)) << rn_last_error();
        ASSERT_EQ(2, rn_conn_write(p.acc, "yz", 2)) << rn_last_error();
        ASSERT_EQ(2, rn_conn_read(p.cli, buf, sizeof buf)) << rn_last_error();
        EXPECT_EQ(0, memcmp(buf, "yz", 2));
    });
}

TEST_P(DetachTest, ADetachedConnectionRefusesEveryCallButAttachAndCloseWithExdev) {
    OnPair([&](Pair &p) {
        ASSERT_EQ(5, rn_conn_write(p.cli, "hello", 5));
        ASSERT_EQ(0, rn_conn_detach(p.acc)) << rn_last_error();
        rn_conn *c = p.acc;
        char buf[8];
        const void *lent = nullptr;
        EXPECT_EQ(-EXDEV, rn_conn_read(c, buf, sizeof buf));
        EXPECT_TRUE(Has("detached")) << rn_last_error();
        EXPECT_EQ(-EXDEV, rn_conn_read_lent(c, &lent));
        EXPECT_EQ(-EXDEV, rn_conn_read_exact(c, buf, 2));
        EXPECT_EQ(-EXDEV, rn_conn_write(c, "a", 1));
        EXPECT_EQ(-EXDEV, rn_conn_write_all(c, "a", 1));
        EXPECT_EQ(-EXDEV, rn_conn_shutdown_write(c));
        EXPECT_EQ(-EXDEV, rn_conn_set_nodelay(c, true));
        EXPECT_EQ(-EXDEV, rn_conn_set_keepalive(c, 10, 5, 3));
        EXPECT_EQ(-EXDEV, rn_conn_detach(c));
        EXPECT_TRUE(Has("detached already")) << rn_last_error();
#if RINGNET_TEST_TLS
        EXPECT_EQ(-EXDEV, rn_conn_handshake(c));
        EXPECT_EQ(-EXDEV, rn_conn_upgrade_to_tls(c, "localhost"));
#endif
        rn_conn_release_lent(c); /* nothing to release: ignored */
        /* The same from a thread that never used ringnet (whose loop,
         * NULL, must not pass for the detached connection's). */
        ssize_t rc = 0;
        std::thread([&] { rc = rn_conn_read(c, buf, sizeof buf); }).join();
        EXPECT_EQ(-EXDEV, rc);
        /* Nothing was lost: attached again, the bytes are there. */
        ASSERT_EQ(0, rn_conn_attach(c)) << rn_last_error();
        ASSERT_EQ(5, rn_conn_read(c, buf, sizeof buf)) << rn_last_error();
        EXPECT_EQ(0, memcmp(buf, "hello", 5));
    });
}

/* The source thread leaves bytes in every place a connection keeps them,
 * moves the connection to a thread running target, which reads every byte
 * in order, finds the read deadline still set, and answers; the connection
 * comes back and the answer is read. */
void MoveWithQueuedBytes(const char *backend, const char *target, BackendTest *) {
    constexpr uint32_t kUp = 5, kDown = 6;
    std::thread src = LoopThread(backend, [&] {
        EXPECT_EQ(0, RunTask([&] {
                      Pair p;
                      ASSERT_TRUE(MakePair(&p));
                      rn_conn *acc = p.acc;
                      /* A read that empties the socket (io_uring: the next read arms
                       * its standing multishot recv). */
                      ASSERT_EQ(0, rn_conn_write_all(p.cli, Pattern(100, kUp).data(), 100));
                      ASSERT_TRUE(ReadPattern(acc, 0, 100, kUp));
                      /* A read_exact that times out keeps what it got. */
                      ASSERT_EQ(0, rn_conn_write_all(p.cli, Pattern(3000, kUp, 100).data(), 3000));
                      rn_conn_set_read_deadline(acc, 300);
                      std::vector<char> big(10000);
                      ASSERT_EQ(-ETIMEDOUT, rn_conn_read_exact(acc, big.data(), big.size()));
                      /* More arrives after it (io_uring: queued on the connection by the
                       * multishot the read_exact left armed), and the source reads only
                       * part of what is there. */
                      ASSERT_EQ(0, rn_conn_write_all(p.cli, Pattern(20000, kUp, 3100).data(), 20000));
                      rn_sleep(50);
                      ASSERT_TRUE(ReadPattern(acc, 100, 1000, kUp));
                      ASSERT_EQ(0, rn_conn_detach(acc)) << rn_last_error();

                      OnThread(target, [&] {
                          ASSERT_EQ(0, rn_conn_attach(acc)) << rn_last_error();
                          EXPECT_STREQ(target, rn_backend_name());
                          /* Every byte, in order, in reads of varied sizes. */
                          ASSERT_TRUE(ReadPattern(acc, 1100, 500, kUp, 7));
                          ASSERT_TRUE(ReadPattern(acc, 1600, 21500, kUp, 3000));
                          /* The read deadline came along: nothing more comes. */
                          char b[16];
                          ssize_t r = 0;
                          int64_t took = MsTaken([&] { r = rn_conn_read(acc, b, sizeof b); });
                          EXPECT_EQ(-ETIMEDOUT, r) << Err(r);
                          EXPECT_GE(took, 290);
                          ASSERT_EQ(0, rn_conn_write_all(acc, Pattern(5000, kDown).data(), 5000)) << rn_last_error();
                          ASSERT_EQ(0, rn_conn_detach(acc)) << rn_last_error();
                      });

                      /* Home again: the source thread talks on it. */
                      ASSERT_EQ(0, rn_conn_attach(acc)) << rn_last_error();
                      ASSERT_TRUE(ReadPattern(p.cli, 0, 5000, kDown));
                      ASSERT_EQ(0, rn_conn_write_all(p.cli, "ok", 2));
                      char b[4];
                      ASSERT_EQ(0, rn_conn_read_exact(acc, b, 2)) << rn_last_error();
                  }))
            << rn_last_error();
    });
    src.join();
}

TEST_P(DetachTest, EveryQueuedByteAndTheDeadlineFollowTheConnectionToAnotherThread) {
    MoveWithQueuedBytes(backend(), backend(), this);
}

TEST_P(DetachTest, AConnectionMovesToAThreadOfTheOtherBackendAndBack) {
    std::string why;
    if (!BackendUsable(OtherBackend(backend()), &why))
        GTEST_SKIP() << why;
    MoveWithQueuedBytes(backend(), OtherBackend(backend()), this);
}

/* A lent read's buffer (io_uring: one of the loop's stream buffers, lent
 * where it lies) is given back at the detach: its bytes were handed out,
 * and the bytes after them follow the connection. */
TEST_P(DetachTest, ALentReadEndsAtTheDetachAndTheBytesAfterItFollow) {
    constexpr uint32_t kSeed = 9;
    std::thread src = LoopThread(backend(), [&] {
        EXPECT_EQ(0, RunTask([&] {
                      Pair p;
                      ASSERT_TRUE(MakePair(&p));
                      rn_conn *acc = p.acc;
                      ASSERT_EQ(0, rn_conn_write_all(p.cli, Pattern(100, kSeed).data(), 100));
                      ASSERT_TRUE(ReadPattern(acc, 0, 100, kSeed));
                      ASSERT_EQ(0, rn_conn_write_all(p.cli, Pattern(40000, kSeed, 100).data(), 40000));
                      const void *data = nullptr;
                      ssize_t n = rn_conn_read_lent(acc, &data);
                      ASSERT_GT(n, 0) << Err(n);
                      ASSERT_EQ(-1, FirstPatternMismatch(data, (size_t)n, 100, kSeed));
                      rn_sleep(20); /* the rest arrives (io_uring: into the queue) */
                      ASSERT_EQ(0, rn_conn_detach(acc)) << rn_last_error();
                      OnThread(backend(), [&] {
                          ASSERT_EQ(0, rn_conn_attach(acc)) << rn_last_error();
                          ASSERT_TRUE(ReadPattern(acc, 100 + (uint64_t)n, 40000 - (size_t)n, kSeed, 5000));
                          ASSERT_EQ(0, rn_conn_detach(acc)) << rn_last_error();
                      });
                      ASSERT_EQ(0, rn_conn_attach(acc)) << rn_last_error();
                  }))
            << rn_last_error();
    });
    src.join();
}

TEST_P(DetachTest, AMovedConnectionLeavesItsServersDrainAndDetachOfAResetOneIsEclosed) {
    OnLoopRun([&] {
        rn_server *srv = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&srv, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(srv));
        Conn cli1, cli2, a1, a2;
        ASSERT_EQ(0, rn_tcp_connect(cli1.out(), "127.0.0.1", port));
        ASSERT_EQ(0, rn_server_accept(srv, a1.out()));
        ASSERT_EQ(0, rn_tcp_connect(cli2.out(), "127.0.0.1", port));
        ASSERT_EQ(0, rn_server_accept(srv, a2.out()));
        ASSERT_EQ(0, rn_conn_detach(a1)) << rn_last_error();
        int drained = -1;
        RNT_SPAWN([&] { drained = rn_server_drain(srv, 0); });
        /* The drain resets a2 only, and waits for its owner's close. */
        char b[4];
        ASSERT_TRUE(WaitUntil([&] { return rn_conn_read(a2, b, sizeof b) == RN_ECLOSED; }));
        EXPECT_EQ(RN_ECLOSED, rn_conn_detach(a2));
        EXPECT_TRUE(Has("drain")) << rn_last_error();
        EXPECT_EQ(0, a2.Close());
        ASSERT_TRUE(WaitUntil([&] { return drained >= 0; }));
        EXPECT_EQ(1, drained);
        /* a1 was moved: untouched by the drain. */
        ASSERT_EQ(0, rn_conn_attach(a1)) << rn_last_error();
        ASSERT_EQ(0, rn_conn_write_all(cli1, "ping", 4));
        ASSERT_EQ(0, rn_conn_read_exact(a1, b, 4)) << rn_last_error();
        EXPECT_EQ(0, memcmp(b, "ping", 4));
        /* A closed one: RN_ECLOSED too (here from the reset's sentence). */
    });
}

/* A close from another task while a detach waits for the backend to let
 * go (io_uring: the multishot recv's cancellation) wins: the detach is
 * RN_ECLOSED and the close frees the connection once. Where the detach
 * does not wait (epoll, or no multishot armed), the close finds the
 * connection detached and closes it as such. */
TEST_P(DetachTest, ACloseWhileADetachWaitsWinsAndFreesTheConnectionOnce) {
    OnPair([&](Pair &p) {
        rn_conn *acc = p.acc;
        char b[16];
        /* A read that empties the socket, then one served by the multishot
         * it arms, which stays armed after it. */
        ASSERT_EQ(1, rn_conn_write(p.cli, "a", 1));
        ASSERT_EQ(1, rn_conn_read(acc, b, sizeof b));
        ASSERT_EQ(1, rn_conn_write(p.cli, "b", 1));
        ASSERT_EQ(1, rn_conn_read(acc, b, sizeof b));
        int close_rc = 1;
        std::string saw;
        bool done = false;
        RNT_SPAWN([&] {
            /* set_nodelay enters and leaves without parking: no call of
             * this task is in flight when the detach starts. */
            int rc = rn_conn_set_nodelay(acc, true);
            saw = rn_last_error();
            EXPECT_EQ(-EXDEV, rc);
            close_rc = rn_conn_close(acc);
            done = true;
        });
        int rc = rn_conn_detach(acc);
        p.acc = nullptr; /* the task closes it */
        ASSERT_TRUE(WaitUntil([&] { return done; }));
        EXPECT_EQ(0, close_rc) << rn_last_error();
        if (rc == RN_ECLOSED)
            EXPECT_NE(std::string::npos, saw.find("being detached")) << saw;
        else
            EXPECT_EQ(0, rc) << Err(rc);
        std::printf("[ringnet] %s: detach %s, the task saw \"%s\"\n", backend(), rc == 0 ? "0" : "RN_ECLOSED",
                    saw.c_str());
        /* The peer sees the end. */
        rn_conn_set_read_deadline(p.cli, 10000);
        EXPECT_EQ(0, rn_conn_read(p.cli, b, sizeof b)) << rn_last_error();
    });
}

TEST_P(DetachTest, ADetachedConnectionClosesFromAThreadThatNeverUsedRingnet) {
    OnLoopRun([&] {
        rn_server *srvp = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&srvp, "127.0.0.1", 0)) << rn_last_error();
        Server srv(srvp);
        int port = PortOf(rn_server_addr(srv));
        int before = CountOpenFds();
        for (int abort = 0; abort < 2; abort++) {
            int raw = RawConnect(port);
            ASSERT_GE(raw, 0);
            rn_conn *acc = nullptr;
            ASSERT_EQ(0, rn_server_accept(srv, &acc));
            ASSERT_TRUE(RawWriteAll(raw, "abc"));
            char b[8];
            /* A close with unread bytes would send a reset: the orderly
             * close reads them all; the abort leaves some waiting. */
            if (abort)
                ASSERT_EQ(1, rn_conn_read(acc, b, 1));
            else
                ASSERT_EQ(0, rn_conn_read_exact(acc, b, 3)) << rn_last_error();
            ASSERT_EQ(0, rn_conn_detach(acc)) << rn_last_error();
            int rc = 1;
            std::thread([&] { rc = abort ? rn_conn_abort(acc) : rn_conn_close(acc); }).join();
            EXPECT_EQ(0, rc) << rn_last_error();
            /* The peer sees the end: EOF after a close, a reset after an
             * abort. */
            ssize_t r = read(raw, b, sizeof b);
            if (abort)
                EXPECT_TRUE(r < 0 && errno == ECONNRESET) << r << " " << strerror(errno);
            else
                EXPECT_EQ(0, r);
            close(raw);
        }
        EXPECT_EQ(before, CountOpenFds());
    });
}

/* The peer sends data and then a reset while the source detaches at
 * varied moments; after the move the reader gets every byte, then
 * -ECONNRESET: never a crash, a hang or a lost byte. */
TEST_P(DetachTest, DetachRacingThePeersResetDeliversTheBytesThenTheReset) {
    rn_chan *to_worker = rn_chan_new(1), *back = rn_chan_new(1);
    ASSERT_NE(nullptr, to_worker);
    ASSERT_NE(nullptr, back);
    struct Round {
        rn_conn *c;
        size_t first, total;
        uint32_t seed;
        ssize_t end;
        bool bytes_ok;
        std::string detail;
    };
    std::promise<void> ready;
    std::thread worker = LoopThread(backend(), [&] {
        /* The loop's eventfd now, not at its first wait across threads
         * (which a fast round 0 may not reach): the rounds count
         * descriptors. */
        rn_loop_release(rn_loop_self());
        ready.set_value();
        EXPECT_EQ(0, RunTask([&] {
                      void *item;
                      while (rn_chan_recv(to_worker, &item, -1) == 0) {
                          Round *r = static_cast<Round *>(item);
                          r->bytes_ok = false;
                          if (rn_conn_attach(r->c) == 0) {
                              ::testing::AssertionResult ok =
                                  ReadPattern(r->c, r->first, r->total - r->first, r->seed, 997);
                              r->bytes_ok = ok;
                              if (!ok)
                                  r->detail = ok.message();
                              char b[64];
                              r->end = rn_conn_read(r->c, b, sizeof b);
                              if (r->end < 0)
                                  r->detail += rn_last_error();
                          } else {
                              r->end = -9999;
                              r->detail = rn_last_error();
                          }
                          EXPECT_EQ(0, rn_conn_close(r->c));
                          EXPECT_EQ(0, rn_chan_send(back, r, -1));
                      }
                  }));
    });
    ready.get_future().wait();
    OnLoopRun([&] {
        rn_loop_release(rn_loop_self()); /* this loop's eventfd too */
        rn_server *srvp = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&srvp, "127.0.0.1", 0)) << rn_last_error();
        Server srv(srvp);
        int port = PortOf(rn_server_addr(srv));
        RaceRounds rounds("detach racing a reset");
        rounds.Run(60, [&](int i) {
            int raw = RawConnect(port);
            ASSERT_GE(raw, 0);
            /* No Nagle delay: every write leaves before the reset, which
             * would drop what is still unsent. */
            int one = 1;
            ASSERT_EQ(0, setsockopt(raw, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
            rn_conn *acc = nullptr;
            ASSERT_EQ(0, rn_server_accept(srv, &acc));
            Round r{};
            r.c = acc;
            r.seed = (uint32_t)i;
            r.total = 50 + 4000 + (size_t)i * 397;
            /* A first read that empties the socket (io_uring: the next one
             * arms the multishot). */
            ASSERT_TRUE(RawWriteAll(raw, Pattern(50, r.seed)));
            ASSERT_TRUE(ReadPattern(acc, 0, 50, r.seed));
            r.first = 50;
            ASSERT_TRUE(RawWriteAll(raw, Pattern(r.total - 50, r.seed, 50)));
            struct linger lg = {1, 0};
            ASSERT_EQ(0, setsockopt(raw, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
            close(raw); /* RST */
            switch (i % 4) {
            case 0:
                break; /* detach at once */
            case 1:
                rn_yield();
                break;
            case 2:
                rn_sleep(1);
                break;
            default:
                /* Read a little (the multishot may take the rest and the
                 * reset into its queue), then detach. */
                ASSERT_TRUE(ReadPattern(acc, 50, 10, r.seed));
                r.first = 60;
                rn_sleep(i % 8 == 3 ? 0 : 2);
                break;
            }
            ASSERT_EQ(0, rn_conn_detach(acc)) << rn_last_error();
            ASSERT_EQ(0, rn_chan_send(to_worker, &r, -1));
            void *done;
            ASSERT_EQ(0, rn_chan_recv(back, &done, -1));
            rounds.Saw(i, (int)r.end, r.bytes_ok && r.end == -ECONNRESET, r.detail);
        });
    });
    rn_chan_close(to_worker);
    worker.join();
    rn_chan_free(to_worker);
    rn_chan_free(back);
}

/* ---- an acceptor handing connections to a pool of workers ---------------- */

struct Handoff {
    rn_conn *c;
    uint32_t id, len;
    std::atomic<int> *attached, *echoed;
};

/* A worker's part: attach, echo len bytes checking each, close. */
void ServeHandoff(Handoff *ho) {
    std::unique_ptr<Handoff> own(ho);
    rn_conn *c = ho->c;
    ASSERT_EQ(0, rn_conn_attach(c)) << rn_last_error();
    (*ho->attached)++;
    std::vector<char> buf(65536);
    uint64_t total = 0;
    while (total < ho->len) {
        ssize_t n = rn_conn_read(c, buf.data(), buf.size());
        if (n <= 0) {
            ADD_FAILURE() << "worker read after " << total << ": " << Err(n);
            break;
        }
        int64_t bad = FirstPatternMismatch(buf.data(), (size_t)n, total, ho->id);
        EXPECT_EQ(-1, bad) << "client " << ho->id << " byte " << total + (uint64_t)bad;
        if (bad >= 0)
            break;
        ASSERT_EQ(0, rn_conn_write_all(c, buf.data(), (size_t)n)) << rn_last_error();
        total += (uint64_t)n;
    }
    if (total == ho->len)
        (*ho->echoed)++;
    EXPECT_EQ(0, rn_conn_close(c)) << rn_last_error();
}

extern "C" void ServeTask(void *arg) { ServeHandoff(static_cast<Handoff *>(arg)); }

/* The workers of rn_run_threads: each publishes its loop, then waits on
 * stop while the tasks spawned onto it serve. */
struct Pool {
    std::atomic<rn_loop *> loops[3] = {};
    rn_chan *stop = nullptr;
};
extern "C" void PoolThread(void *arg) {
    auto *pool = static_cast<Pool *>(arg);
    int i = rn_thread_index();
    pool->loops[i] = rn_loop_self();
    void *x;
    EXPECT_EQ(RN_ECLOSED, rn_chan_recv(pool->stop, &x, -1));
}

/* kClients clients each send an 8-byte header (id, length) and a payload
 * of that length; the acceptor reads the header, detaches the connection
 * and sends it through a channel; one of kWorkers worker threads attaches
 * it and echoes the payload, checking every byte, and the client checks
 * every byte of the echo. scfg/ccfg: TLS configs, or NULL for plain. */
void AcceptorAndWorkers(const char *backend, rn_tls_config *scfg, rn_tls_config *ccfg, uint32_t len,
                        bool via_spawn = false) {
    constexpr int kClients = 6, kWorkers = 3;
    rn_chan *ch = rn_chan_new(2);
    ASSERT_NE(nullptr, ch);
    Pool pool;
    pool.stop = rn_chan_new(1);
    ASSERT_NE(nullptr, pool.stop);
    std::promise<int> port_p;
    std::future<int> port_f = port_p.get_future();
    std::atomic<int> handed{0}, echoed{0}, checked{0};
    std::atomic<int> worker_attach{0};

    std::thread acceptor = LoopThread(backend, [&] {
        rn_server *srv = nullptr;
#if RINGNET_TEST_TLS
        int rc = scfg ? rn_tls_listen(&srv, "127.0.0.1", 0, scfg) : rn_tcp_listen(&srv, "127.0.0.1", 0);
#else
        (void)scfg;
        int rc = rn_tcp_listen(&srv, "127.0.0.1", 0);
#endif
        port_p.set_value(rc == 0 ? PortOf(rn_server_addr(srv)) : -1);
        ASSERT_EQ(0, rc) << rn_last_error();
        EXPECT_EQ(0, RunTask([&] {
                      for (int i = 0; i < kClients; i++) {
                          rn_conn *c = nullptr;
                          ASSERT_EQ(0, rn_server_accept(srv, &c)) << rn_last_error();
                          RNT_SPAWN([&, c] {
                              rn_conn_set_deadline(c, 30000);
                              unsigned char h[8];
                              int r = rn_conn_read_exact(c, h, 8);
                              EXPECT_EQ(0, r) << Err(r);
                              if (r != 0) {
                                  rn_conn_close(c);
                                  handed++;
                                  return;
                              }
                              auto *ho = new Handoff{c, 0, 0, &worker_attach, &echoed};
                              memcpy(&ho->id, h, 4);
                              memcpy(&ho->len, h + 4, 4);
                              EXPECT_EQ(0, rn_conn_detach(c)) << rn_last_error();
                              if (via_spawn) {
                                  /* Straight onto a worker's loop, as a task there. */
                                  rn_loop *l = pool.loops[ho->id % kWorkers];
                                  EXPECT_EQ(0, rn_loop_spawn(l, ServeTask, ho)) << rn_last_error();
                              } else {
                                  EXPECT_EQ(0, rn_chan_send(ch, ho, -1));
                              }
                              handed++;
                          });
                      }
                      ASSERT_TRUE(WaitUntil([&] { return handed == kClients; }, 60000));
                      rn_chan_close(ch); /* the workers take what is queued, then stop */
                  }))
            << rn_last_error();
        EXPECT_EQ(0, rn_server_close(srv));
    });

    std::vector<std::thread> workers;
    if (via_spawn) {
        /* rn_run_threads' threads; the acceptor spawns onto their loops. */
        workers.push_back(
            LoopThread(backend, [&] { EXPECT_EQ(0, rn_run_threads(kWorkers, PoolThread, &pool)) << rn_last_error(); }));
        for (int w = 0; w < kWorkers; w++)
            EXPECT_TRUE(SpinUntil([&] { return pool.loops[w].load() != nullptr; }));
    } else {
        for (int w = 0; w < kWorkers; w++) {
            workers.push_back(LoopThread(backend, [&] {
                EXPECT_EQ(0, RunTask([&] {
                              void *item;
                              int rc;
                              while ((rc = rn_chan_recv(ch, &item, -1)) == 0) {
                                  auto *ho = static_cast<Handoff *>(item);
                                  RNT_SPAWN([ho] { ServeHandoff(ho); });
                              }
                              EXPECT_EQ(RN_ECLOSED, rc);
                          }))
                    << rn_last_error();
            }));
        }
    }

    std::thread clients = LoopThread(backend, [&] {
        int port = port_f.get();
        ASSERT_GT(port, 0);
        EXPECT_EQ(0, RunTask([&] {
                      for (int i = 0; i < kClients; i++) {
                          RNT_SPAWN([&, i] {
                              rn_conn *c = nullptr;
#if RINGNET_TEST_TLS
                              int rc = ccfg ? rn_tls_connect_with(&c, "localhost", port, ccfg)
                                            : rn_tcp_connect(&c, "127.0.0.1", port);
#else
                    (void)ccfg;
                    int rc = rn_tcp_connect(&c, "127.0.0.1", port);
#endif
                              ASSERT_EQ(0, rc) << rn_last_error();
                              rn_conn_set_deadline(c, 60000);
                              uint32_t id = (uint32_t)i + 100;
                              bool wrote = false;
                              RNT_SPAWN([&, c, id] {
                                  std::string msg(8, '\0');
                                  memcpy(&msg[0], &id, 4);
                                  memcpy(&msg[4], &len, 4);
                                  msg += Pattern(len, id);
                                  /* Header and payload in one go: the acceptor's
                                   * header read takes more than the header off the
                                   * socket, which must follow the connection. */
                                  EXPECT_EQ(0, rn_conn_write_all(c, msg.data(), msg.size())) << rn_last_error();
                                  wrote = true;
                              });
                              EXPECT_TRUE(ReadPattern(c, 0, len, id, 50000));
                              char b[4];
                              ssize_t end = rn_conn_read(c, b, sizeof b);
                              EXPECT_TRUE(end == 0 || end == RN_EEOF) << Err(end);
                              EXPECT_TRUE(WaitUntil([&] { return wrote; }));
                              checked++;
                              EXPECT_EQ(0, rn_conn_close(c));
                          });
                      }
                  }))
            << rn_last_error();
    });
    clients.join();
    acceptor.join();
    rn_chan_close(pool.stop); /* rn_run_threads' threads end once their tasks have */
    for (auto &w : workers)
        w.join();
    for (auto &l : pool.loops)
        rn_loop_release(l.load());
    rn_chan_free(ch);
    rn_chan_free(pool.stop);
    EXPECT_EQ(kClients, worker_attach.load());
    EXPECT_EQ(kClients, echoed.load());
    EXPECT_EQ(kClients, checked.load());
}

TEST_P(DetachTest, AnAcceptorHandsConnectionsToAPoolOfWorkersThatEchoEveryByte) {
    AcceptorAndWorkers(backend(), nullptr, nullptr, 1u << 20);
}

TEST_P(DetachTest, AnAcceptorSpawnsEachConnectionOntoARunThreadsWorkersLoop) {
    AcceptorAndWorkers(backend(), nullptr, nullptr, 1u << 20, true);
}

#if RINGNET_TEST_TLS

TEST_P(DetachTest, AnAcceptorHandsTlsConnectionsToAPoolOfWorkersThatEchoEveryByte) {
    RNT_NEED_CERTS(certs);
    TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
    AcceptorAndWorkers(backend(), scfg, ccfg, 512u * 1024u);
}

/* Both ends of a TLS connection move mid-stream, each with bytes waiting
 * (ciphertext in the socket, the engine's queue or the session, plaintext
 * inside wolfSSL), and the conversation goes on from the new threads. */
TEST_P(DetachTest, TlsConnectionsMoveMidStreamOnBothSides) {
    RNT_NEED_CERTS(certs);
    TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
    constexpr uint32_t kUp = 31, kDown = 32;
    std::promise<int> port_p;
    std::future<int> port_f = port_p.get_future();
    rn_conn *server_side = nullptr, *client_side = nullptr;

    std::thread s = LoopThread(backend(), [&] {
        rn_server *srv = nullptr;
        int rc = rn_tls_listen(&srv, "127.0.0.1", 0, scfg);
        port_p.set_value(rc == 0 ? PortOf(rn_server_addr(srv)) : -1);
        ASSERT_EQ(0, rc) << rn_last_error();
        EXPECT_EQ(0, RunTask([&] {
                      rn_conn *c = nullptr;
                      ASSERT_EQ(0, rn_server_accept(srv, &c)) << rn_last_error();
                      ASSERT_TRUE(ReadPattern(c, 0, 1000, kUp, 1000));
                      ASSERT_EQ(0, rn_conn_write_all(c, Pattern(30000, kDown).data(), 30000)) << rn_last_error();
                      rn_conn_set_read_deadline(c, 20000);
                      ASSERT_EQ(0, rn_conn_detach(c)) << rn_last_error();
                      server_side = c;
                  }));
        EXPECT_EQ(0, rn_server_close(srv));
    });
    std::thread cl = LoopThread(backend(), [&] {
        int port = port_f.get();
        ASSERT_GT(port, 0);
        EXPECT_EQ(0, RunTask([&] {
                      rn_conn *c = nullptr;
                      ASSERT_EQ(0, rn_tls_connect_with(&c, "localhost", port, ccfg)) << rn_last_error();
                      ASSERT_EQ(0, rn_conn_write_all(c, Pattern(10000, kUp).data(), 10000)) << rn_last_error();
                      ASSERT_TRUE(ReadPattern(c, 0, 5000, kDown, 5000));
                      rn_conn_set_read_deadline(c, 20000);
                      ASSERT_EQ(0, rn_conn_detach(c)) << rn_last_error();
                      client_side = c;
                  }));
    });
    s.join();
    cl.join();
    ASSERT_NE(nullptr, server_side);
    ASSERT_NE(nullptr, client_side);

    std::thread s2 = LoopThread(backend(), [&] {
        EXPECT_EQ(0, RunTask([&] {
                      rn_conn *c = server_side;
                      ASSERT_EQ(0, rn_conn_attach(c)) << rn_last_error();
                      EXPECT_TRUE(rn_conn_is_tls(c));
                      ASSERT_TRUE(ReadPattern(c, 1000, 29000, kUp, 3333));
                      ASSERT_EQ(0, rn_conn_write_all(c, Pattern(30000, kDown, 30000).data(), 30000)) << rn_last_error();
                      char b[4];
                      ssize_t end = rn_conn_read(c, b, sizeof b);
                      EXPECT_EQ(0, end) << Err(end); /* the client's close_notify */
                      EXPECT_EQ(0, rn_conn_close(c));
                  }));
    });
    std::thread c2 = LoopThread(backend(), [&] {
        EXPECT_EQ(0, RunTask([&] {
                      rn_conn *c = client_side;
                      ASSERT_EQ(0, rn_conn_attach(c)) << rn_last_error();
                      ASSERT_EQ(0, rn_conn_write_all(c, Pattern(20000, kUp, 10000).data(), 20000)) << rn_last_error();
                      ASSERT_TRUE(ReadPattern(c, 5000, 55000, kDown, 4444));
                      EXPECT_EQ(0, rn_conn_close(c));
                  }));
    });
    s2.join();
    c2.join();
}

/* Closed from a thread that never used ringnet (round 0), and from another
 * thread's loop, in a task (round 1): the session is freed there (its
 * buffers go to that loop's cache, or to free), no close_notify is sent. */
TEST_P(DetachTest, ADetachedTlsConnectionClosesFromAThreadWithNoLoopAndFromAnotherLoop) {
    RNT_NEED_CERTS(certs);
    TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
    OnLoopRun([&] {
        Server srv;
        int port = ListenTls(&srv, scfg);
        ASSERT_GT(port, 0);
        for (int round = 0; round < 2; round++) {
            Conn cli;
            rn_conn *acc = nullptr;
            bool read = false;
            /* The server's handshake runs in its first read. */
            RNT_SPAWN([&] {
                ASSERT_EQ(0, rn_server_accept(srv, &acc));
                EXPECT_TRUE(ReadPattern(acc, 0, 100, 3, 100)); /* ciphertext left waiting */
                read = true;
            });
            ASSERT_EQ(0, rn_tls_connect_with(cli.out(), "localhost", port, ccfg)) << rn_last_error();
            ASSERT_EQ(0, rn_conn_write_all(cli, Pattern(40000, 3).data(), 40000));
            ASSERT_TRUE(WaitUntil([&] { return read; }));
            ASSERT_EQ(0, rn_conn_write_all(acc, "bye", 3));
            ASSERT_EQ(0, rn_conn_detach(acc)) << rn_last_error();
            int rc = 1;
            if (round == 0)
                std::thread([&] { rc = rn_conn_close(acc); }).join();
            else
                OnThread(backend(), [&] {
                    rn_sleep(1); /* this thread's loop runs */
                    rc = rn_conn_close(acc);
                });
            EXPECT_EQ(0, rc) << rn_last_error();
            char b[8];
            ASSERT_EQ(0, rn_conn_read_exact(cli, b, 3)) << rn_last_error();
            /* No close_notify came: the end is an error or a bare EOF, promptly. */
            rn_conn_set_read_deadline(cli, 10000);
            ssize_t end = rn_conn_read(cli, b, sizeof b);
            EXPECT_NE(-ETIMEDOUT, end) << Err(end);
            EXPECT_LE(end, 0);
        }
    });
}

#endif /* RINGNET_TEST_TLS */

} // namespace
