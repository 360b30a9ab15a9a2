/* stream_read_test.cc - reads on connections that switch between
 * request/response traffic (every read returns fewer bytes than asked) and
 * bulk streams, black-box through the public API. Whatever the engine does
 * underneath (one recv per read, or a standing multishot recv into shared
 * provided buffers queued per connection), these must hold: every byte
 * arrives once and in order whatever mix of read, read_lent and read_exact
 * takes it and at whatever size; a reader that stops reading makes the
 * writer stop (TCP backpressure, not unbounded buffering in the library);
 * many connections with unread data share the buffers without mixing
 * bytes; lent bytes stay put until the next read; deadlines, close, end of
 * stream and reset behave exactly as for a plain one-shot read, also with
 * bytes queued in front of them; and a STARTTLS upgrade still sees bytes
 * injected after the server's go-ahead. */
#include "harness.h"
#include "tls_helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace rnt;

namespace {

class StreamReadTest : public BackendTest {};
RNT_INSTANTIATE_BACKENDS(StreamReadTest);

std::string Err(int64_t rc) { return std::to_string(rc) + " (" + rn_strerror((int)rc) + "): " + rn_last_error(); }

/* A small deterministic generator (xorshift64*): every run sees the same
 * sizes and the same mix of calls. */
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
    uint64_t Next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
    /* Uniform in lo..hi, both included. */
    size_t Range(size_t lo, size_t hi) { return lo + (size_t)(Next() % (uint64_t)(hi - lo + 1)); }
};

/* The two directions of a connection, each one pattern stream: the offset
 * of the next byte either way. */
constexpr uint32_t kUpSeed = 11;   /* client -> server */
constexpr uint32_t kDownSeed = 22; /* server -> client */
struct Streams {
    uint64_t up = 0;
    uint64_t down = 0;
};

/* How the answering side reads the requests. */
enum class ReadKind { kMixed, kPlain, kLent };

/* Request/response on one connection: the calling task is the client on
 * cli and sends `rounds` requests of 1..3000 bytes (pattern kUpSeed,
 * continuing at s->up), each only once the previous answer is in; a
 * spawned task answers on srv: for each read that brought n request bytes
 * it checks them and writes n bytes of answer (pattern kDownSeed). Both
 * sides read with buffers far larger than a message, so every read returns
 * fewer bytes than asked. Leaves 10 s read deadlines on both. */
::testing::AssertionResult PingPong(rn_conn *cli, rn_conn *srv, int rounds, uint64_t seed, Streams *s,
                                    ReadKind kind = ReadKind::kMixed) {
    Rng rng(seed);
    std::vector<size_t> sizes((size_t)rounds);
    uint64_t total = 0;
    for (auto &z : sizes) {
        z = rng.Range(1, 3000);
        total += z;
    }
    const uint64_t up0 = s->up, down0 = s->down;
    /* A broken engine fails the test rather than hanging it; the deadline
     * stays for the rest of the test (which sets its own where it counts). */
    rn_conn_set_read_deadline(cli, 10000);
    rn_conn_set_read_deadline(srv, 10000);
    bool done = false;
    std::string srv_err;
    RNT_SPAWN([&] {
        Rng pick(seed ^ 0xABCDEFull);
        std::vector<char> buf(65536);
        uint64_t got = 0;
        while (got < total) {
            const char *d = buf.data();
            ssize_t n;
            ReadKind k = kind;
            if (k == ReadKind::kMixed)
                k = pick.Range(0, 2) == 0 ? ReadKind::kLent : ReadKind::kPlain;
            if (k == ReadKind::kLent) {
                const void *dv = nullptr;
                n = rn_conn_read_lent(srv, &dv);
                d = static_cast<const char *>(dv);
            } else {
                n = rn_conn_read(srv, buf.data(), pick.Range(0, 1) ? buf.size() : 16384);
            }
            if (n <= 0) {
                srv_err = "server read after " + std::to_string(got) + " of " + std::to_string(total) +
                          " request bytes: " + Err(n);
                break;
            }
            int64_t at = FirstPatternMismatch(d, (size_t)n, up0 + got, kUpSeed);
            if (at >= 0) {
                srv_err = "request byte at stream offset " + std::to_string(up0 + got + (uint64_t)at) + " is wrong";
                break;
            }
            /* The answer goes out while lent bytes are still held. */
            std::string resp = Pattern((size_t)n, kDownSeed, down0 + got);
            int w = rn_conn_write_all(srv, resp.data(), resp.size());
            if (w != 0) {
                srv_err = "server write: " + Err(w);
                break;
            }
            got += (uint64_t)n;
        }
        if (!srv_err.empty())
            rn_conn_shutdown_write(srv); /* the client's read ends too */
        done = true;
    });
    std::string cli_err;
    std::vector<char> buf(65536);
    for (size_t i = 0; i < sizes.size() && cli_err.empty(); i++) {
        std::string req = Pattern(sizes[i], kUpSeed, s->up);
        int w = rn_conn_write_all(cli, req.data(), req.size());
        if (w != 0) {
            cli_err = "client write of request " + std::to_string(i) + ": " + Err(w);
            break;
        }
        s->up += sizes[i];
        size_t rgot = 0;
        while (rgot < sizes[i]) {
            ssize_t n = rn_conn_read(cli, buf.data(), buf.size());
            if (n <= 0) {
                cli_err = "client read of answer " + std::to_string(i) + ": " + Err(n);
                break;
            }
            if (rgot + (size_t)n > sizes[i]) {
                cli_err = "answer " + std::to_string(i) + " is longer than its request";
                break;
            }
            int64_t at = FirstPatternMismatch(buf.data(), (size_t)n, s->down, kDownSeed);
            if (at >= 0) {
                cli_err = "answer byte at stream offset " + std::to_string(s->down + (uint64_t)at) + " is wrong";
                break;
            }
            s->down += (uint64_t)n;
            rgot += (size_t)n;
        }
    }
    if (!cli_err.empty())
        rn_conn_shutdown_write(cli); /* the answering task ends at the end of stream */
    if (!WaitUntil([&] { return done; }, 20000))
        return ::testing::AssertionFailure() << "the answering task never finished; " << cli_err;
    if (!cli_err.empty() || !srv_err.empty())
        return ::testing::AssertionFailure() << cli_err << (cli_err.empty() ? "" : "; ") << srv_err;
    if (s->up != up0 + total || s->down != down0 + total)
        return ::testing::AssertionFailure() << "offsets drifted";
    return ::testing::AssertionSuccess();
}

/* Read exactly n bytes of pattern `seed` from offset *off with plain reads
 * of at most max bytes each; checks every byte. */
::testing::AssertionResult ReadPattern(rn_conn *c, uint64_t n, size_t max, uint32_t seed, uint64_t *off) {
    std::vector<char> buf(max);
    uint64_t end = *off + n;
    while (*off < end) {
        size_t want = (size_t)std::min<uint64_t>(max, end - *off);
        ssize_t r = rn_conn_read(c, buf.data(), want);
        if (r <= 0)
            return ::testing::AssertionFailure() << "read at offset " << *off << ": " << Err(r);
        if ((size_t)r > want)
            return ::testing::AssertionFailure() << "read returned " << r << " > max " << want;
        int64_t at = FirstPatternMismatch(buf.data(), (size_t)r, *off, seed);
        if (at >= 0)
            return ::testing::AssertionFailure() << "wrong byte at offset " << *off + (uint64_t)at;
        *off += (uint64_t)r;
    }
    return ::testing::AssertionSuccess();
}

/* The same with lent reads; the reader must know no byte after end is sent
 * yet (a lent read cannot be bounded). */
::testing::AssertionResult ReadPatternLent(rn_conn *c, uint64_t n, uint32_t seed, uint64_t *off) {
    uint64_t end = *off + n;
    while (*off < end) {
        const void *d = nullptr;
        ssize_t r = rn_conn_read_lent(c, &d);
        if (r <= 0)
            return ::testing::AssertionFailure() << "read_lent at offset " << *off << ": " << Err(r);
        if (r > RN_LENT_MAX || d == nullptr)
            return ::testing::AssertionFailure() << "read_lent returned " << r << " bytes at " << d;
        if (*off + (uint64_t)r > end)
            return ::testing::AssertionFailure()
                   << "read_lent went " << *off + (uint64_t)r - end << " bytes past what was sent";
        int64_t at = FirstPatternMismatch(d, (size_t)r, *off, seed);
        if (at >= 0)
            return ::testing::AssertionFailure() << "wrong lent byte at offset " << *off + (uint64_t)at;
        *off += (uint64_t)r;
    }
    return ::testing::AssertionSuccess();
}

