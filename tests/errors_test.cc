/* errors_test.cc - rn_strerror's messages and rn_last_error's per-thread
 * detail. */
#include "harness.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>

using namespace rnt;

namespace {

std::string Lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return (char)tolower(ch); });
    return s;
}

TEST(ErrorsTest, StrerrorGivesADistinctNonEmptyMessageForEveryRnCode) {
    const int codes[] = {RN_EDNS, RN_ETLS, RN_ETLS_VERIFY, RN_EEOF, RN_ECLOSED, RN_EBACKEND, RN_ETLS_TRUNCATED};
    std::set<std::string> seen;
    for (int code : codes) {
        const char *msg = rn_strerror(code);
        ASSERT_NE(nullptr, msg) << code;
        EXPECT_NE('\0', msg[0]) << code;
        EXPECT_TRUE(seen.insert(msg).second) << code << " shares its message: " << msg;
    }
    /* None of them reads like an errno message. */
    for (int e : {ECONNREFUSED, ETIMEDOUT, EPIPE, EINVAL, ECONNRESET})
        EXPECT_EQ(0u, seen.count(rn_strerror(-e))) << rn_strerror(-e);
}

TEST(ErrorsTest, StrerrorDescribesErrnoCodes) {
    EXPECT_NE(std::string::npos, Lower(rn_strerror(-ECONNREFUSED)).find("refused"));
    EXPECT_NE(std::string::npos, Lower(rn_strerror(-ECONNRESET)).find("reset"));
    EXPECT_NE(std::string::npos, Lower(rn_strerror(-ETIMEDOUT)).find("timed out"));
    EXPECT_NE(std::string::npos, Lower(rn_strerror(-EPIPE)).find("pipe"));
    EXPECT_NE(std::string::npos, Lower(rn_strerror(-EINVAL)).find("invalid"));
    EXPECT_NE(std::string::npos, Lower(rn_strerror(-EADDRINUSE)).find("in use"));
    EXPECT_STRNE(rn_strerror(-ECONNREFUSED), rn_strerror(-ECONNRESET));
}

TEST(ErrorsTest, StrerrorOfAnUnknownCodeIsNotNull) {
    for (int code : {0, 1, 12345, -4095, -99999, -20000, -20999, INT_MIN, INT_MAX}) {
        const char *msg = rn_strerror(code);
        ASSERT_NE(nullptr, msg) << code;
    }
    EXPECT_NE('\0', rn_strerror(-99999)[0]);
}

TEST(ErrorsTest, StrerrorIsStable) {
    std::string first = rn_strerror(RN_ECLOSED);
    std::string from_thread;
    std::thread([&] { from_thread = rn_strerror(RN_ECLOSED); }).join();
    EXPECT_EQ(first, rn_strerror(RN_ECLOSED));
    EXPECT_EQ(first, from_thread);
}

TEST(ErrorsTest, LastErrorIsEmptyOnAThreadThatHasNotFailed) {
    std::string err = "unset";
    std::thread([&] { err = rn_last_error(); }).join();
    EXPECT_EQ("", err);
}

class ErrorsBackendTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(ErrorsBackendTest);

TEST_P(ErrorsBackendTest, LastErrorIsThreadLocal) {
    /* Thread A fails a connect; thread B, meanwhile, sees nothing of it, then
     * fails differently; A's detail is still its own. */
    std::mutex mu;
    std::condition_variable cv;
    int stage = 0;
    auto wait_for = [&](int s) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stage >= s; });
    };
    auto advance = [&](int s) {
        std::lock_guard<std::mutex> lock(mu);
        stage = s;
        cv.notify_all();
    };
    std::string a_first, a_later, b_before, b_after;
    std::thread a = LoopThread(backend(), [&] {
        rn_conn *c = nullptr;
        EXPECT_EQ(-EINVAL, rn_tcp_connect(&c, "127.0.0.1", 0));
        a_first = rn_last_error();
        advance(1);
        wait_for(2);
        a_later = rn_last_error();
    });
    std::thread b = LoopThread(backend(), [&] {
        wait_for(1);
        b_before = rn_last_error();
        int rc = 1;
        char out[64];
        rc = rn_resolve("no-such-host.invalid", out, sizeof out);
        EXPECT_EQ(RN_EDNS, rc);
        b_after = rn_last_error();
        advance(2);
    });
    a.join();
    b.join();
    EXPECT_FALSE(a_first.empty());
    EXPECT_EQ("", b_before) << "thread B sees thread A's error";
    EXPECT_FALSE(b_after.empty());
    EXPECT_NE(a_first, b_after);
    EXPECT_EQ(a_first, a_later) << "thread B's failure replaced thread A's error";
}

