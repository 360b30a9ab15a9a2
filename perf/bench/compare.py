"""perf/run --echo-compare (ringnet's echo server, io_uring against epoll)
and --tls-compare (issue 3's TLS builds against openssl s_server)."""
import os
import sys
import tempfile
import time

from . import loads, prepare
from .harness import Ctx, Progress, run_groups
from .others import Group
from .summary import med, num

ECHO_CSV = ("backend,conns,size,round,messages,msgs_per_s,server_cpu_s,msgs_per_cpu_s,"
            "kernel_calls_per_msg,ops_per_enter,p50_us,p99_us,errors")


def echo_rows(rows):
    """The driver's echo rows in echo_compare's columns."""
    out = []
    for line in rows:
        f = line.split(",")
        conns, size = f[1].rsplit("-c", 1)[1], f[1].split("-")[1].rstrip("B")
        m, cpu = num(f[5]), num(f[7])
        out.append([f[2][len("rn-"):], conns, size, f[3], f[5], f[6], f[7],
                    f"{m / cpu if cpu > 0 else 0:.0f}", f[14], f[12], f[9], f[10], f[11]])
    return out


def echo_table(rows):
    lines = [f"{'conns':<6} {'size':<6} {'backend':<9} {'msgs/server-CPU-s (min-max)':>26} "
             f"{'kernel calls/msg':>16} {'ops/enter':>14} {'msgs/s':>12} {'errors':>6}"]
    keys = list(dict.fromkeys((r[1], r[2]) for r in rows))
    for conns, size in keys:
        best = {}
        for b in ("io_uring", "epoll"):
            mine = [r for r in rows if (r[1], r[2], r[0]) == (conns, size, b)]
            if not mine:
                continue
            m, lo, hi = med([r[7] for r in mine])
            best[b] = m
            col = lambda i: med([r[i] for r in mine])[0]  # noqa: E731
            errs = sum(int(num(r[12])) for r in mine)
            lines.append(f"{conns:<6} {size:<6} {b:<9} {m:10.0f} ({lo:.0f}-{hi:.0f}) "
                         f"{col(8):16.2f} {col(9):14.1f} {col(5):12.0f} {errs:6d}")
        if best.get("epoll", 0) > 0 and "io_uring" in best:
            lines.append(f"{conns:<6} {size:<6} ratio io_uring/epoll in msgs per server "
                         f"CPU-second: {best['io_uring'] / best['epoll']:.2f}x")
    return "\n".join(lines) + "\n"


def echo(cfg, root):
    """ringnet's echo server on io_uring and on epoll, interleaved."""
    steps = loads.plan_echo(cfg, lambda names: names, ["rn-io_uring", "rn-epoll"])
    if cfg.dry_run:
        for s in steps:
            print(f"  echo       {s.label}")
        return 0
    bin_dir = os.path.join(root, cfg.build_dir)
    if cfg.build:
        prepare.build(cfg.build_dir)
    prepare.check_built(bin_dir, ["rn_echo_server", "echo_load"])
    out = os.path.join(root, cfg.out_dir)
    os.makedirs(out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="perf-run.") as tmp:
        ctx = Ctx(cfg, root, tmp, out)
        ctx.progress = Progress(len(steps))
        try:
            run_groups(ctx, [Group("echo", steps)])
        finally:
            ctx.kill_all()
    sys.stderr.write("\r\033[K")
    rows = echo_rows(ctx.rows)
    csv = os.path.join(out, f"echo-{stamp}.csv")
    with open(csv, "w") as f:
        f.write(ECHO_CSV + "\n" + "".join(",".join(r) + "\n" for r in rows))
    table = echo_table(rows)
    with open(os.path.join(out, f"echo-{stamp}.txt"), "w") as f:
        f.write(table)
    print(table, end="")
    print(f"raw numbers: {os.path.relpath(csv, root)}")
    return 0


def tls(cfg, root):
    from . import tls_compare
    return tls_compare.run(cfg, root)
