/* promises_test.cc - promises the header makes that no other test proved:
 * rn_last_error survives successful calls; rn_tcp_connect tries every
 * address, IPv4 first, and reports the last one; rn_tcp_listen on "::" is
 * dual-stack, and its -EADDRNOTAVAIL and -EACCES (for real: a child that
 * dropped root); shutdown_write's -ENOTCONN after a peer's reset; a task's
 * stack overflow is a SIGSEGV on the guard page; RN_URING_ENTRIES out of
 * range stops io_uring; RN_DEBUG logs the backend choice.
 *
 * What needs a process of its own (another /etc/hosts, dropped privileges,
 * another environment at start) runs a DISABLED_PromiseChild test in a
 * child: this program re-executed with a filter, given its backend in
 * RNT_PROMISE_BACKEND. The child is a fresh program, so nothing of this
 * process's loops or threads carries over. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char **environ;

using namespace rnt;

namespace {

/* Exit status a child uses to say "cannot be tried here" (the reason is in
 * its output). */
constexpr int kChildSkip = 77;

/* ---- children ------------------------------------------------------------------------ */

struct ChildResult {
    int status = -1; /* exit status, or 128 + signal */
    std::string out; /* stdout */
    std::string err; /* stderr */
};

/* Variables a child must not inherit from the run: they would change what it
 * tests. Those it needs are set explicitly. */
const char *const kScrubbed[] = {"RN_BACKEND", "RN_DEBUG", "RN_URING_ENTRIES", "RNT_AUTO_BACKEND",
                                 "RNT_PROMISE_BACKEND"};

/* Re-execute this program running DISABLED_PromiseChild.<name> with env
 * (NAME=VALUE each) added. With hosts_file set, the child runs in its own
 * mount namespace where that file is /etc/hosts. */
ChildResult RunChild(const std::string &name, const std::vector<std::string> &env, const std::string &hosts_file = "") {
    ChildResult res;
    /* Everything the child needs is built before fork: between fork and exec
     * only system calls run. */
    std::vector<std::string> envs;
    for (char **e = environ; *e; e++) {
        bool drop = false;
        for (const char *s : kScrubbed) {
            size_t n = strlen(s);
            if (strncmp(*e, s, n) == 0 && (*e)[n] == '=')
                drop = true;
        }
        if (!drop)
            envs.push_back(*e);
    }
    for (const std::string &e : env)
        envs.push_back(e);
    std::vector<char *> envp;
    for (std::string &e : envs)
        envp.push_back(&e[0]);
    envp.push_back(nullptr);
    SelfExec self({"--gtest_filter=DISABLED_PromiseChild." + name, "--gtest_also_run_disabled_tests"});

    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0)
        return res;
    if (pipe2(pe, O_CLOEXEC) != 0) {
        close(po[0]);
        close(po[1]);
        return res;
    }
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        if (!hosts_file.empty()) {
            if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
                mount(hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0) {
                static const char msg[] = "cannot give the child its own /etc/hosts (unshare/mount failed)\n";
                (void)!write(1, msg, sizeof msg - 1);
                _exit(kChildSkip);
            }
        }
        self.Exec(envp.data());
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    if (pid < 0) {
        close(po[0]);
        close(pe[0]);
        return res;
    }
    struct pollfd pfd[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    std::string *dst[2] = {&res.out, &res.err};
    int open = 2;
    while (open > 0) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[4096];
            ssize_t n = read(pfd[i].fd, buf, sizeof buf);
            if (n > 0) {
                dst[i]->append(buf, (size_t)n);
            } else if (n == 0 || errno != EINTR) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open--;
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    res.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return res;
}

/* In a child: start this process's loop on the backend the parent named. */
void StartChildLoop() {
    const char *b = getenv("RNT_PROMISE_BACKEND");
    ASSERT_NE(nullptr, b) << "RNT_PROMISE_BACKEND is not set";
    ASSERT_EQ(0, rn_set_backend(b));
    const char *name = rn_backend_name();
    ASSERT_NE(nullptr, name) << rn_last_error();
    ASSERT_STREQ(b, name) << rn_backend_reason();
}

