/* fuzz_addr.c - libFuzzer target: every string api/ parses as a host,
 * with the port beside it.
 *
 * Input (text, so that seeds are readable: seeds/addr/): line 1 the port
 * (decimal, anything strtol takes; clamped to int), line 2 the out length
 * given to rn_resolve (0..63), line 3 the host (every byte but newline;
 * a NUL ends it early, as in C), then the answer this program's own
 * getaddrinfo gives for a name, one IPv4 or IPv6 literal per line (lines
 * that are not literals are skipped; none = EAI_NONAME). That getaddrinfo
 * replaces libc's, so no lookup leaves the machine.
 *
 * Each input goes through:
 *  - rn__addr_parse_numeric, checked against inet_pton (brackets allowed
 *    around IPv6), and rn__addr_format of what it parsed, which must parse
 *    back to the same address and port;
 *  - rn_resolve: numeric hosts must never reach the resolver, over-long
 *    and empty ones must be refused before it, and the text must be the
 *    first IPv4 answer (else the first IPv6) or -ENOSPC for a short out;
 *  - rn_tcp_listen with port 0 (or an out-of-range port, which must be
 *    -EINVAL): a bind on what the host resolves to, closed again;
 *  - rn_tcp_connect only where it must refuse before any socket: empty
 *    host, port outside 1..65535, a name (the resolver answers nothing). */
#include "fuzz_common.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the resolver's answers ------------------------------------------------------- */

/* The answer for this input, parsed: set before the calls, read on the
 * resolver thread (the pool's mutex orders the two). */
#define MAX_ANSWERS 16
static struct {
    int family;
    unsigned char addr[16];
} answers[MAX_ANSWERS];
static size_t n_answers;
static atomic_int lookups;

static bool is_numeric(const char *host)
{
    unsigned char b[16];
    char tmp[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1)
        return true;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof tmp) {
        memcpy(tmp, host + 1, n - 2);
        tmp[n - 2] = '\0';
        return inet_pton(AF_INET6, tmp, b) == 1;
    }
    return false;
}

int getaddrinfo(const char *restrict node, const char *restrict service,
                const struct addrinfo *restrict hints, struct addrinfo **restrict res)
{
    (void)service;
    (void)hints;
    FUZZ_CHECK(node && *node, "the resolver was asked for an empty name");
    FUZZ_CHECK(strlen(node) <= 255, "the resolver was asked for a %zu-byte name", strlen(node));
    FUZZ_CHECK(!is_numeric(node), "the numeric host \"%s\" went to the resolver", node);
    atomic_fetch_add(&lookups, 1);
    struct addrinfo *head = NULL, **tail = &head;
    for (size_t i = 0; i < n_answers; i++) {
        bool v6 = answers[i].family == AF_INET6;
        struct {
            struct addrinfo ai;
            struct sockaddr_storage sa;
        } *e = calloc(1, sizeof *e);
        if (!e)
            break;
        e->ai.ai_family = answers[i].family;
        e->ai.ai_socktype = SOCK_STREAM;
        e->ai.ai_protocol = IPPROTO_TCP;
        e->ai.ai_addr = (struct sockaddr *)&e->sa;
        if (v6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&e->sa;
            s6->sin6_family = AF_INET6;
            memcpy(&s6->sin6_addr, answers[i].addr, 16);
            e->ai.ai_addrlen = sizeof *s6;
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&e->sa;
            s4->sin_family = AF_INET;
            memcpy(&s4->sin_addr, answers[i].addr, 4);
            e->ai.ai_addrlen = sizeof *s4;
        }
        *tail = &e->ai;
        tail = &e->ai.ai_next;
    }
    if (!head)
        return EAI_NONAME;
    *res = head;
    return 0;
}

void freeaddrinfo(struct addrinfo *ai)
{
    while (ai) {
        struct addrinfo *next = ai->ai_next;
        free(ai); /* the entry and its address are one block */
        ai = next;
    }
}

/* The text rn_resolve must give for a name: the first IPv4 answer, else
 * the first IPv6; "" when there is none. */
static void expected_answer(char *out, size_t len)
{
    out[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        int fam = pass == 0 ? AF_INET : AF_INET6;
        for (size_t i = 0; i < n_answers; i++) {
            if (answers[i].family == fam) {
                inet_ntop(fam, answers[i].addr, out, (socklen_t)len);
                return;
            }
        }
    }
}

