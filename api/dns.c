/* dns.c - name resolution without blocking the loop: getaddrinfo runs on a
 * small shared pool of resolver threads; each lookup has a pipe whose write
 * end the thread closes once the answer is in, which wakes the task that
 * asked (its read end turns readable, through the backend's poll op). The
 * thread holds no descriptor after the wake-up, so the task closes the
 * read end at once and a lookup that returned leaves nothing open (an
 * eventfd would have to be written and then closed by whoever let go last,
 * a moment after the call returned).
 *
 * Why threads and not c-ares: getaddrinfo is what every other program on the
 * machine uses (nsswitch, /etc/hosts, systemd-resolved, mDNS modules, the
 * search list and options of resolv.conf) so a name resolves the same way
 * here as in curl or ssh; c-ares reads only hosts and resolv.conf. A lookup
 * costs a thread hand-off, which is nothing beside a DNS round trip, and
 * numeric hosts never leave the calling thread. */
#include "api.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RESOLVER_THREADS_MAX 8
#define HOST_MAX             255

struct job {
    atomic_int refs;  /* the asking task and the pool */
    atomic_bool done; /* release/acquire: the answer below is complete */
    int rfd;          /* the pipe's read end: the asking task's */
    int wfd;          /* its write end: the thread's, closed to wake the task */
    char host[HOST_MAX + 1];
    int gai_rc;
    int sys_err;
    struct addrinfo *res;
    struct job *next;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail;
    int threads, idle;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0};

static void job_unref(struct job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    if (j->res)
        freeaddrinfo(j->res);
    free(j);
}

static void *resolver_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.head) {
            pool.idle++;
            pthread_cond_wait(&pool.cv, &pool.mu);
            pool.idle--;
        }
        struct job *j = pool.head;
        pool.head = j->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.mu);

        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        errno = 0;
        j->gai_rc = getaddrinfo(j->host, NULL, &hints, &j->res);
        j->sys_err = errno;
        /* Closing the write end wakes the task; this store is what makes
         * the answer visible to it (and to ThreadSanitizer, which cannot
         * see the pipe). */
        atomic_store_explicit(&j->done, true, memory_order_release);
        close(j->wfd);
        job_unref(j);

        pthread_mutex_lock(&pool.mu);
    }
    return NULL;
}

static int pool_push(struct job *j)
{
    pthread_mutex_lock(&pool.mu);
    j->next = NULL;
    if (pool.tail)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    int rc = 0;
    if (pool.idle == 0 && pool.threads < RESOLVER_THREADS_MAX) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = -pthread_create(&t, &attr, resolver_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc == 0)
            pool.threads++;
        else if (pool.threads > 0)
            rc = 0; /* the threads we have will get to it */
    }
    if (rc == 0)
        pthread_cond_signal(&pool.cv);
    else { /* no thread at all: take the job back */
        pool.head = pool.tail = NULL;
    }
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

static int gai_failure(const char *host, int gai_rc, int sys_err)
{
    switch (gai_rc) {
    case EAI_MEMORY:
        return rn__err(-ENOMEM, "resolve %s: out of memory", host);
    case EAI_SYSTEM:
        if (sys_err)
            return rn__err(-sys_err, "resolve %s: %s", host, rn_strerror(-sys_err));
        break;
    default:
        break;
    }
    return rn__err(RN_EDNS, "resolve %s: %s", host, gai_strerror(gai_rc));
}

/* getaddrinfo on the pool; the calling task parks until the answer or the
 * deadline. *res belongs to the caller on success. */
