"""perf/bench: ringnet's benchmark driver; perf/run runs it (python3 -m bench
with perf/ on PYTHONPATH).

cli       the options and the run's configuration
prepare   installing what is missing (apt-get) and building (cmake --build)
proc      /proc accounting: CPU ticks, busy CPUs, RSS, sockets
harness   the context of a run: progress line, processes, servers, rows
servers   the command line of every server perf/run measures
loads     http, pipeline and echo benchmarks
others    bulk, tls and memory benchmarks
summary   medians, ranges, ratios and goals of runs.csv, as Markdown
report    chart (gnuplot) and perf/RESULTS.md
compare   --echo-compare and --tls-compare, the two engines or TLS builds
ir        --ir: callgrind instructions per request (perf/ir_per_request.py)
tls_compare  --tls-compare's builds, rounds and table
threads   --threads and --scale: issue 12 (second loop, channels, scaling)
"""