/* ---- the checks ------------------------------------------------------------------------- */

static void check_numeric(const char *host, int port)
{
    struct sockaddr_storage sa;
    socklen_t len = 0;
    int r = rn__addr_parse_numeric(host, port, &sa, &len);
    FUZZ_CHECK(r == (is_numeric(host) ? 1 : 0), "rn__addr_parse_numeric(\"%s\") = %d", host, r);
    if (!r)
        return;
    uint16_t want_port = htons((uint16_t)port);
    char text[80], ip[INET6_ADDRSTRLEN + 2];
    rn__addr_format((struct sockaddr *)&sa, text, sizeof text);
    unsigned got_port = 0;
    if (sa.ss_family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&sa;
        FUZZ_CHECK(len == sizeof *v4 && v4->sin_port == want_port, "IPv4 length or port wrong");
        FUZZ_CHECK(sscanf(text, "%15[0-9.]:%u", ip, &got_port) == 2, "formatted \"%s\"", text);
        struct in_addr back;
        FUZZ_CHECK(inet_pton(AF_INET, ip, &back) == 1 &&
                       memcmp(&back, &v4->sin_addr, sizeof back) == 0,
                   "\"%s\" formatted as \"%s\" does not parse back", host, text);
    } else {
        FUZZ_CHECK(sa.ss_family == AF_INET6, "family %d", sa.ss_family);
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sa;
        FUZZ_CHECK(len == sizeof *v6 && v6->sin6_port == want_port, "IPv6 length or port wrong");
        FUZZ_CHECK(sscanf(text, "[%47[0-9a-fA-F:.]]:%u", ip, &got_port) == 2, "formatted \"%s\"",
                   text);
        struct in6_addr back;
        FUZZ_CHECK(inet_pton(AF_INET6, ip, &back) == 1 &&
                       memcmp(&back, &v6->sin6_addr, sizeof back) == 0,
                   "\"%s\" formatted as \"%s\" does not parse back", host, text);
    }
    FUZZ_CHECK(got_port == ntohs(want_port), "port %u in \"%s\", not %u", got_port, text,
               ntohs(want_port));
}

static const char *cur_host; /* this input's host */

/* A failure must come with a sentence, and no NULL printed into it
 * (unless the host itself says "(null)"). */
static void check_detail(const char *call, int rc)
{
    const char *msg = rn_last_error();
    FUZZ_CHECK(msg && *msg, "%s failed with %d and no detail", call, rc);
    FUZZ_CHECK(strstr(msg, "(null)") == NULL || strstr(cur_host, "(null)") != NULL,
               "%s: a NULL string in the detail: %s", call, msg);
    for (const char *q = msg; *q; q++)
        FUZZ_CHECK((unsigned char)*q >= 0x20 && *q != 0x7f, "%s: a control byte (%d) in the detail", call,
                   (int)(unsigned char)*q);
}

static void check_resolve(const char *host, size_t outlen)
{
    char out[80];
    memset(out, 0x7f, sizeof out);
    int before = atomic_load(&lookups);
    int rc = rn_resolve(host, out, outlen);
    bool asked = atomic_load(&lookups) != before;
    size_t hl = strlen(host);
    if (hl == 0) {
        FUZZ_CHECK(rc == -EINVAL && !asked, "rn_resolve(\"\") = %d", rc);
        check_detail("rn_resolve", rc);
        return;
    }
    char want[INET6_ADDRSTRLEN] = "";
    if (is_numeric(host)) {
        FUZZ_CHECK(!asked, "numeric host resolved through DNS");
        struct sockaddr_storage sa;
        socklen_t len;
        FUZZ_CHECK(rn__addr_parse_numeric(host, 0, &sa, &len) == 1, "not numeric after all");
        if (sa.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, want, sizeof want);
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, want, sizeof want);
    } else if (hl > 255) {
        FUZZ_CHECK(rc == RN_EDNS && !asked, "rn_resolve of a %zu-byte name = %d", hl, rc);
        check_detail("rn_resolve", rc);
        return;
    } else if (!asked) {
        /* refused before the resolver (a name check): must say so */
        FUZZ_CHECK(rc == RN_EDNS || rc == -EINVAL, "rn_resolve(\"%s\") = %d without a lookup",
                   host, rc);
        check_detail("rn_resolve", rc);
        return;
    } else {
        expected_answer(want, sizeof want);
        if (!want[0]) {
            FUZZ_CHECK(rc == RN_EDNS, "rn_resolve of a name with no answer = %d", rc);
            check_detail("rn_resolve", rc);
            return;
        }
    }
    if (strlen(want) + 1 > outlen) {
        FUZZ_CHECK(rc == -ENOSPC, "rn_resolve into %zu bytes for \"%s\" = %d", outlen, want, rc);
        check_detail("rn_resolve", rc);
        for (size_t i = outlen; i < sizeof out; i++)
            FUZZ_CHECK(out[i] == 0x7f, "rn_resolve wrote past outlen");
        return;
    }
    FUZZ_CHECK(rc == 0, "rn_resolve(\"%s\") = %d: %s", host, rc, rn_last_error());
    FUZZ_CHECK(strcmp(out, want) == 0, "rn_resolve(\"%s\") gave \"%s\", not \"%s\"", host, out, want);
}

