"""perf/run's options and the configuration of one run."""
import argparse
import dataclasses
import sys

BENCHES = ("http", "pipeline", "echo", "bulk", "tls", "memory", "memory-tls")

HELP = """\
Benchmarks (--only NAME[,NAME...]):
  http      HTTP/1.1 keep-alive hello world under wrk (1 thread) at each of
            --conns (default 16 256 1000): ringnet io_uring, ringnet epoll,
            nginx (1 worker), libuv, raw io_uring floor.
  pipeline  the same servers under wrk pipelining 16 requests per write,
            256 connections.
  echo      echo ping-pong, 64 B and 1 KiB, 64 and 1000 connections,
            perf/echo_load (every byte verified): ringnet io_uring, ringnet
            io_uring reading with rn_conn_read_lent (rn-lent), ringnet
            epoll, libuv, raw floor.
  bulk      one connection, 1 GiB over loopback: ringnet sink+source
            (perf/rn_bulk, both backends) against iperf3.
  tls       full handshakes per second (openssl s_time) and bulk MB/s
            (openssl s_client) against ringnet's TLS server on Debian's
            wolfSSL (rn-io_uring), the same server on the fast wolfSSL
            (rn-aesni: ci/build-wolfssl-aesni.sh, built once under
            build/wolfssl-aesni and again when the script changes; ringnet
            against it in build/release-aesni) and openssl s_server;
            skipped when ringnet's TLS engine is not built.
  memory    RSS per idle connection at 10,000 connections: ringnet echo
            server (a task per connection, both backends, and rn-lent),
            nginx, libuv; then per idle TLS connection at 2,000
            (perf/tls_idle, handshakes done): ringnet's TLS server (16 KiB
            buffer on the task's stack, and rn-lent; each on Debian's
            wolfSSL and on the fast one) and nginx with TLS.
  memory-tls  the TLS half of memory alone (idle TLS connections).
  counters  the loop's counters (operations per io_uring_enter, requests
            per enter, kernel calls per request), read from the ringnet and
            raw servers' STATS lines during every http, pipeline and echo
            run; --only counters runs pipeline and echo.

Modes other than the benchmarks above:
  --echo-compare  ringnet's echo server on io_uring against epoll alone
                  (was perf/echo_compare.sh; defaults 3 rounds of 5 s,
                  --conns "64 1000", --sizes 64): a table and
                  perf/results/echo-<stamp>.csv
  --tls-compare   issue 3's TLS figures: rn_tls_server on Debian's wolfSSL
                  and with AES-NI against openssl s_server (was
                  perf/tls_bench.sh; defaults 5 rounds, 3 s, --bytes 1 GiB)
  --ir            user-space instructions per HTTP request per backend under
                  callgrind (perf/ir_per_request.py)
  --threads       issue 12 in one go: the cost of a second loop (server CPU
                  per request of rn_http_server --threads 2 vs 1, wrk -t2
                  -c256), cross-thread hand-over (ringnet channels vs pipes
                  vs Go channels: ping-pong and streaming, perf/chan_bench,
                  perf/go/chanbench) and the scaling table at the thread
                  counts that fit (defaults 5 rounds of 5 s)
  --scale         the scaling table alone: hello server on --nthreads
                  threads vs nginx with as many workers, and the server's
                  handoff variant (--handoff: one acceptor thread hands
                  connections to every thread) beside (perf/scale.sh runs
                  it on a many-core machine; defaults 3 rounds of 5 s)

Outputs: the progress line on stderr; the summary (Markdown) on stdout; raw
rows perf/results/<stamp>/runs.csv, chart.png (gnuplot) and summary.md; the
summary appended to perf/RESULTS.md's run log (--no-append: not)."""


@dataclasses.dataclass
class Config:
    mode: str            # "bench", "echo-compare", "tls-compare", "ir", "threads", "scale"
    benches: list
    seconds: int
    rounds: int
    http_conns: list
    echo_conns: list
    echo_sizes: list
    quick: bool
    max_other: int
    install: bool
    build: bool
    append: bool
    dry_run: bool
    bulk_bytes: int
    tls_bytes: int
    build_dir: str
    out_dir: str
    pipe_conns: int = 256
    pipe_depth: int = 16
    idle_conns: int = 10000
    idle_tls_conns: int = 2000
    tls_bulk_bytes: int = 256 << 20
    no_aesni: bool = False
    nthreads: list = dataclasses.field(default_factory=lambda: [1, 2, 4, 8, 16])


