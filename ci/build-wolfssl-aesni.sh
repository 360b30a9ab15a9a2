#!/usr/bin/env bash
# build-wolfssl-aesni.sh - build Debian's own wolfSSL source package with
# AES-NI and the x86-64 assembly (--enable-aesni --enable-intelasm
# --enable-sp --enable-sp-asm) and only the features ringnet uses (no
# peer chains kept in every session: an idle TLS connection costs a quarter
# of what it does on Debian's build) into a private prefix, for
# `cmake -DRINGNET_WOLFSSL_PREFIX=<prefix>` (preset release-aesni).
#
# What it does, in order:
#   1. adds a deb-src entry for Debian's archive (the URIs of the existing
#      deb entries) under /etc/apt/sources.list.d/ when apt has none;
#   2. installs the build tools (autoconf, automake, libtool, dpkg-dev);
#   3. `apt-get source wolfssl` (the version of the installed libwolfssl35
#      when the archive still has it) into build/wolfssl-src/, which
#      applies Debian's patch series (checked, applied by hand if not);
#   4. autoreconf -fi; ./configure with Debian's flags (read from
#      debian/rules) less --enable-distro, ringnet's feature list (step 4
#      below says which and why), the four above and --prefix; make; make
#      install;
#   5. copies wolfssl/options.h into the prefix: with --enable-distro,
#      `make install` leaves it out (copied whatever the flags: the one
#      the library was built with), and without it a program compiles
#      against Debian's /usr/include/wolfssl/options.h, whose structures do
#      not match this library (memory corruption);
#   6. checks the result and prints how to use it.
# Idempotent: does nothing but print the usage when the prefix already
# holds the library and its options.h, built by this very script: the
# prefix keeps the script's sha256 in .build-stamp (written last), and a
# changed script (other configure flags) rebuilds. Never touches the
# system's wolfSSL (no package is removed or replaced; the library only
# goes to the prefix).
#
# Usage: ci/build-wolfssl-aesni.sh [--prefix DIR] [--jobs N] [--force]
#   --prefix DIR  where to install (default <repo>/build/wolfssl-aesni)
#   --jobs N      make -jN (default 2)
#   --force       rebuild even when the prefix already has the library
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

prefix=$ROOT/build/wolfssl-aesni
jobs=2
force=0
while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-wolfssl-aesni: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
case "$prefix" in
/ | /usr | /usr/local | /usr/lib* | /usr/include*)
    echo "build-wolfssl-aesni: refusing prefix $prefix: it would shadow or replace the system's wolfSSL" >&2
    exit 2 ;;
esac
work=$ROOT/build/wolfssl-src
log() { echo "build-wolfssl-aesni: $*" >&2; }

usage_note() {
    cat <<EOF

wolfSSL with AES-NI is in $prefix
  library  $prefix/lib/libwolfssl.so.35 (same soname as Debian's: link it
           with an RPATH, -Wl,--disable-new-dtags, never RUNPATH)
  headers  $prefix/include/wolfssl (options.h included)
  pkg-config: PKG_CONFIG_PATH=$prefix/lib/pkgconfig

Build ringnet against it:
  cmake --preset release-aesni            # build/release-aesni, this prefix
  cmake --build --preset release-aesni -j2
or, for any other build directory or prefix:
  cmake -S . -B build/x -DRINGNET_WOLFSSL_PREFIX=$prefix
Check what a program loads:
  ldd build/release-aesni/libringnet.so | grep wolfssl   # -> $prefix/lib/...
EOF
}

