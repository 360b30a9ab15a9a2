/* tls_helpers.h - what the TLS tests share: test certificates made by the
 * openssl CLI into a temporary directory (never committed keys), child
 * processes for real peers (openssl s_server / s_client, curl, postgres),
 * and small ringnet TLS servers. */
#ifndef RINGNET_TESTS_TLS_HELPERS_H
#define RINGNET_TESTS_TLS_HELPERS_H

#include "harness.h"

#include <sys/types.h>

#include <string>
#include <vector>

namespace rnt {

/* Paths of the generated files. ca signs server (DNS:localhost,
 * IP:127.0.0.1), wrongname (DNS:wrong.example only), expired (localhost,
 * valid 2020-2021) and client (clientAuth); ca2 is a CA nobody trusts and
 * signs untrusted (localhost). empty is an empty file. */
struct TestCerts {
    std::string dir;
    std::string ca, ca2, empty;
    std::string server, server_key;
    std::string wrongname, wrongname_key;
    std::string expired, expired_key;
    std::string untrusted, untrusted_key;
    std::string client, client_key;
};

/* Made once per process; NULL with *why set when openssl is missing or
 * failed. */
const TestCerts *Certs(std::string *why);

/* A server configuration with the test server's certificate and key, and a
 * client configuration trusting ca (certs->ca unless said); a failure to
 * make one fails the test (and the handle is empty). */
TlsConfig ServerConfig(const TestCerts *certs);
TlsConfig ClientConfig(const std::string &ca);
/* rn_tls_listen on 127.0.0.1, port 0, with cfg (which must be made) into
 * *s: the port, or 0 with a failure recorded. */
int ListenTls(Server *s, rn_tls_config *cfg);
inline TlsConfig ClientConfig(const TestCerts *certs) { return ClientConfig(certs->ca); }

/* Full path of an executable on PATH (or the absolute path given), "" if
 * none. */
std::string FindTool(const std::string &name);

/* A child process: stdin a pipe, stdout and stderr into one file. */
class Proc {
  public:
    Proc() = default;
    Proc(const Proc &) = delete;
    Proc &operator=(const Proc &) = delete;
    ~Proc();
    /* Start argv (argv[0] looked up on PATH); extra_env are "K=V" added to
     * the environment. The output goes to out_path (a file in the cert dir
     * when empty). */
    bool Start(const std::vector<std::string> &argv, std::string *why, const std::string &out_path = "",
               const std::vector<std::string> &extra_env = {});
    /* Write to its stdin (false once it is closed). */
    bool Write(const std::string &s);
    void CloseStdin();
    /* Its output so far. */
    std::string Output() const;
    /* Wait (running this thread's ringnet loop meanwhile) until the output
     * holds needle; whether it did before timeout_ms. */
    bool WaitOutput(const std::string &needle, int64_t timeout_ms = 10000) const;
    /* Wait for the exit (running the loop); the exit status as from
     * waitpid's WEXITSTATUS, 128+signal when killed, -1 on timeout. */
    int Wait(int64_t timeout_ms = 10000);
    void Kill(int sig);
    pid_t pid() const { return pid_; }

  private:
    pid_t pid_ = -1;
    int in_fd_ = -1;
    int status_ = -1;
    std::string out_path_;
};

/* Whether RINGNET_TEST_REQUIRE_PEERS=1: a missing peer fails the test. */
bool PeersRequired();

/* A TCP port that was free a moment ago on 127.0.0.1. */
int FreePort();

/* Start `openssl s_server` on a free port with cert/key (extra arguments
 * after), wait until it accepts; the port, or -1 with *why set. */
int StartSServer(Proc *p, const std::string &cert, const std::string &key, const std::vector<std::string> &extra,
                 std::string *why);

/* Sets an environment variable for the life of the object. */
class ScopedEnv {
  public:
    ScopedEnv(const char *name, const char *value);
    ~ScopedEnv();

  private:
    std::string name_;
    bool had_ = false;
    std::string old_;
};

} // namespace rnt

/* Skip the test (with the reason) when the certificates cannot be made;
 * fail it where the peers are required (openssl makes them). */
#define RNT_NEED_CERTS(var)                                                                                            \
    std::string var##_why;                                                                                             \
    const ::rnt::TestCerts *var = ::rnt::Certs(&var##_why);                                                            \
    if (var == nullptr) {                                                                                              \
        if (::rnt::PeersRequired())                                                                                    \
            FAIL() << var##_why << " (RINGNET_TEST_REQUIRE_PEERS is set)";                                             \
        GTEST_SKIP() << var##_why;                                                                                     \
    }

/* Skip the test when a tool is missing, or fail it where the peers are
 * required (RINGNET_TEST_REQUIRE_PEERS=1, as ci/test.sh sets it: there
 * ci/setup.sh installed them, so a missing one is a broken setup). */
#define RNT_NEED_TOOL_FROM(name, package)                                                                              \
    if (::rnt::FindTool(name).empty()) {                                                                               \
        if (::rnt::PeersRequired())                                                                                    \
            FAIL() << name << " is not installed (Debian package: " << package                                         \
                   << ") and RINGNET_TEST_REQUIRE_PEERS is set";                                                       \
        GTEST_SKIP() << name << " is not installed (Debian package: " << package << ")";                               \
    }
#define RNT_NEED_TOOL(name) RNT_NEED_TOOL_FROM(name, name)

#endif /* RINGNET_TESTS_TLS_HELPERS_H */
