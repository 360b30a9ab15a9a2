/* threads_test.cc - work across threads: park and wake (same thread, other
 * threads, a wake before the park, a wake racing the park's timeout), loop
 * handles and cross-thread spawns (10,000 of them, batching of wake-ups, a
 * spawn racing the target thread's exit, a loop whose thread ended), and
 * rn_run_threads (indexes, pinning, errors). Channels are chan_test.cc. */
#include "harness.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <vector>

using namespace rnt;

namespace {

class ThreadsTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(ThreadsTest);

extern "C" void CountTask(void *arg) { static_cast<std::atomic<int> *>(arg)->fetch_add(1); }

TEST_P(ThreadsTest, TaskSelfIsNullOutsideATaskAndParkThereIsEinval) {
    OnLoop([&] {
        EXPECT_EQ(nullptr, rn_task_self());
        EXPECT_EQ(-EINVAL, rn_task_park(10));
        EXPECT_NE(nullptr, strstr(rn_last_error(), "outside a task")) << rn_last_error();
        rn_task_wake(nullptr); /* ignored */
    });
}

TEST_P(ThreadsTest, ParkReturnsOnceAnotherTaskOfTheThreadWakesIt) {
    OnLoopRun([&] {
        rn_task *a = nullptr;
        std::vector<std::string> order;
        int rc = 1;
        RNT_SPAWN([&] {
            a = rn_task_self();
            order.push_back("park");
            rc = rn_task_park(-1);
            order.push_back("woken");
        });
        RNT_SPAWN([&] {
            ASSERT_NE(nullptr, a);
            order.push_back("wake");
            rn_task_wake(a);
            rn_yield();
            order.push_back("after yield");
        });
        ASSERT_TRUE(WaitUntil([&] { return order.size() == 4; }));
        EXPECT_EQ(0, rc);
        EXPECT_EQ((std::vector<std::string>{"park", "wake", "woken", "after yield"}), order);
        rn_stats st;
        ASSERT_EQ(0, rn_loop_stats(&st));
        EXPECT_EQ(0u, st.xwakeups); /* the same thread: no eventfd */
    });
}

TEST_P(ThreadsTest, AWakeBeforeTheParkIsKeptAndSeveralCountAsOne) {
    OnLoopRun([&] {
        rn_task *me = rn_task_self();
        ASSERT_NE(nullptr, me);
        EXPECT_EQ(-ETIMEDOUT, rn_task_park(0)); /* no token yet */
        rn_task_wake(me);
        int64_t took = MsTaken([&] { EXPECT_EQ(0, rn_task_park(-1)); });
        EXPECT_LT(took, kPromptMs);
        EXPECT_EQ(-ETIMEDOUT, rn_task_park(0)); /* the token was taken */
        rn_task_wake(me);
        rn_task_wake(me);
        EXPECT_EQ(0, rn_task_park(0));
        EXPECT_EQ(-ETIMEDOUT, rn_task_park(0));
    });
}

TEST_P(ThreadsTest, ParkWithATimeoutAndNoWakeTimesOut) {
    OnLoopRun([&] {
        int rc = 0;
        int64_t took = MsTaken([&] { rc = rn_task_park(30); });
        EXPECT_EQ(-ETIMEDOUT, rc);
        EXPECT_GE(took, 29);
        EXPECT_NE(nullptr, strstr(rn_last_error(), "no wake within 30 ms")) << rn_last_error();
        EXPECT_EQ(-ETIMEDOUT, rn_task_park(0));
        EXPECT_NE(nullptr, strstr(rn_last_error(), "no wake was pending")) << rn_last_error();
    });
}

/* A runtime's future: a plain thread completes it and wakes the task. */
TEST_P(ThreadsTest, ATaskParkedWithoutBoundIsWokenFromAPlainThread) {
    OnLoopRun([&] {
        constexpr int kRounds = 500;
        std::atomic<rn_task *> task{nullptr};
        std::atomic<int> posted{0}, seen{0};
        std::thread waker([&] {
            /* Round r: wait until the task is about to park, then wake it. */
            for (int r = 1; r <= kRounds; r++) {
                if (!SpinUntil([&] { return seen.load() == r; }))
                    return;
                posted.store(r);
                rn_task_wake(task.load());
            }
        });
        task.store(rn_task_self());
        int bad = 0;
        for (int r = 1; r <= kRounds; r++) {
            seen.store(r);
            int rc = rn_task_park(-1);
            /* Woken only by the round's own wake (a token from before is kept,
             * so it may also have come first). */
            if (rc != 0 || posted.load() != r)
                bad++;
        }
        waker.join();
        EXPECT_EQ(0, bad);
        rn_stats st;
        ASSERT_EQ(0, rn_loop_stats(&st));
        EXPECT_GE(st.xwakeups, 1u);
        EXPECT_LE(st.xwakeups, (uint64_t)kRounds);
    });
}

/* Each round a plain thread wakes the task while its park's 1 ms timeout
 * runs out: the wake must be taken exactly once, by that park (0) or by
 * the next one (the park timed out and the token waits). */
TEST_P(ThreadsTest, AWakeRacingTheParksTimeoutIsTakenExactlyOnce) {
    OnLoopRun([&] {
        constexpr int kRounds = 1000;
        std::atomic<rn_task *> task{nullptr};
        std::atomic<int> go{0}, done{0};
        std::thread waker([&] {
            for (int r = 1; r <= kRounds; r++) {
                if (!SpinUntil([&] { return go.load() == r; }))
                    return;
                for (int i = 0; i < (r * 37) % 2000; i++) /* spread around the deadline */
                    std::atomic_signal_fence(std::memory_order_seq_cst);
                if (r % 3 == 0)
                    usleep(900 + (r % 7) * 50);
                rn_task_wake(task.load());
                done.store(r);
            }
        });
        task.store(rn_task_self());
        int by_park = 0, by_next = 0, twice = 0, lost = 0;
        for (int r = 1; r <= kRounds; r++) {
            go.store(r);
            int first = rn_task_park(1);
            /* Let the waker finish its wake without running the loop. */
            ASSERT_TRUE(SpinUntil([&] { return done.load() == r; }));
            int next = rn_task_park(0);
            if (first == 0 && next == -ETIMEDOUT)
                by_park++;
            else if (first == -ETIMEDOUT && next == 0)
                by_next++;
            else if (first == 0 && next == 0)
                twice++;
            else
                lost++;
        }
        waker.join();
        EXPECT_EQ(0, twice);
        EXPECT_EQ(0, lost);
        EXPECT_EQ(kRounds, by_park + by_next);
        printf("[ringnet] %s wake vs 1 ms park timeout: taken by the park x%d, by the next x%d\n", backend(), by_park,
               by_next);
        EXPECT_EQ(-ETIMEDOUT, rn_task_park(0));
    });
}

TEST_P(ThreadsTest, LoopSpawnChecksItsArguments) {
    OnLoop([&] {
        std::atomic<int> n{0};
        EXPECT_EQ(-EINVAL, rn_loop_spawn(nullptr, CountTask, &n));
        rn_loop *l = rn_loop_self();
        ASSERT_NE(nullptr, l) << rn_last_error();
        EXPECT_EQ(-EINVAL, rn_loop_spawn(l, nullptr, &n));
        EXPECT_NE(nullptr, strstr(rn_last_error(), "NULL")) << rn_last_error();
        rn_loop_release(l);
        rn_loop_release(nullptr); /* ignored */
    });
}

TEST_P(ThreadsTest, LoopSpawnOnTheOwnThreadIsASpawn) {
    OnLoop([&] {
        std::atomic<int> n{0};
        rn_loop *l = rn_loop_self();
        ASSERT_NE(nullptr, l) << rn_last_error();
        ASSERT_EQ(0, rn_loop_spawn(l, CountTask, &n)) << rn_last_error();
        EXPECT_EQ(0, n.load()); /* not inside the call */
        ASSERT_EQ(0, RunTask([] {}));
        EXPECT_EQ(1, n.load());
        rn_stats st;
        ASSERT_EQ(0, rn_loop_stats(&st));
        EXPECT_EQ(0u, st.xwakeups);
        rn_loop_release(l);
    });
}

struct SpawnCounts {
    std::vector<std::atomic<int>> runs;
    std::atomic<int> total{0};
    rn_task *waiter = nullptr;
    int expect = 0;
    explicit SpawnCounts(int n) : runs(n) {}
};
struct SpawnArg {
    SpawnCounts *c;
    int index;
};
extern "C" void MarkTask(void *arg) {
    auto *a = static_cast<SpawnArg *>(arg);
    a->c->runs[a->index].fetch_add(1);
    /* On the target loop: the last one wakes the test's waiting task. */
    if (a->c->total.fetch_add(1) + 1 == a->c->expect)
        rn_task_wake(a->c->waiter);
}

/* 10,000 spawns from two plain threads onto one loop: each runs once. */
TEST_P(ThreadsTest, TenThousandCrossThreadSpawnsRunEachExactlyOnce) {
    constexpr int kPerThread = 5000;
    SpawnCounts c(2 * kPerThread);
    c.expect = 2 * kPerThread;
    std::vector<SpawnArg> args(2 * kPerThread);
    for (int i = 0; i < 2 * kPerThread; i++)
        args[i] = {&c, i};
    OnLoopRun([&] {
        rn_loop *l = rn_loop_self();
        ASSERT_NE(nullptr, l) << rn_last_error();
        c.waiter = rn_task_self();
        std::atomic<int> failed{0}, posted{0};
        std::vector<std::thread> spawners;
        for (int t = 0; t < 2; t++)
            spawners.emplace_back([&, t] {
                for (int i = 0; i < kPerThread; i++) {
                    /* At most ~1000 queued stacks (two mappings each, and a
                     * fiber under TSan): far below vm.max_map_count. */
                    while (posted.load() - c.total.load() > 1000)
                        usleep(50);
                    if (rn_loop_spawn(l, MarkTask, &args[t * kPerThread + i]) != 0)
                        failed++;
                    posted++;
                }
            });
        /* Park until the last one wakes us (kept if it came already). */
        int rc = 0;
        while (c.total.load() < c.expect && (rc = rn_task_park(kNeverMs)) == 0) {
        }
        for (auto &s : spawners)
            s.join();
        EXPECT_EQ(0, failed.load());
        EXPECT_EQ(0, rc);
        rn_stats st;
        ASSERT_EQ(0, rn_loop_stats(&st));
        EXPECT_GE(st.tasks_spawned, (uint64_t)c.expect);
        EXPECT_LE(st.xwakeups, (uint64_t)c.expect);
        printf("[ringnet] %s: %d cross-thread spawns, %llu wake-ups\n", backend(), c.expect,
               (unsigned long long)st.xwakeups);
        rn_loop_release(l);
    });
    int bad = 0;
    for (auto &r : c.runs)
        bad += r.load() != 1;
    EXPECT_EQ(0, bad);
    EXPECT_EQ(c.expect, c.total.load());
}

/* The loop's thread is busy (blocked outside ringnet) while another thread
 * posts 100 spawns: they cost one wake-up. */
TEST_P(ThreadsTest, ManySpawnsBetweenTwoPassesCostOneWakeUp) {
    OnLoopRun([&] {
        rn_loop *l = rn_loop_self();
        ASSERT_NE(nullptr, l) << rn_last_error();
        rn_stats before, after;
        ASSERT_EQ(0, rn_loop_stats(&before));
        std::atomic<int> n{0};
        std::thread poster([&] {
            for (int i = 0; i < 100; i++)
                EXPECT_EQ(0, rn_loop_spawn(l, CountTask, &n)) << rn_last_error();
        });
        poster.join(); /* this task holds the thread: no pass runs meanwhile */
        ASSERT_TRUE(WaitUntil([&] { return n.load() == 100; }));
        ASSERT_EQ(0, rn_loop_stats(&after));
        EXPECT_EQ(1u, after.xwakeups - before.xwakeups);
        rn_loop_release(l);
    });
}

TEST_P(ThreadsTest, ASpawnOntoALoopWhoseThreadEndedIsEclosed) {
    rn_loop *l = nullptr;
    OnLoop([&] {
        l = rn_loop_self();
        ASSERT_NE(nullptr, l) << rn_last_error();
        rn_loop *again = rn_loop_self(); /* a second reference */
        ASSERT_EQ(l, again);
        rn_loop_release(again);
    });
    ASSERT_NE(nullptr, l);
    std::atomic<int> n{0};
    EXPECT_EQ(RN_ECLOSED, rn_loop_spawn(l, CountTask, &n));
    EXPECT_NE(nullptr, strstr(rn_last_error(), "ended")) << rn_last_error();
    EXPECT_EQ(RN_ECLOSED, rn_loop_spawn(l, CountTask, &n));
    rn_loop_release(l);
    EXPECT_EQ(0, n.load());
}

/* A plain thread ends while another spawns onto its loop: every spawn is 0
 * or RN_ECLOSED, nothing crashes; spawns it took after its loop last ran
 * are dropped with the loop (it never blocks again), so ran <= accepted. */
TEST_P(ThreadsTest, SpawnsRacingAPlainThreadsExitAreZeroOrEclosed) {
    for (int round = 0; round < 20; round++) {
        std::promise<rn_loop *> got;
        std::atomic<int> ran{0};
        std::atomic<bool> body_done{false};
        std::thread target = LoopThread(backend(), [&] {
            rn_loop *l = rn_loop_self();
            got.set_value(l);
            if (l != nullptr)
                rn_sleep(round % 3);
            body_done = true;
        });
        rn_loop *l = got.get_future().get();
        ASSERT_NE(nullptr, l);
        int accepted = 0, closed = 0, other = 0;
        /* At most 256 queued stacks at a time (each is two mappings, and
         * under TSan a fiber too), and bounded. */
        for (int i = 0; i < 20000; i++) {
            while (accepted - ran.load() > 256 && !body_done.load())
                usleep(50);
            int rc = rn_loop_spawn(l, CountTask, &ran);
            if (rc == 0)
                accepted++;
            else if (rc == RN_ECLOSED)
                closed++;
            else
                other++;
            if (rc != 0)
                break;
        }
        target.join();
        EXPECT_EQ(RN_ECLOSED, rn_loop_spawn(l, CountTask, &ran));
        rn_loop_release(l);
        EXPECT_LE(closed, 1);
        EXPECT_EQ(0, other);
        EXPECT_LE(ran.load(), accepted);
    }
}

/* ---- rn_run_threads ----------------------------------------------------------- */

struct RaceExit {
    std::atomic<rn_loop *> loop{nullptr};
    std::atomic<int> ran{0};
    int round = 0;
};
extern "C" void PublishAndLinger(void *arg) {
    auto *r = static_cast<RaceExit *>(arg);
    r->loop.store(rn_loop_self());
    rn_sleep(r->round % 4);
}

/* A thread of rn_run_threads finishes while another thread spawns onto
 * it: each spawn either runs there or is RN_ECLOSED; none is lost. */
TEST_P(ThreadsTest, ASpawnRacingARunThreadsLoopsEndRunsOrIsEclosed) {
    OnLoop([&] {
        for (int round = 0; round < 30; round++) {
            RaceExit r;
            r.round = round;
            std::atomic<int> accepted{0}, closed{0}, other{0};
            std::thread spawner([&] {
                if (!SpinUntil([&] { return r.loop.load() != nullptr; }))
                    return;
                for (int i = 0;; i++) {
                    /* Paced: at most 256 queued stacks, and pauses so that
                     * the target catches up and can end. A loop that is fed
                     * without a break never ends (it has tasks), so the
                     * pauses grow, 20 us more every 8 spawns up to 2 ms:
                     * however slow the target (TSan; it once ran hot for
                     * 60 s beside a faster spawner), it finds its inbox
                     * empty in the end. */
                    while (accepted.load() - r.ran.load() > 256)
                        usleep(50);
                    int rc = rn_loop_spawn(r.loop.load(), CountTask, &r.ran);
                    if (rc == 0) {
                        accepted++;
                        if (i % 8 == 7)
                            usleep(std::min(20 * (i / 8 + 1), 2000));
                        continue;
                    }
                    (rc == RN_ECLOSED ? closed : other)++;
                    return;
                }
            });
            int rc = rn_run_threads(1, PublishAndLinger, &r);
            spawner.join();
            EXPECT_EQ(0, rc) << rn_last_error();
            EXPECT_EQ(1, closed.load());
            EXPECT_EQ(0, other.load());
            EXPECT_EQ(accepted.load(), r.ran.load()) << "round " << round;
            rn_loop_release(r.loop.load());
        }
    });
}

struct ThreadSeen {
    std::mutex mu;
    std::vector<int> index;
    std::vector<int> cpu; /* the one CPU the thread may run on, -1 if not pinned to one */
    std::vector<std::string> backend;
};
extern "C" void RecordThread(void *arg) {
    auto *s = static_cast<ThreadSeen *>(arg);
    cpu_set_t set;
    int cpu = -1;
    if (pthread_getaffinity_np(pthread_self(), sizeof set, &set) == 0 && CPU_COUNT(&set) == 1)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set))
                cpu = c;
    const char *b = rn_backend_name();
    std::lock_guard<std::mutex> g(s->mu);
    s->index.push_back(rn_thread_index());
    s->cpu.push_back(cpu);
    s->backend.push_back(b ? b : "?");
}