# What built the prefix: this script's sha256 (perf/run reads it too).
stamp_file=$prefix/.build-stamp
stamp=$(sha256sum "$ROOT/ci/build-wolfssl-aesni.sh" | cut -d' ' -f1)
if [ "$force" = 0 ] && [ -e "$prefix/lib/libwolfssl.so.35" ] &&
    [ -e "$prefix/include/wolfssl/options.h" ] && [ -e "$prefix/lib/pkgconfig/wolfssl.pc" ]; then
    if [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
        log "already built in $prefix by this script (--force rebuilds)"
        usage_note
        exit 0
    fi
    log "$prefix was built by another version of this script: rebuilding"
fi
rm -f "$stamp_file"

sudo_cmd=()
[ "$(id -u)" = 0 ] || sudo_cmd=(sudo)

# ---- 1. a deb-src entry -----------------------------------------------------------

has_deb_src() {
    grep -RhsqE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}
if ! has_deb_src; then
    src_file=/etc/apt/sources.list.d/ringnet-deb-src.sources
    # The URIs of the enabled deb entries that serve bookworm (deb822 files
    # and one-line files alike), with their suites and keyring.
    entries=$(
        {
            for f in /etc/apt/sources.list.d/*.sources; do
                [ -e "$f" ] || continue
                awk -v RS= -v ORS='\n\n' '/Types:[^\n]*deb/ && /Suites:[^\n]*bookworm/ && !/Enabled: *no/' "$f"
            done
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
                awk '$1 == "deb" { o = ($2 ~ /^\[/); u = $(2 + o); s = $(3 + o);
                      if (s ~ /^bookworm/ && u ~ /debian/)
                          printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n\n", u, s }'
        } | sed -E 's/^Types:.*/Types: deb-src/' | grep -vE '^#' || true
    )
    if ! grep -q '^URIs:' <<<"$entries"; then
        log "no Debian bookworm deb entry found in /etc/apt to mirror; add a deb-src line yourself"
        exit 1
    fi
    log "adding $src_file (deb-src for the archive's URIs)"
    printf '# Added by ringnet ci/build-wolfssl-aesni.sh: source packages (apt-get\n# source wolfssl) from the URIs of the Debian deb entries already there.\n%s\n' "$entries" |
        "${sudo_cmd[@]}" tee "$src_file" >/dev/null
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi

# ---- 2. build tools -----------------------------------------------------------------

need=()
for p in dpkg-dev autoconf automake libtool make gcc; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- 3. the source package, patched ---------------------------------------------------

installed=$(dpkg-query -W -f='${Version}' libwolfssl35 2>/dev/null || true)
rm -rf "$work"
mkdir -p "$work"
cd "$work"
log "apt-get source wolfssl${installed:+=$installed} into $work"
if ! { [ -n "$installed" ] && apt-get source -qq "wolfssl=$installed" >fetch.log 2>&1; }; then
    [ -n "$installed" ] && log "version $installed not in the archive's sources; taking the newest"
    apt-get source -qq wolfssl >fetch.log 2>&1 || { cat fetch.log >&2; exit 1; }
fi
src=$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'wolfssl-*' | head -1)
[ -n "$src" ] && [ -f "$src/debian/rules" ] || { log "no unpacked source under $work"; exit 1; }
cd "$src"
log "source: $(dpkg-parsechangelog -S Version 2>/dev/null || basename "$src")"

# dpkg-source applies a "3.0 (quilt)" package's series when it unpacks; make
# sure every patch of the series is in, applying by hand what is not.
if [ -f debian/patches/series ]; then
    while read -r p _; do
        case "$p" in '' | '#'*) continue ;; esac
        if grep -qxF "$p" .pc/applied-patches 2>/dev/null; then
            continue
        fi
        if patch -p1 -R --dry-run -s -f <"debian/patches/$p" >/dev/null 2>&1; then
            continue # already applied
        fi
        log "applying debian/patches/$p"
        patch -p1 -s -f <"debian/patches/$p"
    done <debian/patches/series
    log "Debian patches in: $(grep -cvE '^[[:space:]]*(#|$)' debian/patches/series)"
fi

# ---- 4. configure: Debian's flags less its feature set, ours, the fast ones ---------------

# Debian's flags: the arguments of dh_auto_configure in debian/rules (joined
# across backslash-continued lines), without the -- separator.
deb_flags=$(sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' debian/rules |
    sed -n 's/^[[:space:]]*dh_auto_configure[[:space:]]*--[[:space:]]*//p' | head -1)
