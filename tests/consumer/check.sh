#!/usr/bin/env bash
# check.sh BUILD_DIR - install a built ringnet into a temporary prefix and
# build tests/consumer against it twice, as users would: through
# find_package(ringnet) and through `pkg-config --cflags --libs ringnet`.
# Every program built is run and must succeed. The consumer is compiled with
# the build's own compiler and flags, so a sanitizer build checks a
# sanitizer install. A cross build (ci/arm64.sh) passes its toolchain file
# on and runs the programs through its CMAKE_CROSSCOMPILING_EMULATOR.
set -euo pipefail

die() { echo "install_consumer: FAILED: $*" >&2; exit 1; }
trap 'die "line $LINENO: $BASH_COMMAND"' ERR

[ $# -eq 1 ] || die "usage: $0 BUILD_DIR"
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cache="$build/CMakeCache.txt"
[ -f "$cache" ] || die "$build is not a configured CMake build directory"

# A cache entry's value ("NAME:TYPE=value").
cache_get() { sed -n "s/^$1:[A-Z]*=//p" "$cache" | head -n 1; }
cc=$(cache_get CMAKE_C_COMPILER)
# A compiler named by a toolchain file is not cached: CMake's record of it.
[ -n "$cc" ] || cc=$(sed -n 's/^set(CMAKE_C_COMPILER "\(.*\)")$/\1/p' \
    "$build"/CMakeFiles/*/CMakeCCompiler.cmake | head -n 1)
[ -n "$cc" ] || die "no C compiler recorded in $build"
cflags=$(cache_get CMAKE_C_FLAGS)
ldflags=$(cache_get CMAKE_EXE_LINKER_FLAGS)
toolchain=$(cache_get CMAKE_TOOLCHAIN_FILE)
# A toolchain file given relative is relative to the source tree.
case "$toolchain" in
    "" | /*) ;;
    *) toolchain="$(cache_get CMAKE_HOME_DIRECTORY)/$toolchain" ;;
esac
# The emulator is a CMake list (program;arguments).
IFS=';' read -r -a emulator <<<"$(cache_get CMAKE_CROSSCOMPILING_EMULATOR)"
run() { "${emulator[@]}" "$@"; }
cross=()
[ -z "$toolchain" ] || cross=(--toolchain "$toolchain")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringnet-consumer.XXXXXX")
on_exit() {
    local rc=$?
    if [ $rc -eq 0 ]; then rm -rf "$tmp"; else echo "install_consumer: kept $tmp" >&2; fi
}
trap on_exit EXIT
prefix="$tmp/prefix"

echo "== install $build into $prefix"
cmake --install "$build" --prefix "$prefix"

# ---- find_package ---------------------------------------------------------------
echo "== find_package(ringnet) with CMAKE_PREFIX_PATH=$prefix"
cmake -S "$here" -B "$tmp/cmake" "${cross[@]}" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags"
found=$(sed -n 's/^ringnet_DIR:[A-Z]*=//p' "$tmp/cmake/CMakeCache.txt")
case "$found" in
    "$prefix"/*) ;;
    *) die "find_package found ringnet in '$found', not under $prefix" ;;
esac
cmake --build "$tmp/cmake"
[ -x "$tmp/cmake/consumer_static" ] || die "ringnet::ringnet_static was not found"
for exe in consumer consumer_static; do
    echo "-- run $exe"
    run "$tmp/cmake/$exe" || die "$exe (find_package) exited with $?"
done

# ---- pkg-config -------------------------------------------------------------------
# GNUInstallDirs picks lib/ or lib/<multiarch>/ depending on the prefix.
pc=$(find "$prefix" -path '*/pkgconfig/ringnet.pc' | head -n 1)
[ -n "$pc" ] || die "no ringnet.pc installed under $prefix"
PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
pkgconfig=${PKG_CONFIG:-pkg-config}
echo "== pkg-config, PKG_CONFIG_PATH=$PKG_CONFIG_PATH"
pcflags=$($pkgconfig --cflags --libs ringnet)
echo "pkg-config --cflags --libs ringnet: $pcflags"
libdir=$($pkgconfig --variable=libdir ringnet)
[ -f "$libdir/libringnet.so" ] || die "ringnet.pc says libdir=$libdir, which has no libringnet.so"
# shellcheck disable=SC2086 # the flags are words
"$cc" $cflags -std=c11 -Wall -Wextra -Wstrict-prototypes -Werror "$here/main.c" $pcflags \
      $ldflags -Wl,-rpath,"$libdir" -o "$tmp/consumer_pc"
if [ ${#emulator[@]} -eq 0 ]; then
    ldd "$tmp/consumer_pc" | grep -F "libringnet.so.0 => $libdir/" >/dev/null \
        || die "consumer_pc does not load libringnet from $libdir: $(ldd "$tmp/consumer_pc")"
else
    # ldd cannot read a foreign binary; its dynamic section says the same.
    readelf -d "$tmp/consumer_pc" | grep -F "[$libdir]" >/dev/null \
        || die "consumer_pc has no run path $libdir: $(readelf -d "$tmp/consumer_pc")"
fi
echo "-- run consumer_pc"
run "$tmp/consumer_pc" || die "consumer_pc (pkg-config) exited with $?"

echo "install_consumer: OK"