[[noreturn]] void ChildSkip(const std::string &why) {
    printf("child skips: %s\n", why.c_str());
    fflush(stdout);
    _exit(kChildSkip);
}

/* The whole of a child's story, for a failure message. */
std::string Told(const ChildResult &r) {
    return "child exit " + std::to_string(r.status) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

/* Which families getaddrinfo gives for name (AF_UNSPEC, TCP). */
void Families(const char *name, bool *v4, bool *v6) {
    *v4 = *v6 = false;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = nullptr;
    if (getaddrinfo(name, nullptr, &hints, &res) != 0)
        return;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        *v4 |= ai->ai_family == AF_INET;
        *v6 |= ai->ai_family == AF_INET6;
    }
    freeaddrinfo(res);
}

/* An integer from a /proc/sys file, or dflt. */
long ReadSysctl(const char *path, long dflt) {
    std::ifstream f(path);
    long v = dflt;
    if (!(f >> v))
        return dflt;
    return v;
}

bool Contains(const std::string &hay, const std::string &needle) { return hay.find(needle) != std::string::npos; }

/* ---- bodies that run only in a child ------------------------------------------------- */

/* "localhost" resolves to 127.0.0.1 and ::1 here (the parent made sure,
 * with a private /etc/hosts if need be). */
TEST(DISABLED_PromiseChild, ConnectToLocalhostTriesEveryAddressIpv4First) {
    bool v4, v6;
    Families("localhost", &v4, &v6);
    if (!v4 || !v6)
        ChildSkip(std::string("localhost resolves to ") + (v4 ? "IPv4" : "no IPv4") + " and " +
                  (v6 ? "IPv6" : "no IPv6") + " here");
    StartChildLoop();
    EXPECT_EQ(0, RunTask([&] {
                  /* A sentence to keep: connects that succeed after a refused address
                   * must leave it. */
                  rn_conn *bad = nullptr;
                  ASSERT_EQ(-EINVAL, rn_tcp_connect(&bad, "127.0.0.1", 0));
                  const std::string kept = rn_last_error();
                  ASSERT_FALSE(kept.empty());

                  /* Only ::1 listens: IPv4 is refused, then ::1 connects. */
                  rn_server *s6 = nullptr;
                  ASSERT_EQ(0, rn_tcp_listen(&s6, "::1", 0)) << rn_last_error();
                  int port = PortOf(rn_server_addr(s6));
                  ASSERT_GT(port, 0);
                  int probe = RawConnect(port);
                  if (probe >= 0) {
                      close(probe);
                      rn_server_close(s6);
                      ChildSkip("something already listens on 127.0.0.1:" + std::to_string(port));
                  }
                  ASSERT_EQ(ECONNREFUSED, errno);
                  const std::string p = std::to_string(port);
                  rn_conn *c = nullptr;
                  ASSERT_EQ(0, rn_tcp_connect(&c, "localhost", port)) << rn_last_error();
                  EXPECT_EQ("[::1]:" + p, std::string(rn_conn_remote_addr(c)));
                  EXPECT_EQ(kept, rn_last_error())
                      << "a connect that succeeded on its second address changed the sentence";
                  rn_conn *a = nullptr;
                  ASSERT_EQ(0, rn_server_accept(s6, &a)) << rn_last_error();
                  EXPECT_EQ(2, rn_conn_write(c, "v6", 2));
                  char buf[2];
                  EXPECT_EQ(0, rn_conn_read_exact(a, buf, 2));
                  EXPECT_EQ(0, memcmp(buf, "v6", 2));
                  EXPECT_EQ(0, rn_conn_close(c));
                  EXPECT_EQ(0, rn_conn_close(a));

                  /* Both listen on the port: IPv4 is tried first, and wins, whatever
                   * order the resolver gave. */
                  rn_server *s4 = nullptr;
                  ASSERT_EQ(0, rn_tcp_listen(&s4, "127.0.0.1", port)) << rn_last_error();
                  ASSERT_EQ(0, rn_tcp_connect(&c, "localhost", port)) << rn_last_error();
                  EXPECT_EQ("127.0.0.1:" + p, std::string(rn_conn_remote_addr(c)));
                  ASSERT_EQ(0, rn_server_accept(s4, &a)) << rn_last_error();
                  EXPECT_EQ(0, rn_conn_close(c));
                  EXPECT_EQ(0, rn_conn_close(a));
                  EXPECT_EQ(0, rn_server_close(s4));
                  EXPECT_EQ(0, rn_server_close(s6));

                  /* Nobody listens: every address refuses; the error is the last
                   * address's, and the sentence names that address (::1, tried last)
                   * and says the others were tried too. */
                  c = reinterpret_cast<rn_conn *>(&port);
                  EXPECT_EQ(-ECONNREFUSED, rn_tcp_connect(&c, "localhost", port));
                  EXPECT_EQ(nullptr, c);
                  std::string msg = rn_last_error();
                  printf("refused sentence: %s\n", msg.c_str());
                  EXPECT_TRUE(Contains(msg, "connect to localhost port " + p + ": ")) << msg;
                  EXPECT_TRUE(Contains(msg, rn_strerror(-ECONNREFUSED))) << msg;
                  EXPECT_TRUE(Contains(msg, "([::1]:" + p + ", and every other address)")) << msg;
              }));
}

