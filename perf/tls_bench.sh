#!/usr/bin/env bash
# tls_bench.sh - issue 3's TLS figures (Debian's wolfSSL, wolfSSL with
# AES-NI, openssl s_server), now a mode of the driver: perf/run --tls-compare
# (see perf/run --help and perf/bench/tls_compare.py).
# Usage: perf/tls_bench.sh [--rounds N] [--seconds S] [--bytes B] [--no-build]
exec "$(dirname "$0")/run" --tls-compare "$@"
