#!/usr/bin/env bash
# run.sh - run the soak's load program (perf/soak/soak.c: epoll + OpenSSL,
# not linked to ringnet; the CMake target `soak` of perf/CMakeLists.txt)
# against a ringnet build's soak_server, building it there first.
#
# Usage: perf/soak/run.sh BUILD_DIR [soak options]
#   e.g. perf/soak/run.sh build/debug --backend epoll --seconds 30
# BUILD_DIR is a CMake build of ringnet with the perf programs (soak_server
# among them). The options are soak's (perf/soak/run.sh BUILD_DIR --help).
# Exit status: soak's (0 passed, 1 failed, 2 setup, 77 backend unavailable).
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILD_DIR [soak options]" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
shift
server=$build/soak_server
if [ ! -x "$server" ]; then
    echo "run.sh: no $server: build it first (cmake --build $build --target soak_server)" >&2
    exit 2
fi
load=$build/soak
cmake --build "$build" --target soak >/dev/null ||
    { echo "run.sh: cannot build $load (cmake --build $build --target soak; OpenSSL's libssl-dev needed)" >&2; exit 2; }
exec "$load" --server "$server" "$@"