/* Root drops to nobody for good (after its loop started), then a port below
 * ip_unprivileged_port_start is -EACCES. */
TEST(DISABLED_PromiseChild, ListenBelowThePrivilegedPortLimitAfterDroppingRootIsEacces) {
    if (geteuid() != 0)
        ChildSkip("not root (euid " + std::to_string(geteuid()) + "): no privilege to drop");
    long start = ReadSysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start", 1024);
    if (start <= 1)
        ChildSkip("net.ipv4.ip_unprivileged_port_start is " + std::to_string(start) + ": no port needs privilege");
    int port = (int)(start > 1024 ? 1024 : start) - 1;
    StartChildLoop();
    ASSERT_EQ(0, setgroups(0, nullptr)) << strerror(errno);
    ASSERT_EQ(0, setgid(65534)) << strerror(errno);
    ASSERT_EQ(0, setuid(65534)) << strerror(errno);
    ASSERT_EQ(65534u, geteuid());
    ASSERT_EQ(-1, setuid(0)) << "the privilege was not dropped for good";
    EXPECT_EQ(0, RunTask([&] {
                  rn_server *s = reinterpret_cast<rn_server *>(&port);
                  EXPECT_EQ(-EACCES, rn_tcp_listen(&s, "127.0.0.1", port));
                  std::string msg = rn_last_error();
                  printf("eacces sentence: %s\n", msg.c_str());
                  EXPECT_TRUE(Contains(msg, "tcp_listen on 127.0.0.1:" + std::to_string(port) + ": ")) << msg;
                  EXPECT_TRUE(Contains(msg, rn_strerror(-EACCES))) << msg;
                  /* The loop and unprivileged ports still work as nobody. */
                  s = nullptr;
                  ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
                  rn_conn *c = nullptr;
                  EXPECT_EQ(0, rn_tcp_connect(&c, "127.0.0.1", PortOf(rn_server_addr(s)))) << rn_last_error();
                  EXPECT_EQ(0, rn_conn_close(c));
                  EXPECT_EQ(0, rn_server_close(s));
              }));
}

/* Start the loop and say why it runs what it runs. */
TEST(DISABLED_PromiseChild, StartTheLoopAndPrintTheReason) {
    StartChildLoop();
    printf("reason=%s\n", rn_backend_reason());
    fflush(stdout);
}

/* ---- rn_last_error --------------------------------------------------------------------- */

class PromiseBackendTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(PromiseBackendTest);

