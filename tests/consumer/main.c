/* main.c - a user's program built against an installed ringnet: the header
 * compiles, the library links, and a few calls give the answers the API
 * promises. Exits non-zero on any failure. */
#include <ringnet.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    int failed = 0;

    char buf[64];
    int rc = rn_resolve("localhost", buf, sizeof buf);
    if (rc < 0) {
        fprintf(stderr, "rn_resolve(localhost): %s (%s)\n", rn_strerror(rc), rn_last_error());
        failed = 1;
    } else if (strcmp(buf, "127.0.0.1") != 0) {
        fprintf(stderr, "rn_resolve(localhost) gave \"%s\", want \"127.0.0.1\"\n", buf);
        failed = 1;
    }

    const char *backend = rn_backend_name();
    if (backend == NULL || (strcmp(backend, "io_uring") != 0 && strcmp(backend, "epoll") != 0)) {
        fprintf(stderr, "rn_backend_name() gave \"%s\"\n", backend ? backend : "(null)");
        failed = 1;
    }

    const char *msg = rn_strerror(RN_EDNS);
    if (msg == NULL || msg[0] == '\0') {
        fprintf(stderr, "rn_strerror(RN_EDNS) is empty\n");
        failed = 1;
    }

    printf("backend %s, localhost -> %s, RN_EDNS: %s\n", backend ? backend : "(null)",
           rc < 0 ? "(failed)" : buf, msg ? msg : "(null)");
    return failed;
}
