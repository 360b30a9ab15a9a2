/* dns.c - name resolution without blocking the loop: getaddrinfo runs on
 * the offload pool (core/offload.c) while the asking task waits, bounded
 * by the connect deadline. A lookup that times out leaves its job behind:
 * the worker finishes getaddrinfo and frees the job, answer and all. The
 * finished job wakes the task through the loop's inbox (no descriptor per
 * lookup).
 *
 * Why threads and not c-ares: getaddrinfo is what every other program on the
 * machine uses (nsswitch, /etc/hosts, systemd-resolved, mDNS modules, the
 * search list and options of resolv.conf) so a name resolves the same way
 * here as in curl or ssh; c-ares reads only hosts and resolv.conf. A lookup
 * costs a thread hand-off, which is nothing beside a DNS round trip, and
 * numeric hosts never leave the calling thread. */
#include "api.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOST_MAX 255

struct job {
    char host[HOST_MAX + 1];
    int gai_rc;
    int sys_err;
    struct addrinfo *res;
};

static void job_free(void *p)
{
    struct job *j = p;
    if (j->res)
        freeaddrinfo(j->res);
    free(j);
}

/* On a worker of the pool. */
static void job_run(void *p)
{
    struct job *j = p;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    errno = 0;
    j->gai_rc = getaddrinfo(j->host, NULL, &hints, &j->res);
    j->sys_err = errno;
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
 * deadline. *out (answer included) belongs to the caller on success. */
static int lookup(struct rn__loop *loop, const char *host, int64_t deadline, struct job **out)
{
    if (strlen(host) > HOST_MAX)
        return rn__err(RN_EDNS, "resolve: the name is %zu bytes long, more than DNS allows (%d)",
                       strlen(host), HOST_MAX);
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return rn__err(-ENOMEM, "resolve %s: out of memory", host);
    strcpy(j->host, host);
    /* From here j is the pool's on failure: job_free runs when both let go. */
    int rc = rn__offload_until(loop, job_run, j, job_free, deadline);
    if (rc == -ETIMEDOUT)
        return rn__err(rc, "resolve %s: timed out (rn_set_connect_timeout)", host);
    if (rc == -EAGAIN)
        return rn__err(rc, "resolve %s: cannot start a resolver thread: %s", host, rn_strerror(rc));
    if (rc < 0)
        return rn__err(rc, "resolve %s: %s", host, rn_strerror(rc));
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
        job_free(j);
        return rc;
    }
    size_t count = 0;
    for (struct addrinfo *ai = j->res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            count++;
    struct sockaddr_storage *list = count ? calloc(count, sizeof *list) : NULL;
    if (!list) {
        job_free(j);
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
    job_free(j);
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