TEST_P(PromiseBackendTest, SuccessfulCallsOfEveryKindLeaveTheLastErrorAsItWas) {
    OnLoopRun([&] {
        rn_conn *bad = nullptr;
        ASSERT_EQ(-EINVAL, rn_tcp_connect(&bad, "127.0.0.1", 0));
        const std::string kept = rn_last_error();
        ASSERT_TRUE(Contains(kept, "port 0 is outside 1..65535")) << kept;
        auto same = [&](const char *after) { EXPECT_EQ(kept, rn_last_error()) << "after a successful " << after; };

        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        same("listen");
        int port = PortOf(rn_server_addr(s));
        rn_conn *cli = nullptr, *acc = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&cli, "127.0.0.1", port)) << rn_last_error();
        same("connect");
        ASSERT_EQ(0, rn_server_accept(s, &acc)) << rn_last_error();
        same("accept");
        EXPECT_EQ(5, rn_conn_write(cli, "hello", 5));
        same("write");
        EXPECT_EQ(0, rn_conn_write_all(cli, "world!", 6));
        same("write_all");
        char buf[16];
        EXPECT_EQ(0, rn_conn_read_exact(acc, buf, 5));
        same("read_exact");
        EXPECT_EQ(0, memcmp(buf, "hello", 5));
        ssize_t got = rn_conn_read(acc, buf, sizeof buf);
        same("read");
        EXPECT_EQ(6, got);
        EXPECT_EQ(3, rn_conn_write(acc, "abc", 3));
        const void *lent = nullptr;
        EXPECT_EQ(3, rn_conn_read_lent(cli, &lent));
        same("read_lent");
        rn_conn_release_lent(cli);
        char ip[64];
        EXPECT_EQ(0, rn_resolve("localhost", ip, sizeof ip)) << rn_last_error();
        same("resolve");
        bool ran = false;
        RNT_SPAWN([&] { ran = true; });
        EXPECT_EQ(0, rn_sleep(2));
        same("spawn and sleep");
        EXPECT_TRUE(ran);
        rn_yield();
        rn_stats st;
        EXPECT_EQ(0, rn_loop_stats(&st));
        same("yield and loop_stats");
        rn_conn_set_deadline(acc, 1000);
        EXPECT_EQ(0, rn_conn_shutdown_write(cli)) << rn_last_error();
        same("shutdown_write");
        EXPECT_EQ(0, rn_conn_read(acc, buf, sizeof buf)); /* the end of stream is a success too */
        same("read at end of stream");
        EXPECT_EQ(0, rn_conn_close(cli));
        EXPECT_EQ(0, rn_conn_close(acc));
        same("close");
        EXPECT_EQ(0, rn_server_close(s));
        same("server_close");
    });
}

/* ---- rn_tcp_connect over several addresses ----------------------------------------------- */

TEST_P(PromiseBackendTest, ConnectToANameWithIpv4AndIpv6AddressesTriesEachIpv4FirstAndReportsTheLast) {
    std::string why;
    if (!HaveIpv6Loopback(&why))
        GTEST_SKIP() << why;
    bool v4, v6;
    Families("localhost", &v4, &v6);
    std::string hosts;
    if (!(v4 && v6)) {
        /* This machine's /etc/hosts gives localhost one family only: the
         * child gets a private one (its own mount namespace) giving both,
         * IPv6 first, so that IPv4 first is the library's doing. */
        printf("[ringnet] /etc/hosts maps localhost to %s only; the child gets its own /etc/hosts with "
               "::1 and 127.0.0.1\n",
               v4   ? "IPv4"
               : v6 ? "IPv6"
                    : "nothing");
        char path[] = "/tmp/rnt-hosts-XXXXXX";
        int fd = mkstemp(path);
        ASSERT_GE(fd, 0) << strerror(errno);
        static const char text[] = "::1 localhost\n127.0.0.1 localhost\n";
        ASSERT_EQ((ssize_t)(sizeof text - 1), write(fd, text, sizeof text - 1));
        close(fd);
        hosts = path;
    }
    ChildResult r = RunChild("ConnectToLocalhostTriesEveryAddressIpv4First",
                             {std::string("RNT_PROMISE_BACKEND=") + backend()}, hosts);
    if (!hosts.empty())
        unlink(hosts.c_str());
    if (r.status == kChildSkip)
        GTEST_SKIP() << Told(r);
    EXPECT_EQ(0, r.status) << Told(r);
    EXPECT_TRUE(Contains(r.out, "[  PASSED  ] 1 test")) << Told(r);
}

/* ---- rn_tcp_listen -------------------------------------------------------------------------- */