[ -n "$deb_flags" ] || { log "could not read Debian's configure flags from debian/rules"; exit 1; }
# Debian's --enable-distro turns on --enable-all: every feature of every
# program that links wolfSSL (OpenSSL compatibility for nginx, Qt, OpenVPN,
# ...), and with it SESSION_CERTS and ALT_CERT_CHAINS, two copies of a
# 9-certificate peer chain (37.5 KB) in the WOLFSSL_SESSION that every
# connection allocates and zeroes, KEEP_PEER_CERT (4.5 KB more in every
# WOLFSSL) and post-handshake authentication (which keeps the handshake's
# arrays and hashes, 6.8 KB, for the connection's life). This build is for
# ringnet alone (linked by RPATH), so it takes Debian's other flags and
# names the features ringnet uses instead (tls/*.c; every test passes
# against it):
#   TLS 1.2 and 1.3 only (--disable-oldtls: no TLS 1.0/1.1 code at all);
#   SNI, ALPN, supported groups, session tickets, extended master secret;
#   ECDHE X25519/P-256/P-384, ECDSA and RSA (PSS for TLS 1.3) certificates;
#   AES-GCM and ChaCha20-Poly1305; the system CA store;
#   the OpenSSL-compatible calls ringnet uses (X509 names for the verify
#   messages, the servername callback and wolfSSL_set_SSL_CTX for SNI:
#   --enable-opensslall) and WOLFSSL_SIGNER_DER_CERT (counting the trust
#   anchors loaded); HAVE_EX_DATA (--enable-context-extra-user-data:
#   the verify callback finds its connection through the store's ex_data;
#   without it the callback sees no session, and ringnet's own check of an
#   IP literal against the leaf would be skipped).
# Left out on purpose: SESSION_CERTS, KEEP_PEER_CERT, ALT_CERT_CHAINS,
# post-handshake auth, PKCS#11, the distro's legacy ciphers.
feature_flags="--enable-opensslall --enable-opensslextra --enable-tls13 --disable-oldtls --enable-sni --enable-alpn
  --enable-supportedcurves --enable-session-ticket --enable-extended-master --enable-ecc
  --enable-curve25519 --enable-rsapss --enable-aesgcm --enable-chacha --enable-poly1305
  --enable-hkdf --enable-sys-ca-certs --disable-sessioncerts --disable-postauth
  --enable-context-extra-user-data --disable-crypttests --disable-benchmark"
feature_cppflags="-DWOLFSSL_SIGNER_DER_CERT"
kept_flags=""
for f in $deb_flags; do
    case "$f" in
    --enable-distro | --enable-all | --enable-pkcs11) ;;
    *) kept_flags="$kept_flags $f" ;;
    esac
done
fast_flags="--enable-aesni --enable-intelasm --enable-sp --enable-sp-asm"
log "Debian's flags: $deb_flags"
log "kept:          $kept_flags"
log "features:      $(echo $feature_flags) CPPFLAGS+=$feature_cppflags"
log "added:         $fast_flags --prefix=$prefix"

log "autoreconf -fi"
autoreconf -fi >"$work/autoreconf.log" 2>&1 || { tail -20 "$work/autoreconf.log" >&2; exit 1; }
# Debian's build flags (hardening, -O2) as dpkg-buildpackage would set them.
eval "$(dpkg-buildflags --export=sh)"
export CPPFLAGS="${CPPFLAGS:-} $feature_cppflags"
# shellcheck disable=SC2086 # the flags are words
./configure --prefix="$prefix" --libdir="$prefix/lib" $kept_flags $feature_flags $fast_flags \
    >"$work/configure.log" 2>&1 ||
    { tail -30 "$work/configure.log" >&2; log "configure failed (log: $work/configure.log)"; exit 1; }
log "make -j$jobs (about 3.5 minutes on 2 cores)"
make -j"$jobs" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; log "make failed (log: $work/make.log)"; exit 1; }
make install >"$work/install.log" 2>&1 || { tail -30 "$work/install.log" >&2; exit 1; }