/* One number from a /proc/sys file of three ("min default max"). */
uint64_t SysctlField(const char *path, int field) {
    std::ifstream f(path);
    uint64_t v[3] = {0, 0, 0};
    f >> v[0] >> v[1] >> v[2];
    return v[field];
}

/* ---- 1. request/response, then bulk, then request/response -------------------------------- */

TEST_P(StreamReadTest, PingPongThenEightMebibytesAtThreeReadSizesThenPingPongAgainEveryByteInOrder) {
    OnPair([&](Pair &p) {
        Streams s;
        ASSERT_TRUE(PingPong(p.cli, p.acc, 2000, 1, &s));

        /* Bulk: the client streams 8 MiB; the server reads the first 3 MiB
         * with 64 KiB reads, the next 1 MiB with 100-byte reads (many per
         * buffer the engine may hold, and across them), the rest lent. */
        const uint64_t kBulk = 8u << 20;
        const std::string bulk = Pattern((size_t)kBulk, kUpSeed, s.up);
        int wrc = 1;
        bool wdone = false;
        RNT_SPAWN([&] {
            wrc = rn_conn_write_all(p.cli, bulk.data(), bulk.size());
            wdone = true;
        });
        uint64_t off = s.up;
        EXPECT_TRUE(ReadPattern(p.acc, 3u << 20, 65536, kUpSeed, &off));
        EXPECT_TRUE(ReadPattern(p.acc, 1u << 20, 100, kUpSeed, &off));
        EXPECT_TRUE(ReadPatternLent(p.acc, s.up + kBulk - off, kUpSeed, &off));
        ASSERT_TRUE(WaitUntil([&] { return wdone; }));
        ASSERT_EQ(0, wrc) << Err(wrc);
        ASSERT_EQ(s.up + kBulk, off);
        s.up = off;

        /* Back to small messages: nothing of the bulk is left over or lost. */
        ASSERT_TRUE(PingPong(p.cli, p.acc, 500, 2, &s));
        /* The other way round too: the server streams 2 MiB, the client
         * reads it at 1000 bytes a time, then lent. */
        const std::string down = Pattern(2u << 20, kDownSeed, s.down);
        wdone = false;
        RNT_SPAWN([&] {
            wrc = rn_conn_write_all(p.acc, down.data(), down.size());
            wdone = true;
        });
        uint64_t doff = s.down;
        EXPECT_TRUE(ReadPattern(p.cli, 1u << 20, 1000, kDownSeed, &doff));
        EXPECT_TRUE(ReadPatternLent(p.cli, s.down + down.size() - doff, kDownSeed, &doff));
        ASSERT_TRUE(WaitUntil([&] { return wdone; }));
        ASSERT_EQ(0, wrc) << Err(wrc);
        s.down = doff;
        ASSERT_TRUE(PingPong(p.cli, p.acc, 500, 3, &s, ReadKind::kLent));

        /* End of stream, and it stays so. */
        ASSERT_EQ(0, rn_conn_shutdown_write(p.cli));
        char c;
        EXPECT_EQ(0, rn_conn_read(p.acc, &c, 1));
        EXPECT_EQ(0, rn_conn_read(p.acc, &c, 1));
    });
}

/* ---- 2. backpressure ------------------------------------------------------------------------ */

constexpr size_t kFloodCap = 32u << 20;

/* The most a reader that reads nothing can let a writer push: both kernel
 * buffers at their sysctl maximum, plus 4 MiB for whatever the library may
 * hold (a few 16 KiB buffers per connection is the design). */
uint64_t BackpressureBound() {
    uint64_t rmem = SysctlField("/proc/sys/net/ipv4/tcp_rmem", 2);
    uint64_t wmem = SysctlField("/proc/sys/net/ipv4/tcp_wmem", 2);
    if (rmem == 0)
        rmem = 6u << 20;
    if (wmem == 0)
        wmem = 4u << 20;
    return std::min<uint64_t>(rmem + wmem + (4u << 20), kFloodCap);
}

const std::string &FloodData() {
    static const std::string data = Pattern(kFloodCap, 33);
    return data;
}

/* The client writes what it can under a write deadline of first_ms to a
 * server that reads nothing (then, with second_ms > 0, once more: nobody
 * reads meanwhile, so that moves little); the writer must stop short, and
 * the server then reads exactly what was written, in order, then the end.
 * With held_lent the server holds lent bytes of a last request through the
 * flood, and they must stay put. Returns the bytes the first write took. */
size_t FloodAndDrain(rn_conn *cli, rn_conn *srv, int first_ms, int second_ms, bool held_lent, const char *label) {
    SCOPED_TRACE(label);
    const std::string &data = FloodData();
    const void *held = nullptr;
    ssize_t held_n = 0;
    std::string rest; /* what the lent read did not take of the request */
    if (held_lent) {
        std::string m = Pattern(1500, 44);
        EXPECT_EQ(0, rn_conn_write_all(cli, m.data(), m.size()));
        held_n = rn_conn_read_lent(srv, &held);
        if (held_n <= 0) {
            ADD_FAILURE() << Err(held_n);
            return 0;
        }
        EXPECT_EQ(-1, FirstPatternMismatch(held, (size_t)held_n, 0, 44));
        rest = m.substr((size_t)held_n);
    }
    rn_conn_set_write_deadline(cli, first_ms);
    size_t w1 = 0, w2 = 0;
    int rc = 0;
    int64_t took = MsTaken([&] { rc = rn_conn_write_all_n(cli, data.data(), data.size(), &w1); });
    EXPECT_EQ(-ETIMEDOUT, rc) << Err(rc) << " after " << w1 << " bytes: the writer was never held back";
    EXPECT_GE(took, first_ms - 10);
    EXPECT_GT(w1, 0u);
    EXPECT_LT(w1, BackpressureBound()) << "the writer was never held back";
    if (second_ms > 0) {
        rn_conn_set_write_deadline(cli, second_ms);
        rc = rn_conn_write_all_n(cli, data.data() + w1, data.size() - w1, &w2);
        EXPECT_EQ(-ETIMEDOUT, rc) << Err(rc);
        EXPECT_LT(w2, (size_t)(2u << 20)) << "the second write went on although nobody read";
    }
    if (held_lent)
        EXPECT_EQ(-1, FirstPatternMismatch(held, (size_t)held_n, 0, 44)) << "held lent bytes changed";
    rn_conn_set_write_deadline(cli, 0);
    EXPECT_EQ(0, rn_conn_shutdown_write(cli));
    std::vector<char> buf(65536);
    size_t rgot = 0;
    while (rgot < rest.size()) {
        ssize_t n = rn_conn_read(srv, buf.data(), rest.size() - rgot);
        if (n <= 0) {
            ADD_FAILURE() << Err(n);
            return w1;
        }
        EXPECT_EQ(0, memcmp(buf.data(), rest.data() + rgot, (size_t)n));
        rgot += (size_t)n;
    }
    uint64_t off = 0;
    EXPECT_TRUE(ReadPattern(srv, w1 + w2, 65536, 33, &off));
    char c;
    EXPECT_EQ(0, rn_conn_read(srv, &c, 1)) << "bytes past the " << w1 + w2 << " written";
    printf("[ringnet] %s: writer held back after %zu + %zu bytes\n", label, w1, w2);
    return w1;
}