def _parser():
    p = argparse.ArgumentParser(
        prog="perf/run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="ringnet's benchmarks in one go: installs what is missing, builds "
        "Release, runs every benchmark with servers pinned to CPU 0 and load generators "
        "to CPU 1, peers interleaved round by round, prints medians, min-max and ratios.",
        epilog=HELP)
    a = p.add_argument
    a("--only", metavar="LIST", help="benchmarks to run, comma- or space-separated "
      "(default: http pipeline echo bulk tls memory; memory-tls: the TLS half of memory)")
    a("--seconds", metavar="S", help="length of each measured run (default 3; --quick: 2)")
    a("--conns", metavar="LIST", help='connection counts for http and echo, e.g. "16 1000" '
      '(defaults: http "16 256 1000", echo "64 1000")')
    a("--rounds", metavar="N", help="interleaved rounds (default 3; --quick: 1)")
    a("--quick", action="store_true", help="one round of 2 s runs and 256 MiB bulk: about "
      "2 minutes; its ratios are indicative only (no drift cancellation)")
    a("--max-other", metavar="PCT", default="10", help="repeat an http or echo run (twice at "
      "most) when other work took more than PCT%% of the server's or the load generator's "
      "CPU (default 10)")
    a("--no-install", action="store_true", help="do not install missing packages")
    a("--no-build", action="store_true", help="use the programs already built")
    a("--no-aesni", action="store_true", help="tls and memory: leave out ringnet built "
      "against the fast wolfSSL (build/wolfssl-aesni, ci/build-wolfssl-aesni.sh)")
    a("--no-append", action="store_true", help="do not append the summary to perf/RESULTS.md")
    a("--dry-run", "--list", action="store_true", dest="dry_run",
      help="print the runs that would be made, and nothing else")
    a("--echo-compare", action="store_const", const="echo-compare", dest="mode",
      help="ringnet io_uring against epoll, echo only (was perf/echo_compare.sh)")
    a("--tls-compare", action="store_const", const="tls-compare", dest="mode",
      help="Debian's wolfSSL, AES-NI wolfSSL, openssl s_server (was perf/tls_bench.sh)")
    a("--ir", action="store_const", const="ir", dest="mode",
      help="callgrind Ir per HTTP request per backend (perf/ir_per_request.py)")
    a("--threads", action="store_const", const="threads", dest="mode",
      help="issue 12: cost of a second loop, cross-thread hand-over, scaling (perf/bench/threads.py)")
    a("--scale", action="store_const", const="scale", dest="mode",
      help="the scaling table alone (hello server on n threads, reuseport and handoff, vs "
      "nginx with n workers)")
    a("--nthreads", metavar="LIST", help='--scale/--threads: thread counts (default "1 2 4 8 16"; '
      'those over the CPU count are skipped)')
    a("--sizes", metavar="LIST", help='echo message sizes (default "64 1024"; '
      '--echo-compare: "64")')
    a("--bytes", metavar="B", help="--tls-compare: bytes per bulk run (default 1 GiB)")
    a("--bin", "--build-dir", dest="build_dir", default="build/release", metavar="DIR",
      help="the build directory (default build/release)")
    a("--out", metavar="DIR", default="perf/results", help="where results go "
      "(default perf/results)")
    return p


def fail(msg):
    print(f"perf/run: {msg}", file=sys.stderr)
    sys.exit(2)


def _ints(text, lo, hi, what):
    out = []
    for w in text.replace(",", " ").split():
        if not w.isdigit() or not lo <= int(w) <= hi:
            fail(f"{what} must be {lo}..{hi}")
        out.append(int(w))
    return out


def _benches(only):
    names = only.replace(",", " ").split() if only else [b for b in BENCHES if b != "memory-tls"]
    out = []
    for n in names:
        for b in (("pipeline", "echo") if n == "counters" else (n,)):
            if b not in BENCHES:
                fail(f"no benchmark named '{b}' (have: {' '.join(BENCHES)})")
            if b not in out and not (b == "memory-tls" and "memory" in out):
                out.append(b)
    return [b for b in out if not (b == "memory-tls" and "memory" in out)]


def _defaults(mode, quick):
    """(seconds, rounds) by mode."""
    if mode == "echo-compare":
        return 5, 3
    if mode == "tls-compare":
        return 3, 5
    if mode == "threads":
        return (2, 1) if quick else (5, 5)
    if mode == "scale":
        return (2, 1) if quick else (5, 3)
    return (2, 1) if quick else (3, 3)


def parse(argv):
    a = _parser().parse_args(argv)
    mode = a.mode or "bench"
    d_secs, d_rounds = _defaults(mode, a.quick)
    seconds = _ints(a.seconds or str(d_secs), 1, 600, "--seconds")
    rounds = _ints(a.rounds or str(d_rounds), 1, 50, "--rounds")
    if len(seconds) != 1 or len(rounds) != 1:
        fail("--seconds and --rounds take one number")
    if not a.max_other.isdigit():
        fail("--max-other must be a whole percentage")
    echo_default = "64 1000"
    sizes_default = "64" if mode == "echo-compare" else "64 1024"
    return Config(
        mode=mode, benches=_benches(a.only), seconds=seconds[0], rounds=rounds[0],
        http_conns=_ints(a.conns or ("256" if mode in ("threads", "scale") else "16 256 1000"),
                         1, 5000, "connection counts"),
        echo_conns=_ints(a.conns or echo_default, 1, 5000, "connection counts"),
        echo_sizes=_ints(a.sizes or sizes_default, 1, 1 << 20, "--sizes"),
        quick=a.quick, max_other=int(a.max_other), install=not a.no_install,
        build=not a.no_build, append=not a.no_append, dry_run=a.dry_run,
        bulk_bytes=(256 << 20) if a.quick else (1 << 30),
        tls_bytes=_ints(a.bytes or str(1 << 30), 1 << 20, 1 << 40, "--bytes")[0],
        build_dir=a.build_dir, out_dir=a.out, no_aesni=a.no_aesni,
        nthreads=_ints(a.nthreads or "1 2 4 8 16", 1, 4096, "--nthreads"))
