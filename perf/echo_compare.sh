#!/usr/bin/env bash
# echo_compare.sh - ringnet's echo server on io_uring and on epoll under the
# same echo ping-pong load, measured interleaved (io_uring, epoll, io_uring,
# epoll, ...) so the machine's drift cancels; reports per backend the median
# and min-max of messages per server CPU-second, kernel calls per message
# (from the loop's own counters) and throughput, and the io_uring/epoll
# ratio. Server pinned to CPU 0, load generator (perf/echo_load) to CPU 1.
#
# Usage: perf/echo_compare.sh [--bin DIR] [--rounds N] [--seconds S]
#                             [--conns "64 1000"] [--sizes "64 1024"] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

bin=build/release
rounds=3
seconds=5
conns_list="64 1000"
sizes="64"
outdir=perf/results
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bin=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --conns) conns_list=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --out) outdir=$2; shift 2 ;;
    *) echo "usage: $0 [--bin DIR] [--rounds N] [--seconds S] [--conns LIST] [--sizes LIST] [--out DIR]" >&2; exit 2 ;;
    esac
done
for b in rn_echo_server echo_load; do
    [ -x "$bin/$b" ] || { echo "echo_compare: $bin/$b is missing (build the release preset)" >&2; exit 1; }
done

ncpu=$(nproc)
srv_cpu=0
load_cpu=$((ncpu > 1 ? 1 : 0))
mkdir -p "$outdir"
stamp=$(date +%Y%m%d-%H%M%S)
csv="$outdir/echo-$stamp.csv"
tmp=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 12000))
        [ -z "$(ss -Htln "sport = :$p")" ] && { echo "$p"; return; }
    done
    echo "echo_compare: no free port" >&2
    exit 1
}

# stats_line FILE N: wait until FILE holds N STATS lines, print the last.
stats_line() {
    for _ in $(seq 1 200); do
        [ "$(grep -c '^STATS' "$1" || true)" -ge "$2" ] && { grep '^STATS' "$1" | tail -1; return; }
        sleep 0.02
    done
    echo "echo_compare: the server printed no STATS" >&2
    exit 1
}
field() { sed -E "s/.*[ ]$1=([0-9]+).*/\1/" <<<"$2"; }

echo "backend,conns,size,round,messages,msgs_per_s,server_cpu_s,msgs_per_cpu_s,kernel_calls_per_msg,ops_per_enter,p50_us,p99_us,errors" >"$csv"
total=$(( $(wc -w <<<"$conns_list") * $(wc -w <<<"$sizes") * rounds * 2 ))
n=0
for conns in $conns_list; do
    for size in $sizes; do
        for round in $(seq 1 "$rounds"); do
            for backend in io_uring epoll; do
                n=$((n + 1))
                printf '\r[%d/%d] %-8s conns=%-5s size=%-5s round %d ' "$n" "$total" "$backend" "$conns" "$size" "$round" >&2
                port=$(free_port)
                taskset -c "$srv_cpu" "$bin/rn_echo_server" --port "$port" --backend "$backend" \
                    >"$tmp/srv.out" 2>"$tmp/srv.err" &
                server=$!
                for _ in $(seq 1 100); do grep -q listening "$tmp/srv.out" 2>/dev/null && break; sleep 0.05; done
                grep -q "backend $backend" "$tmp/srv.out" || { echo "server did not start on $backend:" >&2; cat "$tmp/srv.err" >&2; exit 1; }
                kill -USR1 "$server"
                s0=$(stats_line "$tmp/srv.err" 1)
                taskset -c "$load_cpu" "$bin/echo_load" --host 127.0.0.1 --port "$port" --conns "$conns" \
                    --seconds "$seconds" --size "$size" --server-pid "$server" >"$tmp/load.out" 2>&1 ||
                    { echo; echo "echo_load failed:" >&2; cat "$tmp/load.out" >&2; exit 1; }
                kill -USR1 "$server"
                s1=$(stats_line "$tmp/srv.err" 2)
                kill -TERM "$server" 2>/dev/null || true
                for _ in $(seq 1 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.02; done
                kill -9 "$server" 2>/dev/null || true
                wait "$server" 2>/dev/null || true
                server=""
                line=$(grep '^CSV,' "$tmp/load.out")
                IFS=, read -r _ _ _ _ _ _ _ _ messages mps _ p50 p99 _ _ errors cpu _ _ <<<"$line"
                d_enter=$(( $(field enter_calls "$s1") - $(field enter_calls "$s0") ))
                d_ops=$(( $(field ops_submitted "$s1") - $(field ops_submitted "$s0") ))
                awk -v b="$backend" -v c="$conns" -v s="$size" -v r="$round" -v m="$messages" -v mps="$mps" \
                    -v cpu="$cpu" -v de="$d_enter" -v dops="$d_ops" -v p50="$p50" -v p99="$p99" -v e="$errors" 'BEGIN {
                    # epoll makes one syscall per op tried plus epoll_wait; io_uring only enters.
                    calls = (b == "epoll") ? de + dops : de
                    printf "%s,%s,%s,%s,%s,%s,%s,%.0f,%.3f,%.2f,%s,%s,%s\n", b, c, s, r, m, mps, cpu,
                        (cpu > 0 ? m / cpu : 0), (m > 0 ? calls / m : 0), (de > 0 ? dops / de : 0), p50, p99, e
                }' >>"$csv"
            done
        done
    done
done
echo >&2

# Medians and ranges per (conns, size, backend), and the io_uring/epoll ratio.
awk -F, 'NR > 1 {
    k = $2 "," $3 "," $1
    n[k]++; v[k, n[k]] = $8; calls[k, n[k]] = $9; mps[k, n[k]] = $6; ope[k, n[k]] = $10; err[k] += $13
    keys[$2 "," $3] = 1
}
function median(arr, k, cnt,    i, j, t, a) {
    for (i = 1; i <= cnt; i++) a[i] = arr[k, i]
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    lo = a[1]; hi = a[cnt]
    return (cnt % 2) ? a[(cnt + 1) / 2] : (a[cnt / 2] + a[cnt / 2 + 1]) / 2
}
END {
    printf "%-6s %-6s %-9s %26s %16s %14s %12s %6s\n", "conns", "size", "backend", "msgs/server-CPU-s (min-max)", "kernel calls/msg", "ops/enter", "msgs/s", "errors"
    for (kk in keys) {
        split(kk, p, ",")
        for (bi = 1; bi <= 2; bi++) {
            b = (bi == 1) ? "io_uring" : "epoll"; k = kk "," b
            m = median(v, k, n[k]); l = lo; h = hi
            c = median(calls, k, n[k]); o = median(ope, k, n[k]); t = median(mps, k, n[k])
            med[b] = m
            printf "%-6s %-6s %-9s %10.0f (%.0f-%.0f) %16.2f %14.1f %12.0f %6d\n", p[1], p[2], b, m, l, h, c, o, t, err[k]
        }
        if (med["epoll"] > 0) printf "%-6s %-6s ratio io_uring/epoll in msgs per server CPU-second: %.2fx\n", p[1], p[2], med["io_uring"] / med["epoll"]
    }
}' "$csv" | tee "$outdir/echo-$stamp.txt"
echo "raw numbers: $csv"
