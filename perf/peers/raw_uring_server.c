/* raw_uring_server.c - the raw floor: the smallest io_uring server we know
 * how to write by hand, with no ringnet, no tasks and no layers, so that the
 * benchmarks can say what ringnet's abstraction costs. One thread, one ring:
 * multishot accept, recv (multishot into a provided-buffer ring, or one recv
 * into a per-connection buffer), send, and one io_uring_submit_and_wait per
 * loop pass that submits everything the pass queued.
 *
 * Modes:
 *   echo  every byte received is sent back, in order.
 *   http  HTTP/1.1 keep-alive hello world: each request (counted by its
 *         "\r\n\r\n", across reads, so pipelined requests all get answers)
 *         gets the same 160 bytes nginx 1.22 answers for `return 200
 *         "hello world\n"` (Server value of the same length, Date refreshed
 *         once a second).
 *
 * Build (liburing only): cc -O2 -o raw_uring_server raw_uring_server.c -luring
 *
 * Usage: raw_uring_server [--port N] [--mode echo|http] [--recv multishot|plain]
 *                         [--bufsize BYTES]
 * Prints "listening 127.0.0.1:N backend raw-io_uring" once ready; on SIGUSR1
 * prints on stderr the same STATS line as the ringnet servers:
 *   STATS ops_submitted=.. enter_calls=.. completions=.. task_switches=0 tasks_spawned=..
 * SIGTERM/SIGINT end it. */
#define _GNU_SOURCE
#include <liburing.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../http_count.h"

#define SQ_ENTRIES  4096u
#define CQ_ENTRIES  (SQ_ENTRIES * 8u)
#define BR_ENTRIES  4096u /* provided buffers (a power of two) */
#define BGID        1
#define RESP_REPEAT 64 /* responses in the prebuilt block one send can take */

/* user_data: the connection's fd in the high bits, what the op was in the low byte. */
enum { UD_ACCEPT = 1, UD_RECV = 2, UD_SEND = 3, UD_TICK = 4 };
#define UD(fd, kind) (((uint64_t)(uint32_t)(fd) << 8) | (kind))

enum mode { MODE_ECHO, MODE_HTTP };

struct conn {
    bool open, closing, sending, recv_armed, want_rearm;
    struct http_count hc; /* http: where the request heads end */
    unsigned inflight;    /* ops in the kernel; the fd is closed once this is 0 */
    /* echo, multishot: provided buffers waiting to go back out, a FIFO
     * threaded through buf_next[]; send_off is how much of the head is sent. */
    int q_head, q_tail;
    unsigned send_off;
    /* echo, plain: this connection's buffer and how much of it to send. */
    char *buf;
    unsigned buf_len;
    bool last_full;    /* plain: the last recv filled the buffer: more may be waiting */
    uint64_t owed;     /* http: response bytes still to send */
    unsigned resp_off; /* http: offset of the next byte within one response */
};

static struct io_uring ring;
static enum mode mode = MODE_ECHO;
static bool multishot = true;
static unsigned bufsize = 4096;
static int listen_fd;
static struct conn *conns; /* indexed by fd */
static int max_fd;

static struct io_uring_buf_ring *br;
static char *br_mem;
static unsigned br_returns; /* buffers handed back since the last advance */
static int *buf_next;       /* FIFO links of the echo send queues */
static unsigned *buf_len;   /* bytes the recv put in each provided buffer */
static int *rearm;          /* connections whose multishot recv stopped for want of buffers */
static int nrearm;

static char resp_block[160 * RESP_REPEAT];
static size_t resp_len;
static time_t resp_date;

static uint64_t st_ops, st_enters, st_completions, st_accepts;
static volatile sig_atomic_t want_stats, want_stop;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        want_stats = 1;
    else
        want_stop = 1;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "raw_uring_server: %s: %s\n", what, strerror(err));
    exit(1);
}

/* ---- HTTP ------------------------------------------------------------------- */

/* The response nginx 1.22.1 sends for `return 200 "hello world\n"` with
 * default_type text/plain, byte for byte but for the Server value (same
 * length) and the date. */
