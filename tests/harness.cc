/* harness.cc - the shared test machinery declared in harness.h. */
#include "harness.h"

#include "rnt_emulator.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace {

/* A test body stuck this long is a hang, not a slow test (each is meant to
 * take well under 5 s; ctest's own limit is 120 s). */
constexpr int kWatchdogSeconds = 60;

void CallBody(const rnt::Fn &fn) {
    try {
        fn();
    } catch (const std::exception &e) {
        ADD_FAILURE() << "exception escaped a task: " << e.what();
    } catch (...) {
        ADD_FAILURE() << "exception escaped a task";
    }
}

} // namespace

/* C entry points for rn_run / rn_spawn: no C++ exception may cross the C
 * library's frames, so CallBody catches everything. */
extern "C" {
static void rnt_call(void *arg) { CallBody(*static_cast<const rnt::Fn *>(arg)); }
static void rnt_call_owned(void *arg) {
    std::unique_ptr<rnt::Fn> fn(static_cast<rnt::Fn *>(arg));
    CallBody(*fn);
}
}

namespace rnt {

int RunTask(const Fn &fn) { return rn_run(rnt_call, const_cast<Fn *>(&fn)); }

int Spawn(Fn fn) {
    auto *owned = new Fn(std::move(fn));
    int rc = rn_spawn(rnt_call_owned, owned);
    if (rc != 0)
        delete owned;
    return rc;
}

int64_t NowMs() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

ssize_t WriteUntilItFails(rn_conn *c) {
    const std::vector<char> buf(4096, 'x');
    ssize_t rc = 0;
    for (int i = 0; i < 200 && rc >= 0; i++) {
        rc = rn_conn_write(c, buf.data(), buf.size());
        if (rc >= 0)
            rn_sleep(1);
    }
    return rc;
}

int64_t MsTaken(const Fn &call) {
    int64_t t0 = NowMs();
    call();
    return NowMs() - t0;
}

bool WaitUntil(const std::function<bool()> &cond, int64_t timeout_ms) {
    int64_t start = NowMs();
    while (!cond()) {
        if (NowMs() - start > timeout_ms)
            return false;
        rn_sleep(1);
    }
    return true;
}

bool SpinUntil(const std::function<bool()> &cond, int64_t timeout_ms) {
    int64_t start = NowMs();
    for (int i = 0; !cond(); i++) {
        if (NowMs() - start > timeout_ms)
            return cond();
        if (i > 1000)
            usleep(10);
        else
            sched_yield();
    }
    return true;
}

Blocked::Blocked(Fn call) {
    RNT_SPAWN([state = state_, call = std::move(call)] {
        state->started = true;
        call();
        state->done_at = NowMs();
    });
}

::testing::AssertionResult Blocked::ReturnsPromptlyAfter(const Fn &end) const {
    int64_t t0 = NowMs();
    end();
    if (!WaitUntil([this] { return Returned(); }, kPromptMs))
        return ::testing::AssertionFailure()
               << "the call had not returned " << NowMs() - t0 << " ms after the event that was to end it";
    return ::testing::AssertionSuccess() << "returned " << state_->done_at - t0 << " ms after the event";
}

void RaceRounds::Run(int rounds, const std::function<void(int)> &run) {
    int fds_before = -1;
    for (int i = 0; i <= rounds; i++) {
        if (i == 1)
            fds_before = CountOpenFds();
        run(i);
        if (::testing::Test::HasFatalFailure()) {
            ADD_FAILURE() << "the rounds stopped at round " << i << "; results until then: " << Tally();
            return;
        }
    }
    EXPECT_EQ("", first_bad_) << Tally();
    EXPECT_EQ(fds_before, CountOpenFds()) << "descriptors leaked; rounds ended " << Tally();
    if (!what_.empty())
        printf("[ringnet] %s %s: %s\n", rn_backend_name(), what_.c_str(), Tally().c_str());
}

void RaceRounds::Saw(int round, int rc, bool ok, const std::string &detail) {
    seen_[rc]++;
    if (!ok && first_bad_.empty())
        first_bad_ = "round " + std::to_string(round) + ": " + std::to_string(rc) + " (" + rn_strerror(rc) +
                     "): " + (detail.empty() ? std::string(rn_last_error()) : detail);
}

std::string RaceRounds::Tally() const {
    std::string s;
    for (const auto &kv : seen_) {
        if (!s.empty())
            s += ", ";
        s += std::string(rn_strerror(kv.first)) + " (" + std::to_string(kv.first) + ") x" + std::to_string(kv.second);
    }
    return s;
}

int PortOf(const char *addr) {
    if (addr == nullptr)
        return -1;
    const char *colon = strrchr(addr, ':');
    if (colon == nullptr || colon[1] == '\0')
        return -1;
    char *end = nullptr;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return -1;
    return (int)port;
}

std::string Pattern(size_t n, uint32_t seed, uint64_t offset) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i++)
        s[i] = (char)PatternByte(offset + i, seed);
    return s;
}

