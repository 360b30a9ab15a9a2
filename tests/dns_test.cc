/* dns_test.cc - rn_resolve: names through /etc/hosts, numeric addresses,
 * its errors, and that a resolve parks only its own task. */
#include "harness.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

using namespace rnt;

namespace {

class DnsTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(DnsTest);

std::string Resolve(const char *host, int *rc) {
    char out[64];
    memset(out, 'Z', sizeof out);
    *rc = rn_resolve(host, out, sizeof out);
    return *rc == 0 ? std::string(out) : std::string();
}

TEST_P(DnsTest, ResolveLocalhostGives127001) {
    OnLoopRun([&] {
        int rc = 1;
        EXPECT_EQ("127.0.0.1", Resolve("localhost", &rc));
        EXPECT_EQ(0, rc) << rn_last_error();
    });
}

TEST_P(DnsTest, ResolveOutsideAnyTaskWorks) {
    OnLoop([&] {
        int rc = 1;
        EXPECT_EQ("127.0.0.1", Resolve("localhost", &rc));
        EXPECT_EQ(0, rc) << rn_last_error();
    });
}

TEST_P(DnsTest, NumericIpv4AddressesPassThrough) {
    OnLoopRun([&] {
        for (const char *ip : {"127.0.0.1", "10.1.2.3", "192.0.2.200", "255.255.255.255"}) {
            int rc = 1;
            EXPECT_EQ(ip, Resolve(ip, &rc));
            EXPECT_EQ(0, rc) << ip << ": " << rn_last_error();
        }
    });
}

TEST_P(DnsTest, NumericIpv6AddressesPassThrough) {
    OnLoopRun([&] {
        for (const char *ip : {"::1", "2001:db8::1", "fe80::1"}) {
            int rc = 1;
            EXPECT_EQ(ip, Resolve(ip, &rc));
            EXPECT_EQ(0, rc) << ip << ": " << rn_last_error();
        }
    });
}

/* The names of /etc/hosts that have exactly one IPv4 address there, with it. */
std::map<std::string, std::string> HostsFileIpv4Names() {
    std::map<std::string, std::set<std::string>> all;
    std::ifstream f("/etc/hosts");
    std::string line;
    while (std::getline(f, line)) {
        line = line.substr(0, line.find('#'));
        std::istringstream words(line);
        std::string addr, name;
        if (!(words >> addr))
            continue;
        struct in_addr a4;
        if (inet_pton(AF_INET, addr.c_str(), &a4) != 1)
            continue;
        while (words >> name)
            all[name].insert(addr);
    }
    std::map<std::string, std::string> one;
    for (const auto &kv : all)
        if (kv.second.size() == 1)
            one[kv.first] = *kv.second.begin();
    return one;
}

TEST_P(DnsTest, EtcHostsIsHonoured) {
    auto names = HostsFileIpv4Names();
    if (names.empty())
        GTEST_SKIP() << "/etc/hosts names no IPv4 address here";
    OnLoopRun([&] {
        for (const auto &kv : names) {
            int rc = 1;
            EXPECT_EQ(kv.second, Resolve(kv.first.c_str(), &rc)) << kv.first;
            EXPECT_EQ(0, rc) << kv.first << ": " << rn_last_error();
        }
    });
}

TEST_P(DnsTest, UnknownNameIsEdnsAndTheLastErrorNamesIt) {
    OnLoopRun([&] {
        int rc = 1;
        Resolve("no-such-host.invalid", &rc);
        EXPECT_EQ(RN_EDNS, rc);
        std::string err = rn_last_error();
        EXPECT_NE(std::string::npos, err.find("no-such-host.invalid")) << err;
    });
}

TEST_P(DnsTest, TooSmallOutputIsEnospc) {
    OnLoopRun([&] {
        char out[16];
        EXPECT_EQ(-ENOSPC, rn_resolve("127.0.0.1", out, 4));
        /* "127.0.0.1" needs 10 bytes with its terminating NUL. */
        EXPECT_EQ(-ENOSPC, rn_resolve("127.0.0.1", out, 9));
        EXPECT_EQ(0, rn_resolve("127.0.0.1", out, 10)) << rn_last_error();
        EXPECT_STREQ("127.0.0.1", out);
        EXPECT_EQ(-ENOSPC, rn_resolve("localhost", out, 4));
    });
}

TEST_P(DnsTest, NullArgumentsAreEinval) {
    OnLoopRun([&] {
        char out[64];
        EXPECT_EQ(-EINVAL, rn_resolve(nullptr, out, sizeof out));
        EXPECT_EQ(-EINVAL, rn_resolve("localhost", nullptr, 64));
        EXPECT_NE('\0', rn_last_error()[0]);
        int zero = rn_resolve("localhost", out, 0);
        EXPECT_TRUE(zero == -EINVAL || zero == -ENOSPC) << zero;
    });
}

/* A lookup that returned leaves no descriptor behind: its pipe is closed
 * before the call returns, not whenever the resolver thread lets go. */
TEST_P(DnsTest, AResolveThatReturnedLeavesNoDescriptorOpen) {
    OnLoopRun([&] {
        char out[64];
        ASSERT_EQ(0, rn_resolve("localhost", out, sizeof out)) << rn_last_error(); /* threads started */
        rn_sleep(20);
        int base = CountOpenFds();
        for (int i = 0; i < 100; i++) {
            ASSERT_EQ(0, rn_resolve("localhost", out, sizeof out)) << rn_last_error();
            ASSERT_EQ(base, CountOpenFds()) << "after lookup " << i;
        }
    });
}

TEST_P(DnsTest, ResolveParksOnlyItsTaskWhileOtherTasksKeepRunning) {
    OnLoopRun([&] {
        long ticks = 0, ticks_during = 0;
        bool resolving = true, ticker_done = false;
        int failures = 0;
        RNT_SPAWN([&] {
            /* Ticks while the resolver works, and sleeps now and then so the
             * loop also waits on the kernel. */
            while (resolving) {
                ticks++;
                if (ticks % 64 == 0)
                    rn_sleep(1);
                else
                    rn_yield();
            }
            ticker_done = true;
        });
        RNT_SPAWN([&] {
            /* At least 20 lookups, and more until the ticker has run during
             * one (up to 500): a lookup the thread answers before the call
             * even parks (a loaded machine, Valgrind's one-thread-at-a-time
             * scheduling) lets nothing else run, and that is fine; a lookup
             * that blocked the loop would never let the ticker in. */
            for (int i = 0; i < 500 && (i < 20 || ticks_during == 0); i++) {
                int rc = 1;
                long before = ticks;
                if (Resolve("localhost", &rc) != "127.0.0.1")
                    failures++;
                ticks_during += ticks - before;
            }
            resolving = false;
        });
        EXPECT_TRUE(WaitUntil([&] { return !resolving; }));
        /* The ticker reads these locals: they must outlive it. */
        EXPECT_TRUE(WaitUntil([&] { return ticker_done; }));
        EXPECT_EQ(0, failures);
        EXPECT_GT(ticks, 0);
        EXPECT_GT(ticks_during, 0) << "no other task ran while a resolve was in progress";
    });
}

} // namespace

