#!/usr/bin/env bash
# echo_compare.sh - ringnet's echo server on io_uring against epoll, now a
# mode of the driver: perf/run --echo-compare (see perf/run --help).
# Usage: perf/echo_compare.sh [--bin DIR] [--rounds N] [--seconds S]
#                             [--conns "64 1000"] [--sizes "64 1024"] [--out DIR]
exec "$(dirname "$0")/run" --echo-compare --no-build "$@"
