#!/usr/bin/env bash
# arm64.sh - cross-build ringnet for aarch64 Linux and run its tests under
# qemu-user: installs what is missing (Debian's arm64 architecture, the
# cross compilers, qemu-user-static, the :arm64 libraries), configures
# build/aarch64 with cmake/aarch64-linux-gnu.cmake, builds, installs into
# build/aarch64/install, builds and runs tests/consumer against that
# install, then runs the suite: a subset (every suite, both backends where
# they can run) by default, all of it with --full.
#
#   bash ci/arm64.sh [--full]
#
# wolfSSL's -dev package cannot sit beside the native one (its headers,
# options.h included, are not multiarch), so its arm64 .deb is unpacked
# into build/aarch64/sysroot instead of installed; the arm64 runtime
# library is installed as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

full=0
for a in "$@"; do
    case $a in
    --full) full=1 ;;
    *)
        echo "usage: bash ci/arm64.sh [--full]" >&2
        exit 2
        ;;
    esac
done

out=build/aarch64
sysroot=$PWD/$out/sysroot
install_dir=$PWD/$out/install
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [ "$status" = "install ok installed" ]
}

# ---- packages ---------------------------------------------------------------
updated=0
apt_update() {
    [ $updated -eq 1 ] || "${sudo[@]}" apt-get update
    updated=1
}
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "arm64: adding Debian's arm64 architecture"
    "${sudo[@]}" dpkg --add-architecture arm64
    apt_update
fi
native=$(dpkg --print-architecture)
packages=(gcc-aarch64-linux-gnu:"$native" g++-aarch64-linux-gnu:"$native" qemu-user-static:"$native"
    liburing-dev:arm64 libgtest-dev:arm64 libseccomp-dev:arm64 libwolfssl35:arm64 libstdc++6:arm64)
missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "arm64: installing ${missing[*]}"
    apt_update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
fi

# wolfSSL's headers and link files for arm64, unpacked (see the top).
wolf_pc=$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/wolfssl.pc
if [ ! -f "$wolf_pc" ]; then
    echo "arm64: unpacking libwolfssl-dev:arm64 into $sysroot"
    mkdir -p "$out/debs" "$sysroot"
    rm -f "$out"/debs/libwolfssl-dev_*arm64.deb
    (cd "$out/debs" && apt-get download libwolfssl-dev:arm64) || {
        apt_update
        (cd "$out/debs" && apt-get download libwolfssl-dev:arm64)
    }
    dpkg -x "$out"/debs/libwolfssl-dev_*_arm64.deb "$sysroot"
    # The link name points at the runtime library installed system-wide,
    # and the .pc file at the unpacked headers.
    ln -sf /usr/lib/aarch64-linux-gnu/libwolfssl.so.35 \
        "$sysroot/usr/lib/aarch64-linux-gnu/libwolfssl.so"
    sed -i "s|^prefix=.*|prefix=$sysroot/usr|" "$wolf_pc"
fi
export PKG_CONFIG_PATH=$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig

# ---- build, install, consumer -----------------------------------------------
cmake -S . -B "$out" --toolchain "$PWD/cmake/aarch64-linux-gnu.cmake" \
    -DCMAKE_BUILD_TYPE=Debug -DRINGNET_WERROR=ON -DRINGNET_BUILD_PERF=OFF \
    -DCMAKE_INSTALL_PREFIX="$install_dir"
cmake --build "$out" -j 2
cmake --install "$out" >/dev/null
file "$install_dir"/lib/libringnet.so.* | grep -q 'ARM aarch64' || {
    echo "arm64: the installed library is not an aarch64 ELF" >&2
    exit 1
}

# tests/consumer against an install of this build, through find_package
# and pkg-config, compiled with the cross compiler and run under qemu.
PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
    timeout 600 bash tests/consumer/check.sh "$out"

# ---- tests under qemu ---------------------------------------------------------
# The subset: every suite, on both backends (io_uring skips under qemu,
# naming why: docs/backend.md); of each parameterised suite the tests whose
# name starts with A-F, all of the three suites that have none, all of the
# plain ones. install_consumer ran above, with the environment it needs;
# Valgrind (label memcheck) is the host's and cannot run aarch64 code. Each
# ctest run is bounded: an emulated test that hangs must fail the stage,
# not the CI's clock.
subset='Backends/[A-Za-z]+Test\.[A-F]|Backends/(DnsHostile|Signal|TcpCounters)Test\.'
subset+='|^(ErrorsTest|PromiseTest|SeccompFallback|SpawnLimitTest|TaskStackSizeTest|TlsConfigTest|AutoBackendTest)\.'
ctest_args=(--test-dir "$out" -j 2 --timeout 600 --output-on-failure -E '^install_consumer$' -LE memcheck)
if [ $full -eq 1 ]; then
    timeout 5400 ctest "${ctest_args[@]}"
else
    timeout 900 ctest "${ctest_args[@]}" -R "$subset"
fi
