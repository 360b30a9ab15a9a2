/* spawn_limit_test.cc - rn_spawn when no task stack can be mapped: -ENOMEM
 * with a sentence that says why (the errno and the mapping limit), and the
 * loop and the tasks already spawned carry on. Runs in a forked child under
 * a small RLIMIT_AS, which the sanitizers' shadow memory cannot live with. */
#include "harness.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RNT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RNT_SANITIZED 1
#endif
#endif

long VmSizeKiB() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmSize:", 0) == 0)
            return std::stol(line.substr(7));
    return -1;
}

int ran = 0;
void CountRun(void *) { ran++; }

/* The child's checks; its exit status says which failed (0: all held). */
int ChildBody(std::string *msg) {
    if (rn_set_backend("epoll") < 0)
        return 10;
    if (rn_sleep(1) != 0) /* start the loop before the limit */
        return 11;
    long kib = VmSizeKiB();
    if (kib < 0)
        return 12;
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = (rlim_t)(kib + 16 * 1024) * 1024; /* room for ~60 stacks of 256 KiB */
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 13;
    int spawned = 0, rc = 0;
    for (int i = 0; i < 100000; i++) {
        rc = rn_spawn(CountRun, nullptr);
        if (rc < 0)
            break;
        spawned++;
    }
    *msg = rn_last_error();
    if (rc != -ENOMEM)
        return 14;
    if (spawned == 0)
        return 15;
    if (msg->find("cannot map") == std::string::npos || msg->find("ENOMEM") == std::string::npos ||
        msg->find("max_map_count") == std::string::npos)
        return 16;
    /* The loop goes on: the spawned tasks run, and finished stacks are
     * reused, so spawning works again. */
    if (rn_sleep(5) != 0 || ran != spawned)
        return 17;
    if (rn_spawn(CountRun, nullptr) != 0 || rn_sleep(1) != 0 || ran != spawned + 1)
        return 18;
    return 0;
}

TEST(SpawnLimitTest, SpawnWithNoRoomForAStackIsEnomemSaysWhyAndTheLoopGoesOn) {
#ifdef RNT_SANITIZED
    GTEST_SKIP() << "a sanitizer build reserves terabytes of shadow memory: RLIMIT_AS cannot be used";
#else
    int pfd[2];
    ASSERT_EQ(0, pipe(pfd));
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        std::string msg;
        int code = ChildBody(&msg);
        ssize_t w = write(pfd[1], msg.data(), msg.size());
        (void)w;
        _exit(code);
    }
    close(pfd[1]);
    std::string msg;
    char buf[512];
    ssize_t n;
    while ((n = read(pfd[0], buf, sizeof buf)) > 0)
        msg.append(buf, (size_t)n);
    close(pfd[0]);
    int st = 0;
    ASSERT_EQ(pid, waitpid(pid, &st, 0));
    ASSERT_TRUE(WIFEXITED(st)) << "the child died: signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    EXPECT_EQ(0, WEXITSTATUS(st)) << "check " << WEXITSTATUS(st) << " failed; rn_last_error: " << msg;
    std::printf("[ringnet] rn_spawn at the limit: %s\n", msg.c_str());
#endif
}

} // namespace
