/* harness.h - what every ringnet test shares: the backend parameterisation
 * (each test body runs on a fresh thread whose loop was given the backend
 * under test), C trampolines for rn_run/rn_spawn with std::function bodies,
 * and small helpers (connected pairs, byte patterns, clocks, fd counts). */
#ifndef RINGNET_TESTS_HARNESS_H
#define RINGNET_TESTS_HARNESS_H

#include <gtest/gtest.h>

#include <ringnet.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace rnt {

using Fn = std::function<void()>;

/* rn_run(fn) as a task on this thread's loop; returns rn_run's result. */
int RunTask(const Fn &fn);
/* rn_spawn(fn): the task owns a copy of fn, freed when it ends. */
int Spawn(Fn fn);

/* Spawn and fail the test if the spawn fails. */
#define RNT_SPAWN(...) EXPECT_EQ(0, ::rnt::Spawn(__VA_ARGS__)) << rn_last_error()

/* Monotonic milliseconds, for measuring how long calls take. */
int64_t NowMs();
/* How long call took, in ms: `int64_t took = MsTaken([&] { rc = ...; });` */
int64_t MsTaken(const Fn &call);

/* Write 4 KiB to c, 1 ms apart, until a write fails or 200 have been
 * taken; the last write's result. For a peer that is gone: the first
 * writes may still be taken (the peer answers them with a reset), then the
 * error shows. */
ssize_t WriteUntilItFails(rn_conn *c);

/* Time limits, and how the tests use the wall clock. A test machine may be
 * loaded (two cores shared by a whole CI, or by four developers) and slowed
 * 10-50x (Valgrind, TSan), so an upper bound on elapsed time must leave an
 * order of magnitude over what the operation needs there, and still prove
 * the test's point; where it cannot, the test counts instead (loop passes,
 * rn_loop_stats, tasks asleep at once). Lower bounds ("a 100 ms deadline did
 * not fire before 99 ms") cannot fail on a slow machine and stay tight.
 *
 * kPromptMs: how soon a call blocked in the loop must return once what ends
 * it has happened (a close, a reset, an expired deadline). Such a wake-up
 * takes well under 10 ms on an idle machine and up to ~200 ms under
 * memcheck on a loaded one; what the bound rules out is a call that is not
 * woken by the event at all and returns only when something else happens
 * (a 30 s connect timeout, the peer's data, never: the watchdog's 60 s).
 *
 * kNeverMs: how long WaitUntil waits by default for something that must
 * happen: a limit that only a bug reaches, under the watchdog's 60 s. */
constexpr int64_t kPromptMs = 2000;
constexpr int64_t kNeverMs = 20000;

/* Poll cond with rn_sleep(1) between tries (so the loop keeps running the
 * other tasks) until it holds or timeout_ms passes; whether it held. */
bool WaitUntil(const std::function<bool()> &cond, int64_t timeout_ms = kNeverMs);

/* Spin until cond holds or timeout_ms passes, without running the loop
 * (sched_yield first, then 10 us sleeps); whether it held. For a thread
 * with no loop, or a task whose loop must not run meanwhile. */
bool SpinUntil(const std::function<bool()> &cond, int64_t timeout_ms = kNeverMs);

/* A call that blocks in the loop, run in a spawned task so that the test can
 * end it from outside and check how: Blocked read([&] { rc = rn_conn_read(c,
 * buf, n); }); ...; EXPECT_TRUE(read.ReturnsPromptlyAfter([&] { ... close
 * ... })); The task keeps its state alive (shared) if the test ends first. */
class Blocked {
  public:
    explicit Blocked(Fn call);
    /* Whether the task has entered the call, and whether it returned. */
    bool Started() const { return state_->started; }
    bool Returned() const { return state_->done_at >= 0; }
    /* Run end (the event that must end the call), then wait for the call to
     * return: success when it returned within kPromptMs of end (or had
     * before it: a race's other outcome; a test that must see the call
     * still blocked asserts !Returned() first). */
    ::testing::AssertionResult ReturnsPromptlyAfter(const Fn &end) const;

  private:
    struct State {
        bool started = false;
        int64_t done_at = -1;
    };
    std::shared_ptr<State> state_ = std::make_shared<State>();
};

/* Owning handles for the library's objects: closed (freed) when they go out
 * of scope, so a test that stops at a failed ASSERT leaks nothing. The close
 * is expected to succeed. `rn_tcp_connect(c.out(), ...)` fills one;
 * `c.Close()` closes it early and returns what the close returned;
 * `c.release()` gives the object up (to a close the test makes itself). */
