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
#include <string>
#include <thread>

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

/* Poll cond with rn_sleep(1) between tries (so the loop keeps running the
 * other tasks) until it holds or timeout_ms passes; whether it held. */
bool WaitUntil(const std::function<bool()> &cond, int64_t timeout_ms = 5000);

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

/* A listener and one connection through it, both ends on this thread:
 * cli came from rn_tcp_connect, acc from rn_server_accept. */
struct Pair {
    rn_server *srv = nullptr;
    rn_conn *cli = nullptr;
    rn_conn *acc = nullptr;
    int port = 0;
};
/* Listen on host port 0, connect, accept. Works in a task and outside. */
::testing::AssertionResult MakePair(Pair *p, const char *host = "127.0.0.1");
/* Close whatever of p is still set, expecting 0 from each close. */
void ClosePair(Pair *p);

/* Accept n clients on s and echo each (read, write_all back) until it ends;
 * *served counts the echo handlers that finished. Spawns tasks. */
void SpawnEchoServer(rn_server *s, int n, int *served = nullptr);

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
};

struct BackendParamName {
    std::string operator()(const ::testing::TestParamInfo<const char *> &info) const { return info.param; }
};

} // namespace rnt

/* Every I/O suite runs once per backend: .../io_uring and .../epoll. */
#define RNT_INSTANTIATE_BACKENDS(Suite)                                                                                \
    INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::Values("io_uring", "epoll"), ::rnt::BackendParamName())

#endif /* RINGNET_TESTS_HARNESS_H */
