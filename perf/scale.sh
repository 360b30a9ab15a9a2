#!/usr/bin/env bash
# perf/scale.sh - issue 12's scaling table in one prepared go, for a machine
# with many cores: says what the machine is, builds Release (the release
# preset, as perf/run does) and runs `perf/run --scale`: ringnet's hello
# server (perf/rn_http_server --threads n, a SO_REUSEPORT listener per
# thread) on n = 1 2 4 8 16 threads against nginx with n workers (a
# reuseport listener each), interleaved rounds, wrk as the load, req/s and
# the ratio to n x the one-thread rate. Counts over the machine's CPUs are
# skipped.
#
# The CPU split (perf/bench/threads.py, scale_split): while 2n <= the CPU
# count, the server's n threads (nginx's n workers) are pinned one per CPU
# to CPUs 0..n-1 and wrk gets every other CPU (one wrk thread each), so the
# load always has at least as many CPUs as the server; past that (n = 16 on
# 16 cores) server and wrk share every CPU and the table says "shared": the
# rate there is bounded by the load as well. Connections: max(256, 64 n).
# Beside them at each n, handoff (rn_http_server --threads n --handoff):
# thread 0 holds the only listener (no reuseport), accepts, detaches each
# connection (rn_conn_detach) and sends it round robin through a channel
# per thread; every thread, thread 0 included, attaches it (rn_conn_attach)
# and serves it. The table gives its req/s and handoff/reuseport.
# On 2 cores, shared with a CI run (perf/RESULTS.md, issue 12, run
# 20261206-050451): handoff/reuseport 0.99x at n = 1, 1.01x at n = 2.
#
# Usage: perf/scale.sh [perf/run options], e.g.
#   perf/scale.sh                          # 3 rounds of 5 s, appends to perf/RESULTS.md
#   perf/scale.sh --nthreads "1 2 4 8 16" --rounds 3 --seconds 5
#   perf/scale.sh --no-install --out "$OUT" --no-append   # a machine without
#                                          # a network: results under $OUT/<stamp>/
# Needs: cmake, gcc, liburing-dev, wrk, nginx (perf/run installs what is
# missing with apt-get unless --no-install).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
echo "perf/scale.sh: ${model:-unknown CPU}, $(nproc) CPUs (nproc), Linux $(uname -r)" >&2
exec "$root/perf/run" --scale "$@"
