/* idle_conns.c - opens N TCP connections to a server and keeps them idle, so
 * a script can read the server's memory per idle connection. Plain blocking
 * sockets, no ringnet: a client independent of what it measures.
 *
 * Usage: idle_conns --port P [--conns N] [--hold SECONDS]
 * Prints "connected N" once every connection is up (the server may still be
 * accepting the last ones), then holds them until SIGTERM or --hold runs
 * out (default 60 s), and closes them with a reset (SO_LINGER 0) so no
 * TIME_WAIT is left to exhaust ports for the next run.
 * Exit status: 0, or 1 if a connection could not be made. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    int port = 0;
    long conns = 10000, hold = 60;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--conns"))
            conns = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--hold"))
            hold = atol(argv[i + 1]);
    }
    if (port <= 0 || port > 65535 || conns < 1 || conns > 100000 || hold < 1) {
        fprintf(stderr, "usage: %s --port P [--conns 1..100000] [--hold SECONDS]\n", argv[0]);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((rlim_t)conns + 16 > rl.rlim_cur) {
        fprintf(stderr,
                "idle_conns: %ld connections need more descriptors than RLIMIT_NOFILE (%llu)\n",
                conns, (unsigned long long)rl.rlim_cur);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int *fds = calloc((size_t)conns, sizeof *fds);
    if (!fds)
        return 1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tmo = {.tv_sec = 5}; /* bounds a connect the backlog holds up */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    long made = 0;
    for (; made < conns && !stop; made++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fprintf(stderr, "idle_conns: socket: %s after %ld\n", strerror(errno), made);
            break;
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof tmo);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "idle_conns: connect: %s after %ld\n", strerror(errno), made);
            close(fd);
            break;
        }
        fds[made] = fd;
    }
    int rc = made == conns ? 0 : 1;
    printf("connected %ld\n", made);
    fflush(stdout);
    time_t end = time(NULL) + hold;
    while (!stop && time(NULL) < end)
        usleep(50000);
    for (long i = 0; i < made; i++)
        close(fds[i]);
    free(fds);
    return rc;
}
