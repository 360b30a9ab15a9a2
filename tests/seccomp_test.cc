/* seccomp_test.cc - ringnet where io_uring is refused the way Docker's
 * default profile refuses it (a seccomp filter answering EPERM to the
 * io_uring syscalls): with no RN_BACKEND, auto must pick epoll and a real
 * part of this suite must pass there; forcing io_uring must fail the first
 * call with a clear error. Each case runs in a child process, since a
 * seccomp filter can never be lifted. */
#include "harness.h"

#include <seccomp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using rnt::SelfExec;

namespace {

/* Refuse io_uring in this process for good, as Docker's profile does. */
bool RefuseIoUring(std::string *why) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        *why = "seccomp_init failed";
        return false;
    }
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_setup), 0);
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_enter), 0);
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_register), 0);
    if (rc == 0)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0) {
        *why = std::string("seccomp: ") + strerror(-rc);
        return false;
    }
    return true;
}

/* Fork; in the child refuse io_uring (when asked), set env (a list of
 * NAME=VALUE, or NAME= to unset) and exec this test program with args.
 * Returns its exit status; *out gets all it printed. The child is a fresh
 * program, so nothing of this process's loops or threads carries over. */
int RunUnderFilter(bool refuse, const std::vector<std::string> &env, const std::vector<std::string> &args,
                   std::string *out) {
    SelfExec self(args);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[1]);
        std::string why;
        if (refuse && !RefuseIoUring(&why)) {
            printf("cannot install the filter: %s\n", why.c_str());
            fflush(stdout); /* _exit does not flush: the reason is the skip's message */
            _exit(77);
        }
        for (const std::string &e : env) {
            size_t eq = e.find('=');
            std::string name = e.substr(0, eq), value = e.substr(eq + 1);
            if (value.empty())
                unsetenv(name.c_str());
            else
                setenv(name.c_str(), value.c_str(), 1);
        }
        self.Exec(environ);
        printf("exec failed: %s\n", strerror(errno));
        fflush(stdout);
        _exit(127);
    }
    close(fds[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        out->append(buf, (size_t)n);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Run one DISABLED_SeccompChild test in a child under the filter. */
int RunChildCase(const char *name, bool refuse, const std::vector<std::string> &env, std::string *out) {
    return RunUnderFilter(
        refuse, env, {std::string("--gtest_filter=DISABLED_SeccompChild.") + name, "--gtest_also_run_disabled_tests"},
        out);
}

/* Bodies that only make sense in such a child: disabled in normal runs,
 * run by the SeccompFallback tests with --gtest_also_run_disabled_tests. */
TEST(DISABLED_SeccompChild, AutoPicksEpoll) {
    const char *name = rn_backend_name();
    ASSERT_NE(nullptr, name) << rn_last_error();
    printf("backend=%s\nreason=%s\n", name, rn_backend_reason());
    EXPECT_STREQ("epoll", name);
}

TEST(DISABLED_SeccompChild, ForcedIoUringFailsTheFirstCall) {
    rn_server *s = nullptr;
    int r = rn_tcp_listen(&s, "127.0.0.1", 0);
    printf("listen=%d\nerror=%s\n", r, rn_last_error());
    EXPECT_EQ(RN_EBACKEND, r);
    EXPECT_EQ(nullptr, s);
}

TEST(DISABLED_SeccompChild, UnknownBackendFailsTheFirstCall) {
    rn_server *s = nullptr;
    int r = rn_tcp_listen(&s, "127.0.0.1", 0);
    printf("listen=%d\nerror=%s\n", r, rn_last_error());
    EXPECT_EQ(-EINVAL, r);
}

TEST(SeccompFallback, AutoPicksEpollUnderAFilterRefusingIoUringAndTheSuitePassesThere) {
    std::string out;
    /* With RNT_AUTO_BACKEND the harness leaves the choice to auto and
     * checks that every loop ended up on the test's backend (epoll). */
    int rc = RunUnderFilter(true, {"RN_BACKEND=", "RNT_AUTO_BACKEND=1"},
                            {"--gtest_filter=Backends/TcpTest.*/epoll:Backends/DeadlineTest.*/epoll:"
                             "Backends/CloseTest.*/epoll:Backends/DnsTest.*/epoll",
                             "--gtest_brief=1"},
                            &out);
    if (rc == 77)
        GTEST_SKIP() << out;
    EXPECT_EQ(0, rc) << out;
    /* A real subset ran, and none of it was skipped. */
    EXPECT_EQ(std::string::npos, out.find("SKIPPED")) << out;
    size_t at = out.find("[  PASSED  ] ");
    ASSERT_NE(std::string::npos, at) << out;
    EXPECT_GE(atoi(out.c_str() + at + 13), 20) << out;
}

TEST(SeccompFallback, AutoSaysWhyItFellBackToEpoll) {
    std::string out;
    int rc = RunChildCase("AutoPicksEpoll", true, {"RN_BACKEND="}, &out);
    if (rc == 77)
        GTEST_SKIP() << out;
    EXPECT_EQ(0, rc) << out;
    EXPECT_NE(std::string::npos, out.find("backend=epoll")) << out;
    EXPECT_NE(std::string::npos, out.find("EPERM")) << out;
}

TEST(SeccompFallback, ForcedIoUringUnderTheFilterFailsTheFirstCallClearly) {
    std::string out;
    int rc = RunChildCase("ForcedIoUringFailsTheFirstCall", true, {"RN_BACKEND=io_uring"}, &out);
    if (rc == 77)
        GTEST_SKIP() << out;
    EXPECT_EQ(0, rc) << out;
    EXPECT_NE(std::string::npos, out.find("io_uring was asked for but cannot run here")) << out;
    EXPECT_NE(std::string::npos, out.find("EPERM")) << out;
}

TEST(SeccompFallback, UnknownRnBackendValueFailsTheFirstCallWithEinval) {
    std::string out;
    int rc = RunChildCase("UnknownBackendFailsTheFirstCall", false, {"RN_BACKEND=kqueue"}, &out);
    EXPECT_EQ(0, rc) << out;
    EXPECT_NE(std::string::npos, out.find("RN_BACKEND=kqueue")) << out;
}

} // namespace