TEST_P(StreamReadTest, AReaderThatReadsNothingHoldsTheWriterBackAndThenGetsExactlyWhatWasWritten) {
    (void)FloodData();
    OnLoopRun([&] {
        size_t fresh = 0, after = 0, lent = 0;
        {
            /* The baseline: what the kernel buffers take on a connection
             * that never read small. */
            Pair p;
            ASSERT_TRUE(MakePair(&p));
            fresh = FloodAndDrain(p.cli, p.acc, 100, 0, false, "fresh connection");
            ClosePair(&p);
        }
        {
            Pair p;
            ASSERT_TRUE(MakePair(&p));
            Streams s;
            ASSERT_TRUE(PingPong(p.cli, p.acc, 200, 4, &s));
            after = FloodAndDrain(p.cli, p.acc, 300, 100, false, "after ping-pong");
            ClosePair(&p);
        }
        {
            Pair p;
            ASSERT_TRUE(MakePair(&p));
            Streams s;
            ASSERT_TRUE(PingPong(p.cli, p.acc, 200, 5, &s, ReadKind::kLent));
            lent = FloodAndDrain(p.cli, p.acc, 100, 0, true, "after ping-pong, lent bytes held");
            ClosePair(&p);
        }
        /* Bounded, not nothing: on io_uring, before the cancel that the
         * per-connection cap sends has landed, the kernel may fill up to
         * about 64 stream buffers (~1 MiB) for the connection in one
         * wake-up (it retries a multishot recv up to 32 times), and having
         * read that fast grows the socket's receive buffer (TCP
         * autotuning, up to tcp_rmem's max) as it would for any fast
         * reader. The second write in FloodAndDrain is the strict half: a
         * reader that has stopped lets nothing more through. */
        uint64_t slack = (2u << 20) + SysctlField("/proc/sys/net/ipv4/tcp_rmem", 2);
        EXPECT_LT(after, fresh + slack) << "fresh " << fresh;
        EXPECT_LT(lent, fresh + slack) << "fresh " << fresh;
    });
}

/* ---- 3. many connections with unread data -------------------------------------------------- */

constexpr int kManyConns = 150;

struct Many {
    rn_server *srv = nullptr;
    std::vector<rn_conn *> cli, acc;
    std::vector<size_t> len;
};

/* kManyConns pairs, each put in request/response mode by three round
 * trips with the server side parked in its read, then sent ~40 KiB at once
 * (6 MiB in all: far more than 64 buffers of 16 KiB) in pieces of up to
 * 8000 bytes, none read yet. */
void SetUpMany(Many *m, uint32_t seed_base) {
    ASSERT_EQ(0, rn_tcp_listen(&m->srv, "127.0.0.1", 0)) << rn_last_error();
    int port = PortOf(rn_server_addr(m->srv));
    m->cli.assign(kManyConns, nullptr);
    m->acc.assign(kManyConns, nullptr);
    m->len.assign(kManyConns, 0);
    for (int i = 0; i < kManyConns; i++) {
        ASSERT_EQ(0, rn_tcp_connect(&m->cli[i], "127.0.0.1", port)) << rn_last_error();
        ASSERT_EQ(0, rn_server_accept(m->srv, &m->acc[i])) << rn_last_error();
    }
    int answered = 0, bad = 0;
    for (int i = 0; i < kManyConns; i++) {
        RNT_SPAWN([&, i] {
            char buf[4096];
            for (int r = 0; r < 3; r++) {
                ssize_t n = rn_conn_read(m->acc[i], buf, sizeof buf);
                if (n != 10 || memcmp(buf, "ping-ping!", 10) != 0 || rn_conn_write_all(m->acc[i], "pong!", 5) != 0) {
                    bad++;
                    break;
                }
            }
            answered++;
        });
    }
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < kManyConns; i++)
            ASSERT_EQ(0, rn_conn_write_all(m->cli[i], "ping-ping!", 10));
        for (int i = 0; i < kManyConns; i++) {
            char buf[16];
            ASSERT_EQ(0, rn_conn_read_exact(m->cli[i], buf, 5)) << Err(-1);
            ASSERT_EQ(0, memcmp(buf, "pong!", 5));
        }
    }
    ASSERT_TRUE(WaitUntil([&] { return answered == kManyConns; }));
    ASSERT_EQ(0, bad);
    Rng rng(seed_base);
    for (int i = 0; i < kManyConns; i++) {
        m->len[i] = 40000 + rng.Range(0, 3000);
        std::string d = Pattern(m->len[i], seed_base + (uint32_t)i);
        size_t off = 0;
        while (off < d.size()) {
            size_t k = std::min(d.size() - off, rng.Range(1, 8000));
            ASSERT_EQ(0, rn_conn_write_all(m->cli[i], d.data() + off, k)) << rn_last_error();
            off += k;
        }
    }
    /* Let it all land (in the kernel, or in the library's buffers). */
    rn_sleep(30);
}

/* Nothing extra on any connection, and each still carries a message:
 * a marker sent now must be the next thing read, all of it. */
void CheckManyStillClean(Many *m) {
    for (int i = 0; i < kManyConns; i++)
        ASSERT_EQ(0, rn_conn_write_all(m->cli[i], "marker-", 7));
    for (int i = 0; i < kManyConns; i++) {
        char buf[65536];
        size_t got = 0;
        while (got < 7) {
            ssize_t n = rn_conn_read(m->acc[i], buf + got, sizeof buf - got);
            ASSERT_GT(n, 0) << "conn " << i << ": " << Err(n);
            got += (size_t)n;
        }
        ASSERT_EQ(7u, got) << "conn " << i << ": bytes left over before the marker";
        ASSERT_EQ(0, memcmp(buf, "marker-", 7)) << "conn " << i;
    }
}

void TearDownMany(Many *m) {
    for (int i = 0; i < (int)m->cli.size(); i++) {
        if (m->cli[i])
            EXPECT_EQ(0, rn_conn_close(m->cli[i]));
        if (m->acc[i])
            EXPECT_EQ(0, rn_conn_close(m->acc[i]));
    }
    if (m->srv)
        EXPECT_EQ(0, rn_server_close(m->srv));
}

std::vector<int> Scrambled(int n, uint64_t seed) {
    std::vector<int> order((size_t)n);
    for (int i = 0; i < n; i++)
        order[(size_t)i] = i;
    Rng rng(seed);
    for (int i = n - 1; i > 0; i--)
        std::swap(order[(size_t)i], order[rng.Range(0, (size_t)i)]);
    return order;
}

TEST_P(StreamReadTest, ManyConnectionsWithUnreadDataReadInScrambledOrderEachGetItsOwnBytes) {
    int fds0 = CountOpenFds();
    OnLoopRun([&] {
        Many m;
        SetUpMany(&m, 1000);
        if (!HasFatalFailure()) {
            Rng rng(77);
            for (int i : Scrambled(kManyConns, 5)) {
                uint64_t off = 0;
                /* Sizes from 1 byte to more than a 16 KiB buffer. */
                std::vector<char> buf(20000);
                while (off < m.len[(size_t)i]) {
                    size_t max = std::min<size_t>(rng.Range(1, 20000), m.len[(size_t)i] - (size_t)off);
                    ssize_t n = rn_conn_read(m.acc[(size_t)i], buf.data(), max);
                    ASSERT_GT(n, 0) << "conn " << i << " at " << off << ": " << Err(n);
                    ASSERT_LE((size_t)n, max);
                    ASSERT_EQ(-1, FirstPatternMismatch(buf.data(), (size_t)n, off, 1000 + (uint32_t)i))
                        << "conn " << i << " at " << off;
                    off += (uint64_t)n;
                }
            }
            CheckManyStillClean(&m);
        }
        TearDownMany(&m);
    });
    EXPECT_EQ(fds0, CountOpenFds());
}

TEST_P(StreamReadTest, ManyConnectionsReadLentAtOnceEachHoldingItsBufferWhileTheOthersRead) {
    OnLoopRun([&] {
        Many m;
        SetUpMany(&m, 2000);
        if (!HasFatalFailure()) {
            int first_in = 0, finished = 0;
            std::vector<std::string> errs(kManyConns);
            for (int i : Scrambled(kManyConns, 6)) {
                RNT_SPAWN([&, i] {
                    const uint32_t seed = 2000 + (uint32_t)i;
                    rn_conn *c = m.acc[(size_t)i];
                    uint64_t off = 0;
                    bool first = true;
                    while (off < m.len[(size_t)i]) {
                        const void *d = nullptr;
                        ssize_t n = rn_conn_read_lent(c, &d);
                        if (n <= 0 || d == nullptr || off + (uint64_t)n > m.len[(size_t)i]) {
                            errs[(size_t)i] = "read_lent at " + std::to_string(off) + ": " + Err(n);
                            break;
                        }
                        if (FirstPatternMismatch(d, (size_t)n, off, seed) != -1) {
                            errs[(size_t)i] = "wrong lent bytes at " + std::to_string(off);
                            break;
                        }
                        if (first) {
                            /* Hold the first buffer until every connection
                             * holds one: 150 at once, more than the ring. */
                            first = false;
                            first_in++;
                            while (first_in < kManyConns && errs[(size_t)i].empty())
                                if (rn_sleep(1) != 0)
                                    break;
                        } else {
                            /* Let the others read meanwhile. */
                            rn_yield();
                            rn_sleep(1);
                        }
                        if (FirstPatternMismatch(d, (size_t)n, off, seed) != -1) {
                            errs[(size_t)i] =
                                "lent bytes at " + std::to_string(off) + " changed while held (before the next read)";
                            break;
                        }
                        off += (uint64_t)n;
                    }
                    if (first)
                        first_in++; /* never got its first: do not hold the others */
                    finished++;
                });
            }
            ASSERT_TRUE(WaitUntil([&] { return finished == kManyConns; }, 20000)) << finished;
            for (int i = 0; i < kManyConns; i++)
                EXPECT_EQ("", errs[(size_t)i]) << "conn " << i;
            for (int i = 0; i < kManyConns; i++)
                rn_conn_release_lent(m.acc[(size_t)i]);
            CheckManyStillClean(&m);
        }
        TearDownMany(&m);
    });
}