TEST_P(ThreadsTest, RunThreadsZeroRunsOnePinnedThreadPerCpuWithItsIndex) {
    cpu_set_t mask;
    ASSERT_EQ(0, sched_getaffinity(0, sizeof mask, &mask));
    int ncpu = CPU_COUNT(&mask);
    OnLoop([&] {
        EXPECT_EQ(-1, rn_thread_index());
        ThreadSeen s;
        ASSERT_EQ(0, rn_run_threads(0, RecordThread, &s)) << rn_last_error();
        ASSERT_EQ((size_t)ncpu, s.index.size());
        std::set<int> idx(s.index.begin(), s.index.end()), cpus(s.cpu.begin(), s.cpu.end());
        EXPECT_EQ((size_t)ncpu, idx.size());
        EXPECT_EQ(0, *idx.begin());
        EXPECT_EQ(ncpu - 1, *idx.rbegin());
        EXPECT_EQ((size_t)ncpu, cpus.size()); /* each on a CPU of its own */
        for (int c : s.cpu)
            EXPECT_TRUE(c >= 0 && CPU_ISSET(c, &mask)) << "cpu " << c;
        for (const std::string &b : s.backend) /* the caller's backend choice */
            EXPECT_EQ(backend(), b);
        EXPECT_EQ(-1, rn_thread_index());
    });
}

