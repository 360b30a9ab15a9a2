/* overflow_test.cc - a loop on a tiny io_uring (RN_URING_ENTRIES=4: 4 SQEs,
 * 32 CQEs) with hundreds of operations completing at once: the SQ fills and
 * is flushed, completions overflow the CQ into the kernel's overflow list,
 * and none is lost. On epoll the same load runs as a control. */
#include "harness.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace rnt;

namespace {

class OverflowTest : public BackendTest {
  protected:
    /* The variable is read when a loop starts, i.e. inside OnLoop. */
    void SetUp() override {
        BackendTest::SetUp();
        setenv("RN_URING_ENTRIES", "4", 1);
    }
    void TearDown() override { unsetenv("RN_URING_ENTRIES"); }
};
RNT_INSTANTIATE_BACKENDS(OverflowTest);

TEST_P(OverflowTest, FiveHundredSleepersEndingTogetherAllWakeOnATinyRing) {
    OnLoopRun([&] {
        const int n = 500;
        int woke = 0;
        int64_t t0 = NowMs();
        for (int i = 0; i < n; i++)
            RNT_SPAWN([&] {
                EXPECT_EQ(0, rn_sleep(100));
                woke++;
            });
        ASSERT_TRUE(WaitUntil([&] { return woke == n; })) << woke << " of " << n << " woke";
        /* They ended together: woken one after another, 500 sleeps of
         * 100 ms would take 50 s; 20 s leaves 10x room over the spawning and
         * waking of 500 tasks on a loaded sanitizer run (the old bound, 2 s,
         * left little). */
        EXPECT_LT(NowMs() - t0, 20000);
    });
}

TEST_P(OverflowTest, ThreeHundredEchoClientsAtOnceLoseNoByteOnATinyRing) {
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        const int n = 300;
        int port = PortOf(rn_server_addr(s));
        SpawnEchoServer(s, n);
        int ok = 0;
        for (int i = 0; i < n; i++)
            RNT_SPAWN([&, i] {
                rn_conn *c = nullptr;
                ASSERT_EQ(0, rn_tcp_connect(&c, "127.0.0.1", port)) << rn_last_error();
                std::string msg = Pattern(1000, (uint32_t)i);
                for (int round = 0; round < 5; round++) {
                    ASSERT_EQ(0, rn_conn_write_all(c, msg.data(), msg.size()));
                    std::string back(msg.size(), '\0');
                    ASSERT_EQ(0, rn_conn_read_exact(c, &back[0], back.size())) << rn_last_error();
                    ASSERT_EQ(msg, back) << "client " << i << " round " << round;
                }
                EXPECT_EQ(0, rn_conn_close(c));
                ok++;
            });
        ASSERT_TRUE(WaitUntil([&] { return ok == n; }, 20000)) << ok << " of " << n << " clients finished";
        EXPECT_EQ(0, rn_server_close(s));
    });
}

} // namespace