/* 100 connections each hold lent bytes (more than the ring's 64 buffers)
 * and keep them; meanwhile 20 other connections in request/response mode
 * have readers parked (plain and lent) when their messages come, five
 * rounds: each parked reader wakes with its own bytes although no ring
 * buffer is free, and the holders' bytes never change. */
TEST_P(StreamReadTest, ParkedReadersStillWakeWithTheirBytesWhileHoldersKeepEveryRingBuffer) {
    OnLoopRun([&] {
        constexpr int kHolders = 100, kReaders = 20;
        Server srv;
        ASSERT_EQ(0, rn_tcp_listen(srv.out(), "127.0.0.1", 0)) << rn_last_error();
        const int port = PortOf(rn_server_addr(srv));
        std::vector<Pair> pairs(kHolders + kReaders);
        for (auto &q : pairs) {
            ASSERT_EQ(0, rn_tcp_connect(&q.cli, "127.0.0.1", port)) << rn_last_error();
            ASSERT_EQ(0, rn_server_accept(srv, &q.acc)) << rn_last_error();
        }
        std::vector<Streams> st(pairs.size());
        for (int i = kHolders; i < kHolders + kReaders; i++)
            ASSERT_TRUE(PingPong(pairs[(size_t)i].cli, pairs[(size_t)i].acc, 20, 200 + (uint64_t)i, &st[(size_t)i]));
        std::vector<const void *> held(kHolders, nullptr);
        std::vector<size_t> held_n(kHolders, 0);
        for (int i = 0; i < kHolders; i++) {
            std::string m = Pattern(5000, 300 + (uint32_t)i);
            ASSERT_EQ(0, rn_conn_write_all(pairs[(size_t)i].cli, m.data(), m.size()));
        }
        rn_sleep(10);
        for (int i = 0; i < kHolders; i++) {
            ssize_t n = rn_conn_read_lent(pairs[(size_t)i].acc, &held[(size_t)i]);
            ASSERT_GT(n, 0) << "holder " << i << ": " << Err(n);
            held_n[(size_t)i] = (size_t)n;
            ASSERT_EQ(-1, FirstPatternMismatch(held[(size_t)i], (size_t)n, 0, 300 + (uint32_t)i));
        }
        for (int round = 0; round < 5; round++) {
            int woke = 0;
            std::vector<std::string> errs(kReaders);
            for (int r = 0; r < kReaders; r++) {
                RNT_SPAWN([&, r] {
                    const size_t i = (size_t)(kHolders + r);
                    rn_conn_set_read_deadline(pairs[i].acc, 3000);
                    const size_t want = 1000 + (size_t)r * 50;
                    uint64_t off = st[i].up;
                    std::vector<char> buf(65536);
                    while (off < st[i].up + want && errs[(size_t)r].empty()) {
                        const char *d = buf.data();
                        ssize_t n;
                        if ((r + round) % 2 == 0) {
                            n = rn_conn_read(pairs[i].acc, buf.data(), buf.size());
                        } else {
                            const void *dv = nullptr;
                            n = rn_conn_read_lent(pairs[i].acc, &dv);
                            d = static_cast<const char *>(dv);
                        }
                        if (n <= 0 || off + (uint64_t)n > st[i].up + want)
                            errs[(size_t)r] = "read: " + Err(n);
                        else if (FirstPatternMismatch(d, (size_t)n, off, kUpSeed) != -1)
                            errs[(size_t)r] = "wrong bytes at " + std::to_string(off);
                        else
                            off += (uint64_t)n;
                    }
                    st[i].up = off;
                    woke++;
                });
            }
            rn_sleep(20); /* all parked */
            for (int r = 0; r < kReaders; r++) {
                const size_t i = (size_t)(kHolders + r);
                std::string m = Pattern(1000 + (size_t)r * 50, kUpSeed, st[i].up);
                ASSERT_EQ(0, rn_conn_write_all(pairs[i].cli, m.data(), m.size()));
            }
            ASSERT_TRUE(WaitUntil([&] { return woke == kReaders; })) << "round " << round;
            for (int r = 0; r < kReaders; r++)
                EXPECT_EQ("", errs[(size_t)r]) << "reader " << r << " round " << round;
            for (int i = 0; i < kHolders; i++)
                ASSERT_EQ(-1, FirstPatternMismatch(held[(size_t)i], held_n[(size_t)i], 0, 300 + (uint32_t)i))
                    << "holder " << i << "'s lent bytes changed in round " << round;
        }
        /* The holders' remaining bytes follow their lent ones. */
        for (int i = 0; i < kHolders; i++) {
            uint64_t off = held_n[(size_t)i];
            ASSERT_TRUE(ReadPattern(pairs[(size_t)i].acc, 5000 - off, 3000, 300 + (uint32_t)i, &off)) << i;
        }
        pairs.clear(); /* each Pair closes its two ends */
    });
}

#if RINGNET_TEST_TLS
/* The same request/response then bulk then request/response, over TLS:
 * the ciphertext takes the same read paths. */
TEST_P(StreamReadTest, TlsPingPongThenBulkThenPingPongEveryByteInOrder) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
        ASSERT_TRUE(scfg.get() != nullptr && ccfg.get() != nullptr) << "no TLS configs";
        rn_server *srv = nullptr;
        ASSERT_EQ(0, rn_tls_listen(&srv, "127.0.0.1", 0, scfg)) << rn_last_error();
        rn_conn *acc = nullptr, *cli = nullptr;
        int arc = 1;
        RNT_SPAWN([&] {
            /* The server's handshake waits for its first call: run it now. */
            int rc = rn_server_accept(srv, &acc);
            arc = rc == 0 ? rn_conn_handshake(acc) : rc;
        });
        ASSERT_EQ(0, rn_tls_connect_with(&cli, "localhost", PortOf(rn_server_addr(srv)), ccfg)) << rn_last_error();
        ASSERT_TRUE(WaitUntil([&] { return arc != 1; }));
        ASSERT_EQ(0, arc) << Err(arc);
        Streams s;
        ASSERT_TRUE(PingPong(cli, acc, 500, 13, &s));
        const std::string bulk = Pattern(2u << 20, kUpSeed, s.up);
        int wrc = 1;
        RNT_SPAWN([&] { wrc = rn_conn_write_all(cli, bulk.data(), bulk.size()); });
        uint64_t off = s.up;
        EXPECT_TRUE(ReadPattern(acc, 1u << 20, 65536, kUpSeed, &off));
        EXPECT_TRUE(ReadPattern(acc, 256u << 10, 100, kUpSeed, &off));
        EXPECT_TRUE(ReadPatternLent(acc, s.up + bulk.size() - off, kUpSeed, &off));
        ASSERT_TRUE(WaitUntil([&] { return wrc != 1; }));
        ASSERT_EQ(0, wrc) << Err(wrc);
        s.up = off;
        ASSERT_TRUE(PingPong(cli, acc, 300, 14, &s));
        EXPECT_EQ(0, rn_conn_close(cli));
        char c;
        ssize_t end = rn_conn_read(acc, &c, 1);
        EXPECT_EQ(0, end) << Err(end);
        EXPECT_EQ(0, rn_conn_close(acc));
        EXPECT_EQ(0, rn_server_close(srv));
    });
}
#endif /* RINGNET_TEST_TLS */

