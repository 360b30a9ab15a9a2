#!/usr/bin/env bash
# tls_idle_massif.sh - where the heap of an idle TLS connection goes: runs
# BUILD/rn_tls_server (--lent: no read buffer held) under valgrind's massif,
# opens CONNS TLS connections with BUILD/tls_idle (handshakes done, then
# idle), takes a detailed massif snapshot once they are all up (vgdb), and
# prints the heap per connection and the allocation sites that hold it
# (ms_print's tree, cut at 1%). It also prints the server's RSS per
# connection outside valgrind (VmRSS before and after, same client), so
# the heap can be set beside what the kernel charges (stacks, page
# rounding, malloc's slack).
#
# Usage: perf/tls_idle_massif.sh BUILD_DIR [CONNS] [OUT_DIR]
#   BUILD_DIR  a build with rn_tls_server and tls_idle (build/release,
#              build/release-aesni, ...)
#   CONNS      idle connections (default 300)
#   OUT_DIR    where massif.out and the snapshot go (default a temp dir)
# Needs valgrind (massif, vgdb), openssl (a certificate). The server runs
# the epoll backend under valgrind (the memory per connection is the same
# code on either backend; valgrind does not follow io_uring's buffers).
set -euo pipefail
bin=${1:?usage: tls_idle_massif.sh BUILD_DIR [CONNS] [OUT_DIR]}
conns=${2:-300}
out=${3:-$(mktemp -d /tmp/tls-massif.XXXXXX)}
mkdir -p "$out"
for p in rn_tls_server tls_idle; do
    [ -x "$bin/$p" ] || { echo "tls_idle_massif: $bin/$p is missing" >&2; exit 2; }
done
for t in valgrind vgdb ms_print openssl; do
    command -v $t >/dev/null || { echo "tls_idle_massif: $t is needed" >&2; exit 2; }
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/key.pem" \
    -out "$out/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    >/dev/null 2>&1
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file pattern seconds
    for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# ---- RSS per connection, no valgrind ---------------------------------------------
port=$(free_port)
"$bin/rn_tls_server" --port "$port" --cert "$out/cert.pem" --key "$out/key.pem" --lent \
    --backend epoll >"$out/srv.out" 2>&1 &
srv=$!
pids+=($srv)
wait_line "$out/srv.out" listening 10 || { cat "$out/srv.out" >&2; exit 1; }
sleep 0.2
r0=$(rss_kib $srv)
"$bin/tls_idle" --port "$port" --ca "$out/cert.pem" --conns "$conns" --hold 600 >"$out/idle.out" 2>&1 &
cli=$!
pids+=($cli)
wait_line "$out/idle.out" connected 120 || { cat "$out/idle.out" >&2; exit 1; }
sleep 1
r1=$(rss_kib $srv)
kill $cli $srv
wait $cli $srv 2>/dev/null || true
pids=()
echo "RSS: $r0 KiB before, $r1 KiB with $conns idle TLS connections: $(((r1 - r0) * 1024 / conns)) bytes per connection"

# ---- massif ------------------------------------------------------------------------
port=$(free_port)
valgrind --tool=massif --vgdb=yes --vgdb-error=1000000 --massif-out-file="$out/massif.out" \
    --threshold=0.5 --depth=40 "$bin/rn_tls_server" --port "$port" --cert "$out/cert.pem" \
    --key "$out/key.pem" --lent --backend epoll >"$out/vsrv.out" 2>&1 &
vsrv=$!
pids+=($vsrv)
wait_line "$out/vsrv.out" listening 120 || { cat "$out/vsrv.out" >&2; exit 1; }
vgdb --pid=$vsrv detailed_snapshot "$out/before.snap" >/dev/null
"$bin/tls_idle" --port "$port" --ca "$out/cert.pem" --conns "$conns" --hold 600 >"$out/vidle.out" 2>&1 &
cli=$!
pids+=($cli)
wait_line "$out/vidle.out" connected 600 || { cat "$out/vidle.out" >&2; exit 1; }
sleep 2
vgdb --pid=$vsrv detailed_snapshot "$out/idle.snap" >/dev/null
kill $cli
kill $vsrv
wait $cli $vsrv 2>/dev/null || true
pids=()
heap() { awk -F= '/^mem_heap_B=/ {h=$2} /^mem_heap_extra_B=/ {e=$2} END {print h, e}' "$1"; }
read -r h0 e0 < <(heap "$out/before.snap")
read -r h1 e1 < <(heap "$out/idle.snap")
echo "heap: $(((h1 - h0) / conns)) bytes per connection asked of malloc, plus $(((e1 - e0) / conns)) of malloc's own (headers, alignment)"
echo "snapshots: $out/before.snap, $out/idle.snap (ms_print FILE)"
echo
# The tree of the idle snapshot, entries of at least 1% of the heap.
ms_print --threshold=1 "$out/idle.snap" | sed -n '/^ n  *time/,$p' | sed -n '1,200p'
