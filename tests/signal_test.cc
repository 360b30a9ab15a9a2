/* signal_test.cc - an interval timer interrupting the process thousands of
 * times a second (no SA_RESTART) while data flows: every syscall the engine
 * makes can see EINTR, and no call may fail or lose a byte because of it. */
#include "harness.h"

#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

using namespace rnt;

namespace {

std::atomic<long> g_alarms{0};
void OnAlarm(int) { g_alarms.fetch_add(1, std::memory_order_relaxed); }

class SignalTest : public BackendTest {
  protected:
    void SetUp() override {
        BackendTest::SetUp();
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = OnAlarm; /* no SA_RESTART: interrupted syscalls fail with EINTR */
        sigaction(SIGALRM, &sa, &old_);
    }
    void TearDown() override { sigaction(SIGALRM, &old_, nullptr); }
    struct sigaction old_;
};

/* A timer aimed at the calling thread (the loop's), firing every 200 us. */
class ThreadTimer {
  public:
    ThreadTimer() {
        struct sigevent sev;
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_THREAD_ID;
        sev.sigev_signo = SIGALRM;
        sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
        ok_ = timer_create(CLOCK_MONOTONIC, &sev, &t_) == 0;
        struct itimerspec its = {{0, 200000}, {0, 200000}};
        if (ok_)
            ok_ = timer_settime(t_, 0, &its, nullptr) == 0;
    }
    ~ThreadTimer() {
        if (ok_)
            timer_delete(t_);
    }
    bool ok() const { return ok_; }

  private:
    timer_t t_{};
    bool ok_ = false;
};
RNT_INSTANTIATE_BACKENDS(SignalTest);

TEST_P(SignalTest, SignalStormDuringTransfersCausesNoErrorAndNoLostByte) {
    long before = g_alarms.load();
    OnLoopRun([&] {
        ThreadTimer timer;
        ASSERT_TRUE(timer.ok()) << strerror(errno);
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        const int clients = 8;
        SpawnEchoServer(s, clients);
        int ok = 0;
        for (int i = 0; i < clients; i++)
            RNT_SPAWN([&, i] {
                rn_conn *c = nullptr;
                ASSERT_EQ(0, rn_tcp_connect(&c, "localhost", port)) << rn_last_error();
                const size_t total = 2u << 20;
                const std::string data = Pattern(total, (uint32_t)i);
                bool wrote = false;
                RNT_SPAWN([&, c] {
                    EXPECT_EQ(0, rn_conn_write_all(c, data.data(), data.size())) << rn_last_error();
                    wrote = true;
                });
                std::string back(total, '\0');
                ASSERT_EQ(0, rn_conn_read_exact(c, &back[0], total)) << rn_last_error();
                EXPECT_EQ(-1, FirstPatternMismatch(back.data(), total, 0, (uint32_t)i));
                ASSERT_TRUE(WaitUntil([&] { return wrote; }));
                rn_sleep(3);
                EXPECT_EQ(0, rn_conn_close(c));
                ok++;
            });
        ASSERT_TRUE(WaitUntil([&] { return ok == clients; }, 30000)) << ok << " of " << clients;
        EXPECT_EQ(0, rn_server_close(s));
    });
    /* The storm really happened during the run. */
    EXPECT_GT(g_alarms.load() - before, 100);
}

} // namespace
