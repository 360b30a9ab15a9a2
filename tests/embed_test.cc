/* embed_test.cc - a loop embedded in a host event loop (rn_loop_fd,
 * rn_loop_run_once, rn_loop_timeout), driven by a plain poll(2): sleeping
 * tasks, TCP echo over loopback and spawns from another thread complete,
 * with the host's wake-ups counted (no busy loop); the fd turns readable
 * when a deferred completion arrives (io_uring's DEFER_TASKRUN); the
 * calls' errors. And rn_offload: work on the pool while the loop serves
 * other tasks, outside tasks, many jobs at once, a job outliving its loop's
 * thread, and resolves that give up on their deadline (api/dns.c). */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace rnt;

namespace {

class EmbedTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(EmbedTest);
class OffloadTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(OffloadTest);

/* A host event loop: poll(2) on rn_loop_fd for as long as rn_loop_timeout
 * says, then one rn_loop_run_once(0), until done() holds. Counts the polls
 * that returned (wake-ups). Gives up (false) after max_passes passes or
 * kNeverMs without done(): a busy loop or a lost wake-up then fails the
 * test instead of hanging it. */
struct Host {
    int wakeups = 0;
    int passes = 0;
    int last_left = -1;
    bool Drive(const std::function<bool()> &done, int max_passes = 100000) {
        int fd = rn_loop_fd();
        EXPECT_GE(fd, 0) << rn_last_error();
        if (fd < 0)
            return false;
        int64_t start = NowMs();
        for (;;) {
            last_left = rn_loop_run_once(0);
            passes++;
            EXPECT_GE(last_left, 0) << rn_last_error();
            if (last_left < 0)
                return false;
            if (done())
                return true;
            if (passes > max_passes || NowMs() - start > kNeverMs)
                return false;
            int64_t to = rn_loop_timeout();
            /* No deadline: the fd must say when; the cap only ends a hang. */
            int ms = to < 0 ? (int)kNeverMs : (int)to;
            struct pollfd p = {fd, POLLIN, 0};
            int n = poll(&p, 1, ms);
            EXPECT_GE(n, 0) << strerror(errno);
            wakeups++;
        }
    }
};

TEST_P(EmbedTest, AHostPollDrivesASleepingTaskWithAFewWakeUps) {
    OnLoop([&] {
        bool done = false;
        int64_t took = -1;
        RNT_SPAWN([&] {
            int64_t t0 = NowMs();
            EXPECT_EQ(0, rn_sleep(300));
            took = NowMs() - t0;
            done = true;
        });
        Host h;
        ASSERT_TRUE(h.Drive([&] { return done; })) << h.passes << " passes";
        EXPECT_GE(took, 299);
        /* One wake-up at the deadline, a few stray ones at most (a wake
         * timeout the ring posts as the host's own timeout ends). A busy
         * loop would make hundreds. */
        EXPECT_LT(h.wakeups, 10) << h.wakeups << " wake-ups for one 300 ms sleep";
        printf("[ringnet] %s: a 300 ms sleep: %d wake-ups, %d passes\n", GetParam(), h.wakeups, h.passes);
        EXPECT_EQ(0, h.last_left);
    });
}

TEST_P(EmbedTest, AHostPollDrivesTcpEchoOverLoopback) {
    OnLoop([&] {
        constexpr int kRounds = 50;
        int served = 0;
        Server s;
        int port = ListenAndEcho(&s, 1, &served);
        ASSERT_NE(0, port);
        int echoed = 0;
        bool done = false;
        RNT_SPAWN([&] {
            Conn c;
            ASSERT_EQ(0, rn_tcp_connect(c.out(), "127.0.0.1", port)) << rn_last_error();
            for (int i = 0; i < kRounds; i++) {
                std::string msg = Pattern(100 + i, (uint32_t)i);
                ASSERT_EQ(0, rn_conn_write_all(c, msg.data(), msg.size())) << rn_last_error();
                std::string back(msg.size(), '\0');
                ASSERT_EQ(0, rn_conn_read_exact(c, &back[0], back.size())) << rn_last_error();
                ASSERT_EQ(msg, back);
                echoed++;
            }
            ASSERT_EQ(0, c.Close()) << rn_last_error();
            done = true;
        });
        Host h;
        ASSERT_TRUE(h.Drive([&] { return done && served == 1; })) << h.passes << " passes";
        EXPECT_EQ(kRounds, echoed);
        /* Each round trip is two completions (the server's read, the
         * client's); each may cost a wake-up or two (an eventfd the ring
         * signals as it posts). */
        printf("[ringnet] %s: %d echo round trips: %d wake-ups, %d passes\n", GetParam(), kRounds, h.wakeups, h.passes);
        EXPECT_LE(h.wakeups, 6 * kRounds + 20) << h.wakeups << " wake-ups, " << h.passes << " passes";
        s.Close();
        EXPECT_EQ(0, rn_loop_run_once(0));
    });
}

extern "C" void EmbedCountTask(void *arg) { static_cast<std::atomic<int> *>(arg)->fetch_add(1); }

TEST_P(EmbedTest, SpawnsFromAnotherThreadWakeTheHostPoll) {
    OnLoop([&] {
        constexpr int kSpawns = 20;
        rn_loop *l = rn_loop_self();
        ASSERT_NE(nullptr, l) << rn_last_error();
        std::atomic<int> ran{0};
        std::atomic<int> failed{0};
        std::thread other([&] {
            for (int i = 0; i < kSpawns; i++) {
                usleep(5000);
                if (rn_loop_spawn(l, EmbedCountTask, &ran) != 0)
                    failed++;
            }
        });
        Host h;
        bool ok = h.Drive([&] { return ran.load() == kSpawns; });
        other.join();
        rn_loop_release(l);
        ASSERT_TRUE(ok) << ran.load() << " of " << kSpawns << " ran";
        EXPECT_EQ(0, failed.load());
        /* Nothing else is due: only the spawns wake the host (two each at
         * most with an eventfd signalled also as the ring posts). */
        EXPECT_LE(h.wakeups, 3 * kSpawns + 5) << h.wakeups << " wake-ups";
        printf("[ringnet] %s: %d spawns from another thread: %d wake-ups\n", GetParam(), kSpawns, h.wakeups);
    });
}

/* The spawner is a task of another loop of the same backend: io_uring
 * sends the wake-up ring to ring (IORING_OP_MSG_RING) when it can, and that
 * completion, landing in the host's ring, must wake the host's poll too. */
TEST_P(EmbedTest, SpawnsFromATaskOfAnotherLoopWakeTheHostPoll) {
    OnLoop([&] {
        constexpr int kSpawns = 20;
        rn_loop *l = rn_loop_self();
        ASSERT_NE(nullptr, l) << rn_last_error();
        std::atomic<int> ran{0};
        std::atomic<int> failed{0};
        rn_stats st{};
        std::thread other = LoopThread(backend(), [&] {
            EXPECT_EQ(0, RunTask([&] {
                          for (int i = 0; i < kSpawns; i++) {
                              rn_sleep(5);
                              if (rn_loop_spawn(l, EmbedCountTask, &ran) != 0)
                                  failed++;
                          }
                      }));
            EXPECT_EQ(0, rn_loop_stats(&st));
        });
        Host h;
        bool ok = h.Drive([&] { return ran.load() == kSpawns; });
        other.join();
        rn_loop_release(l);
        ASSERT_TRUE(ok) << ran.load() << " of " << kSpawns << " ran";
        EXPECT_EQ(0, failed.load());
        EXPECT_LE(h.wakeups, 3 * kSpawns + 5) << h.wakeups << " wake-ups";
        printf("[ringnet] %s: %d spawns from another loop's task (%llu ring to ring): %d "
               "wake-ups\n",
               GetParam(), kSpawns, (unsigned long long)st.xwakes_by_ring, h.wakeups);
    });
}

/* io_uring with DEFER_TASKRUN runs a completion only when the ring is
 * entered: the fd the host polls must still turn readable when data comes
 * for a recv armed in the kernel, and one run_once must then complete it. */
TEST_P(EmbedTest, DataForAnArmedReadMakesTheFdReadableAndOneRunOnceCompletesIt) {
    OnLoop([&] {
        Server s;
        ASSERT_EQ(0, rn_tcp_listen(s.out(), "127.0.0.1", 0)) << rn_last_error();
        int raw = RawConnect(PortOf(rn_server_addr(s)));
        ASSERT_GE(raw, 0) << strerror(errno);
        Conn acc;
        ASSERT_EQ(0, rn_server_accept(s, acc.out())) << rn_last_error();
        ssize_t got = -100;
        char buf[16] = {0};
        RNT_SPAWN([&] { got = rn_conn_read(acc, buf, sizeof buf); });
        int fd = rn_loop_fd();
        ASSERT_GE(fd, 0) << rn_last_error();
        /* Let the read start, and let stray readiness (completions the
         * setup posted) go. */
        struct pollfd p = {fd, POLLIN, 0};
        int quiet = 0;
        for (int i = 0; i < 20 && !quiet; i++) {
            EXPECT_EQ(1, rn_loop_run_once(0));
            quiet = poll(&p, 1, 0) == 0;
        }
        ASSERT_TRUE(quiet) << "the fd stays readable with nothing to do";
        ASSERT_EQ(-100, got);
        EXPECT_EQ(-1, rn_loop_timeout());
        std::thread writer([&] {
            usleep(20000);
            EXPECT_EQ(5, write(raw, "hello", 5));
        });
        /* poll reports a descriptor readable when its timeout ends even if
         * nothing woke it: it must return long before that. */
        int64_t t0 = NowMs();
        int n = poll(&p, 1, 2 * (int)kNeverMs);
        int64_t waited = NowMs() - t0;
        writer.join();
        ASSERT_EQ(1, n);
        EXPECT_TRUE(p.revents & POLLIN);
        EXPECT_LT(waited, kNeverMs) << "the poll was not woken by the data";
        /* One pass, no wait: it enters the ring, runs the deferred
         * completion and the task. */
        EXPECT_EQ(0, rn_loop_run_once(0));
        EXPECT_EQ(5, got);
        EXPECT_EQ(0, memcmp(buf, "hello", 5));
        close(raw);
    });
}

/* Run this test program in a child with name=value in its environment and
 * one argument (a --gtest_filter); its exit status (128 + signal when
 * killed), all it printed in *out. A fresh program: nothing of this
 * process's loops, pool or probes carries over. */
int RunChild(const char *name, const char *value, const std::string &arg, std::string *out) {
    SelfExec self({arg, "--gtest_also_run_disabled_tests"});
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        setenv(name, value, 1);
        self.Exec(environ);
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        out->append(buf, (size_t)n);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* In a child whose RN_BACKEND names no backend: every embedding and
 * offload call says the loop cannot start, none crashes. */
TEST(DISABLED_EmbedChild, ALoopThatCannotStartFailsEveryCallWithItsStartError) {
    EXPECT_EQ(-EINVAL, rn_loop_fd());
    EXPECT_NE(nullptr, strstr(rn_last_error(), "RN_BACKEND=nonsense")) << rn_last_error();
    EXPECT_EQ(-EINVAL, rn_loop_run_once(0));
    EXPECT_NE(nullptr, strstr(rn_last_error(), "RN_BACKEND=nonsense")) << rn_last_error();
    EXPECT_EQ(-1, rn_loop_timeout());
    EXPECT_EQ(-EINVAL, rn_offload([](void *) {}, nullptr));
    EXPECT_NE(nullptr, strstr(rn_last_error(), "RN_BACKEND=nonsense")) << rn_last_error();
}

TEST(EmbedStartTest, ALoopThatCannotStartFailsEveryEmbeddingCallWithItsStartError) {
    std::string out;
    int status = RunChild("RN_BACKEND", "nonsense", "--gtest_filter=DISABLED_EmbedChild.ALoopThatCannotStart*", &out);
    EXPECT_EQ(0, status) << out;
    EXPECT_NE(std::string::npos, out.find("[  PASSED  ] 1 test")) << out;
}

/* The eventfd registered with the ring is what this kernel gets when the
 * probe finds the ring's own descriptor does not wake a poller; kernels that
 * do wake get the ring's. Run the readiness and echo tests again in a child
 * with RN_URING_LOOP_FD=eventfd, so that both kinds are tested everywhere
 * (the choice is made once per process, hence the child). */
TEST_P(EmbedTest, TheRegisteredEventfdKindPassesTheSameTestsInAChild) {
    if (std::string(backend()) != "io_uring")
        GTEST_SKIP() << "only io_uring has two kinds of descriptor";
    if (getenv("RN_URING_LOOP_FD") != nullptr)
        GTEST_SKIP() << "already the child (or RN_URING_LOOP_FD is set)";
    std::string out;
    int status = RunChild("RN_URING_LOOP_FD", "eventfd",
                          "--gtest_filter=Backends/EmbedTest.DataForAnArmedRead*/io_uring:"
                          "Backends/EmbedTest.AHostPoll*/io_uring:Backends/EmbedTest.Spawns*/io_uring",
                          &out);
    EXPECT_EQ(0, status) << out;
    EXPECT_NE(std::string::npos, out.find("[  PASSED  ] 5 tests")) << out;
}

TEST_P(EmbedTest, RunOnceInsideATaskIsEbusy) {
    OnLoopRun([&] {
        EXPECT_EQ(-EBUSY, rn_loop_run_once(0));
        EXPECT_NE(nullptr, strstr(rn_last_error(), "inside a task")) << rn_last_error();
        EXPECT_EQ(-EBUSY, rn_loop_run_once(-1));
    });
}

TEST_P(EmbedTest, TimeoutSaysReadyDeadlineOrNothing) {
    OnLoop([&] {
        EXPECT_EQ(-1, rn_loop_timeout());
        bool done = false;
        RNT_SPAWN([&] {
            rn_sleep(200);
            done = true;
        });
        EXPECT_EQ(0, rn_loop_timeout()); /* spawned, not yet run */
        EXPECT_EQ(1, rn_loop_run_once(0));
        int64_t to = rn_loop_timeout();
        EXPECT_GE(to, 1);
        EXPECT_LE(to, 200);
        /* Waiting the full timeout finds the deadline due: never early. */
        int64_t t0 = NowMs();
        while (!done && NowMs() - t0 < kNeverMs) {
            int64_t t = rn_loop_timeout();
            if (t > 0)
                usleep((useconds_t)t * 1000);
            EXPECT_GE(rn_loop_run_once(0), 0);
        }
        EXPECT_TRUE(done);
        EXPECT_EQ(-1, rn_loop_timeout());
    });
}

TEST_P(EmbedTest, RunOnceWaitsAtMostMsAndNeverForeverWithNothingToWaitFor) {
    OnLoop([&] {
        int rc = -1;
        /* Nothing in flight, no task: < 0 must not sleep forever. */
        int64_t took = MsTaken([&] { rc = rn_loop_run_once(-1); });
        EXPECT_EQ(0, rc);
        EXPECT_LT(took, kPromptMs);
        took = MsTaken([&] { rc = rn_loop_run_once(60); });
        EXPECT_EQ(0, rc);
        EXPECT_GE(took, 59);
        /* A task parked for a long time: a bounded wait returns on its
         * bound, the task still there. */
        rn_task *t = nullptr;
        bool done = false;
        RNT_SPAWN([&] {
            t = rn_task_self();
            rn_task_park(100000);
            done = true;
        });
        EXPECT_EQ(1, rn_loop_run_once(0));
        ASSERT_NE(nullptr, t);
        took = MsTaken([&] { rc = rn_loop_run_once(50); });
        EXPECT_EQ(1, rc);
        EXPECT_GE(took, 49);
        EXPECT_LT(took, kNeverMs);
        rn_task_wake(t);
        EXPECT_EQ(0, rn_loop_run_once(0));
        EXPECT_TRUE(done);
    });
}

TEST_P(EmbedTest, RunOnceWithUnboundedWaitReturnsWhenATaskWakes) {
    OnLoop([&] {
        bool done = false;
        RNT_SPAWN([&] {
            rn_sleep(30);
            done = true;
        });
        int passes = 0;
        while (!done && passes < 100) {
            EXPECT_GE(rn_loop_run_once(-1), 0);
            passes++;
        }
        EXPECT_TRUE(done);
        EXPECT_LE(passes, 5);
    });
}

/* ---- rn_offload ----------------------------------------------------------------- */

struct Gate {
    std::atomic<bool> open{false};
    std::atomic<int> entered{0};
    std::atomic<int> left{0};
    pthread_t thread{};
};

extern "C" void EmbedWaitAtGate(void *arg) {
    auto *g = static_cast<Gate *>(arg);
    if (g->entered.fetch_add(1) == 0)
        g->thread = pthread_self(); /* the first job's (several may pass one gate) */
    for (int i = 0; i < 2000000 && !g->open.load(); i++)
        usleep(10);
    g->left++;
}

TEST_P(OffloadTest, RunsOnAWorkerWhileTheLoopServesOtherTasks) {
    OnLoopRun([&] {
        Gate g;
        int rc = 1;
        bool returned = false;
        pthread_t loop_thread = pthread_self();
        RNT_SPAWN([&] {
            rc = rn_offload(EmbedWaitAtGate, &g);
            returned = true;
        });
        /* This task runs while the other waits for its job. */
        ASSERT_TRUE(WaitUntil([&] { return g.entered.load() == 1; }));
        EXPECT_FALSE(returned);
        rn_sleep(20);
        EXPECT_FALSE(returned);
        g.open = true;
        ASSERT_TRUE(WaitUntil([&] { return returned; }));
        EXPECT_EQ(0, rc) << rn_last_error();
        EXPECT_EQ(1, g.left.load());
        EXPECT_FALSE(pthread_equal(loop_thread, g.thread));
    });
}

TEST_P(OffloadTest, OutsideATaskRunsTheLoopUntilTheJobIsDone) {
    OnLoop([&] {
        Gate g;
        int ticks = 0;
        RNT_SPAWN([&] {
            /* Opens the gate only if the loop runs while the root waits. */
            while (g.entered.load() == 0)
                rn_sleep(1);
            ticks++;
            g.open = true;
        });
        EXPECT_EQ(0, rn_offload(EmbedWaitAtGate, &g)) << rn_last_error();
        EXPECT_EQ(1, ticks);
        EXPECT_EQ(1, g.left.load());
    });
}

TEST_P(OffloadTest, NullFunctionIsEinval) {
    OnLoop([&] {
        EXPECT_EQ(-EINVAL, rn_offload(nullptr, nullptr));
        EXPECT_NE(nullptr, strstr(rn_last_error(), "NULL")) << rn_last_error();
    });
}

struct Concurrency {
    std::atomic<int> now{0};
    std::atomic<int> max{0};
    std::atomic<int> done{0};
};

extern "C" void EmbedBusyJob(void *arg) {
    auto *c = static_cast<Concurrency *>(arg);
    int n = ++c->now;
    int m = c->max.load();
    while (n > m && !c->max.compare_exchange_weak(m, n)) {
    }
    usleep(2000);
    c->now--;
    c->done++;
}

TEST_P(OffloadTest, ManyJobsAtOnceAllFinishWithinThePoolsBound) {
    cpu_set_t set;
    ASSERT_EQ(0, sched_getaffinity(0, sizeof set, &set));
    int bound = std::min(256, std::max(4, 4 * CPU_COUNT(&set)));
    constexpr int kJobs = 300;
    OnLoopRun([&] {
        Concurrency c;
        int ok = 0;
        for (int i = 0; i < kJobs; i++)
            RNT_SPAWN([&] { ok += rn_offload(EmbedBusyJob, &c) == 0; });
        ASSERT_TRUE(WaitUntil([&] { return ok == kJobs; })) << ok << " of " << kJobs;
        EXPECT_EQ(kJobs, c.done.load());
        EXPECT_LE(c.max.load(), bound);
        EXPECT_GE(c.max.load(), 2) << "the jobs never overlapped: one worker for all?";
    });
}

/* The thread whose task waits on a job ends first: the job finishes later,
 * finds the loop gone, and frees itself (ASan and Valgrind see the rest). */
TEST_P(OffloadTest, AJobOutlivingItsLoopsThreadEndsQuietly) {
    static Gate g; /* the worker uses it after this test's thread ended */
    g.open = false;
    g.entered = 0;
    g.left = 0;
    static int rc;
    rc = 1;
    OnLoop([&] {
        /* A plain task (nothing on the heap that only its end would free). */
        ASSERT_EQ(0, rn_spawn([](void *) { rc = rn_offload(EmbedWaitAtGate, &g); }, nullptr));
        EXPECT_EQ(1, rn_loop_run_once(0)); /* the task parks on its job */
        ASSERT_TRUE(SpinUntil([&] { return g.entered.load() == 1; }));
    });
    EXPECT_EQ(1, rc); /* never returned: the thread ended with it parked */
    g.open = true;
    for (int i = 0; i < 200000 && g.left.load() == 0; i++)
        usleep(100);
    EXPECT_EQ(1, g.left.load());
    usleep(20000); /* the worker's wake-up of the closed loop */
}

/* A lookup that gives up on its deadline leaves its job to the pool, which
 * frees it when getaddrinfo returns. Every worker is held at a gate first,
 * so the lookup waits in the queue and must time out; then the gate opens
 * and the queued lookup runs with nobody waiting (ASan, Valgrind: no leak). */
TEST_P(OffloadTest, AResolveThatGivesUpOnItsDeadlineLeavesItsJobToThePool) {
    cpu_set_t set;
    ASSERT_EQ(0, sched_getaffinity(0, sizeof set, &set));
    int bound = std::min(256, std::max(4, 4 * CPU_COUNT(&set)));
    OnLoopRun([&] {
        Gate g;
        int finished = 0;
        for (int i = 0; i < bound; i++)
            RNT_SPAWN([&] { finished += rn_offload(EmbedWaitAtGate, &g) == 0; });
        ASSERT_TRUE(WaitUntil([&] { return g.entered.load() == bound; }));
        rn_set_connect_timeout(50);
        char out[64];
        int rc = 0;
        int64_t took = MsTaken([&] { rc = rn_resolve("localhost", out, sizeof out); });
        EXPECT_EQ(-ETIMEDOUT, rc) << rn_last_error();
        EXPECT_NE(nullptr, strstr(rn_last_error(), "timed out")) << rn_last_error();
        EXPECT_GE(took, 49);
        g.open = true;
        ASSERT_TRUE(WaitUntil([&] { return finished == bound; }));
        rn_set_connect_timeout(30000);
        EXPECT_EQ(0, rn_resolve("localhost", out, sizeof out)) << rn_last_error();
        EXPECT_STREQ("127.0.0.1", out);
    });
}

/* Lookups with a 1 ms deadline race the worker: each returns the answer or
 * -ETIMEDOUT, and nothing else. */
TEST_P(OffloadTest, ResolvesRacingA1MsDeadlineAnswerOrTimeOut) {
    OnLoopRun([&] {
        rn_set_connect_timeout(1);
        int answered = 0, timed_out = 0;
        for (int i = 0; i < 50; i++) {
            char out[64];
            int rc = rn_resolve("localhost", out, sizeof out);
            if (rc == 0)
                answered++;
            else if (rc == -ETIMEDOUT)
                timed_out++;
            else
                ADD_FAILURE() << rc << " " << rn_last_error();
        }
        rn_set_connect_timeout(30000);
        EXPECT_EQ(50, answered + timed_out);
        printf("[ringnet] %s: 1 ms resolves: %d answered, %d timed out\n", GetParam(), answered, timed_out);
    });
}

} // namespace