/* ---- 4. deadlines on reads parked in request/response mode --------------------------------- */

TEST_P(StreamReadTest, ReadDeadlineAfterPingPongTimesOutLosesNothingAndABytesAlreadyInWin) {
    OnPair([&](Pair &p) {
        Streams s;
        ASSERT_TRUE(PingPong(p.cli, p.acc, 300, 7, &s));
        rn_conn_set_read_deadline(p.acc, 50);
        char buf[65536];
        /* Plain read. */
        ssize_t n = 0;
        int64_t took = MsTaken([&] { n = rn_conn_read(p.acc, buf, sizeof buf); });
        EXPECT_EQ(-ETIMEDOUT, n) << Err(n);
        EXPECT_GE(took, 40);
        EXPECT_LE(took, 50 + kPromptMs); /* the read ends only by its deadline */
        EXPECT_NE(nullptr, strstr(rn_last_error(), "read")) << rn_last_error();
        EXPECT_NE(nullptr, strstr(rn_last_error(), "deadline")) << rn_last_error();
        /* Lent read. */
        const void *d = &d;
        took = MsTaken([&] { n = rn_conn_read_lent(p.acc, &d); });
        EXPECT_EQ(-ETIMEDOUT, n) << Err(n);
        EXPECT_EQ(nullptr, d);
        EXPECT_GE(took, 40);
        EXPECT_LE(took, 50 + kPromptMs); /* the read ends only by its deadline */
        EXPECT_NE(nullptr, strstr(rn_last_error(), "read_lent")) << rn_last_error();
        /* The peer sends now: the bytes are all there, nothing was eaten by
         * the timeouts. */
        std::string m1 = Pattern(2500, kUpSeed, s.up);
        ASSERT_EQ(0, rn_conn_write_all(p.cli, m1.data(), m1.size()));
        uint64_t off = s.up;
        ASSERT_TRUE(ReadPattern(p.acc, m1.size(), sizeof buf, kUpSeed, &off));
        s.up = off;
        /* read_exact for more than comes: -ETIMEDOUT, the part that came
         * is kept and read first. */
        std::string m2 = Pattern(700, kUpSeed, s.up);
        ASSERT_EQ(0, rn_conn_write_all(p.cli, m2.data(), m2.size()));
        int rc = 0;
        took = MsTaken([&] { rc = rn_conn_read_exact(p.acc, buf, 1000); });
        EXPECT_EQ(-ETIMEDOUT, rc) << Err(rc);
        EXPECT_GE(took, 40);
        EXPECT_LE(took, 50 + kPromptMs); /* the read ends only by its deadline */
        EXPECT_NE(nullptr, strstr(rn_last_error(), "read_exact")) << rn_last_error();
        ASSERT_TRUE(ReadPattern(p.acc, m2.size(), sizeof buf, kUpSeed, &off));
        s.up = off;
        /* Bytes already in win over a 1 ms deadline, for every kind of
         * read: they sit wherever the engine keeps them by now. */
        rn_conn_set_read_deadline(p.acc, 1);
        for (int kind = 0; kind < 3; kind++) {
            std::string m3 = Pattern(900, kUpSeed, s.up);
            ASSERT_EQ(0, rn_conn_write_all(p.cli, m3.data(), m3.size()));
            rn_sleep(20);
            if (kind == 0) {
                ASSERT_TRUE(ReadPattern(p.acc, m3.size(), 100, kUpSeed, &off)) << "plain, 100 at a time";
            } else if (kind == 1) {
                ASSERT_TRUE(ReadPatternLent(p.acc, m3.size(), kUpSeed, &off)) << "lent";
            } else {
                rc = rn_conn_read_exact(p.acc, buf, m3.size());
                ASSERT_EQ(0, rc) << Err(rc);
                ASSERT_EQ(-1, FirstPatternMismatch(buf, m3.size(), off, kUpSeed));
                off += m3.size();
            }
            s.up = off;
        }
        rn_conn_set_read_deadline(p.acc, 0);
        ASSERT_TRUE(PingPong(p.cli, p.acc, 100, 8, &s));
    });
}

TEST_P(StreamReadTest, DeadlinesWithTwoTasksParkedInReadOnOneConnection) {
    OnPair([&](Pair &p) {
        Streams s;
        ASSERT_TRUE(PingPong(p.cli, p.acc, 300, 9, &s));
        /* Both with 50 ms: both time out, each in time. */
        rn_conn_set_read_deadline(p.acc, 50);
        ssize_t rc[2] = {1, 1};
        int64_t took[2] = {-1, -1};
        for (int k = 0; k < 2; k++) {
            RNT_SPAWN([&, k] {
                int64_t t0 = NowMs();
                char buf[4096];
                if (k == 0) {
                    rc[k] = rn_conn_read(p.acc, buf, sizeof buf);
                } else {
                    const void *d = nullptr;
                    rc[k] = rn_conn_read_lent(p.acc, &d);
                }
                took[k] = NowMs() - t0;
            });
        }
        ASSERT_TRUE(WaitUntil([&] { return took[0] >= 0 && took[1] >= 0; }));
        for (int k = 0; k < 2; k++) {
            EXPECT_EQ(-ETIMEDOUT, rc[k]) << "task " << k;
            EXPECT_GE(took[k], 40) << "task " << k;
            EXPECT_LE(took[k], 50 + kPromptMs) << "task " << k;
        }
        /* One with 50 ms, one with 2 s: the first times out, the second
         * stays parked and gets the bytes sent after that. */
        std::string got;
        int64_t t_a = -1, t_b = -1;
        ssize_t ra = 1, rb = 1;
        rn_conn_set_read_deadline(p.acc, 50);
        RNT_SPAWN([&] {
            char buf[4096];
            t_a = MsTaken([&] { ra = rn_conn_read(p.acc, buf, sizeof buf); });
        });
        rn_yield(); /* task A is parked with the 50 ms deadline */
        /* B's deadline is far (kNeverMs): B must be woken by the bytes, which
         * take ~100 ms to come (under 1 s on a loaded machine). */
        rn_conn_set_read_deadline(p.acc, (int)kNeverMs);
        RNT_SPAWN([&] {
            char buf[65536];
            int64_t t0 = NowMs();
            rb = rn_conn_read(p.acc, buf, sizeof buf);
            if (rb > 0)
                got.assign(buf, (size_t)rb);
            t_b = NowMs() - t0;
        });
        rn_yield();
        ASSERT_TRUE(WaitUntil([&] { return t_a >= 0; }));
        EXPECT_EQ(-ETIMEDOUT, ra) << rn_strerror((int)ra);
        EXPECT_GE(t_a, 40);
        EXPECT_LE(t_a, 50 + kPromptMs); /* only its deadline ends A's read */
        rn_sleep(50);
        EXPECT_EQ(-1, t_b) << "task B returned " << rb << " " << rn_strerror((int)rb) << " with nothing sent";
        std::string msg = Pattern(1200, kUpSeed, s.up);
        ASSERT_EQ(0, rn_conn_write_all(p.cli, msg.data(), msg.size()));
        ASSERT_TRUE(WaitUntil([&] { return t_b >= 0; }));
        ASSERT_GT(rb, 0) << Err(rb);
        EXPECT_LT(t_b, kNeverMs / 2) << "task B was not woken by the bytes";
        EXPECT_EQ(-1, FirstPatternMismatch(got.data(), got.size(), s.up, kUpSeed));
        uint64_t off = s.up + got.size();
        rn_conn_set_read_deadline(p.acc, 2000);
        ASSERT_TRUE(ReadPattern(p.acc, s.up + msg.size() - off, 4096, kUpSeed, &off));
        s.up = off;
        rn_conn_set_read_deadline(p.acc, 0);
        ASSERT_TRUE(PingPong(p.cli, p.acc, 100, 10, &s));
    });
}

/* ---- 5. close while parked ---------------------------------------------------------------- */