static int lookup(struct rn__loop *loop, const char *host, int64_t deadline, struct job **out)
{
    if (strlen(host) > HOST_MAX)
        return rn__err(RN_EDNS, "resolve: the name is %zu bytes long, more than DNS allows (%d)",
                       strlen(host), HOST_MAX);
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return rn__err(-ENOMEM, "resolve %s: out of memory", host);
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0) {
        int err = -errno;
        free(j);
        return rn__err(err, "resolve %s: pipe: %s", host, rn_strerror(err));
    }
    j->rfd = pfd[0];
    j->wfd = pfd[1];
    strcpy(j->host, host);
    atomic_init(&j->refs, 2);
    atomic_init(&j->done, false);

    struct rn__fd f = {.fd = j->rfd, .nonblock = true};
    int rc = loop->bk->fd_open(loop, &f);
    if (rc == 0)
        rc = pool_push(j);
    if (rc < 0) {
        loop->bk->fd_close(loop, &f);
        close(j->rfd);
        close(j->wfd);
        free(j);
        return rn__err(rc, "resolve %s: cannot start a resolver thread: %s", host, rn_strerror(rc));
    }
    struct rn__op op = {.kind = RN__OP_POLL, .f = &f, .events = POLLIN, .deadline = deadline};
    rc = rn__op_wait(loop, &op);
    /* The read end is this call's whatever happened: after a timeout the
     * thread still closes its write end, into a pipe nobody reads. */
    loop->bk->fd_close(loop, &f);
    close(j->rfd);
    if (rc >= 0 && !atomic_load_explicit(&j->done, memory_order_acquire))
        rc = -EIO; /* woken with no answer: only the thread closes the write end */
    if (rc < 0) {
        job_unref(j);
        if (rc == -ETIMEDOUT)
            return rn__err(rc, "resolve %s: timed out (rn_set_connect_timeout)", host);
        return rn__err(rc, "resolve %s: %s", host, rn_strerror(rc));
    }
    *out = j;
    return 0;
}

int rn__resolve_all(struct rn__loop *loop, const char *host, int port, int64_t deadline,
                    struct sockaddr_storage **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct sockaddr_storage sa;
    socklen_t salen;
    if (rn__addr_parse_numeric(host, port, &sa, &salen)) {
        *out = malloc(sizeof sa);
        if (!*out)
            return rn__err(-ENOMEM, "out of memory");
        **out = sa;
        *n = 1;
        return 0;
    }
    struct job *j = NULL;
    int rc = lookup(loop, host, deadline, &j);
    if (rc < 0)
        return rc;
    if (j->gai_rc != 0) {
        rc = gai_failure(host, j->gai_rc, j->sys_err);
        job_unref(j);
        return rc;
    }
    size_t count = 0;
    for (struct addrinfo *ai = j->res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            count++;
    struct sockaddr_storage *list = count ? calloc(count, sizeof *list) : NULL;
    if (!list) {
        job_unref(j);
        return count ? rn__err(-ENOMEM, "out of memory")
                     : rn__err(RN_EDNS, "resolve %s: no IPv4 or IPv6 address", host);
    }
    /* IPv4 first (as rn_resolve promises), then IPv6, each in resolver order. */
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        int fam = pass == 0 ? AF_INET : AF_INET6;
        for (struct addrinfo *ai = j->res; ai; ai = ai->ai_next) {
            if (ai->ai_family != fam)
                continue;
            memcpy(&list[k], ai->ai_addr, ai->ai_addrlen);
            if (fam == AF_INET)
                ((struct sockaddr_in *)&list[k])->sin_port = htons((uint16_t)port);
            else
                ((struct sockaddr_in6 *)&list[k])->sin6_port = htons((uint16_t)port);
            k++;
        }
    }
    job_unref(j);
    *out = list;
    *n = k;
    return 0;
}

RN_EXPORT int rn_resolve(const char *host, char *out, size_t outlen)
{
    if (!host || !*host || !out)
        return rn__err(-EINVAL, "resolve: %s is NULL or empty", !out ? "out" : "host");
    struct rn__loop *loop = rn__loop_get();
    if (!loop)
        return rn__loop_error();
    struct sockaddr_storage *list;
    size_t n;
    int rc = rn__resolve_all(loop, host, 0, rn__connect_deadline(), &list, &n);
    if (rc < 0)
        return rc;
    char ip[INET6_ADDRSTRLEN];
    if (list[0].ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&list[0])->sin_addr, ip, sizeof ip);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&list[0])->sin6_addr, ip, sizeof ip);
    free(list);
    if (strlen(ip) + 1 > outlen)
        return rn__err(-ENOSPC, "resolve %s: the answer %s needs %zu bytes, out has %zu", host, ip,
                       strlen(ip) + 1, outlen);
    memcpy(out, ip, strlen(ip) + 1);
    return 0;
}