static void build_response(time_t now)
{
    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    char one[256];
    int n = snprintf(
        one, sizeof one,
        "HTTP/1.1 200 OK\r\nServer: raw-io_uring\r\nDate: %s\r\nContent-Type: text/plain\r\n"
        "Content-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n",
        date);
    resp_len = (size_t)n;
    for (int i = 0; i < RESP_REPEAT; i++)
        memcpy(resp_block + (size_t)i * resp_len, one, resp_len);
    resp_date = now;
}

/* ---- submissions ----------------------------------------------------------- */

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    while (!sqe) { /* the SQ is full: hand what we have to the kernel */
        int r = io_uring_submit(&ring);
        st_enters++;
        if (r > 0)
            st_ops += (uint64_t)r;
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(listen_fd, UD_ACCEPT));
}

/* A wake-up every 100 ms, so a signal is noticed even when the kernel does
 * not interrupt io_uring_enter for it (under valgrind it does not). */
static void arm_tick(void)
{
    static struct __kernel_timespec every = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_timeout(sqe, &every, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(0, UD_TICK));
}

static void arm_recv(int fd)
{
    struct conn *c = &conns[fd];
    struct io_uring_sqe *sqe = sqe_get();
    if (multishot) {
        io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BGID;
    } else {
        io_uring_prep_recv(sqe, fd, c->buf, bufsize, 0);
        /* Request/response traffic: after our answer the socket is empty
         * until the peer speaks again, so wait for data before trying. */
        if (!c->last_full)
            sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    }
    io_uring_sqe_set_data64(sqe, UD(fd, UD_RECV));
    c->recv_armed = true;
    c->inflight++;
}

static void arm_send(int fd, const void *p, size_t len)
{
    struct conn *c = &conns[fd];
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, fd, p, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(fd, UD_SEND));
    c->sending = true;
    c->inflight++;
}

static void give_back_buffer(int bid)
{
    io_uring_buf_ring_add(br, br_mem + (size_t)bid * bufsize, bufsize, (unsigned short)bid,
                          io_uring_buf_ring_mask(BR_ENTRIES), (int)br_returns);
    br_returns++;
}

/* ---- connection life ------------------------------------------------------- */

static void conn_maybe_free(int fd)
{
    struct conn *c = &conns[fd];
    if (!c->closing || c->inflight > 0)
        return;
    while (c->q_head >= 0) { /* echo data never sent: its buffers go back */
        int bid = c->q_head;
        c->q_head = buf_next[bid];
        give_back_buffer(bid);
    }
    free(c->buf);
    close(fd);
    memset(c, 0, sizeof *c);
    c->q_head = c->q_tail = -1;
}

/* End a connection: shutdown makes a multishot recv finish with 0, then the
 * fd is closed once nothing of ours is left in the kernel. */
static void conn_end(int fd)
{
    struct conn *c = &conns[fd];
    if (!c->closing) {
        c->closing = true;
        shutdown(fd, SHUT_RDWR);
    }
    conn_maybe_free(fd);
}

static void on_accept(int res, bool more)
{
    if (!more && !want_stop)
        arm_accept();
    if (res < 0)
        return; /* EMFILE and friends: the re-arm above tries again */
    if (res >= max_fd) {
        close(res);
        return;
    }
    st_accepts++;
    int one = 1;
    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = &conns[res];
    memset(c, 0, sizeof *c);
    c->open = true;
    c->q_head = c->q_tail = -1;
    if (!multishot) {
        c->buf = malloc(bufsize);
        if (!c->buf) {
            close(res);
            c->open = false;
            return;
        }
    }
    arm_recv(res);
}

/* http: send what is owed from the prebuilt block of responses. */
static void http_send_more(int fd)
{
    struct conn *c = &conns[fd];
    size_t room = resp_len * RESP_REPEAT - c->resp_off;
    size_t len = c->owed < room ? (size_t)c->owed : room;
    arm_send(fd, resp_block + c->resp_off, len);
}

static void echo_send_head(int fd)
{
    struct conn *c = &conns[fd];
    int bid = c->q_head;
    arm_send(fd, br_mem + (size_t)bid * bufsize + c->send_off, buf_len[bid] - c->send_off);
}