int64_t FirstPatternMismatch(const void *buf, size_t n, uint64_t offset, uint32_t seed) {
    const unsigned char *p = static_cast<const unsigned char *>(buf);
    for (size_t i = 0; i < n; i++)
        if (p[i] != PatternByte(offset + i, seed))
            return (int64_t)i;
    return -1;
}

uint64_t RaiseNofileToHard() {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (uint64_t)rl.rlim_cur;
}

int CountOpenFds() {
    DIR *d = opendir("/proc/self/fd");
    if (d == nullptr)
        return -1;
    int n = 0;
    while (struct dirent *e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

bool HaveIpv6Loopback(std::string *why) {
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = std::string("no IPv6 sockets here: socket(AF_INET6): ") + strerror(errno);
        return false;
    }
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (!ok)
        *why = std::string("no IPv6 loopback here: bind([::1]:0): ") + strerror(errno);
    close(fd);
    return ok;
}

::testing::AssertionResult MakePair(Pair *p, const char *host) {
    int rc = rn_tcp_listen(&p->srv, host, 0);
    if (rc != 0)
        return ::testing::AssertionFailure()
               << "rn_tcp_listen(" << host << ", 0) = " << rc << " (" << rn_strerror(rc) << "): " << rn_last_error();
    p->port = PortOf(rn_server_addr(p->srv));
    if (p->port <= 0)
        return ::testing::AssertionFailure() << "no port in rn_server_addr: " << rn_server_addr(p->srv);
    rc = rn_tcp_connect(&p->cli, host, p->port);
    if (rc != 0)
        return ::testing::AssertionFailure() << "rn_tcp_connect(" << host << ", " << p->port << ") = " << rc << " ("
                                             << rn_strerror(rc) << "): " << rn_last_error();
    rc = rn_server_accept(p->srv, &p->acc);
    if (rc != 0)
        return ::testing::AssertionFailure()
               << "rn_server_accept = " << rc << " (" << rn_strerror(rc) << "): " << rn_last_error();
    return ::testing::AssertionSuccess();
}

Pair::~Pair() { ClosePair(this); }

void ClosePair(Pair *p) {
    if (p->cli != nullptr) {
        EXPECT_EQ(0, rn_conn_close(p->cli)) << rn_last_error();
    }
    if (p->acc != nullptr) {
        EXPECT_EQ(0, rn_conn_close(p->acc)) << rn_last_error();
    }
    if (p->srv != nullptr) {
        EXPECT_EQ(0, rn_server_close(p->srv)) << rn_last_error();
    }
    p->cli = p->acc = nullptr;
    p->srv = nullptr;
}

int ListenAndEcho(Server *s, int n, int *served) {
    int rc = rn_tcp_listen(s->out(), "127.0.0.1", 0);
    EXPECT_EQ(0, rc) << rn_last_error();
    if (rc != 0)
        return 0;
    SpawnEchoServer(*s, n, served);
    return PortOf(rn_server_addr(*s));
}

::testing::AssertionResult ConnectToEcho(Server *s, int *served, Conn *c) {
    const int port = ListenAndEcho(s, 1, served);
    if (port <= 0)
        return ::testing::AssertionFailure() << "no echo server";
    int rc = rn_tcp_connect(c->out(), "127.0.0.1", port);
    if (rc != 0)
        return ::testing::AssertionFailure() << "rn_tcp_connect = " << rc << ": " << rn_last_error();
    return ::testing::AssertionSuccess();
}

void SpawnEchoServer(rn_server *s, int n, int *served) {
    RNT_SPAWN([s, n, served] {
        for (int i = 0; i < n; i++) {
            rn_conn *c = nullptr;
            int rc = rn_server_accept(s, &c);
            if (rc != 0) {
                ADD_FAILURE() << "echo server: accept " << i << " = " << rc << " (" << rn_strerror(rc)
                              << "): " << rn_last_error();
                return;
            }
            RNT_SPAWN([c, served] {
                std::vector<char> buf(16384);
                for (;;) {
                    ssize_t got = rn_conn_read(c, buf.data(), buf.size());
                    if (got <= 0)
                        break;
                    int rc2 = rn_conn_write_all(c, buf.data(), (size_t)got);
                    if (rc2 != 0)
                        break;
                }
                EXPECT_EQ(0, rn_conn_close(c));
                if (served != nullptr)
                    ++*served;
            });
        }
    });
}

namespace {

/* What a test thread asks for: its backend, or "auto" when RNT_AUTO_BACKEND
 * is set (the seccomp test runs part of the suite that way, to check that
 * auto lands on the backend each test names). */
const char *BackendToAsk(const char *backend) { return getenv("RNT_AUTO_BACKEND") ? "auto" : backend; }

void RunOnBackend(const char *backend, const Fn &body) {
    int rc = rn_set_backend(BackendToAsk(backend));
    ASSERT_EQ(0, rc) << "rn_set_backend(\"" << backend << "\"): " << rn_strerror(rc) << ": " << rn_last_error();
    const char *name = rn_backend_name();
    ASSERT_NE(nullptr, name) << "the loop did not start: " << rn_last_error();
    ASSERT_STREQ(backend, name) << "reason: " << rn_backend_reason();
    body();
    EXPECT_STREQ(backend, rn_backend_name());
}

} // namespace

std::thread LoopThread(const char *backend, Fn body) {
    return std::thread([backend, body = std::move(body)] { RunOnBackend(backend, body); });
}

bool BackendUsable(const std::string &backend, std::string *why) {
    static std::mutex mu;
    static std::map<std::string, std::pair<bool, std::string>> cache;
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(backend);
    if (it == cache.end()) {
        bool ok = false;
        std::string reason;
        std::thread([&] {
            int rc = rn_set_backend(BackendToAsk(backend.c_str()));
            if (rc != 0) {
                reason = "rn_set_backend(\"" + backend + "\") = " + std::to_string(rc) + " (" + rn_strerror(rc) +
                         "): " + rn_last_error();
                return;
            }
            const char *name = rn_backend_name();
            if (name == nullptr) {
                reason = std::string(rn_last_error());
                std::string detail = rn_backend_reason();
                if (!detail.empty() && detail != reason)
                    reason += reason.empty() ? detail : " (" + detail + ")";
                if (reason.empty())
                    reason = "the loop did not start and said nothing";
                return;
            }
            reason = rn_backend_reason();
            if (backend != name) {
                reason = std::string("asked for ") + backend + ", the loop runs " + name + ": " + reason;
                return;
            }
            ok = true;
        }).join();
        fprintf(stderr, "[ringnet] backend %s: %s (%s)\n", backend.c_str(), ok ? "usable" : "NOT usable",
                reason.c_str());
        it = cache.emplace(backend, std::make_pair(ok, reason)).first;
    }
    *why = it->second.second;
    return it->second.first;
}

void BackendTest::SetUp() {
    std::string why;
    if (!BackendUsable(backend(), &why))
        GTEST_SKIP() << "backend " << backend() << " cannot run here: " << why;
}

void BackendTest::OnLoop(const Fn &body) {
    const char *b = backend();
    std::promise<void> finished;
    std::future<void> fut = finished.get_future();
    std::thread t([&] {
        RunOnBackend(b, body);
        finished.set_value();
    });
    if (fut.wait_for(std::chrono::seconds(kWatchdogSeconds)) != std::future_status::ready) {
        const ::testing::TestInfo *info = ::testing::UnitTest::GetInstance()->current_test_info();
        fprintf(stderr, "\n[ringnet] %s.%s hung for %d s on backend %s; aborting the run\n",
                info ? info->test_suite_name() : "?", info ? info->name() : "?", kWatchdogSeconds, b);
        fflush(stderr);
        std::abort();
    }
    t.join();
}

void BackendTest::OnLoopRun(const Fn &body) {
    OnLoop([&] {
        int rc = RunTask(body);
        EXPECT_EQ(0, rc) << "rn_run: " << rn_strerror(rc) << ": " << rn_last_error();
    });
}

void BackendTest::OnPair(const std::function<void(Pair &)> &body) {
    OnLoopRun([&] {
        Pair p;
        ASSERT_TRUE(MakePair(&p));
        body(p);
    });
}

Blackhole::~Blackhole() {
    for (int fd : fillers)
        close(fd);
    if (listener >= 0)
        close(listener);
}

int Blackhole::Make(std::string *why) {
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(listener, 0) != 0 ||
        getsockname(listener, (struct sockaddr *)&a, &alen) != 0) {
        *why = std::string("raw listener: ") + strerror(errno);
        return 0;
    }
    /* Connect until one hangs: the queue is then full. */
    for (int i = 0; i < 8; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        fillers.push_back(fd);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        if (errno != EINPROGRESS) {
            *why = std::string("raw connect: ") + strerror(errno);
            return 0;
        }
        struct pollfd pfd = {fd, POLLOUT, 0};
        if (poll(&pfd, 1, 100) == 0)
            return ntohs(a.sin_port); /* this SYN went unanswered */
    }
    *why = "a listener with listen(fd, 0) kept answering SYNs: cannot make a loopback connect hang here";
    return 0;
}