TEST_P(PromiseBackendTest, ListenOnTheIpv6WildcardIsDualStackAnIpv4ClientReachesIt) {
    std::string why;
    if (!HaveIpv6Loopback(&why))
        GTEST_SKIP() << why;
    if (ReadSysctl("/proc/sys/net/ipv6/bindv6only", 0) != 0)
        GTEST_SKIP() << "net.ipv6.bindv6only is set: this system's default for \"::\" is IPv6 only";
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "::", 0)) << rn_last_error();
        std::string addr = rn_server_addr(s);
        int port = PortOf(addr.c_str());
        EXPECT_EQ("[::]:" + std::to_string(port), addr);
        for (const char *host : {"127.0.0.1", "::1"}) {
            rn_conn *c = nullptr, *a = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&c, host, port)) << host << ": " << rn_last_error();
            ASSERT_EQ(0, rn_server_accept(s, &a)) << rn_last_error();
            std::string local = rn_conn_local_addr(c);
            if (strcmp(host, "127.0.0.1") == 0) {
                /* The IPv4 client arrived on the IPv6 socket, as a mapped address. */
                EXPECT_EQ(0u, local.rfind("127.0.0.1:", 0)) << local;
                EXPECT_EQ("[::ffff:127.0.0.1]:" + std::to_string(PortOf(local.c_str())),
                          std::string(rn_conn_remote_addr(a)));
            } else {
                EXPECT_EQ(local, std::string(rn_conn_remote_addr(a)));
            }
            EXPECT_EQ(4, rn_conn_write(c, "ping", 4));
            char buf[4];
            EXPECT_EQ(0, rn_conn_read_exact(a, buf, 4));
            EXPECT_EQ(0, memcmp(buf, "ping", 4));
            EXPECT_EQ(4, rn_conn_write(a, "pong", 4));
            EXPECT_EQ(0, rn_conn_read_exact(c, buf, 4));
            EXPECT_EQ(0, memcmp(buf, "pong", 4));
            EXPECT_EQ(0, rn_conn_close(c));
            EXPECT_EQ(0, rn_conn_close(a));
        }
        EXPECT_EQ(0, rn_server_close(s));
    });
}

TEST_P(PromiseBackendTest, ListenOnAnAddressThisMachineDoesNotHaveIsEaddrnotavail) {
    if (ReadSysctl("/proc/sys/net/ipv4/ip_nonlocal_bind", 0) != 0)
        GTEST_SKIP() << "net.ipv4.ip_nonlocal_bind is set: binding a foreign address succeeds here";
    OnLoopRun([&] {
        /* 192.0.2.1 is TEST-NET-1 (RFC 5737): on no machine's interface. */
        rn_server *s = reinterpret_cast<rn_server *>(&s);
        EXPECT_EQ(-EADDRNOTAVAIL, rn_tcp_listen(&s, "192.0.2.1", 0));
        std::string msg = rn_last_error();
        EXPECT_TRUE(Contains(msg, "tcp_listen on 192.0.2.1:0: ")) << msg;
        EXPECT_TRUE(Contains(msg, rn_strerror(-EADDRNOTAVAIL))) << msg;
    });
}

TEST_P(PromiseBackendTest, ListenOnAPrivilegedPortWithoutThePrivilegeIsEacces) {
    ChildResult r = RunChild("ListenBelowThePrivilegedPortLimitAfterDroppingRootIsEacces",
                             {std::string("RNT_PROMISE_BACKEND=") + backend()});
    if (r.status == kChildSkip)
        GTEST_SKIP() << Told(r);
    EXPECT_EQ(0, r.status) << Told(r);
    EXPECT_TRUE(Contains(r.out, "[  PASSED  ] 1 test")) << Told(r);
}

/* ---- shutdown_write --------------------------------------------------------------------------- */

TEST_P(PromiseBackendTest, ShutdownWriteAfterThePeerResetTheConnectionIsEnotconn) {
    OnLoopRun([&] {
        rn_server *s = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&s, "127.0.0.1", 0)) << rn_last_error();
        int raw = RawConnect(PortOf(rn_server_addr(s)));
        ASSERT_GE(raw, 0) << strerror(errno);
        rn_conn *a = nullptr;
        ASSERT_EQ(0, rn_server_accept(s, &a)) << rn_last_error();
        std::string peer = rn_conn_remote_addr(a);
        /* The peer aborts: linger 0 makes its close a reset. */
        struct linger lg = {1, 0};
        ASSERT_EQ(0, setsockopt(raw, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
        close(raw);
        rn_sleep(5);
        EXPECT_EQ(-ENOTCONN, rn_conn_shutdown_write(a));
        std::string msg = rn_last_error();
        EXPECT_TRUE(Contains(msg, "shutdown_write on " + peer + ": ")) << msg;
        EXPECT_TRUE(Contains(msg, rn_strerror(-ENOTCONN))) << msg;
        EXPECT_EQ(0, rn_conn_close(a));
        EXPECT_EQ(0, rn_server_close(s));
    });
}