/* More threads than CPUs: round robin over the mask, every index once. */
TEST_P(ThreadsTest, RunThreadsWithMoreThreadsThanCpusGivesEveryIndexOnce) {
    OnLoop([&] {
        ThreadSeen s;
        ASSERT_EQ(0, rn_run_threads(5, RecordThread, &s)) << rn_last_error();
        std::set<int> idx(s.index.begin(), s.index.end());
        EXPECT_EQ((std::set<int>{0, 1, 2, 3, 4}), idx);
        for (int c : s.cpu)
            EXPECT_GE(c, 0);
    });
}

/* Tasks of each thread spawn onto the next thread's loop; rn_run_threads
 * waits for all of them. */
struct Ring {
    int n = 0;
    std::vector<std::atomic<rn_loop *>> loops;
    std::atomic<int> ready{0}, spawned{0}, hops{0};
    explicit Ring(int k) : n(k), loops(k) {}
};
extern "C" void Hop(void *arg) { static_cast<Ring *>(arg)->hops++; }
extern "C" void RingThread(void *arg) {
    auto *r = static_cast<Ring *>(arg);
    int i = rn_thread_index();
    r->loops[i].store(rn_loop_self());
    r->ready++;
    while (r->ready.load() < r->n)
        rn_sleep(1);
    rn_loop *next = r->loops[(i + 1) % r->n].load();
    for (int k = 0; k < 100; k++)
        EXPECT_EQ(0, rn_loop_spawn(next, Hop, r)) << rn_last_error();
    /* No loop finishes before every thread has spawned onto the next. */
    r->spawned++;
    while (r->spawned.load() < r->n)
        rn_sleep(1);
}