int RawConnect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

} // namespace rnt

namespace rnt {

namespace {
/* The emulator's words (tests/CMakeLists.txt writes rnt_emulator.h); none
 * in a native build. */
const char *const kEmulator[] = {RNT_EMULATOR_ARGV nullptr};
} // namespace

bool CrossBuilt() { return kEmulator[0] != nullptr; }

SelfExec::SelfExec(const std::vector<std::string> &args) {
    size_t nemu = 0;
    while (kEmulator[nemu])
        nemu++;
    std::string self;
    if (nemu > 0) {
        /* Under qemu-user this is the emulated binary, not qemu. */
        char buf[4096];
        ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
        if (n > 0)
            self.assign(buf, (size_t)n);
        else
            nemu = 0; /* no path to give the emulator: exec directly only */
    }
    words_.emplace_back("ringnet_tests");
    for (size_t i = 0; i < nemu; i++)
        words_.emplace_back(kEmulator[i]);
    if (nemu > 0)
        words_.push_back(self);
    for (const std::string &a : args)
        words_.push_back(a);
    /* words_ is complete: pointers into it stay valid. */
    direct_.push_back(&words_[0][0]);
    for (size_t i = 1 + nemu + (nemu > 0); i < words_.size(); i++)
        direct_.push_back(&words_[i][0]);
    direct_.push_back(nullptr);
    if (nemu > 0) {
        for (size_t i = 1; i < words_.size(); i++)
            emulated_.push_back(&words_[i][0]);
        emulated_.push_back(nullptr);
    }
}

void SelfExec::Exec(char *const *envp) const {
    execve("/proc/self/exe", direct_.data(), envp);
    if (errno == ENOEXEC && !emulated_.empty()) {
        execve(emulated_[0], emulated_.data(), envp);
    }
}

} // namespace rnt
