#!/usr/bin/env bash
# setup.sh - install what building and testing ringnet needs on Debian
# bookworm. Touches nothing (not even `apt-get update`) when all is there.
set -euo pipefail

packages=(
    # build
    build-essential cmake pkg-config g++
    # libraries ringnet and its tests use
    liburing-dev libwolfssl-dev libgtest-dev libseccomp-dev
    # the soak's load generator (perf/soak/soak.c) is an OpenSSL client
    libssl-dev
    # sanitizers (TSan preset), fuzzing, leak checks
    clang-14 libclang-rt-14-dev valgrind
    # ci/format.sh (the format stage)
    clang-format-14
    # real peers and tools the tests and demo start
    openssl curl socat iproute2 procps ca-certificates postgresql util-linux coreutils
    # gnutls-serv: a TLS server nobody here wrote, for session resumption
    gnutls-bin
)

# A package counts only when installed for this machine's architecture (or
# for all): a foreign one (say libwolfssl-dev:arm64 for a cross build, which
# replaces the native one) does not provide the native headers and .pc file.
arch=$(dpkg --print-architecture)
installed() {
    local q status
    for q in "$1:$arch" "$1:all"; do
        status=$(dpkg-query -W -f='${Status}' "$q" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] && return 0
    done
    return 1
}

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all ${#packages[@]} packages are installed"
    exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
