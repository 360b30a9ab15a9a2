#!/usr/bin/env bash
# run.sh BIN_DIR [SECONDS] - what CI runs for tests/fuzz (README.md):
#  1. make_corpus.sh: certificates and TLS seeds from real handshakes,
#     each replayed to a finished handshake;
#  2. every committed regression input (regress/TARGET/) replayed once;
#  3. each target fuzzed for SECONDS (default 60) over its seeds, two at a
#     time (the machine's two cores), into a fresh corpus under
#     BIN_DIR/work/. Any crash, leak, sanitizer report, timeout (10 s per
#     input) or failed check fails the script and leaves the input in
#     BIN_DIR/artifacts/.
# Run it under ci/test.sh's sanitizer_run (or setarch -R) where
# vm.mmap_rnd_bits is above 28.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "${1:?usage: run.sh BIN_DIR [SECONDS]}" && pwd)
secs=${2:-60}
# RN_FUZZ_TARGETS: a subset, e.g. "tls_client tls_server" (default: all)
read -r -a targets <<<"${RN_FUZZ_TARGETS:-tls_client tls_server addr alpn}"

export ASAN_OPTIONS=${RN_FUZZ_ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export RN_FUZZ_CERTS=$bin/corpus/certs

echo "== seeds from real handshakes"
bash "$here/make_corpus.sh" "$bin" "$bin/corpus"

seeds_of() {
    case $1 in
    tls_client | tls_server) echo "$bin/corpus/$1" ;;
    *) echo "$here/seeds/$1" ;;
    esac
}
max_len_of() {
    case $1 in
    tls_client | tls_server) echo 16384 ;;
    addr) echo 1024 ;;
    alpn) echo 2048 ;;
    esac
}

echo "== regression inputs"
for t in "${targets[@]}"; do
    [ -d "$here/regress/$t" ] || continue
    inputs=("$here/regress/$t"/*)
    if ! "$bin/fuzz_$t" "${inputs[@]}" >"$bin/regress_$t.log" 2>&1; then
        echo "fuzz_$t: a regression input fails again:"
        tail -n 40 "$bin/regress_$t.log"
        exit 1
    fi
    echo "fuzz_$t: ${#inputs[@]} regression inputs pass"
done

rm -rf "$bin/work" "$bin/artifacts"
mkdir -p "$bin/artifacts"

fuzz_one() {
    local t=$1
    mkdir -p "$bin/work/$t"
    "$bin/fuzz_$t" "$bin/work/$t" "$(seeds_of "$t")" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -max_len="$(max_len_of "$t")" -print_final_stats=1 \
        -artifact_prefix="$bin/artifacts/$t-" >"$bin/fuzz_$t.log" 2>&1
}

summary() {
    local t=$1 log=$bin/fuzz_$1.log
    local done_line execs rate
    done_line=$(grep -a -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    echo "fuzz_$t: ${execs:-?} executions in ${secs}s (${rate:-?}/s), $(echo "$done_line" |
        grep -o -E 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9A-Za-z]+'), crashes: 0"
}

echo "== fuzzing each target for ${secs}s"
failed=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    for t in "${targets[@]:i:2}"; do
        fuzz_one "$t" &
        pids+=("$!:$t")
    done
    for p in "${pids[@]}"; do
        if wait "${p%%:*}"; then
            summary "${p#*:}"
        else
            t=${p#*:}
            failed=1
            echo "fuzz_$t FAILED:"
            grep -a -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$bin/fuzz_$t.log" | tail -n 60
        fi
    done
done
if [ $failed -ne 0 ]; then
    echo "run.sh: a target failed; the inputs are in $bin/artifacts:"
    ls -l "$bin/artifacts"
    exit 1
fi
echo "run.sh: ${#targets[@]} targets, ${secs}s each, no crash"
