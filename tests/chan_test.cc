/* chan_test.cc - channels: arguments, the ms semantics (wait, try, bound),
 * FIFO order, close (drain then RN_ECLOSED, every waiter woken, also racing
 * blocked senders and receivers on three threads), hand-over between tasks
 * of one thread without a wake-up, many producers and consumers on several
 * threads, and calls outside tasks. */
#include "harness.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

using namespace rnt;

namespace {

class ChanTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(ChanTest);

/* The item for number i (never NULL). */
void *Item(uintptr_t i) { return reinterpret_cast<void *>(i + 1); }
uintptr_t Num(void *p) { return reinterpret_cast<uintptr_t>(p) - 1; }

struct ChanFree {
    void operator()(rn_chan *c) const { rn_chan_free(c); }
};
using Chan = std::unique_ptr<rn_chan, ChanFree>;

TEST(ChanArgs, BadArgumentsAreEinvalWithASentence) {
    EXPECT_EQ(nullptr, rn_chan_new(0));
    EXPECT_NE(nullptr, strstr(rn_last_error(), "capacity")) << rn_last_error();
    EXPECT_EQ(nullptr, rn_chan_new(SIZE_MAX));
    void *out = nullptr;
    EXPECT_EQ(-EINVAL, rn_chan_send(nullptr, Item(0), 0));
    EXPECT_NE(nullptr, strstr(rn_last_error(), "NULL")) << rn_last_error();
    EXPECT_EQ(-EINVAL, rn_chan_recv(nullptr, &out, 0));
    Chan ch(rn_chan_new(1));
    ASSERT_NE(nullptr, ch) << rn_last_error();
    EXPECT_EQ(-EINVAL, rn_chan_recv(ch.get(), nullptr, 0));
    rn_chan_close(nullptr); /* ignored */
    rn_chan_free(nullptr);
}

TEST_P(ChanTest, MsZeroNeverWaitsAndMsAboveZeroTimesOut) {
    OnLoopRun([&] {
        Chan ch(rn_chan_new(2));
        ASSERT_NE(nullptr, ch);
        void *out = nullptr;
        EXPECT_EQ(-EAGAIN, rn_chan_recv(ch.get(), &out, 0));
        EXPECT_EQ(0, rn_chan_send(ch.get(), Item(1), 0));
        EXPECT_EQ(0, rn_chan_send(ch.get(), Item(2), -1)); /* room: no wait */
        EXPECT_EQ(-EAGAIN, rn_chan_send(ch.get(), Item(3), 0));
        int rc = 0;
        int64_t took = MsTaken([&] { rc = rn_chan_send(ch.get(), Item(3), 30); });
        EXPECT_EQ(-ETIMEDOUT, rc);
        EXPECT_GE(took, 29);
        EXPECT_NE(nullptr, strstr(rn_last_error(), "30 ms")) << rn_last_error();
        ASSERT_EQ(0, rn_chan_recv(ch.get(), &out, 0));
        EXPECT_EQ(1u, Num(out));
        ASSERT_EQ(0, rn_chan_recv(ch.get(), &out, 10));
        EXPECT_EQ(2u, Num(out)); /* the timed-out send left nothing behind */
        took = MsTaken([&] { rc = rn_chan_recv(ch.get(), &out, 30); });
        EXPECT_EQ(-ETIMEDOUT, rc);
        EXPECT_GE(took, 29);
    });
}

TEST_P(ChanTest, CloseLetsReceiversDrainThenEveryCallIsEclosed) {
    OnLoopRun([&] {
        Chan ch(rn_chan_new(4));
        ASSERT_NE(nullptr, ch);
        for (uintptr_t i = 0; i < 3; i++)
            ASSERT_EQ(0, rn_chan_send(ch.get(), Item(i), 0));
        rn_chan_close(ch.get());
        rn_chan_close(ch.get()); /* twice is fine */
        EXPECT_EQ(RN_ECLOSED, rn_chan_send(ch.get(), Item(9), -1));
        void *out = nullptr;
        for (uintptr_t i = 0; i < 3; i++) {
            ASSERT_EQ(0, rn_chan_recv(ch.get(), &out, -1));
            EXPECT_EQ(i, Num(out));
        }
        EXPECT_EQ(RN_ECLOSED, rn_chan_recv(ch.get(), &out, -1));
        EXPECT_EQ(RN_ECLOSED, rn_chan_recv(ch.get(), &out, 0));
    });
}

TEST_P(ChanTest, CloseWakesEveryBlockedSenderAndReceiver) {
    OnLoopRun([&] {
        Chan empty(rn_chan_new(1)), full(rn_chan_new(1));
        ASSERT_EQ(0, rn_chan_send(full.get(), Item(0), 0));
        std::vector<int> rcs(6, 1);
        for (int i = 0; i < 3; i++) {
            RNT_SPAWN([&, i] {
                void *out;
                rcs[i] = rn_chan_recv(empty.get(), &out, -1);
            });
            RNT_SPAWN([&, i] { rcs[3 + i] = rn_chan_send(full.get(), Item(1), kNeverMs); });
        }
        rn_sleep(5);
        for (int rc : rcs)
            EXPECT_EQ(1, rc); /* all blocked */
        rn_chan_close(empty.get());
        rn_chan_close(full.get());
        ASSERT_TRUE(WaitUntil(
            [&] {
                for (int rc : rcs)
                    if (rc == 1)
                        return false;
                return true;
            },
            kPromptMs));
        for (int rc : rcs)
            EXPECT_EQ(RN_ECLOSED, rc);
        void *out;
        EXPECT_EQ(0, rn_chan_recv(full.get(), &out, 0)); /* the item from before */
        EXPECT_EQ(0u, Num(out));
    });
}

/* Producer and consumer tasks of one thread through a one-slot channel:
 * order kept, every hand-over through the run queue (no wake-up). */
TEST_P(ChanTest, TasksOfOneThreadHandOverInOrderWithoutAWakeUp) {
    OnLoopRun([&] {
        Chan ch(rn_chan_new(1));
        constexpr uintptr_t kItems = 2000;
        std::vector<uintptr_t> got;
        RNT_SPAWN([&] {
            for (uintptr_t i = 0; i < kItems; i++)
                ASSERT_EQ(0, rn_chan_send(ch.get(), Item(i), -1));
            rn_chan_close(ch.get());
        });
        RNT_SPAWN([&] {
            void *out;
            while (rn_chan_recv(ch.get(), &out, -1) == 0)
                got.push_back(Num(out));
        });
        ASSERT_TRUE(WaitUntil([&] { return got.size() == kItems; }));
        for (uintptr_t i = 0; i < kItems; i++)
            ASSERT_EQ(i, got[i]);
        rn_stats st;
        ASSERT_EQ(0, rn_loop_stats(&st));
        EXPECT_EQ(0u, st.xwakeups);
    });
}

/* Outside any task, a call that waits runs the loop: here a task of the
 * same thread sends after a sleep. */
TEST_P(ChanTest, ARecvOutsideATaskRunsTheLoopUntilAnItemComes) {
    OnLoop([&] {
        Chan ch(rn_chan_new(1));
        RNT_SPAWN([&] {
            rn_sleep(10);
            EXPECT_EQ(0, rn_chan_send(ch.get(), Item(7), -1));
        });
        void *out = nullptr;
        ASSERT_EQ(0, rn_chan_recv(ch.get(), &out, kNeverMs)) << rn_last_error();
        EXPECT_EQ(7u, Num(out));
    });
}

/* Two producer threads, two consumer threads (several tasks each), a small
 * channel: every item is received exactly once. */
TEST_P(ChanTest, ManyProducersAndConsumersOnFourThreadsLoseNothing) {
    constexpr uintptr_t kPerProducer = 10000;
    Chan ch(rn_chan_new(4));
    ASSERT_NE(nullptr, ch);
    std::vector<std::atomic<int>> seen(2 * kPerProducer);
    std::atomic<int> producers_left{2};
    std::vector<std::thread> threads;
    for (int p = 0; p < 2; p++)
        threads.push_back(LoopThread(backend(), [&, p] {
            EXPECT_EQ(0, RunTask([&, p] {
                          for (int t = 0; t < 2; t++) /* two tasks per thread */
                              RNT_SPAWN([&, p, t] {
                                  for (uintptr_t i = t; i < kPerProducer; i += 2)
                                      ASSERT_EQ(0, rn_chan_send(ch.get(), Item(p * kPerProducer + i), -1))
                                          << rn_last_error();
                              });
                      }));
            if (--producers_left == 0)
                rn_chan_close(ch.get());
        }));
    for (int c = 0; c < 2; c++)
        threads.push_back(LoopThread(backend(), [&] {
            EXPECT_EQ(0, RunTask([&] {
                          for (int t = 0; t < 3; t++)
                              RNT_SPAWN([&] {
                                  void *out;
                                  int rc;
                                  while ((rc = rn_chan_recv(ch.get(), &out, -1)) == 0)
                                      seen[Num(out)]++;
                                  EXPECT_EQ(RN_ECLOSED, rc);
                              });
                      }));
        }));
    for (auto &t : threads)
        t.join();
    int bad = 0;
    for (auto &s : seen)
        bad += s.load() != 1;
    EXPECT_EQ(0, bad);
}

/* Three threads: blocked senders on one, blocked receivers on another, a
 * close from a third at a varying moment. Every send that returned 0 is
 * received, everyone ends with RN_ECLOSED, nothing hangs. */
TEST_P(ChanTest, CloseRacingBlockedSendersAndReceiversOnThreeThreads) {
    OnLoop([&] { /* RaceRounds names this thread's backend */
                 RaceRounds rounds("close vs blocked send/recv");
                 rounds.Run(40, [&](int round) {
                     Chan ch(rn_chan_new(1 + round % 3));
                     ASSERT_NE(nullptr, ch);
                     std::atomic<int> sent{0}, received{0}, bad{0};
                     std::thread senders = LoopThread(backend(), [&] {
                         EXPECT_EQ(0, RunTask([&] {
                                       for (int t = 0; t < 3; t++)
                                           RNT_SPAWN([&] {
                                               int rc;
                                               while ((rc = rn_chan_send(ch.get(), Item(1), -1)) == 0)
                                                   sent++;
                                               if (rc != RN_ECLOSED)
                                                   bad++;
                                           });
                                   }));
                     });
                     std::thread receivers = LoopThread(backend(), [&] {
                         EXPECT_EQ(0, RunTask([&] {
                                       for (int t = 0; t < 3; t++)
                                           RNT_SPAWN([&] {
                                               void *out;
                                               int rc;
                                               while ((rc = rn_chan_recv(ch.get(), &out, -1)) == 0) {
                                                   received++;
                                                   if (round % 2)
                                                       rn_yield();
                                               }
                                               if (rc != RN_ECLOSED)
                                                   bad++;
                                           });
                                   }));
                     });
                     std::thread closer([&] {
                         usleep(100 * (round % 10));
                         rn_chan_close(ch.get());
                     });
                     closer.join();
                     senders.join();
                     receivers.join();
                     EXPECT_EQ(0, bad.load());
                     EXPECT_EQ(sent.load(), received.load());
                     rounds.Saw(round, sent.load() == received.load() ? 0 : -EIO, sent.load() == received.load());
                 });
    });
}

} // namespace