template <class T, int (*CloseFn)(T *)> class Handle {
  public:
    Handle() = default;
    explicit Handle(T *p) : p_(p) {}
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    Handle(Handle &&o) noexcept : p_(o.release()) {}
    Handle &operator=(Handle &&o) noexcept {
        if (this != &o) {
            Close();
            p_ = o.release();
        }
        return *this;
    }
    ~Handle() {
        if (p_ != nullptr) {
            EXPECT_EQ(0, Close()) << rn_last_error();
        }
    }
    T *get() const { return p_; }
    operator T *() const { return p_; }
    T **out() {
        Close();
        return &p_;
    }
    T *release() {
        T *p = p_;
        p_ = nullptr;
        return p;
    }
    int Close() {
        T *p = release();
        return p == nullptr ? 0 : CloseFn(p);
    }

  private:
    T *p_ = nullptr;
};
using Conn = Handle<rn_conn, rn_conn_close>;
using Server = Handle<rn_server, rn_server_close>;

/* A TLS configuration, freed (its reference dropped) at the end of scope.
 * It converts to rn_tls_config * for the calls, but not as a temporary:
 * `rn_tls_config *c = ServerConfig(...)` would free it at once, and does
 * not compile. */
class TlsConfig {
  public:
    TlsConfig() = default;
    explicit TlsConfig(rn_tls_config *c) : c_(c) {}
    TlsConfig(const TlsConfig &) = delete;
    TlsConfig &operator=(const TlsConfig &) = delete;
    TlsConfig(TlsConfig &&o) noexcept : c_(o.release()) {}
    TlsConfig &operator=(TlsConfig &&o) noexcept {
        if (this != &o)
            reset(o.release());
        return *this;
    }
    ~TlsConfig() { reset(); }
    operator rn_tls_config *() const & { return c_; }
    operator rn_tls_config *() const && = delete;
    rn_tls_config *get() const { return c_; }
    rn_tls_config *release() {
        rn_tls_config *c = c_;
        c_ = nullptr;
        return c;
    }
    void reset(rn_tls_config *c = nullptr) {
        if (c_ != nullptr)
            rn_tls_config_free(c_);
        c_ = c;
    }

  private:
    rn_tls_config *c_ = nullptr;
};

/* Rounds of a race (race_test.cc and others): run(i) for i = 0 .. rounds
 * (rounds + 1 in all; round 0 warms the loop up, and the descriptors open
 * after it are the baseline), each round reporting its result through Saw.
 * Stops at a round's fatal failure (an ASSERT). Then expects every result to
 * have been one the test allows and every descriptor given back, and prints
 * "[ringnet] BACKEND WHAT: TALLY" when what is set. */
class RaceRounds {
  public:
    explicit RaceRounds(std::string what = "") : what_(std::move(what)) {}
    void Run(int rounds, const std::function<void(int round)> &run);
    /* Count round i's result rc (an rn_* result: 0, RN_E*, -errno); ok says
     * whether the test allows it; the first that is not is reported with
     * detail (rn_last_error() when empty). */
    void Saw(int round, int rc, bool ok, const std::string &detail = "");
    /* "RN_ECLOSED (-1001) x120, Connection timed out (-110) x80". */
    std::string Tally() const;
    /* The first result Saw was told is not allowed, "" if none. */
    const std::string &FirstBad() const { return first_bad_; }

  private:
    std::string what_;
    std::map<int, int> seen_;
    std::string first_bad_;
};

/* The port after the last ':' of "127.0.0.1:N" / "[::1]:N", or -1. */
int PortOf(const char *addr);

/* Deterministic bytes: byte i of a stream with this seed. Lets a reader
 * check every byte of a long transfer at its offset. */
inline unsigned char PatternByte(uint64_t i, uint32_t seed = 0) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)seed * 0xD1B54A32D192ED03ull;
    x ^= x >> 29;
    return (unsigned char)(x ^ (x >> 17));
}
std::string Pattern(size_t n, uint32_t seed = 0, uint64_t offset = 0);
/* Index of the first byte of buf that differs from the pattern at offset,
 * or -1 when all match. */
int64_t FirstPatternMismatch(const void *buf, size_t n, uint64_t offset, uint32_t seed = 0);

/* A plain blocking socket connected to 127.0.0.1:port, made without the
 * loop (a loopback connect completes into the listener's backlog); -1 with
 * errno set on failure. */
int RawConnect(int port);
/* Raise RLIMIT_NOFILE's soft limit to its hard limit; the new soft limit. */
uint64_t RaiseNofileToHard();
/* Open descriptors of this process (entries of /proc/self/fd). */
int CountOpenFds();
/* Whether ::1 can be bound here (a machine may have no IPv6 loopback). */
bool HaveIpv6Loopback(std::string *why);

/* A loopback listener that never answers a new SYN: listen(fd, 0) and one
 * connection parked in its accept queue, which is then full; Linux drops
 * further SYNs (tcp_abort_on_overflow=0), so a connect retransmits for
 * seconds. Make returns the port, or 0 with *why when it cannot be made
 * here (the test then skips with why). */
