#!/usr/bin/env bash
# test.sh - what CI runs: install what is missing, then check the format,
# build and run every test: the debug preset (gcc), the TLS-off build, a
# -Werror release build of everything but the tests, the soak on both
# backends, Valgrind memcheck of a subset, the asan preset (ASan + UBSan),
# the tsan preset (ThreadSanitizer), the libFuzzer targets and the aarch64
# cross build tested under qemu-user (ci/arm64.sh). Warnings are errors in
# all.
#
# A failed stage does not stop the others (a later stage still says what it
# finds); the summary at the end has one line per stage, ok or FAILED with
# its seconds, and the script exits 1 if any stage failed. A stage that
# cannot start because an earlier one it needs failed (the soak and
# memcheck need the debug build) says so and counts as failed.
#
# Times on a fresh 2-core VM (Debian bookworm), measured or estimated
# (README.md has the table): ~20 min in all.
set -uo pipefail
cd "$(dirname "$0")/.."

jobs=2
start=$SECONDS
# ci/setup.sh installs every peer the tests start (openssl, curl,
# gnutls-serv, ...): here a missing one fails its test instead of skipping it.
export RINGNET_TEST_REQUIRE_PEERS=1
names=()
results=()
times=()

# stage NAME FUNCTION: run FUNCTION (with errexit, in a subshell so that a
# failure ends only the stage) and record how it ended.
stage() {
    local name=$1 fn=$2 t0=$SECONDS rc=0
    echo
    echo "================================================================"
    echo "== $name"
    echo "================================================================"
    # Not `( ... ) || rc=$?`: bash ignores set -e inside a subshell that is
    # part of an || list.
    (
        set -e
        "$fn"
    )
    rc=$?
    names+=("$name")
    times+=($((SECONDS - t0)))
    if [ "$rc" -eq 0 ]; then
        results+=(ok)
        echo "== ok: $name ($((SECONDS - t0))s)"
    else
        results+=("FAILED (exit $rc)")
        echo "== FAILED: $name (exit $rc, $((SECONDS - t0))s)" >&2
    fi
    return 0
}

# Sanitizer runtimes of this Debian (gcc 12, LLVM 14) cannot place their
# shadow memory when vm.mmap_rnd_bits is above 28, the default of some newer
# kernels, and die before main (google/sanitizers#1614, #1716). Running
# without address randomization avoids it.
sanitizer_run() {
    local bits
    bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)
    if [ "$bits" -gt 28 ]; then
        echo "vm.mmap_rnd_bits=$bits: running without ASLR for the sanitizers"
        setarch "$(uname -m)" -R "$@"
    else
        "$@"
    fi
}

# build_and_test PRESET [WRAPPER...]: the build runs test programs too
# (GoogleTest discovery), so the wrapper covers it as well as ctest.
build_and_test() {
    local preset=$1
    shift
    cmake --preset "$preset"
    "$@" cmake --build --preset "$preset" -j "$jobs"
    "$@" ctest --preset "$preset" -j "$jobs" --output-on-failure --timeout 300
}

stage_setup() { bash ci/setup.sh; }

stage_format() { bash ci/format.sh; }

# build/debug/.ci-built marks a debug build made by this run, for the
# stages that use it (soak, valgrind) even when a debug test failed.
stage_debug() {
    rm -f build/debug/.ci-built
    cmake --preset debug
    cmake --build --preset debug -j "$jobs"
    touch build/debug/.ci-built
    ctest --preset debug -j "$jobs" --output-on-failure --timeout 300
}

# RINGNET_TLS=OFF: the library without wolfSSL (only tls/off.c from tls/),
# the plain suites, and tls_off_test.cc's check of the TLS calls' error.
stage_notls() { build_and_test notls; }

# The release preset (-O3, -Werror) compiles the library, the examples and
# perf/'s programs: gcc warns at -O3 where the debug build does not (a
# maybe-uninitialized that broke `cmake --preset release` once). Not the
# tests: they run in every other stage.
stage_release() {
    # Its own tree: perf/run configures build/release without -Werror.
    cmake --preset release -B build/release-werror -DRINGNET_BUILD_TESTS=OFF
    cmake --build build/release-werror -j "$jobs"
}

