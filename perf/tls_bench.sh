#!/usr/bin/env bash
# tls_bench.sh - issue 3's TLS figures: what Debian's wolfSSL (no AES-NI)
# costs a ringnet TLS server against the same wolfSSL source built with
# AES-NI (ci/build-wolfssl-aesni.sh, preset release-aesni), beside
# `openssl s_server`, with the same OpenSSL client for all three.
#
# Servers, each pinned to CPU 0 (taskset), clients pinned to CPU 1:
#   rn-debian  perf/rn_tls_server built against Debian's libwolfssl35
#              (build/tls-debian: the release preset, another directory)
#   rn-aesni   perf/rn_tls_server built with RINGNET_WOLFSSL_PREFIX
#              (build/release-aesni)
#   openssl    openssl s_server (OpenSSL 3.0, Debian)
# Measures, TLS 1.3, X25519, one ECDSA P-256 certificate, each for
# TLS_AES_128_GCM_SHA256 and TLS_CHACHA20_POLY1305_SHA256 (the client
# offers only that suite):
#   handshake  full handshakes per second: openssl s_time -new for S
#              seconds (one connection at a time, no certificate check)
#   bulk       MB/s of one connection, client to server: perf/tls/ossl_bulk
#              (OpenSSL, 16 KiB records, B bytes; time from the end of the
#              handshake to the server's close, so its last read counts)
# and, with the suite the server prefers (rn-debian picks ChaCha20,
# rn-aesni AES-128-GCM, openssl s_server the client's first, AES-128-GCM):
#   hs-rn      full handshakes per second from ringnet's client
#              (perf/tls_bulk --handshakes, AES-NI build, 8 connections at
#              once, certificate verified): a faster client than s_time
#   rn2rn      MB/s, ringnet client (perf/tls_bulk) to ringnet server, each
#              build with itself: what two ringnet programs get
# and, for every run, the server's CPU time (utime+stime from
# /proc/PID/stat) per handshake or per MiB: with two cores the client can
# be the limit, the server's CPU is not.
# The cases are interleaved round by round (A B C ... A B C ...), so the
# machine's drift falls on all alike; the summary gives medians with
# min-max and the median of the per-round ratios.
#
# Usage: perf/tls_bench.sh [--rounds N] [--seconds S] [--bytes B] [--no-build]
#   --rounds N   interleaved rounds (default 5, at least 3 for a figure)
#   --seconds S  length of each handshake run (default 3)
#   --bytes B    bytes per bulk run (default 1 GiB)
#   --no-build   use the binaries already in build/tls-debian and
#                build/release-aesni
# Output: a Markdown summary on stdout; raw rows (runs.csv) and the
# summary (summary.md) under perf/results/tls-<stamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

rounds=5 seconds=3 bytes=$((1 << 30)) do_build=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --bytes) bytes=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h | --help) sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "tls_bench: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ "$rounds" =~ ^[0-9]+$ && "$rounds" -ge 1 ]] || { echo "tls_bench: --rounds N, N >= 1" >&2; exit 2; }
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 1 ]] || { echo "tls_bench: --seconds S, S >= 1" >&2; exit 2; }
[[ "$bytes" =~ ^[0-9]+$ && "$bytes" -ge 1048576 ]] || { echo "tls_bench: --bytes B, B >= 1 MiB" >&2; exit 2; }
say() { echo "tls_bench: $*" >&2; }

DEB=$ROOT/build/tls-debian
AES=$ROOT/build/release-aesni
srv_cpu=0 cli_cpu=1
[ "$(nproc)" -ge 2 ] || { srv_cpu=0; cli_cpu=0; say "one CPU: server and client share it"; }

# ---- build ----------------------------------------------------------------------

if [ "$do_build" = 1 ]; then
    log=$(mktemp)
    say "building rn_tls_server and tls_bulk against Debian's wolfSSL ($DEB)"
    { cmake --preset release -B "$DEB" -DRINGNET_BUILD_TESTS=OFF -DRINGNET_BUILD_EXAMPLES=OFF &&
        cmake --build "$DEB" -j2 --target rn_tls_server tls_bulk; } >"$log" 2>&1 ||
        { tail -30 "$log" >&2; exit 1; }
    say "wolfSSL with AES-NI (ci/build-wolfssl-aesni.sh; skipped when built)"
    ci/build-wolfssl-aesni.sh >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
    say "building rn_tls_server and tls_bulk against it ($AES)"
    { cmake --preset release-aesni && cmake --build "$AES" -j2 --target rn_tls_server tls_bulk; } >"$log" 2>&1 ||
        { tail -30 "$log" >&2; exit 1; }
    rm -f "$log"