struct Blackhole {
    int listener = -1;
    std::vector<int> fillers;
    Blackhole() = default;
    Blackhole(const Blackhole &) = delete;
    Blackhole &operator=(const Blackhole &) = delete;
    ~Blackhole();
    int Make(std::string *why);
};
/* Declare Blackhole hole and int port, its port; skip the test when none
 * can be made here. */
#define RNT_NEED_BLACKHOLE(hole, port)                                                                                 \
    ::rnt::Blackhole hole;                                                                                             \
    std::string hole##_why;                                                                                            \
    const int port = hole.Make(&hole##_why);                                                                           \
    if (port == 0)                                                                                                     \
    GTEST_SKIP() << hole##_why

/* A listener and one connection through it, both ends on this thread:
 * cli came from rn_tcp_connect, acc from rn_server_accept. */
struct Pair {
    rn_server *srv = nullptr;
    rn_conn *cli = nullptr;
    rn_conn *acc = nullptr;
    int port = 0;
    Pair() = default;
    Pair(const Pair &) = delete;
    Pair &operator=(const Pair &) = delete;
    /* Closes what is still set (ClosePair): a test that closes one end
     * itself sets it to nullptr. */
    ~Pair();
};
/* Listen on host port 0, connect, accept. Works in a task and outside. */
::testing::AssertionResult MakePair(Pair *p, const char *host = "127.0.0.1");
/* Close whatever of p is still set, expecting 0 from each close (what
 * ~Pair does; a test calls it to close the pair before it ends). */
void ClosePair(Pair *p);

/* Accept n clients on s and echo each (read, write_all back) until it ends;
 * *served counts the echo handlers that finished. Spawns tasks. */
void SpawnEchoServer(rn_server *s, int n, int *served = nullptr);
/* Listen on 127.0.0.1, port 0, into *s and SpawnEchoServer(*s, n,
 * served); the port, or 0 (with a failure recorded) if the listen failed. */
int ListenAndEcho(Server *s, int n, int *served);
/* ListenAndEcho for one client, and that client connected into *c. */
::testing::AssertionResult ConnectToEcho(Server *s, int *served, Conn *c);

/* A thread whose loop runs backend (rn_set_backend before anything else,
 * then rn_backend_name must be it), then body. */
std::thread LoopThread(const char *backend, Fn body);

/* Whether backend can run on this machine, and why not. Probed once per
 * name in a throwaway thread, then cached. */
bool BackendUsable(const std::string &backend, std::string *why);

/* Base of every I/O suite: parameterised by backend name. SetUp skips (with
 * the reason) when the backend cannot run here. */
class BackendTest : public ::testing::TestWithParam<const char *> {
  protected:
    void SetUp() override;
    const char *backend() const { return GetParam(); }
    /* Run body on a fresh thread whose loop runs this test's backend, and
     * join it. A body stuck for longer than the watchdog aborts the process
     * with the test's name rather than hanging the suite. */
    void OnLoop(const Fn &body);
    /* OnLoop, with body run as a task by rn_run (expected to return 0). */
    void OnLoopRun(const Fn &body);
    /* OnLoopRun, with a connected Pair (MakePair, on 127.0.0.1) that body
     * uses; what body leaves open is closed after it. */
    void OnPair(const std::function<void(Pair &)> &body);
};

/* Re-executing this test binary, for a child that runs some of its own
 * tests: the program /proc/self/exe names, given args after argv[0]. A
 * cross build run under qemu-user, on a kernel with no binfmt_misc entry
 * for the target, cannot execve its own binary (ENOEXEC); the child then
 * runs it through the emulator the build runs its programs with
 * (CMAKE_CROSSCOMPILING_EMULATOR, compiled in). Everything is built here,
 * before a fork: Exec makes only system calls. */
class SelfExec {
  public:
    explicit SelfExec(const std::vector<std::string> &args);
    SelfExec(const SelfExec &) = delete;
    SelfExec &operator=(const SelfExec &) = delete;
    /* execve with envp; returns only when that failed (errno says why). */
    void Exec(char *const *envp) const;

  private:
    std::vector<std::string> words_; /* the emulator's, the binary's path, args */
    std::vector<char *> direct_;     /* "ringnet_tests", args */
    std::vector<char *> emulated_;   /* the emulator, the binary's path, args; empty natively */
};

/* Whether this binary was cross-built (its tests run under an emulator).
 * GoogleTest's "threadsafe" death tests re-execute argv[0] themselves,
 * which an emulated binary cannot do: they use "fast" there. */
bool CrossBuilt();

struct BackendParamName {
    std::string operator()(const ::testing::TestParamInfo<const char *> &info) const { return info.param; }
};

} // namespace rnt

/* Every I/O suite runs once per backend: .../io_uring and .../epoll. */
#define RNT_INSTANTIATE_BACKENDS(Suite)                                                                                \
    INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::Values("io_uring", "epoll"), ::rnt::BackendParamName())

#endif /* RINGNET_TESTS_HARNESS_H */