/* ---- the task stack's guard page ----------------------------------------------------------------- */

/* What the SIGSEGV handler of the death test compares the fault with: the
 * address of a local in the task's first frame and the stack size. */
uintptr_t g_first_frame;
size_t g_stack_size;
volatile int g_never = -1;

void PutStr(const char *s) { (void)!write(2, s, strlen(s)); }
void PutNum(uintptr_t v) {
    char b[24];
    int i = (int)sizeof b;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 0);
    (void)!write(2, b + i, sizeof b - (size_t)i);
}

/* Say where the fault was relative to the stack, then die of it: with the
 * default action back, the faulting access runs again. */
void OnSegv(int, siginfo_t *si, void *) {
    uintptr_t at = (uintptr_t)si->si_addr;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t below = g_first_frame - at;
    /* The guard page is the page under the stack's size: the first frame
     * sits a little below the stack's top (the task record is there). */
    bool guard = at < g_first_frame && below + 8192 >= g_stack_size && below <= g_stack_size + (uintptr_t)page;
    PutStr(guard ? "fault in the guard page: " : "fault NOT in the guard page: ");
    PutNum(below);
    PutStr(" bytes below the task's first frame\n");
    signal(SIGSEGV, SIG_DFL);
}

__attribute__((noinline)) int Recurse(int depth) {
    volatile char pad[200];
    pad[0] = (char)depth;
    pad[sizeof pad - 1] = (char)depth;
    if (depth == g_never)
        return 0;
    return Recurse(depth + 1) + pad[0] + pad[sizeof pad - 1];
}

void OverflowATaskStack() {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    static char alt[64 * 1024];
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = alt;
    ss.ss_size = sizeof alt;
    sigaltstack(&ss, nullptr);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = OnSegv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    g_stack_size = 64 * 1024;
    if (rn_set_task_stack_size(g_stack_size) != 0)
        _exit(3);
    RunTask([] {
        volatile char here = 0;
        g_first_frame = (uintptr_t)&here;
        Recurse(0);
    });
    PutStr("the recursion returned\n");
    _exit(4);
}

TEST(PromiseTest, ATaskThatRecursesWithoutBoundDiesOfSigsegvOnTheGuardPage) {
    testing::FLAGS_gtest_death_test_style = CrossBuilt() ? "fast" : "threadsafe";
    int64_t t0 = NowMs();
    EXPECT_EXIT(OverflowATaskStack(), testing::KilledBySignal(SIGSEGV), "fault in the guard page: [0-9]+ bytes");
    /* The overflow kills the child at once; the bound rules out a child
     * that hangs instead (the death test would wait for it forever). The
     * threadsafe death test re-executes the whole test binary, which takes
     * up to ~1-2 s under a sanitizer on a loaded machine: 20 s (was 1 s). */
    EXPECT_LT(NowMs() - t0, 20000);
}

/* ---- RN_URING_ENTRIES ----------------------------------------------------------------------------- */

/* In a fresh thread: RN_URING_ENTRIES=value, backend choice, then the first
 * call; *rc its result, *msg the sentence, *name rn_backend_name after,
 * *retry rn_backend_name once the variable is gone again (the loop start
 * is tried again at the next call). */