/* A call that fails in an argument check keeps that check's sentence; an
 * I/O failure gets the call's own; and when another task fails while this
 * one is blocked, this call's sentence is still the one it returns with. */
TEST_P(ErrorsBackendTest, EachFailedCallLeavesItsOwnMostSpecificSentence) {
    OnPair([&](Pair &p) {
        EXPECT_EQ(-EINVAL, rn_conn_write(p.cli, nullptr, 5));
        EXPECT_STREQ("write: buf is NULL", rn_last_error());
        EXPECT_EQ(-EINVAL, rn_conn_write_all(p.cli, nullptr, 5));
        EXPECT_STREQ("write_all: buf is NULL", rn_last_error());
        char buf[8];
        EXPECT_EQ(-EINVAL, rn_conn_read(p.cli, nullptr, 8));
        EXPECT_STREQ("read: buf is NULL", rn_last_error());
        /* A read blocked past its deadline while another task fails a
         * connect meanwhile: the read's sentence is the read's. */
        rn_conn_set_read_deadline(p.acc, 100);
        ssize_t r = 1;
        std::string after_read;
        bool done = false;
        RNT_SPAWN([&] {
            r = rn_conn_read(p.acc, buf, sizeof buf);
            after_read = rn_last_error();
            done = true;
        });
        rn_sleep(20);
        rn_conn *c = nullptr;
        EXPECT_EQ(-EINVAL, rn_tcp_connect(&c, "127.0.0.1", 0)); /* writes a sentence while the read waits */
        ASSERT_TRUE(WaitUntil([&] { return done; }));
        EXPECT_EQ(-ETIMEDOUT, r);
        EXPECT_NE(std::string::npos, after_read.find("read on ")) << after_read;
        EXPECT_NE(std::string::npos, after_read.find("deadline passed")) << after_read;
    });
}

/* What a caller or a peer sent is quoted in sentences, never a control
 * byte of it: a log line cannot be split or recoloured through them. */
TEST_P(ErrorsBackendTest, SentencesCarryNoControlBytesFromTheInput) {
    OnLoopRun([&] {
        char out[64];
        const char *hostile = "evil\nname\x1b[31m\r\x7f.example";
        int rc = rn_resolve(hostile, out, sizeof out);
        EXPECT_LT(rc, 0);
        std::string msg = rn_last_error();
        EXPECT_FALSE(msg.empty());
        for (unsigned char ch : msg)
            EXPECT_FALSE(ch < 0x20 || ch == 0x7f) << "control byte " << (int)ch << " in: " << msg;
        EXPECT_NE(std::string::npos, msg.find("evil?name?[31m??.example")) << msg;
        /* *out is NULL after every failure, the argument checks too. */
        rn_conn *c = reinterpret_cast<rn_conn *>(&rc);
        EXPECT_EQ(-EINVAL, rn_tcp_connect(&c, "", 80));
        EXPECT_EQ(nullptr, c);
        c = reinterpret_cast<rn_conn *>(&rc);
        EXPECT_EQ(-EINVAL, rn_tcp_connect(&c, nullptr, 80));
        EXPECT_EQ(nullptr, c);
    });
}

} // namespace