TEST_P(StreamReadTest, CloseWhileReadsAreParkedOrBytesAreQueuedGivesEclosedAndLeaksNoDescriptor) {
    int fds0 = CountOpenFds();
    OnLoopRun([&] {
        int fds_in = CountOpenFds();
        for (int round = 0; round < 8; round++) {
            Pair p;
            ASSERT_TRUE(MakePair(&p));
            Streams s;
            ASSERT_TRUE(PingPong(p.cli, p.acc, 50, 20 + (uint64_t)round, &s));
            const int mode = round % 4;
            if (mode == 3) {
                /* Bytes queued and lent bytes held, no read parked. */
                for (int k = 0; k < 3; k++) {
                    std::string m = Pattern(3000, 50, 3000u * (uint64_t)k);
                    ASSERT_EQ(0, rn_conn_write_all(p.cli, m.data(), m.size()));
                    rn_sleep(2);
                }
                const void *d = nullptr;
                ssize_t n = rn_conn_read_lent(p.acc, &d);
                ASSERT_GT(n, 0) << Err(n);
                EXPECT_EQ(-1, FirstPatternMismatch(d, (size_t)n, 0, 50));
                rn_sleep(10);
            } else {
                /* 0: a plain read parked, 1: a lent read, 2: both. */
                ssize_t rc[2] = {1, 1};
                bool done[2] = {mode == 1, mode == 0};
                const void *d = &d;
                if (mode != 1)
                    RNT_SPAWN([&] {
                        char buf[65536];
                        rc[0] = rn_conn_read(p.acc, buf, sizeof buf);
                        done[0] = true;
                    });
                if (mode != 0)
                    RNT_SPAWN([&] {
                        rc[1] = rn_conn_read_lent(p.acc, &d);
                        done[1] = true;
                    });
                rn_sleep(30);
                ASSERT_FALSE(done[0] && done[1]);
                int64_t t0 = NowMs();
                EXPECT_EQ(0, rn_conn_close(p.acc));
                p.acc = nullptr;
                ASSERT_TRUE(WaitUntil([&] { return done[0] && done[1]; }));
                EXPECT_LE(NowMs() - t0, kPromptMs); /* no deadline: only the close ends them */
                if (mode != 1)
                    EXPECT_EQ(RN_ECLOSED, rc[0]) << rn_strerror((int)rc[0]);
                if (mode != 0) {
                    EXPECT_EQ(RN_ECLOSED, rc[1]) << rn_strerror((int)rc[1]);
                    EXPECT_EQ(nullptr, d);
                }
            }
            ClosePair(&p);
        }
        EXPECT_EQ(fds_in, CountOpenFds());
    });
    EXPECT_EQ(fds0, CountOpenFds());
}

/* ---- 6. end of stream and reset behind queued bytes ------------------------------------- */

/* Three messages (100, 2000, 7 bytes of pattern seed, a few ms apart),
 * then an end of stream. */
constexpr size_t kThree[3] = {100, 2000, 7};
constexpr size_t kThreeTotal = 2107;

void SendThree(rn_conn *c, uint32_t seed) {
    uint64_t off = 0;
    for (size_t k : kThree) {
        std::string m = Pattern(k, seed, off);
        ASSERT_EQ(0, rn_conn_write_all(c, m.data(), m.size()));
        off += k;
        rn_sleep(2);
    }
}

TEST_P(StreamReadTest, EndOfStreamRightBehindQueuedMessagesComesAfterAllTheirBytesAndStays) {
    OnLoopRun([&] {
        for (int mode = 0; mode < 4; mode++) {
            SCOPED_TRACE("mode " + std::to_string(mode));
            Pair p;
            ASSERT_TRUE(MakePair(&p));
            Streams s;
            ASSERT_TRUE(PingPong(p.cli, p.acc, 100, 30 + (uint64_t)mode, &s));
            const uint32_t seed = 60 + (uint32_t)mode;
            if (mode == 3) {
                /* A reader already parked when they come. */
                std::string got;
                ssize_t end1 = 1, end2 = 1;
                bool done = false;
                RNT_SPAWN([&] {
                    char buf[65536];
                    for (;;) {
                        ssize_t n = rn_conn_read(p.acc, buf, sizeof buf);
                        if (n <= 0) {
                            end1 = n;
                            break;
                        }
                        got.append(buf, (size_t)n);
                    }
                    end2 = rn_conn_read(p.acc, buf, sizeof buf);
                    done = true;
                });
                rn_sleep(10);
                SendThree(p.cli, seed);
                ASSERT_EQ(0, rn_conn_shutdown_write(p.cli));
                ASSERT_TRUE(WaitUntil([&] { return done; }));
                EXPECT_EQ(kThreeTotal, got.size());
                EXPECT_EQ(-1, FirstPatternMismatch(got.data(), got.size(), 0, seed));
                EXPECT_EQ(0, end1) << Err(end1);
                EXPECT_EQ(0, end2) << Err(end2);
                ClosePair(&p);
                continue;
            }
            SendThree(p.cli, seed);
            ASSERT_EQ(0, rn_conn_shutdown_write(p.cli));
            rn_sleep(30); /* all of it, end included, has landed */
            uint64_t off = 0;
            char buf[65536];
            if (mode == 0) {
                ASSERT_TRUE(ReadPattern(p.acc, kThreeTotal, sizeof buf, seed, &off));
                EXPECT_EQ(0, rn_conn_read(p.acc, buf, sizeof buf));
                EXPECT_EQ(0, rn_conn_read(p.acc, buf, sizeof buf));
            } else if (mode == 1) {
                ASSERT_TRUE(ReadPatternLent(p.acc, kThreeTotal, seed, &off));
                const void *d = &d;
                EXPECT_EQ(0, rn_conn_read_lent(p.acc, &d));
                EXPECT_EQ(nullptr, d);
                d = &d;
                EXPECT_EQ(0, rn_conn_read_lent(p.acc, &d));
                EXPECT_EQ(nullptr, d);
                EXPECT_EQ(0, rn_conn_read(p.acc, buf, sizeof buf));
            } else {
                /* read_exact for more than was sent: RN_EEOF, and the bytes
                 * are kept for the next read; then the end again. */
                int rc = rn_conn_read_exact(p.acc, buf, kThreeTotal + 100);
                EXPECT_EQ(RN_EEOF, rc) << Err(rc);
                EXPECT_NE(nullptr, strstr(rn_last_error(), "read_exact")) << rn_last_error();
                ASSERT_TRUE(ReadPattern(p.acc, kThreeTotal, sizeof buf, seed, &off));
                EXPECT_EQ(0, rn_conn_read(p.acc, buf, sizeof buf));
                rc = rn_conn_read_exact(p.acc, buf, 1);
                EXPECT_EQ(RN_EEOF, rc) << Err(rc);
                EXPECT_EQ(0, rn_conn_read(p.acc, buf, sizeof buf));
            }
            ClosePair(&p);
        }
    });
}

/* A peer outside ringnet (a plain socket on its own thread) so that it can
 * close with SO_LINGER 0: the kernel sends RST. */