void StartWithEntries(const char *value, const char *choice, int *rc, std::string *msg, std::string *name,
                      std::string *retry) {
    std::thread([&] {
        const char *old = getenv("RN_URING_ENTRIES");
        std::string saved = old ? old : "";
        setenv("RN_URING_ENTRIES", value, 1);
        EXPECT_EQ(0, rn_set_backend(choice));
        rn_server *s = nullptr;
        *rc = rn_tcp_listen(&s, "127.0.0.1", 0);
        *msg = rn_last_error();
        const char *n = rn_backend_name();
        *name = n ? n : "(none)";
        if (s)
            rn_server_close(s);
        if (old)
            setenv("RN_URING_ENTRIES", saved.c_str(), 1);
        else
            unsetenv("RN_URING_ENTRIES");
        n = rn_backend_name();
        *retry = n ? n : "(none)";
    }).join();
}

TEST(PromiseTest, UringEntriesOutside2To32768StopsIoUringEbackendWhenForcedErangeInAuto) {
    const char *old = getenv("RN_URING_ENTRIES");
    std::string saved = old ? old : "";
    std::string why;
    bool uring = BackendUsable("io_uring", &why);
    for (const char *v : {"1", "0", "32769", "100000", "-5"}) {
        int rc = 0;
        std::string msg, name, retry;
        StartWithEntries(v, "io_uring", &rc, &msg, &name, &retry);
        EXPECT_EQ(RN_EBACKEND, rc) << v << ": " << msg;
        EXPECT_TRUE(Contains(msg, std::string("RN_URING_ENTRIES=") + v + " is outside 2..32768")) << msg;
        EXPECT_TRUE(Contains(msg, "io_uring was asked for but cannot run here")) << msg;
        EXPECT_EQ("(none)", name) << v;
        if (uring)
            EXPECT_EQ("io_uring", retry) << v << ": the start was not tried again";

        StartWithEntries(v, "auto", &rc, &msg, &name, &retry);
        EXPECT_EQ(-ERANGE, rc) << v << ": " << msg;
        EXPECT_TRUE(Contains(msg, std::string("RN_URING_ENTRIES=") + v + " is outside 2..32768")) << msg;
        EXPECT_EQ("(none)", name) << v << ": auto fell back on a configuration error";
        EXPECT_EQ(uring ? "io_uring" : "epoll", retry) << v;
    }
    /* The bounds and both sides of 8192 start io_uring (past 8192 the CQ
     * stays at the kernel's most, 65536, instead of 8 times the SQ). */
    if (uring) {
        for (const char *v : {"2", "8192", "8193", "32768"}) {
            int rc = 1;
            std::string msg, name, retry;
            StartWithEntries(v, "io_uring", &rc, &msg, &name, &retry);
            EXPECT_EQ(0, rc) << v << ": " << msg;
            EXPECT_EQ("io_uring", name) << v << ": " << msg;
        }
    }
    const char *now = getenv("RN_URING_ENTRIES");
    EXPECT_EQ(saved, now ? now : "") << "the environment was not restored";
    EXPECT_EQ(old == nullptr, now == nullptr);
}

/* ---- RN_DEBUG ----------------------------------------------------------------------------------------- */

TEST_P(PromiseBackendTest, RnDebugLogsTheBackendChoiceToStderrAndRnDebug0DoesNot) {
    const std::string be = std::string("RNT_PROMISE_BACKEND=") + backend();
    ChildResult on = RunChild("StartTheLoopAndPrintTheReason", {be, "RN_DEBUG=1"});
    ASSERT_EQ(0, on.status) << Told(on);
    size_t at = on.out.find("reason=");
    ASSERT_NE(std::string::npos, at) << Told(on);
    std::string reason = on.out.substr(at + 7, on.out.find('\n', at) - at - 7);
    EXPECT_EQ(0u, reason.rfind(std::string(backend()) + ": ", 0)) << reason;
    EXPECT_TRUE(Contains(on.err, "ringnet: backend " + reason + "\n")) << Told(on);
    EXPECT_FALSE(Contains(on.out, "ringnet: backend")) << "the line went to stdout: " << Told(on);

    for (const char *quiet : {"RN_DEBUG=0", "RN_DEBUG="}) {
        ChildResult off = RunChild("StartTheLoopAndPrintTheReason", {be, quiet});
        ASSERT_EQ(0, off.status) << Told(off);
        EXPECT_TRUE(Contains(off.out, "reason=" + reason)) << Told(off);
        EXPECT_FALSE(Contains(off.err + off.out, "ringnet: backend")) << quiet << ": " << Told(off);
    }
}

} // namespace
