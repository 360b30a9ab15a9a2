/* wolfssl_check.c - run by CMake (try_run) when RINGNET_WOLFSSL_PREFIX is
 * set: exits 0 only when the wolfSSL headers this was compiled with and the
 * library loaded at run time are one build, and that library is the one in
 * the prefix's lib directory (argv[1]).
 *
 * Headers from one build and a library from another compile and link
 * cleanly, then corrupt memory: the structures' layouts follow options.h.
 * The usual way to get there is a prefix without wolfssl/options.h (with
 * --enable-distro, `make install` leaves it out), so that Debian's
 * /usr/include/wolfssl/options.h is used instead. AES-NI is what tells the
 * two builds apart: its assembly exports AES_128_Key_Expansion. */
#define _GNU_SOURCE
/* clang-format off */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
/* clang-format on */

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef WOLFSSL_AESNI
#define HEADERS_AESNI 1
#else
#define HEADERS_AESNI 0
#endif

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: wolfssl_check LIBDIR\n");
        return 2;
    }
    Dl_info info;
    if (!dladdr((void *)wolfSSL_Init, &info) || !info.dli_fname) {
        printf("cannot tell which file wolfSSL_Init comes from\n");
        return 1;
    }
    char want[PATH_MAX], got[PATH_MAX];
    if (!realpath(argv[1], want) || !realpath(info.dli_fname, got)) {
        printf("cannot resolve %s or %s\n", argv[1], info.dli_fname);
        return 1;
    }
    size_t n = strlen(want);
    if (strncmp(got, want, n) != 0 || got[n] != '/') {
        printf("the library loaded is %s, not the one in %s (RUNPATH instead of RPATH?)\n", got,
               want);
        return 1;
    }
    if (wolfSSL_lib_version_hex() != LIBWOLFSSL_VERSION_HEX) {
        printf("headers are wolfSSL %s, the library %s\n", LIBWOLFSSL_VERSION_STRING,
               wolfSSL_lib_version());
        return 1;
    }
    void *h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    int lib_aesni = h && dlsym(h, "AES_128_Key_Expansion");
    if (lib_aesni != HEADERS_AESNI) {
        printf("the headers (wolfssl/options.h) say AES-NI %s, the library %s has it %s: "
               "they are not one build (copy the build's wolfssl/options.h into the prefix)\n",
               HEADERS_AESNI ? "on" : "off", got, lib_aesni ? "on" : "off");
        return 1;
    }
    printf("%s, version %s, AES-NI %s\n", got, wolfSSL_lib_version(), lib_aesni ? "on" : "off");
    return 0;
}