TEST_P(StreamReadTest, ResetRightBehindQueuedMessagesComesAfterTheBytesThatArrived) {
    OnLoopRun([&] {
        rn_server *srv = nullptr;
        ASSERT_EQ(0, rn_tcp_listen(&srv, "127.0.0.1", 0)) << rn_last_error();
        const int port = PortOf(rn_server_addr(srv));
        std::atomic<int> stage{0}; /* 1: ping-pong done; 2: reset sent */
        std::atomic<bool> peer_ok{false};
        std::atomic<bool> go{false};
        std::thread peer([&] {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons((uint16_t)port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (fd < 0 || connect(fd, (sockaddr *)&a, sizeof a) != 0) {
                stage = 2;
                return;
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            timeval tv{5, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            bool ok = true;
            Rng rng(40);
            for (int i = 0; i < 100 && ok; i++) {
                std::string req = Pattern(rng.Range(1, 3000), 70 + (uint32_t)i);
                ok = send(fd, req.data(), req.size(), MSG_NOSIGNAL) == (ssize_t)req.size();
                size_t got = 0;
                char buf[4096];
                while (ok && got < req.size()) {
                    ssize_t n = recv(fd, buf, sizeof buf, 0);
                    ok = n > 0 && memcmp(buf, req.data() + got, (size_t)n) == 0;
                    got += n > 0 ? (size_t)n : 0;
                }
            }
            stage = 1;
            /* The three only once the echo below has stopped reading. */
            while (!go.load())
                usleep(1000);
            uint64_t off = 0;
            for (size_t k : kThree) {
                std::string m = Pattern(k, 80, off);
                ok = ok && send(fd, m.data(), m.size(), MSG_NOSIGNAL) == (ssize_t)m.size();
                off += k;
                usleep(2000);
            }
            usleep(5000);
            linger l{1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            close(fd);
            peer_ok = ok;
            stage = 2;
        });
        rn_conn *c = nullptr;
        ASSERT_EQ(0, rn_server_accept(srv, &c)) << rn_last_error();
        /* An echo for the ping-pong phase, with reads far larger than each
         * message. */
        char buf[65536];
        bool echo_ok = true;
        while (stage.load() == 0 && echo_ok) {
            rn_conn_set_read_deadline(c, 20);
            ssize_t n = rn_conn_read(c, buf, sizeof buf);
            if (n == -ETIMEDOUT)
                continue;
            EXPECT_GT(n, 0) << Err(n);
            echo_ok = n > 0 && rn_conn_write_all(c, buf, (size_t)n) == 0;
        }
        rn_conn_set_read_deadline(c, 0);
        go = true;
        /* The peer thread is joined before anything here can return. */
        EXPECT_TRUE(WaitUntil([&] { return stage.load() == 2; }));
        peer.join();
        ASSERT_TRUE(echo_ok);
        EXPECT_TRUE(peer_ok.load());
        rn_sleep(20); /* the reset has landed behind the messages */
        rn_conn_set_read_deadline(c, 2000);
        uint64_t off = 0;
        ssize_t n;
        for (;;) {
            n = rn_conn_read(c, buf, 1000); /* at most 1000: several reads */
            if (n <= 0)
                break;
            ASSERT_LE(off + (uint64_t)n, kThreeTotal);
            ASSERT_EQ(-1, FirstPatternMismatch(buf, (size_t)n, off, 80)) << "at " << off;
            off += (uint64_t)n;
        }
        EXPECT_EQ(-ECONNRESET, n) << Err(n) << " after " << off << " bytes";
        printf("[ringnet] %" PRIu64 " of %zu bytes before the reset\n", off, kThreeTotal);
        /* Reported once; after it the stream is simply over. */
        EXPECT_EQ(0, rn_conn_read(c, buf, sizeof buf));
        EXPECT_EQ(0, rn_conn_close(c));
        EXPECT_EQ(0, rn_server_close(srv));
    });
}

#if RINGNET_TEST_TLS
/* ---- 7. STARTTLS ----------------------------------------------------------------------------- */

struct FakeStarttls {
    rn_server *srv = nullptr;
    int port = 0;
    bool done = false;
    int tls_rc = 1;    /* the server's rn_conn_accept_tls, when it runs one */
    std::string after; /* what the server read over TLS */
};

/* A plaintext line protocol: "PING <n>\r\n" is answered "PONG <n>\r\n";
 * "STARTTLS\r\n" is answered by reply (one write), then, after gap_ms, by
 * extra (a second write, if any); with cfg set, the server then runs
 * rn_conn_accept_tls and answers each TLS read with "ok:" and the bytes. */
void StartFakeStarttls(FakeStarttls *f, std::string reply, std::string extra, int gap_ms, const rn_tls_config *cfg) {
    ASSERT_EQ(0, rn_tcp_listen(&f->srv, "127.0.0.1", 0));
    f->port = PortOf(rn_server_addr(f->srv));
    RNT_SPAWN([f, reply, extra, gap_ms, cfg] {
        rn_conn *a = nullptr;
        if (rn_server_accept(f->srv, &a) != 0) {
            f->done = true;
            return;
        }
        rn_conn_set_deadline(a, 5000);
        std::string in;
        char buf[4096];
        for (;;) {
            size_t eol = in.find("\r\n");
            if (eol == std::string::npos) {
                ssize_t n = rn_conn_read(a, buf, sizeof buf);
                if (n <= 0)
                    break;
                in.append(buf, (size_t)n);
                continue;
            }
            std::string line = in.substr(0, eol);
            in.erase(0, eol + 2);
            if (line.rfind("PING ", 0) == 0) {
                std::string r = "PONG " + line.substr(5) + "\r\n";
                if (rn_conn_write_all(a, r.data(), r.size()) != 0)
                    break;
            } else if (line == "STARTTLS") {
                rn_conn_write_all(a, reply.data(), reply.size());
                if (!extra.empty()) {
                    rn_sleep(gap_ms);
                    rn_conn_write_all(a, extra.data(), extra.size());
                }
                if (cfg != nullptr) {
                    f->tls_rc = rn_conn_accept_tls(a, cfg);
                    while (f->tls_rc == 0) {
                        ssize_t n = rn_conn_read(a, buf, sizeof buf);
                        if (n <= 0)
                            break;
                        f->after.append(buf, (size_t)n);
                        std::string r = "ok:" + std::string(buf, (size_t)n);
                        if (rn_conn_write_all(a, r.data(), r.size()) != 0)
                            break;
                    }
                } else {
                    (void)rn_conn_read(a, buf, sizeof buf); /* whatever comes, or the end */
                }
                break;
            }
        }
        rn_conn_close(a);
        f->done = true;
    });
}

/* Plain reads of up to 4 KiB into *got until it holds at least n bytes. */
::testing::AssertionResult ReadAtLeast(rn_conn *c, size_t n, std::string *got) {
    char buf[4096];
    while (got->size() < n) {
        ssize_t r = rn_conn_read(c, buf, sizeof buf);
        if (r <= 0)
            return ::testing::AssertionFailure() << "after " << got->size() << " of " << n << " bytes: " << Err(r);
        got->append(buf, (size_t)r);
    }
    return ::testing::AssertionSuccess();
}

/* Plaintext request/response on the client: 200 PINGs, each answer read
 * with a 4 KiB buffer (every read short). */
::testing::AssertionResult ClientPings(rn_conn *c) {
    for (int i = 0; i < 200; i++) {
        std::string q = "PING " + std::to_string(i) + "\r\n";
        if (rn_conn_write_all(c, q.data(), q.size()) != 0)
            return ::testing::AssertionFailure() << "ping " << i << ": " << rn_last_error();
        std::string want = "PONG " + std::to_string(i) + "\r\n", got;
        ::testing::AssertionResult r = ReadAtLeast(c, want.size(), &got);
        if (!r)
            return r << " (pong " << i << ")";
        if (got != want)
            return ::testing::AssertionFailure() << "pong " << i << ": got '" << got << "'";
    }
    return ::testing::AssertionSuccess();
}

TEST_P(StreamReadTest, StarttlsAfterPlaintextPingPongRefusesBytesInjectedAfterTheGoAhead) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig ccfg = ClientConfig(certs);
        ASSERT_NE(nullptr, ccfg.get());
        const std::string go = "220 go ahead\r\n";
        const std::string injected = "250 forged reply\r\n";
        struct Case {
            const char *name;
            std::string reply, extra;
            int gap_ms;
        } cases[] = {
            {"injected in the go-ahead's write", go + injected, "", 0},
            {"injected 10 ms after the go-ahead", go, injected, 10},
        };
        for (const Case &k : cases) {
            SCOPED_TRACE(k.name);
            FakeStarttls f;
            StartFakeStarttls(&f, k.reply, k.extra, k.gap_ms, nullptr);
            rn_conn *c = nullptr;
            ASSERT_EQ(0, rn_tcp_connect(&c, "127.0.0.1", f.port)) << rn_last_error();
            rn_conn_set_deadline(c, 5000);
            ASSERT_TRUE(ClientPings(c));
            ASSERT_EQ(0, rn_conn_write_all(c, "STARTTLS\r\n", 10));
            /* The go-ahead by its exact length, as docs/conn.md says. */
            std::string line(go.size(), '\0');
            ASSERT_EQ(0, rn_conn_read_exact(c, &line[0], line.size())) << rn_last_error();
            ASSERT_EQ(go, line);
            rn_sleep(50); /* the injected bytes have landed */
            int rc = rn_conn_upgrade_to_tls_with(c, "localhost", ccfg);
            EXPECT_EQ(RN_ETLS, rc) << Err(rc);
            EXPECT_NE(nullptr, strstr(rn_last_error(), "upgrade_to_tls")) << rn_last_error();
            /* Refused before the handshake: still plain, and the injected
             * bytes are still there, as they came. */
            EXPECT_FALSE(rn_conn_is_tls(c));
            std::string got;
            ASSERT_TRUE(ReadAtLeast(c, injected.size(), &got));
            EXPECT_EQ(injected, got);
            EXPECT_EQ(0, rn_conn_close(c));
            EXPECT_TRUE(WaitUntil([&] { return f.done; }));
            EXPECT_EQ(0, rn_server_close(f.srv));
        }
    });
}

/* The clean case: after the same ping-pong the upgrade works, so the
 * server's handshake bytes reach TLS even if the engine was reading ahead
 * when they came, and TLS traffic then flows both ways. */
TEST_P(StreamReadTest, StarttlsAfterPlaintextPingPongUpgradesAndCarriesTls) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs), ccfg = ClientConfig(certs);
        ASSERT_TRUE(scfg.get() != nullptr && ccfg.get() != nullptr) << "no TLS configs";
        FakeStarttls f;
        StartFakeStarttls(&f, "220 go ahead\r\n", "", 0, scfg);
        rn_conn *c = nullptr;
        ASSERT_EQ(0, rn_tcp_connect(&c, "127.0.0.1", f.port)) << rn_last_error();
        rn_conn_set_deadline(c, 5000);
        ASSERT_TRUE(ClientPings(c));
        ASSERT_EQ(0, rn_conn_write_all(c, "STARTTLS\r\n", 10));
        char line[14];
        ASSERT_EQ(0, rn_conn_read_exact(c, line, sizeof line)) << rn_last_error();
        ASSERT_EQ(0, memcmp(line, "220 go ahead\r\n", 14));
        int rc = rn_conn_upgrade_to_tls_with(c, "localhost", ccfg);
        ASSERT_EQ(0, rc) << Err(rc);
        EXPECT_TRUE(rn_conn_is_tls(c));
        for (int i = 0; i < 50; i++) {
            std::string q = Pattern(1 + (size_t)i * 37, 90 + (uint32_t)i);
            ASSERT_EQ(0, rn_conn_write_all(c, q.data(), q.size())) << rn_last_error();
            std::string want = "ok:" + q, got;
            ASSERT_TRUE(ReadAtLeast(c, want.size(), &got)) << "round " << i;
            ASSERT_EQ(want, got) << "round " << i;
        }
        EXPECT_EQ(0, rn_conn_close(c));
        EXPECT_TRUE(WaitUntil([&] { return f.done; }));
        EXPECT_EQ(0, f.tls_rc) << rn_strerror(f.tls_rc);
        EXPECT_EQ(0, rn_server_close(f.srv));
    });
}