# The soak (perf/soak/soak.c): 10,000 connections, half TLS, 30 s through
# the debug build's soak_server, once per backend; a backend this machine
# cannot run is skipped (soak exits 77 and says why). Both backends run even
# when the first fails.
stage_soak() {
    local backend rc failed=0
    for backend in io_uring epoll; do
        rc=0
        bash perf/soak/run.sh build/debug --backend "$backend" --seconds 30 || rc=$?
        if [ "$rc" -eq 77 ]; then
            echo "soak: $backend skipped: this machine cannot run it (reason above)"
        elif [ "$rc" -ne 0 ]; then
            echo "soak: $backend FAILED (exit $rc)" >&2
            failed=1
        fi
    done
    return "$failed"
}

# Valgrind memcheck over a representative part of the suite, on the debug
# build: the tests labelled valgrind-epoll and valgrind-io_uring in
# tests/valgrind.cmake (which says what is left out and why), each label
# run as one ringnet_tests process under valgrind (ctest tests memcheck.epoll
# and memcheck.io_uring, label memcheck). Every error (invalid access,
# uninitialised use, definite or indirect leak) fails the stage.
stage_valgrind() {
    ctest --preset memcheck -j "$jobs" --output-on-failure
}

stage_asan() {
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    build_and_test asan sanitizer_run
}

stage_tsan() {
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    build_and_test tsan sanitizer_run
}

# libFuzzer (tests/fuzz/README.md): seeds recorded from real TLS handshakes
# with openssl, the committed regression inputs, then every target for 60 s,
# two at a time; any crash, leak or failed check fails.
stage_fuzz() {
    cmake --preset fuzz
    cmake --build --preset fuzz -j "$jobs"
    sanitizer_run bash tests/fuzz/run.sh build/fuzz/tests/fuzz 60
}

# aarch64 (ci/arm64.sh): cross-built with Debian's aarch64 gcc into
# build/aarch64, installed into build/aarch64/install, tests/consumer built
# against that install, then a test subset (every suite, both backends
# where they run) under qemu-user; io_uring is ENOSYS there, so its tests
# skip naming that (docs/backend.md). `ci/arm64.sh --full` runs all.
# Measured on the 2-core dev VM, packages installed and build/aarch64
# built: 71 s (161 tests in 68 s; --full: 371 tests, 4 min).
stage_arm64() { bash ci/arm64.sh; }

# A stage that needs the debug build cannot run without it.
needs_debug() {
    if [ ! -e build/debug/.ci-built ]; then
        echo "no debug build from this run (the debug stage failed before it built)" >&2
        return 1
    fi
}
stage_soak_after_debug() {
    needs_debug || return 1
    stage_soak
}
stage_valgrind_after_debug() {
    needs_debug || return 1
    stage_valgrind
}

stage "setup: packages" stage_setup
stage "format: clang-format --dry-run --Werror (ci/format.sh)" stage_format
stage "debug: build and test (gcc, -Werror)" stage_debug
stage "notls: build and test with -DRINGNET_TLS=OFF (no wolfSSL linked)" stage_notls
stage "release: -O3 -Werror build of the library, examples and perf/ (no tests)" stage_release
stage "soak: 10,000 connections, half TLS, 30 s on each backend (debug build)" stage_soak_after_debug
stage "valgrind: memcheck of the valgrind-* labels, both backends (debug build)" stage_valgrind_after_debug
stage "asan: build and test (ASan + UBSan, -Werror)" stage_asan
stage "tsan: build and test (ThreadSanitizer, clang-14; task switches annotated as fibers)" stage_tsan
stage "fuzz: libFuzzer targets, 60 s each (clang-14, ASan + UBSan)" stage_fuzz
stage "arm64: aarch64 cross build, install, consumer and test subset under qemu-user (ci/arm64.sh)" stage_arm64

echo
echo "================================================================"
echo "== summary ($((SECONDS - start))s in all)"
failed=0
for i in "${!names[@]}"; do
    printf '== %-9s %5ss  %s\n' "${results[$i]%% *}" "${times[$i]}" "${names[$i]}"
    [ "${results[$i]}" = ok ] || failed=$((failed + 1))
done
if [ "$failed" -ne 0 ]; then
    echo "ci/test.sh: $failed of ${#names[@]} stages FAILED" >&2
    exit 1
fi
echo "ci/test.sh: all ${#names[@]} stages passed"
