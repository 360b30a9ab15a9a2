#!/usr/bin/env bash
# tls_resume.sh - resumed against full TLS handshakes per second, ringnet's
# server (perf/rn_tls_server --http) beside `openssl s_server -WWW`, both
# driven by `openssl s_time -new` (full handshakes) and `-reuse` (each
# connection resumes the first one's session), TLS 1.3 and 1.2, same ECDSA
# P-256 certificate, same one-line page. Prints per case the connections
# per second (wall clock), how many s_time saw resumed ('r') against full
# ('*'), and the server's CPU per connection (utime + stime from /proc).
#
# Usage: perf/tls_resume.sh [--build DIR] [--time S] [--backend B]
#   --build DIR  where rn_tls_server is (default build/release, else build/debug)
#   --time S     seconds per s_time run (default 5)
#   --backend B  io_uring, epoll or auto (default auto)
# s_time is single-threaded and OpenSSL 3.0's client is slow, so the rates
# are bounded by the client as much as by the server: compare the server
# CPU per connection too.
set -euo pipefail
cd "$(dirname "$0")/.."
build=
secs=5
backend=auto
while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --time) secs=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    -h | --help) sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "tls_resume: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$build" ]; then
    build=build/release
    [ -x "$build/rn_tls_server" ] || build=build/debug
fi
server_bin=$build/rn_tls_server
[ -x "$server_bin" ] || { echo "tls_resume: no $server_bin (build first)" >&2; exit 1; }

work=$(mktemp -d /tmp/ringnet-tls-resume.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
    -out "$work/cert.pem" -subj /CN=localhost -days 2 2>/dev/null
printf 'hello\n' > "$work/hello"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000)); }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

start_rn() {
    local port=$1
    "$server_bin" --cert "$work/cert.pem" --key "$work/key.pem" --port "$port" --backend "$backend" --http \
        > "$work/rn.log" 2>&1 &
    pids+=($!)
    srv_pid=$!
    for _ in $(seq 100); do grep -q listening "$work/rn.log" && return 0; sleep 0.05; done
    echo "tls_resume: rn_tls_server did not start: $(cat "$work/rn.log")" >&2; exit 1
}
start_openssl() {
    local port=$1
    (cd "$work" && exec openssl s_server -accept "127.0.0.1:$port" -cert cert.pem -key key.pem -WWW -quiet \
        > "$work/ossl.log" 2>&1) &
    pids+=($!)
    srv_pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.05; done
    echo "tls_resume: openssl s_server did not start" >&2; exit 1
}

printf '%-8s %-7s %-7s %12s %18s %14s\n' server version mode conns/s "resumed/full" "server us/conn"
for server in ringnet openssl; do
    port=$(free_port)
    if [ "$server" = ringnet ]; then start_rn "$port"; else start_openssl "$port"; fi
    for version in tls1_3 tls1_2; do
        for mode in new reuse; do
            t0=$(cpu_ticks "$srv_pid")
            out=$(openssl s_time -connect "127.0.0.1:$port" -www /hello "-$mode" "-$version" -time "$secs" 2>&1 || true)
            t1=$(cpu_ticks "$srv_pid")
            # "N connections in S real seconds": the -reuse run's line is the last.
            line=$(grep 'real seconds' <<<"$out" | tail -1)
            n=$(awk '{print $1}' <<<"$line")
            s=$(awk '{print $4}' <<<"$line")
            progress=$(grep -E '^[*r]+' <<<"$out" | tail -1 || true)
            r=$(tr -cd r <<<"$progress" | wc -c)
            f=$(tr -cd '*' <<<"$progress" | wc -c)
            rate=$(awk -v n="$n" -v s="$s" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "?" }')
            us=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "?" }')
            printf '%-8s %-7s %-7s %12s %18s %14s\n' "$server" "$version" "$mode" "$rate" "$r/$f" "$us"
        done
    done
    kill "$srv_pid" 2>/dev/null || true
    wait "$srv_pid" 2>/dev/null || true
done
