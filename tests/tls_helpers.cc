/* tls_helpers.cc - test certificates, child processes and peers for the
 * TLS tests (see tls_helpers.h). */
#include "tls_helpers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

extern char **environ;

namespace rnt {

namespace {

/* The shell script that makes every test certificate with the openssl CLI
 * (EC P-256 keys: fast to make). The expired certificate needs `openssl
 * ca`, the only CLI path that takes a start date in the past. */
const char kMakeCerts[] = R"SH(
set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 3650 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
ext() { printf 'basicConstraints=CA:FALSE\nsubjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3" > "$1"; }
leaf() { # name ca subject extfile
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "$3"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 825 \
    -out "$1.pem" -extfile "$4" 2>/dev/null
}
ca ca "ringnet test CA"
ca ca2 "untrusted test CA"
ext server.ext "DNS:localhost,IP:127.0.0.1" serverAuth
ext wrong.ext "DNS:wrong.example" serverAuth
ext client.ext "DNS:ringnet-client" clientAuth
leaf server ca "/CN=localhost" server.ext
leaf wrongname ca "/CN=wrong.example" wrong.ext
leaf untrusted ca2 "/CN=localhost" server.ext
leaf client ca "/CN=ringnet-client" client.ext
cat > ca.cnf <<'EOF'
[ca]
default_ca = testca
[testca]
dir = .
database = index.txt
new_certs_dir = .
certificate = ca.pem
private_key = ca.key
serial = serial.txt
default_md = sha256
policy = anything
[anything]
commonName = supplied
EOF
: > index.txt
echo 1000 > serial.txt
key expired.key
openssl req -new -key expired.key -out expired.csr -subj "/CN=localhost"
openssl ca -batch -config ca.cnf -startdate 20200101000000Z -enddate 20210101000000Z \
  -extfile server.ext -in expired.csr -out expired.pem -notext 2>/dev/null
: > empty.pem
)SH";

std::mutex certs_mu;
bool certs_tried = false;
TestCerts certs;
std::string certs_why;

void RemoveDir(const std::string &dir) {
    std::string cmd = "rm -rf '" + dir + "'";
    if (system(cmd.c_str()) != 0)
        fprintf(stderr, "[ringnet] could not remove %s\n", dir.c_str());
}

} // namespace

TlsConfig ServerConfig(const TestCerts *certs) {
    TlsConfig cfg(rn_tls_server_config(certs->server.c_str(), certs->server_key.c_str()));
    EXPECT_NE(nullptr, cfg.get()) << rn_last_error();
    return cfg;
}

TlsConfig ClientConfig(const std::string &ca) {
    TlsConfig cfg(rn_tls_client_config());
    EXPECT_NE(nullptr, cfg.get()) << rn_last_error();
    if (cfg.get() != nullptr) {
        EXPECT_EQ(0, rn_tls_config_set_ca_file(cfg, ca.c_str())) << rn_last_error();
    }
    return cfg;
}

int ListenTls(Server *s, rn_tls_config *cfg) {
    if (cfg == nullptr) {
        ADD_FAILURE() << "no TLS config to listen with";
        return 0;
    }
    int rc = rn_tls_listen(s->out(), "127.0.0.1", 0, cfg);
    EXPECT_EQ(0, rc) << rn_last_error();
    return rc == 0 ? PortOf(rn_server_addr(*s)) : 0;
}

bool PeersRequired() {
    const char *v = getenv("RINGNET_TEST_REQUIRE_PEERS");
    return v != nullptr && strcmp(v, "1") == 0;
}

std::string FindTool(const std::string &name) {
    if (name.find('/') != std::string::npos)
        return access(name.c_str(), X_OK) == 0 ? name : "";
    const char *path = getenv("PATH");
    std::string p = path ? path : "/usr/bin:/bin";
    p += ":/usr/sbin:/sbin";
    std::stringstream ss(p);
    std::string d;
    while (std::getline(ss, d, ':')) {
        std::string full = d + "/" + name;
        if (!d.empty() && access(full.c_str(), X_OK) == 0)
            return full;
    }
    return "";
}

const TestCerts *Certs(std::string *why) {
    std::lock_guard<std::mutex> lock(certs_mu);
    if (!certs_tried) {
        certs_tried = true;
        if (FindTool("openssl").empty()) {
            certs_why = "openssl is not installed (Debian package: openssl); the TLS tests make their "
                        "certificates with it";
        } else {
            char tmpl[] = "/tmp/ringnet-tls-XXXXXX";
            if (mkdtemp(tmpl) == nullptr) {
                certs_why = std::string("mkdtemp: ") + strerror(errno);
            } else {
                std::string dir = tmpl;
                std::string script = dir + "/make.sh";
                std::ofstream(script) << kMakeCerts;
                std::string cmd = "cd '" + dir + "' && bash make.sh > make.log 2>&1";
                if (system(cmd.c_str()) != 0) {
                    std::ifstream log(dir + "/make.log");
                    std::stringstream s;
                    s << log.rdbuf();
                    certs_why = "making the test certificates with openssl failed: " + s.str();
                } else {
                    certs.dir = dir;
                    auto f = [&](const char *n) { return dir + "/" + n; };
                    certs.ca = f("ca.pem");
                    certs.ca2 = f("ca2.pem");
                    certs.empty = f("empty.pem");
                    certs.server = f("server.pem");
                    certs.server_key = f("server.key");
                    certs.wrongname = f("wrongname.pem");
                    certs.wrongname_key = f("wrongname.key");
                    certs.expired = f("expired.pem");
                    certs.expired_key = f("expired.key");
                    certs.untrusted = f("untrusted.pem");
                    certs.untrusted_key = f("untrusted.key");
                    certs.client = f("client.pem");
                    certs.client_key = f("client.key");
                    /* Removed when the test program exits. */
                    static struct Cleanup {
                        std::string d;
                        ~Cleanup() {
                            if (!d.empty() && getenv("RINGNET_KEEP_CERTS") == nullptr)
                                RemoveDir(d);
                        }
                    } cleanup;
                    cleanup.d = dir;
                }
            }
        }
    }
    if (certs.dir.empty()) {
        *why = certs_why;
        return nullptr;
    }
    return &certs;
}

/* ---- Proc ------------------------------------------------------------------------- */

Proc::~Proc() {
    CloseStdin();
    if (pid_ > 0 && status_ < 0) {
        kill(pid_, SIGKILL);
        int st;
        waitpid(pid_, &st, 0);
    }
}

bool Proc::Start(const std::vector<std::string> &argv, std::string *why, const std::string &out_path,
                 const std::vector<std::string> &extra_env) {
    std::string exe = FindTool(argv[0]);
    if (exe.empty()) {
        *why = argv[0] + " is not installed";
        return false;
    }
    static int seq = 0;
    if (out_path.empty()) {
        std::string d;
        const TestCerts *c = Certs(&d);
        out_path_ = (c ? c->dir : std::string("/tmp")) + "/proc-" + std::to_string(getpid()) + "-" +
                    std::to_string(++seq) + ".out";
    } else {
        out_path_ = out_path;
    }
    int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int pipefd[2];
    if (out < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
        *why = std::string("open/pipe: ") + strerror(errno);
        if (out >= 0)
            close(out);
        return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out, 1);
    posix_spawn_file_actions_adddup2(&fa, out, 2);
    std::vector<char *> args;
    for (const auto &a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    std::vector<std::string> envs;
    for (char **e = environ; *e; e++)
        envs.emplace_back(*e);
    for (const auto &e : extra_env)
        envs.push_back(e);
    std::vector<char *> envp;
    for (auto &e : envs)
        envp.push_back(const_cast<char *>(e.c_str()));
    envp.push_back(nullptr);
    int rc = posix_spawn(&pid_, exe.c_str(), &fa, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[0]);
    close(out);
    if (rc != 0) {
        close(pipefd[1]);
        pid_ = -1;
        *why = "posix_spawn " + exe + ": " + strerror(rc);
        return false;
    }
    in_fd_ = pipefd[1];
    return true;
}

bool Proc::Write(const std::string &s) {
    if (in_fd_ < 0)
        return false;
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = write(in_fd_, s.data() + off, s.size() - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    return true;
}

void Proc::CloseStdin() {
    if (in_fd_ >= 0)
        close(in_fd_);
    in_fd_ = -1;
}

std::string Proc::Output() const {
    std::ifstream f(out_path_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

bool Proc::WaitOutput(const std::string &needle, int64_t timeout_ms) const {
    return WaitUntil([&] { return Output().find(needle) != std::string::npos; }, timeout_ms);
}

int Proc::Wait(int64_t timeout_ms) {
    if (pid_ <= 0)
        return -1;
    if (status_ < 0) {
        int st = 0;
        bool done = WaitUntil(
            [&] {
                pid_t r = waitpid(pid_, &st, WNOHANG);
                return r == pid_;
            },
            timeout_ms);
        if (!done)
            return -1;
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    return status_;
}

void Proc::Kill(int sig) {
    if (pid_ > 0 && status_ < 0)
        kill(pid_, sig);
}

/* ---- peers -------------------------------------------------------------------------- */

int FreePort() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int StartSServer(Proc *p, const std::string &cert, const std::string &key, const std::vector<std::string> &extra,
                 std::string *why) {
    int port = FreePort();
    /* stdbuf: s_server prints some replies (SSL_do_handshake -> 1) with
     * printf, which a file would buffer until exit. */
    std::vector<std::string> argv = {
        "stdbuf", "-oL", "openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port),
        "-cert",  cert,  "-key",    key};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!p->Start(argv, why))
        return -1;
    /* s_server says ACCEPT once it listens. */
    if (p->WaitOutput("ACCEPT", 10000))
        return port;
    *why = "openssl s_server did not start: " + p->Output();
    return -1;
}

ScopedEnv::ScopedEnv(const char *name, const char *value) : name_(name) {
    const char *old = getenv(name);
    had_ = old != nullptr;
    if (old)
        old_ = old;
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

ScopedEnv::~ScopedEnv() {
    if (had_)
        setenv(name_.c_str(), old_.c_str(), 1);
    else
        unsetenv(name_.c_str());
}

} // namespace rnt