static void on_recv(int fd, int res, unsigned flags)
{
    struct conn *c = &conns[fd];
    bool more = multishot && (flags & IORING_CQE_F_MORE);
    if (!more) { /* a multishot recv stays in flight until its last CQE */
        c->recv_armed = false;
        c->inflight--;
    }
    if (res <= 0 || c->closing) {
        if (res > 0 && (flags & IORING_CQE_F_BUFFER))
            give_back_buffer((int)(flags >> IORING_CQE_BUFFER_SHIFT));
        if (res == -ENOBUFS && !c->closing) {
            /* The buffer ring ran dry; re-arm once buffers come back. */
            if (!c->want_rearm) {
                c->want_rearm = true;
                rearm[nrearm++] = fd;
            }
            return;
        }
        conn_end(fd);
        return;
    }
    if (multishot) {
        int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
        if (mode == MODE_HTTP) {
            unsigned k = http_count_requests(&c->hc, br_mem + (size_t)bid * bufsize, (size_t)res);
            give_back_buffer(bid);
            c->owed += (uint64_t)k * resp_len;
            if (c->owed && !c->sending)
                http_send_more(fd);
        } else {
            buf_len[bid] = (unsigned)res;
            buf_next[bid] = -1;
            if (c->q_tail >= 0)
                buf_next[c->q_tail] = bid;
            else
                c->q_head = bid;
            c->q_tail = bid;
            if (!c->sending)
                echo_send_head(fd);
        }
        if (!more)
            arm_recv(fd);
        return;
    }
    /* plain: one recv into the connection's buffer, answered before the next */
    c->last_full = (unsigned)res == bufsize;
    if (mode == MODE_HTTP) {
        unsigned k = http_count_requests(&c->hc, c->buf, (size_t)res);
        c->owed += (uint64_t)k * resp_len;
        if (c->owed)
            http_send_more(fd);
        else
            arm_recv(fd);
    } else {
        c->buf_len = (unsigned)res;
        c->send_off = 0;
        arm_send(fd, c->buf, (size_t)res);
    }
}

static void on_send(int fd, int res)
{
    struct conn *c = &conns[fd];
    c->inflight--;
    c->sending = false;
    if (res <= 0 || c->closing) {
        conn_end(fd);
        return;
    }
    if (mode == MODE_HTTP) {
        c->owed -= (uint64_t)res;
        c->resp_off = (unsigned)((c->resp_off + (size_t)res) % resp_len);
        if (c->owed)
            http_send_more(fd);
        else if (!multishot)
            arm_recv(fd);
        return;
    }
    if (multishot) {
        c->send_off += (unsigned)res;
        int bid = c->q_head;
        if (c->send_off == buf_len[bid]) {
            c->send_off = 0;
            c->q_head = buf_next[bid];
            if (c->q_head < 0)
                c->q_tail = -1;
            give_back_buffer(bid);
        }
        if (c->q_head >= 0)
            echo_send_head(fd);
        return;
    }
    c->send_off += (unsigned)res;
    if (c->send_off < c->buf_len)
        arm_send(fd, c->buf + c->send_off, c->buf_len - c->send_off);
    else
        arm_recv(fd);
}

/* ---- setup ----------------------------------------------------------------- */

static void setup_ring(void)
{
    /* The flags ringnet asks for, so both get the same kernel paths. */
    static const unsigned chain[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof chain / sizeof chain[0] && rc == -EINVAL; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = chain[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = CQ_ENTRIES;
        rc = io_uring_queue_init_params(SQ_ENTRIES, &ring, &p);
    }
    if (rc < 0)
        die("io_uring_queue_init", -rc);
    (void)io_uring_register_ring_fd(&ring);
    if (!multishot)
        return;
    /* liburing 2.3 has no io_uring_setup_buf_ring: map and register by hand. */
    size_t ring_bytes = BR_ENTRIES * sizeof(struct io_uring_buf);
    br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        die("mmap buffer ring", errno);
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = BR_ENTRIES;
    reg.bgid = BGID;
    rc = io_uring_register_buf_ring(&ring, &reg, 0);
    if (rc < 0)
        die("io_uring_register_buf_ring (kernel 5.19+)", -rc);
    br_mem = malloc((size_t)BR_ENTRIES * bufsize);
    buf_next = malloc(BR_ENTRIES * sizeof *buf_next);
    buf_len = malloc(BR_ENTRIES * sizeof *buf_len);
    if (!br_mem || !buf_next || !buf_len)
        die("malloc", ENOMEM);
    for (unsigned i = 0; i < BR_ENTRIES; i++)
        give_back_buffer((int)i);
    io_uring_buf_ring_advance(br, (int)br_returns);
    br_returns = 0;
}

static int setup_listener(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket", errno);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind", errno);
    if (listen(fd, 4096) < 0)
        die("listen", errno);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    printf("listening 127.0.0.1:%d backend raw-io_uring mode %s recv %s\n", ntohs(a.sin_port),
           mode == MODE_HTTP ? "http" : "echo", multishot ? "multishot" : "plain");
    fflush(stdout);
    return fd;
}