TEST_P(ThreadsTest, RunThreadsWaitsForTasksSpawnedAcrossItsThreads) {
    OnLoop([&] {
        Ring r(3);
        ASSERT_EQ(0, rn_run_threads(3, RingThread, &r)) << rn_last_error();
        EXPECT_EQ(300, r.hops.load());
        for (auto &l : r.loops)
            rn_loop_release(l.load());
    });
}

/* Two threads of rn_run_threads pass a token back and forth over two
 * channels of one slot: nearly every hand-over wakes a task parked on the
 * other thread. */
struct PingPong {
    rn_chan *ab = nullptr, *ba = nullptr;
    int rounds = 0;
    rn_stats st[2] = {};
    std::atomic<int> bad{0}, done{0};
};
extern "C" void PingPongThread(void *arg) {
    auto *p = static_cast<PingPong *>(arg);
    int me = rn_thread_index();
    for (int i = 1; i <= p->rounds; i++) {
        void *item = nullptr;
        bool ok = me == 0 ? rn_chan_send(p->ab, reinterpret_cast<void *>(static_cast<intptr_t>(i)), -1) == 0 &&
                                rn_chan_recv(p->ba, &item, -1) == 0 &&
                                item == reinterpret_cast<void *>(static_cast<intptr_t>(i))
                          : rn_chan_recv(p->ab, &item, -1) == 0 && rn_chan_send(p->ba, item, -1) == 0;
        if (!ok) {
            p->bad++;
            return;
        }
    }
    p->done++;
    rn_loop_stats(&p->st[me]);
}