fi
for b in "$DEB" "$AES"; do
    for p in rn_tls_server tls_bulk; do
        [ -x "$b/$p" ] || { say "$b/$p is missing (run without --no-build)"; exit 1; }
    done
done
# Each ringnet server must load the wolfSSL it was built for.
deb_ldd=$(ldd "$DEB/libringnet.so") aes_ldd=$(ldd "$AES/libringnet.so")
grep -q ' /lib/x86_64-linux-gnu/libwolfssl.so.35\| /usr/lib/x86_64-linux-gnu/libwolfssl.so.35' <<<"$deb_ldd" ||
    { say "$DEB/libringnet.so does not load Debian's libwolfssl"; exit 1; }
grep -q " $ROOT/build/wolfssl-aesni/lib/libwolfssl.so.35" <<<"$aes_ldd" ||
    { say "$AES/libringnet.so does not load build/wolfssl-aesni's libwolfssl"; exit 1; }

# ---- set-up ---------------------------------------------------------------------

# The OpenSSL bulk client (links OpenSSL, so not a CMake target of perf/).
[ -e /usr/include/openssl/ssl.h ] || { say "libssl-dev is needed for perf/tls/ossl_bulk.c"; exit 1; }
mkdir -p "$ROOT/build/tls-bench"
OSSL_BULK=$ROOT/build/tls-bench/ossl_bulk
if [ ! -x "$OSSL_BULK" ] || [ perf/tls/ossl_bulk.c -nt "$OSSL_BULK" ]; then
    cc -std=c11 -O2 -Wall -Wextra -o "$OSSL_BULK" perf/tls/ossl_bulk.c -lssl -lcrypto
fi

stamp=$(date +%Y%m%d-%H%M%S)
out=$ROOT/perf/results/tls-$stamp
mkdir -p "$out"
csv=$out/runs.csv
echo "kind,suite,server,round,count,seconds,rate,server_cpu_s,server_us_per_unit" >"$csv"
tmp=$(mktemp -d /tmp/tls_bench.XXXXXX)
srv=""
cleanup() {
    [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
    exec 7>&- 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
# openssl s_server ends when its stdin does: a fifo held open by fd 7.
mkfifo "$tmp/stdin"
exec 7<>"$tmp/stdin"

suite_name() { case $1 in aes) echo TLS_AES_128_GCM_SHA256 ;; chacha) echo TLS_CHACHA20_POLY1305_SHA256 ;; esac; }
port_free() { [ -z "$(ss -Htan "sport = :$1")" ]; }
pick_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        port_free "$p" && { echo "$p"; return; }
    done
    say "no free port"; exit 1
}
# Server ticks (utime + stime) so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
start_server() { # NAME -> $srv, $port
    port=$(pick_port)
    case $1 in
    rn-debian) taskset -c $srv_cpu "$DEB/rn_tls_server" --port "$port" --cert "$tmp/cert.pem" --key "$tmp/key.pem" >"$tmp/srv.out" 2>&1 & ;;
    rn-aesni) taskset -c $srv_cpu "$AES/rn_tls_server" --port "$port" --cert "$tmp/cert.pem" --key "$tmp/key.pem" >"$tmp/srv.out" 2>&1 & ;;
    openssl) taskset -c $srv_cpu openssl s_server -accept "127.0.0.1:$port" -cert "$tmp/cert.pem" -key "$tmp/key.pem" -quiet <&7 >/dev/null 2>"$tmp/srv.out" & ;;
    esac
    srv=$!
    for _ in $(seq 1 200); do
        [ -n "$(ss -Htln "sport = :$port")" ] && return
        kill -0 "$srv" 2>/dev/null || break
        sleep 0.025
    done
    say "server $1 did not start:"; cat "$tmp/srv.out" >&2; exit 1
}
stop_server() { kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; srv=""; }
now() { date +%s.%N; }
row() { # kind suite server round count seconds ticks unit(1 or bytes-per-MiB)
    awk -v k="$1" -v s="$2" -v n="$3" -v r="$4" -v c="$5" -v d="$6" -v t="$7" -v hz="$hz" 'BEGIN {
        cpu = t / hz
        if (k ~ /^(handshake|hs-rn)$/) printf "%s,%s,%s,%s,%d,%.3f,%.1f,%.2f,%.1f\n", k, s, n, r, c, d, c / d, cpu, cpu * 1e6 / c
        else printf "%s,%s,%s,%s,%d,%.3f,%.1f,%.2f,%.1f\n", k, s, n, r, c, d, c / d / 1e6, cpu, cpu * 1e6 / (c / 1048576)
    }' >>"$csv"
}