static void print_stats(void)
{
    fprintf(stderr,
            "STATS ops_submitted=%" PRIu64 " enter_calls=%" PRIu64 " completions=%" PRIu64
            " task_switches=0 tasks_spawned=%" PRIu64 "\n",
            st_ops, st_enters, st_completions, st_accepts);
    fflush(stderr);
}

int main(int argc, char **argv)
{
    int port = 9000;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--port") && v)
            port = atoi(v);
        else if (!strcmp(a, "--mode") && v && (!strcmp(v, "echo") || !strcmp(v, "http")))
            mode = !strcmp(v, "http") ? MODE_HTTP : MODE_ECHO;
        else if (!strcmp(a, "--recv") && v && (!strcmp(v, "multishot") || !strcmp(v, "plain")))
            multishot = !strcmp(v, "multishot");
        else if (!strcmp(a, "--bufsize") && v && atol(v) >= 64 && atol(v) <= 65536)
            bufsize = (unsigned)atol(v);
        else {
            fprintf(stderr,
                    "usage: %s [--port N] [--mode echo|http] [--recv multishot|plain] [--bufsize "
                    "64..65536]\n",
                    argv[0]);
            return 2;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    max_fd = (int)(rl.rlim_cur > 65536 ? 65536 : rl.rlim_cur);
    conns = calloc((size_t)max_fd, sizeof *conns);
    rearm = malloc((size_t)max_fd * sizeof *rearm);
    if (!conns || !rearm)
        die("calloc", ENOMEM);
    for (int i = 0; i < max_fd; i++)
        conns[i].q_head = conns[i].q_tail = -1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: io_uring_enter returns -EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    setup_ring();
    build_response(time(NULL));
    listen_fd = setup_listener(port);
    arm_accept();
    arm_tick();

    while (!want_stop) {
        if (want_stats) {
            want_stats = 0;
            print_stats();
        }
        if (mode == MODE_HTTP) {
            time_t now = time(NULL);
            if (now != resp_date)
                build_response(now);
        }
        if (br_returns) {
            io_uring_buf_ring_advance(br, (int)br_returns);
            br_returns = 0;
            for (int i = 0; i < nrearm; i++) {
                int fd = rearm[i];
                conns[fd].want_rearm = false;
                if (conns[fd].open && !conns[fd].closing && !conns[fd].recv_armed)
                    arm_recv(fd);
            }
            nrearm = 0;
        }
        int r = io_uring_submit_and_wait(&ring, 1);
        st_enters++;
        if (r > 0)
            st_ops += (uint64_t)r;
        if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN && r != -ETIME)
            die("io_uring_submit_and_wait", -r);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            n++;
            uint64_t ud = cqe->user_data;
            int fd = (int)(ud >> 8);
            switch (ud & 0xff) {
            case UD_ACCEPT:
                on_accept(cqe->res, cqe->flags & IORING_CQE_F_MORE);
                break;
            case UD_RECV:
                on_recv(fd, cqe->res, cqe->flags);
                break;
            case UD_SEND:
                on_send(fd, cqe->res);
                break;
            case UD_TICK:
                arm_tick();
                break;
            }
        }
        io_uring_cq_advance(&ring, n);
        st_completions += n;
    }
    io_uring_queue_exit(&ring);
    return 0;
}