namespace {

class DnsHostileTest : public rnt::BackendTest {};
RNT_INSTANTIATE_BACKENDS(DnsHostileTest);

/* Names no resolver should be asked about, or that it must refuse: each is
 * RN_EDNS with a sentence, from rn_resolve and rn_tcp_connect alike, and the
 * loop goes on working afterwards. */
TEST_P(DnsHostileTest, OverlongAndMalformedNamesAreEdnsAndTheLoopGoesOn) {
    OnLoopRun([&] {
        const std::string names[] = {
            std::string(300, 'a'),             /* longer than DNS allows */
            std::string(70, 'b') + ".invalid", /* a label over 63 bytes */
            "exa mple.invalid",                /* a space */
            "bad\x01name.invalid",             /* a control byte */
            "..",                              /* empty labels */
        };
        for (const std::string &n : names) {
            char out[64];
            int rc = rn_resolve(n.c_str(), out, sizeof out);
            EXPECT_EQ(RN_EDNS, rc) << "resolve of a " << n.size() << "-byte name: " << rn_strerror(rc);
            EXPECT_STRNE("", rn_last_error());
            rn_conn *c = nullptr;
            rc = rn_tcp_connect(&c, n.c_str(), 80);
            EXPECT_EQ(RN_EDNS, rc) << "connect to a " << n.size() << "-byte name: " << rn_strerror(rc);
            EXPECT_EQ(nullptr, c);
        }
        char out[64];
        EXPECT_EQ(0, rn_resolve("localhost", out, sizeof out)) << rn_last_error();
        EXPECT_STREQ("127.0.0.1", out);
    });
}

} // namespace
