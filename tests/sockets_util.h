/* sockets_util.h - what the socket-option, abort and drain tests share: the
 * descriptor behind an rn_conn (found by its addresses, the API has no way
 * to hand it out) and a plain blocking socket peer that tells a reset from
 * an orderly end. */
#ifndef RINGNET_TESTS_SOCKETS_UTIL_H
#define RINGNET_TESTS_SOCKETS_UTIL_H

#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace rnt {

/* "127.0.0.1:port" of an IPv4 address. */
inline std::string FormatV4(const sockaddr_in &a) {
    char ip[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

/* The descriptor of c (IPv4 connections): the one whose local and peer
 * addresses are c's. -1 if none is. */
inline int ConnFd(rn_conn *c) {
    const std::string local = rn_conn_local_addr(c), remote = rn_conn_remote_addr(c);
    for (int fd = 0; fd < 65536; fd++) {
        sockaddr_in l{}, r{};
        socklen_t ll = sizeof l, rl = sizeof r;
        if (getsockname(fd, (sockaddr *)&l, &ll) != 0) {
            if (errno == EBADF && fd > 4096)
                break;
            continue;
        }
        if (l.sin_family != AF_INET || getpeername(fd, (sockaddr *)&r, &rl) != 0)
            continue;
        if (FormatV4(l) == local && FormatV4(r) == remote)
            return fd;
    }
    return -1;
}

/* A plain blocking socket connected to 127.0.0.1:port (RawConnect), with a
 * bounded wait so that a missing reset fails the test instead of hanging
 * it. */
struct RawPeer {
    int fd = -1;
    explicit RawPeer(int port) { fd = RawConnect(port); }
    RawPeer(const RawPeer &) = delete;
    RawPeer &operator=(const RawPeer &) = delete;
    ~RawPeer() {
        if (fd >= 0)
            close(fd);
    }
    /* Read until the stream ends: 0 at an orderly end, -errno at an error
     * (-ECONNRESET for a reset; -EAGAIN when nothing came for kNeverMs).
     * Waits with rn_sleep, so the loop (a drain, the other end) runs on. */
    int ReadToEnd() const {
        char buf[65536];
        int64_t until = NowMs() + kNeverMs;
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0)
                return 0;
            if (n > 0)
                continue;
            int e = errno;
            if (e == EINTR)
                continue;
            if (e != EAGAIN || NowMs() > until)
                return -e;
            rn_sleep(1);
        }
    }
};

} // namespace rnt

#endif /* RINGNET_TESTS_SOCKETS_UTIL_H */