/* Server side: a client that did plaintext ping-pong (the server's reads
 * short) pipelines plaintext right behind its STARTTLS; the server reads
 * the command by its exact length and its accept_tls is refused, never
 * left waiting for a ClientHello that the queued bytes hide. */
TEST_P(StreamReadTest, AcceptTlsAfterPlaintextPingPongRefusesPlaintextPipelinedBehindStarttls) {
    RNT_NEED_CERTS(certs);
    OnLoopRun([&] {
        TlsConfig scfg = ServerConfig(certs);
        ASSERT_NE(nullptr, scfg.get());
        Pair p;
        ASSERT_TRUE(MakePair(&p));
        Streams s;
        ASSERT_TRUE(PingPong(p.cli, p.acc, 200, 11, &s));
        ASSERT_EQ(0, rn_conn_write_all(p.cli, "STARTTLS\r\nRCPT TO:<victim@example>\r\n", 36));
        char cmd[10];
        /* A far deadline (kNeverMs) that the handshake must not wait for: it
         * sees the queued plaintext at once (~10 ms; kPromptMs allowed). */
        rn_conn_set_deadline(p.acc, (int)kNeverMs);
        ASSERT_EQ(0, rn_conn_read_exact(p.acc, cmd, sizeof cmd)) << rn_last_error();
        ASSERT_EQ(0, memcmp(cmd, "STARTTLS\r\n", 10));
        rn_sleep(30);
        int64_t t0 = NowMs();
        int rc = rn_conn_accept_tls(p.acc, scfg);
        EXPECT_EQ(RN_ETLS, rc) << Err(rc);
        EXPECT_LT(NowMs() - t0, kPromptMs) << "the handshake waited instead of seeing the queued plaintext";
        ClosePair(&p);
    });
}
#endif /* RINGNET_TEST_TLS */

/* ---- 8. read, read_lent and read_exact interleaved ---------------------------------------- */

TEST_P(StreamReadTest, ReadReadLentAndReadExactInterleavedAtRandomTakeEveryByteInOrder) {
    OnPair([&](Pair &p) {
        Streams s;
        ASSERT_TRUE(PingPong(p.cli, p.acc, 200, 12, &s));
        const uint64_t kTotal = 3u << 20;
        const uint32_t seed = 99;
        const std::string data = Pattern((size_t)kTotal, seed);
        int wrc = 0;
        bool wdone = false;
        RNT_SPAWN([&] {
            /* Small pieces, paced now and then, with a few bursts: the
             * reader sees short reads, full reads and queues of both. */
            Rng rng(123);
            size_t off = 0;
            int piece = 0;
            while (off < data.size() && wrc == 0) {
                size_t k = piece % 97 == 0 ? rng.Range(30000, 200000) : rng.Range(1, 6000);
                k = std::min(k, data.size() - off);
                wrc = rn_conn_write_all(p.cli, data.data() + off, k);
                off += k;
                piece++;
                if (piece % 7 == 0)
                    rn_yield();
                if (piece % 29 == 0)
                    rn_sleep(1);
            }
            if (wrc == 0)
                wrc = rn_conn_shutdown_write(p.cli);
            wdone = true;
        });
        Rng rng(456);
        uint64_t off = 0;
        const void *held = nullptr; /* the last lent bytes, still ours */
        size_t held_n = 0;
        uint64_t held_off = 0;
        std::vector<char> buf(40000);
        int counts[3] = {0, 0, 0};
        while (off < kTotal) {
            if (held != nullptr) {
                ASSERT_EQ(-1, FirstPatternMismatch(held, held_n, held_off, seed))
                    << "lent bytes at " << held_off << " changed before the next read";
            }
            held = nullptr;
            int op = (int)rng.Range(0, 2);
            counts[op]++;
            if (op == 0) {
                size_t max = rng.Range(1, buf.size());
                ssize_t n = rn_conn_read(p.acc, buf.data(), max);
                ASSERT_GT(n, 0) << "read at " << off << ": " << Err(n);
                ASSERT_LE((size_t)n, max);
                ASSERT_LE(off + (uint64_t)n, kTotal);
                ASSERT_EQ(-1, FirstPatternMismatch(buf.data(), (size_t)n, off, seed)) << "read at " << off;
                off += (uint64_t)n;
            } else if (op == 1) {
                const void *d = nullptr;
                ssize_t n = rn_conn_read_lent(p.acc, &d);
                ASSERT_GT(n, 0) << "read_lent at " << off << ": " << Err(n);
                ASSERT_LE(n, RN_LENT_MAX);
                ASSERT_LE(off + (uint64_t)n, kTotal);
                ASSERT_EQ(-1, FirstPatternMismatch(d, (size_t)n, off, seed)) << "read_lent at " << off;
                held = d;
                held_n = (size_t)n;
                held_off = off;
                off += (uint64_t)n;
                if (rng.Range(0, 3) == 0)
                    rn_sleep(1); /* held across a wait: the writer goes on */
            } else {
                size_t len = (size_t)std::min<uint64_t>(rng.Range(1, 30000), kTotal - off);
                int rc = rn_conn_read_exact(p.acc, buf.data(), len);
                ASSERT_EQ(0, rc) << "read_exact of " << len << " at " << off << ": " << Err(rc);
                ASSERT_EQ(-1, FirstPatternMismatch(buf.data(), len, off, seed)) << "read_exact at " << off;
                off += len;
            }
        }
        EXPECT_EQ(kTotal, off);
        char c;
        EXPECT_EQ(0, rn_conn_read(p.acc, &c, 1));
        ASSERT_TRUE(WaitUntil([&] { return wdone; }));
        EXPECT_EQ(0, wrc) << Err(wrc);
        EXPECT_GT(counts[0], 50);
        EXPECT_GT(counts[1], 50);
        EXPECT_GT(counts[2], 50);
    });
}

} // namespace