static void check_listen(const char *host, int port)
{
    bool valid_port = port >= 0 && port <= 65535;
    if (valid_port && port != 0)
        return; /* a fixed port could take one another program is about to use */
    rn_server *s = (rn_server *)1;
    int rc = rn_tcp_listen(&s, host, port);
    if (!valid_port) {
        FUZZ_CHECK(rc == -EINVAL && s == NULL, "rn_tcp_listen on port %d = %d", port, rc);
        check_detail("rn_tcp_listen", rc);
        return;
    }
    if (rc < 0) {
        FUZZ_CHECK(s == NULL, "rn_tcp_listen failed and left *out set");
        check_detail("rn_tcp_listen", rc);
        return;
    }
    const char *addr = rn_server_addr(s);
    size_t al = addr ? strlen(addr) : 0;
    FUZZ_CHECK(al > 2 && strcmp(addr + al - 2, ":0") != 0, "listening on \"%s\"",
               addr ? addr : "(null)");
    FUZZ_CHECK(rn_server_close(s) == 0, "rn_server_close: %s", rn_last_error());
}

static void check_connect(const char *host, int port)
{
    bool valid_port = port >= 1 && port <= 65535;
    if (*host && valid_port && is_numeric(host))
        return; /* that one would really connect */
    size_t saved = n_answers;
    n_answers = 0; /* a name resolves to nothing: no socket is ever made */
    /* *out is not checked: the header does not say what a failure leaves
     * there (an empty host leaves it as it was, other failures NULL). */
    rn_conn *c = NULL;
    int rc = rn_tcp_connect(&c, host, port);
    n_answers = saved;
    FUZZ_CHECK(rc < 0 && c == NULL, "rn_tcp_connect(\"%s\", %d) = %d", host, port, rc);
    if (!*host || !valid_port)
        FUZZ_CHECK(rc == -EINVAL, "rn_tcp_connect(\"%s\", %d) = %d, not -EINVAL", host, port, rc);
    else
        FUZZ_CHECK(rc == RN_EDNS, "rn_tcp_connect to a name with no address = %d", rc);
    check_detail("rn_tcp_connect", rc);
}

/* The next line of [*p, end) as a C string (a NUL inside ends it). */
static char *next_line(const char **p, const char *end)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    size_t n = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *p = nl ? nl + 1 : end;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return -1;
    const char *p = (const char *)data, *end = p + size;
    char *line = next_line(&p, end);
    errno = 0;
    long long v = strtoll(line, NULL, 10);
    int port = v > INT_MAX ? INT_MAX : v < INT_MIN ? INT_MIN : (int)v;
    free(line);
    line = next_line(&p, end);
    size_t outlen = (size_t)(strtoul(line, NULL, 10) % 64);
    free(line);
    char *host = next_line(&p, end);
    n_answers = 0;
    while (p < end && n_answers < MAX_ANSWERS) {
        line = next_line(&p, end);
        if (inet_pton(AF_INET, line, answers[n_answers].addr) == 1)
            answers[n_answers++].family = AF_INET;
        else if (inet_pton(AF_INET6, line, answers[n_answers].addr) == 1)
            answers[n_answers++].family = AF_INET6;
        free(line);
    }

    cur_host = host;
    check_numeric(host, port);
    check_resolve(host, outlen);
    check_listen(host, port);
    check_connect(host, port);
    free(host);
    return 0;
}
