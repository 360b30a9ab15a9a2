#!/usr/bin/env bash
# demo.sh - build the release preset, start examples/echo_server on a free
# port and drive it with perf/echo_load (256 connections, 5 s, 64-byte
# messages), print what the load generator measured (the server's CPU time
# included), stop the server. RN_BACKEND (io_uring | epoll | auto) in the
# environment picks the server's backend.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
# Warnings are errors in ci/test.sh; here a warning only -O3 finds must not
# stop the measurement.
cmake --preset release -DRINGNET_WERROR=OFF
cmake --build --preset release -j 2 --target echo_server echo_load

# A port nothing listens on, from the range the kernel does not hand out to
# outgoing connections by default.
port=""
for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 12000))
    if [ -z "$(ss -Htln "sport = :$candidate")" ]; then
        port=$candidate
        break
    fi
done
[ -n "$port" ] || { echo "demo: no free port found" >&2; exit 1; }

echo
echo "== $(uname -sr), $(nproc) CPUs, RN_BACKEND=${RN_BACKEND:-auto}"
echo "== build/release/echo_server $port --quiet"
build/release/echo_server "$port" --quiet &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

# Wait (up to 5 s) until the server listens, and make sure it did not die.
for _ in $(seq 1 50); do
    [ -n "$(ss -Htln "sport = :$port")" ] && break
    kill -0 "$server" 2>/dev/null || { echo "demo: echo_server exited early" >&2; exit 1; }
    sleep 0.1
done
[ -n "$(ss -Htln "sport = :$port")" ] || { echo "demo: echo_server is not listening on $port" >&2; exit 1; }

args=(--host 127.0.0.1 --port "$port" --conns 256 --seconds 5 --size 64 --server-pid "$server")
echo "== build/release/echo_load ${args[*]}"
build/release/echo_load "${args[@]}"