/* On io_uring a task wakes a task of another io_uring loop ring to ring
 * (IORING_OP_MSG_RING: every kernel that runs the io_uring backend has it)
 * unless RN_URING_MSG_RING=0; on epoll always through the eventfd. Either
 * way nothing is lost: every round trip completes, in order. */
TEST_P(ThreadsTest, WakeUpsBetweenTwoLoopsGoRingToRingOnIoUring) {
    OnLoop([&] {
        PingPong p;
        p.rounds = 2000;
        p.ab = rn_chan_new(1);
        p.ba = rn_chan_new(1);
        ASSERT_TRUE(p.ab && p.ba);
        ASSERT_EQ(0, rn_run_threads(2, PingPongThread, &p)) << rn_last_error();
        EXPECT_EQ(0, p.bad.load());
        EXPECT_EQ(2, p.done.load());
        uint64_t by_ring = p.st[0].xwakes_by_ring + p.st[1].xwakes_by_ring;
        uint64_t woken = p.st[0].xwakeups + p.st[1].xwakeups;
        EXPECT_GT(woken, 0u) << "no hand-over had to wake the other thread";
        const char *env = getenv("RN_URING_MSG_RING");
        bool ring_off = env && strcmp(env, "0") == 0;
        if (backend() == std::string("io_uring") && !ring_off) {
            EXPECT_GT(by_ring, 0u);
            EXPECT_LE(by_ring, woken + 4) << "more ring messages than wake-ups the loops took";
        } else {
            EXPECT_EQ(0u, by_ring);
        }
        printf("[ringnet] %s: %llu wake-ups taken, %llu sent ring to ring, for %d round trips\n", backend(),
               (unsigned long long)woken, (unsigned long long)by_ring, p.rounds);
        rn_chan_free(p.ab);
        rn_chan_free(p.ba);
    });
}

