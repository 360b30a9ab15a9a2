/* http_check.c - checks that an HTTP hello-world server of the benchmarks
 * answers every request with nginx's bytes, pipelined or split: the
 * benchmark is only fair if every server does the same work.
 *
 * Over one keep-alive connection to 127.0.0.1:PORT it sends one request a
 * byte at a time, 16 pipelined in one write, 100 pipelined in one write, and
 * one whose "\r\n\r\n" is split across two writes 50 ms apart. It expects
 * exactly 118 answers, each the 160 bytes of nginx 1.22.1's answer to
 * `return 200 "hello world\n"` (Server value: any 12 characters; Date: an
 * RFC 7231 date within 5 s of now), and nothing more.
 *
 * Usage: http_check PORT      exit 0 when all is as expected, 1 otherwise. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* '?' stands for any byte: the Server value and the date. */
static const char layout[] = "HTTP/1.1 200 OK\r\n"
                             "Server: ????????????\r\n"
                             "Date: ?????????????????????????????\r\n"
                             "Content-Type: text/plain\r\n"
                             "Content-Length: 12\r\n"
                             "Connection: keep-alive\r\n"
                             "\r\n"
                             "hello world\n";
#define ANSWER_LEN (sizeof layout - 1)
#define EXPECTED   118

static const char request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: http_check\r\n\r\n";

static int fail(const char *fmt, const char *detail)
{
    fprintf(stderr, "http_check: ");
    fprintf(stderr, fmt, detail);
    fprintf(stderr, "\n");
    return 1;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int check_answer(const char *a)
{
    for (size_t i = 0; i < ANSWER_LEN; i++)
        if (layout[i] != '?' && layout[i] != a[i])
            return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    char date[30];
    memcpy(date, strstr(a, "Date: ") + 6, 29);
    date[29] = '\0';
    const char *end = strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -2;
    time_t t = timegm(&tm), now = time(NULL);
    return (t > now + 5 || t < now - 5) ? -2 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2 || atoi(argv[1]) <= 0) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        return fail("connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    size_t rl = sizeof request - 1;
    for (size_t i = 0; i < rl; i++) /* one request, a byte per write */
        if (send_all(fd, request + i, 1) < 0)
            return fail("send: %s", strerror(errno));
    static char burst[100 * sizeof request];
    for (int i = 0; i < 100; i++)
        memcpy(burst + (size_t)i * rl, request, rl);
    if (send_all(fd, burst, 16 * rl) < 0 || send_all(fd, burst, 100 * rl) < 0)
        return fail("send: %s", strerror(errno));
    if (send_all(fd, request, rl - 1) < 0)
        return fail("send: %s", strerror(errno));
    usleep(50000);
    if (send_all(fd, request + rl - 1, 1) < 0)
        return fail("send: %s", strerror(errno));

    /* Read until EXPECTED answers have come, then 200 ms more for extras. */
    static char in[(EXPECTED + 4) * ANSWER_LEN];
    size_t have = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        long wait = have >= EXPECTED * ANSWER_LEN ? 200 : 5000 - ms;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (wait <= 0 || poll(&p, 1, (int)wait) <= 0)
            break;
        ssize_t n = recv(fd, in + have, sizeof in - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        if (have == sizeof in)
            break;
    }
    close(fd);
    char got[64];
    snprintf(got, sizeof got, "%zu", have);
    if (have != EXPECTED * ANSWER_LEN) {
        fprintf(stderr, "http_check: expected %d answers of %zu bytes (%zu bytes), got %s bytes\n",
                EXPECTED, ANSWER_LEN, EXPECTED * ANSWER_LEN, got);
        if (have)
            fprintf(stderr, "first bytes: %.*s\n", (int)(have < 200 ? have : 200), in);
        return 1;
    }
    for (int i = 0; i < EXPECTED; i++) {
        int rc = check_answer(in + (size_t)i * ANSWER_LEN);
        if (rc < 0) {
            fprintf(stderr, "http_check: answer %d %s:\n%.*s\n", i + 1,
                    rc == -1 ? "differs from nginx's layout" : "has a bad or stale Date",
                    (int)ANSWER_LEN, in + (size_t)i * ANSWER_LEN);
            return 1;
        }
    }
    printf("http_check: %d answers of %zu bytes, each in nginx's layout, nothing extra\n", EXPECTED,
           ANSWER_LEN);
    return 0;
}