# ---- what each server negotiates ------------------------------------------------------

negotiated=$out/negotiated.txt
: >"$negotiated"
for name in rn-debian rn-aesni openssl; do
    start_server "$name"
    for s in aes chacha; do
        echo "$name, client offers only $(suite_name $s): $(openssl s_client -connect "127.0.0.1:$port" -ciphersuites "$(suite_name $s)" -brief </dev/null 2>&1 |
            awk -F': *' '/^Protocol version/ { p = $2 } /^Ciphersuite/ { c = $2 } /Temp Key/ { k = $2 } END { print p ", " c ", " k }')" >>"$negotiated"
    done
    echo "$name, client offers both (AES first): $(openssl s_client -connect "127.0.0.1:$port" -ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256 -brief </dev/null 2>&1 |
        awk -F': *' '/^Ciphersuite/ { print $2 }')" >>"$negotiated"
    stop_server
done
cat "$negotiated" >&2

# ---- the rounds -----------------------------------------------------------------------

say "$rounds rounds: handshakes ${seconds}s, bulk $((bytes >> 20)) MiB per run"
for r in $(seq 1 "$rounds"); do
    for s in aes chacha; do
        cs=$(suite_name $s)
        for name in rn-debian rn-aesni openssl; do
            say "round $r: handshake $s $name"
            start_server "$name"
            t0=$(ticks "$srv") w0=$(now)
            taskset -c $cli_cpu openssl s_time -connect "127.0.0.1:$port" -new -time "$seconds" -ciphersuites "$cs" >"$tmp/st.out" 2>&1 || true
            w1=$(now)
            sleep 0.05
            t1=$(ticks "$srv")
            stop_server
            n=$(awk '/connections in .* real seconds/ { print $1 }' "$tmp/st.out" | tail -1)
            [ -n "$n" ] && [ "$n" -gt 0 ] || { say "no handshakes counted:"; cat "$tmp/st.out" >&2; exit 1; }
            row handshake "$s" "$name" "$r" "$n" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" $((t1 - t0))
        done
    done
    for s in aes chacha; do
        cs=$(suite_name $s)
        for name in rn-debian rn-aesni openssl; do
            say "round $r: bulk $s $name"
            start_server "$name"
            t0=$(ticks "$srv") w0=$(now)
            taskset -c $cli_cpu "$OSSL_BULK" "$port" "$cs" "$bytes" >"$tmp/ob.out" 2>&1 ||
                { say "ossl_bulk failed:"; cat "$tmp/ob.out" "$tmp/srv.out" >&2; exit 1; }
            sleep 0.05
            t1=$(ticks "$srv")
            stop_server
            grep -q "suite=$cs\$" "$tmp/ob.out" || { say "not $cs:"; cat "$tmp/ob.out" >&2; exit 1; }
            secs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$tmp/ob.out")
            row bulk "$s" "$name" "$r" "$bytes" "$secs" $((t1 - t0))
        done
    done
    for name in rn-debian rn-aesni openssl; do
        say "round $r: hs-rn $name"
        start_server "$name"
        t0=$(ticks "$srv")
        taskset -c $cli_cpu "$AES/tls_bulk" --port "$port" --ca "$tmp/cert.pem" --handshakes "$seconds" --conns 8 >"$tmp/th.out" 2>&1 ||
            { say "tls_bulk --handshakes failed:"; cat "$tmp/th.out" >&2; exit 1; }
        sleep 0.05
        t1=$(ticks "$srv")
        stop_server
        n=$(sed -n 's/.*handshakes=\([0-9]*\).*/\1/p' "$tmp/th.out")
        secs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$tmp/th.out")
        s=aes
        [ "$name" = rn-debian ] && s=chacha
        row hs-rn "$s" "$name" "$r" "$n" "$secs" $((t1 - t0))
    done
    for name in rn-debian rn-aesni; do
        say "round $r: rn2rn $name"
        b=$DEB
        [ "$name" = rn-aesni ] && b=$AES
        s=chacha
        [ "$name" = rn-aesni ] && s=aes
        start_server "$name"
        t0=$(ticks "$srv")
        taskset -c $cli_cpu "$b/tls_bulk" --port "$port" --ca "$tmp/cert.pem" --bytes "$bytes" >"$tmp/tb.out" 2>&1 ||
            { say "tls_bulk failed:"; cat "$tmp/tb.out" >&2; exit 1; }
        sleep 0.05
        t1=$(ticks "$srv")
        stop_server
        secs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$tmp/tb.out")
        row rn2rn "$s" "$name" "$r" "$bytes" "$secs" $((t1 - t0))
    done