TEST_P(ThreadsTest, RunThreadsRefusesBadArgumentsAndCallsInsideATask) {
    OnLoop([&] {
        std::atomic<int> n{0};
        EXPECT_EQ(-EINVAL, rn_run_threads(-1, CountTask, &n));
        EXPECT_EQ(-EINVAL, rn_run_threads(2, nullptr, &n));
        EXPECT_EQ(-EINVAL, rn_run_threads(100000, CountTask, &n));
        int rc = 0;
        ASSERT_EQ(0, RunTask([&] { rc = rn_run_threads(1, CountTask, &n); }));
        EXPECT_EQ(-EBUSY, rc);
        EXPECT_EQ(0, n.load());
    });
}

/* A thread whose loop cannot start: rn_run_threads returns its error, with
 * the thread and the reason in the sentence. RN_URING_ENTRIES out of range
 * fails before io_uring is even tried, so this runs anywhere. */
TEST(ThreadsErrors, RunThreadsReturnsTheFirstErrorOfAnyThread) {
    std::thread([] {
        ASSERT_EQ(0, setenv("RN_URING_ENTRIES", "1", 1));
        ASSERT_EQ(0, rn_set_backend("auto"));
        std::atomic<int> n{0};
        int rc = rn_run_threads(2, CountTask, &n);
        unsetenv("RN_URING_ENTRIES");
        EXPECT_EQ(-ERANGE, rc) << rn_strerror(rc);
        EXPECT_NE(nullptr, strstr(rn_last_error(), "rn_run_threads: thread")) << rn_last_error();
        EXPECT_NE(nullptr, strstr(rn_last_error(), "RN_URING_ENTRIES")) << rn_last_error();
        EXPECT_EQ(0, n.load());
    }).join();
}

} // namespace