# ---- 5. options.h ------------------------------------------------------------------

install -m 0644 wolfssl/options.h "$prefix/include/wolfssl/options.h"

# ---- 6. check ------------------------------------------------------------------------

for d in WOLFSSL_AESNI USE_INTEL_SPEEDUP WOLFSSL_SP_X86_64_ASM HAVE_SNI HAVE_ALPN \
    HAVE_SESSION_TICKET WOLFSSL_TLS13 HAVE_CURVE25519 OPENSSL_EXTRA WOLFSSL_SIGNER_DER_CERT \
    HAVE_EX_DATA WOLFSSL_ALWAYS_VERIFY_CB; do
    grep -q "^#define $d\b" "$prefix/include/wolfssl/options.h" ||
        { log "check failed: $prefix/include/wolfssl/options.h lacks $d"; exit 1; }
done
for d in SESSION_CERTS KEEP_PEER_CERT WOLFSSL_ALT_CERT_CHAINS WOLFSSL_POST_HANDSHAKE_AUTH; do
    if grep -q "^#define $d\b" "$prefix/include/wolfssl/options.h"; then
        log "check failed: $prefix/include/wolfssl/options.h has $d (memory per connection)"
        exit 1
    fi
done
# A wolfcrypt self-test run against the installed library and headers.
cat >"$work/check.c" <<'EOF'
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    /* AES-128-GCM, test case 3 of the GCM specification, through the
     * AES-NI code (the key schedule and the tag must come out right). */
    static const unsigned char k[16] = {0xfe,0xff,0xe9,0x92,0x86,0x65,0x73,0x1c,
                                        0x6d,0x6a,0x8f,0x94,0x67,0x30,0x83,0x08};
    static const unsigned char iv[12] = {0xca,0xfe,0xba,0xbe,0xfa,0xce,0xdb,0xad,
                                         0xde,0xca,0xf8,0x88};
    static const unsigned char want_tag[16] = {0x4d,0x5c,0x2a,0xf3,0x27,0xcd,0x64,0xa6,
                                               0x2c,0xf3,0x5a,0xbd,0x2b,0xa6,0xfa,0xb4};
    unsigned char pt[64], ct[64], tag[16];
    static const char hexpt[] = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                                "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    for (int i = 0; i < 64; i++) sscanf(hexpt + 2 * i, "%2hhx", &pt[i]);
    Aes aes;
    if (wc_AesInit(&aes, NULL, INVALID_DEVID) || wc_AesGcmSetKey(&aes, k, 16) ||
        wc_AesGcmEncrypt(&aes, ct, pt, 64, iv, 12, tag, 16, NULL, 0)) {
        puts("AES-GCM failed");
        return 1;
    }
    if (memcmp(tag, want_tag, 16)) {
        puts("AES-GCM tag mismatch");
        return 1;
    }
    printf("wolfSSL %s (headers %s), AES-GCM known answer ok, use_aesni=%d\n",
           wolfSSL_lib_version(), LIBWOLFSSL_VERSION_STRING, (int)aes.use_aesni);
    return aes.use_aesni ? 0 : 3;
}
EOF
cc -O1 -o "$work/check" "$work/check.c" -I"$prefix/include" -L"$prefix/lib" \
    -Wl,--disable-new-dtags,-rpath,"$prefix/lib" -lwolfssl
rc=0
"$work/check" || rc=$?
case $rc in
0) ;;
3) log "warning: the library works but does not use AES-NI: this CPU lacks it (grep -w aes /proc/cpuinfo)" ;;
*) log "check failed: the installed library and headers do not work together"; exit 1 ;;
esac
ldd "$work/check" | grep -q "$prefix/lib/libwolfssl.so.35" ||
    { log "check failed: the check program did not load $prefix/lib/libwolfssl.so.35"; exit 1; }
echo "$stamp" >"$stamp_file"
log "done"
usage_note