done

# ---- summary --------------------------------------------------------------------------

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
aes_flag=$(grep -qw aes /proc/cpuinfo && echo yes || echo no)
{
    echo "Machine: $cpu_model, $(nproc) cores (AES-NI in the CPU: $aes_flag), Linux $(uname -r), $(openssl version | cut -d' ' -f1-2)."
    echo "Servers on CPU $srv_cpu, clients on CPU $cli_cpu. $rounds interleaved rounds; handshake runs ${seconds} s, bulk runs $((bytes >> 20)) MiB."
    echo "Medians (min-max over the rounds); a ratio is the median of the per-round ratios."
    echo
    echo "Negotiated (openssl s_client -brief):"
    echo
    sed 's/^/    /' "$negotiated"
    echo
    awk -F, 'NR > 1 { key = $1 "," $2 "," $3; n[key]++; rate[key, n[key]] = $7; cpu[key, n[key]] = $9; byround[$1 "," $2 "," $3 "," $4] = $7; cpuround[$1 "," $2 "," $3 "," $4] = $9
                     if (!(key in seen)) { seen[key] = 1; order[++nk] = key } rounds[$4] = 1 }
    function median(a, key, m,    i, j, t, v) {
        for (i = 1; i <= m; i++) v[i] = a[key, i]
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        lo = v[1]; hi = v[m]
        return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    }
    function ratio(num, den, what,    r, m, v, i, j, t) {  # median over rounds of num/den
        m = 0
        for (r in rounds) if ((num "," r) in what && (den "," r) in what && what[den "," r] > 0) v[++m] = what[num "," r] / what[den "," r]
        if (!m) return "-"
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return sprintf("%.2fx", m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2)
    }
    END {
        print "| measure | suite | server | rate | rate vs rn-debian | rate vs openssl | server CPU | CPU vs rn-debian | CPU vs openssl |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= nk; i++) {
            key = order[i]; split(key, f, ",")
            m = n[key]
            rm = median(rate, key, m); rlo = lo; rhi = hi
            cm = median(cpu, key, m); clo = lo; chi = hi
            hs = f[1] == "handshake" || f[1] == "hs-rn"
            unit = hs ? "handshakes/s" : "MB/s"
            cunit = hs ? "µs/handshake" : "µs/MiB"
            # The rn-debian and openssl rows to compare with: the same
            # measure and suite, except where each server picks its own.
            deb = f[1] "," f[2] ",rn-debian"
            ossl = f[1] "," f[2] ",openssl"
            if (f[1] == "rn2rn" || f[1] == "hs-rn") deb = f[1] ",chacha,rn-debian"
            if (f[1] == "hs-rn") ossl = "hs-rn,aes,openssl"
            if (f[1] == "rn2rn") ossl = ""
            rd = key == deb ? "1" : ratio(key, deb, byround); cd = key == deb ? "1" : ratio(key, deb, cpuround)
            ro = ossl == "" ? "-" : key == ossl ? "1" : ratio(key, ossl, byround)
            co = ossl == "" ? "-" : key == ossl ? "1" : ratio(key, ossl, cpuround)
            printf "| %s | %s | %s | %.0f (%.0f-%.0f) %s | %s | %s | %.0f (%.0f-%.0f) %s | %s | %s |\n", f[1], f[2], f[3], rm, rlo, rhi, unit, rd, ro, cm, clo, chi, cunit, cd, co
        }
    }' "$csv"
} | tee "$out/summary.md"
say "raw rows: $csv"
