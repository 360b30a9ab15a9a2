/* emfile_test.cc - out of descriptors on accept: the server neither spins
 * (its CPU time while starved stays low) nor drops its listener, and serves
 * the waiting client once descriptors free up. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

using namespace rnt;

namespace {

class EmfileTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(EmfileTest);

TEST_P(EmfileTest, AcceptOutOfDescriptorsNeitherSpinsNorDropsTheListenerAndServesOnceOneFrees) {
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int port = PortOf(rn_server_addr(s));
        int client = RawConnect(port);
        ASSERT_GE(client, 0) << strerror(errno);

        /* Use up every descriptor under a lowered soft limit. */
        struct rlimit old;
        ASSERT_EQ(0, getrlimit(RLIMIT_NOFILE, &old));
        struct rlimit low = old;
        low.rlim_cur = (rlim_t)CountOpenFds() + 16;
        ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &low));
        std::vector<int> hog;
        for (;;) {
            int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                break;
            hog.push_back(fd);
        }
        ASSERT_EQ(EMFILE, errno);

        /* A sentence from an earlier failure, which the accept that backs off
         * and then succeeds must leave as it was. */
        rn_conn *bad = nullptr;
        ASSERT_EQ(-EINVAL, rn_tcp_connect(&bad, "", 1));
        const std::string known = rn_last_error();
        rn_stats before;
        ASSERT_EQ(0, rn_loop_stats(&before));
        rn_conn *c = nullptr;
        int rc = 1;
        bool done = false;
        RNT_SPAWN([&] {
            rc = rn_server_accept(s, &c);
            done = true;
        });
        /* 400 ms starved: the accept must wait, not spin. Counted, not
         * timed (the thread's CPU time was bounded at 60 ms here, which a
         * loaded machine or a sanitizer can blow): backing off 1, 2, 4 ...
         * ms, in 50 ms slices, takes 9 back-offs and about 25 loop passes
         * and operations in 400 ms (24 on io_uring, 9 ops and 15 passes on
         * epoll); an accept retried at once makes thousands of each, even
         * under memcheck. 250 leaves 10x room. */
        rn_sleep(400);
        EXPECT_FALSE(done) << "accept returned while out of descriptors: " << rc << " " << rn_last_error();
        rn_stats mid;
        ASSERT_EQ(0, rn_loop_stats(&mid));
        const uint64_t ops = mid.ops_submitted - before.ops_submitted, passes = mid.enter_calls - before.enter_calls;
        EXPECT_LT(ops, 250u) << "the loop made " << ops << " operations in 400 ms while starved: it spins";
        EXPECT_LT(passes, 250u) << "the loop made " << passes << " passes in 400 ms while starved: it spins";
        EXPECT_GT(mid.accept_backoffs, before.accept_backoffs);

        /* Free the descriptors: the waiting client is served. */
        for (int fd : hog)
            close(fd);
        ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &old));
        ASSERT_TRUE(WaitUntil([&] { return done; })) << "accept never came back";
        ASSERT_EQ(0, rc) << rn_last_error();
        ASSERT_NE(nullptr, c);
        EXPECT_EQ(known, std::string(rn_last_error())) << "the accept succeeded but left a sentence";
        /* The accepted connection works both ways. */
        ASSERT_EQ(4, write(client, "ping", 4));
        char buf[8] = {0};
        ASSERT_EQ(0, rn_conn_read_exact(c, buf, 4)) << rn_last_error();
        EXPECT_EQ(0, memcmp(buf, "ping", 4));
        EXPECT_EQ(0, rn_conn_write_all(c, "pong", 4));
        ASSERT_EQ(4, read(client, buf, 4));
        EXPECT_EQ(0, memcmp(buf, "pong", 4));

        /* The listener survived: a second client is accepted too. */
        int client2 = RawConnect(port);
        ASSERT_GE(client2, 0);
        rn_conn *c2 = nullptr;
        EXPECT_EQ(0, rn_server_accept(s, &c2)) << rn_last_error();
        EXPECT_EQ(0, rn_conn_close(c2));
        EXPECT_EQ(0, rn_conn_close(c));
        close(client);
        close(client2);
        EXPECT_EQ(0, rn_server_close(s));
    });
}

} // namespace
