"""perf/run: the benchmarks, one after the other, then the summary."""
import os
import sys
import tempfile
import time

from . import aesni, cli, compare, ir, loads, others, prepare, proc, report, summary, threads
from .harness import CSV_HEADER, Ctx, Fatal, Progress, run_groups
from .others import Group

PLANS = {"http": lambda c, k: [Group("http", loads.plan_http(c, k))],
         "pipeline": lambda c, k: [Group("pipeline", loads.plan_pipeline(c, k))],
         "echo": lambda c, k: [Group("echo", loads.plan_echo(c, k))],
         "bulk": others.plan_bulk, "tls": others.plan_tls, "memory": others.plan_memory,
         "memory-tls": lambda c, k: others.plan_memory(c, k)[1:]}


def plan(cfg, bin_dir, dry_run=False):
    """The groups of steps the benchmarks of cfg make, peers not built left out."""
    no_uv = not os.access(os.path.join(bin_dir, "uv_echo_server"), os.X_OK)
    if no_uv and not dry_run:
        Progress.note("perf/run: no uv_echo_server (libuv not found at build time): "
                      "the libuv peer is left out")

    def keep(names):
        return [n for n in names if not (n == "libuv" and no_uv and not dry_run)]
    return [g for b in cfg.benches for g in PLANS[b](cfg, keep)]


def print_plan(cfg, groups):
    need = prepare.missing_packages() if cfg.install else []
    if need:
        print(f"install: {' '.join(need)}")
    if cfg.build:
        for cmd in prepare.build_commands(cfg.build_dir):
            print("build:   " + " ".join(cmd))
        if not cfg.no_aesni and any(b in cfg.benches for b in ("tls", "memory", "memory-tls")):
            print(f"build:   {aesni.SCRIPT} (when its sha256 is not {aesni.PREFIX}/.build-stamp), "
                  f"then {', '.join(aesni.TARGETS)} in {aesni.BUILD}")
    n = sum(len(g.steps) for g in groups)
    print(f"{n} runs of {cfg.seconds} s, {cfg.rounds} round(s):")
    for g in groups:
        for s in g.steps:
            print(f"  {g.name:10} {s.label}")


def run_info(ctx, stamp, t0):
    cfg = ctx.cfg
    return {"stamp": stamp, "model": proc.cpu_model(), "ncpu": ctx.ncpu,
            "kernel": os.uname().release, "rounds": cfg.rounds, "seconds": cfg.seconds,
            "quick": cfg.quick, "mins": (int(time.time() - t0) + 30) // 60,
            "retries": ctx.retries, "max_other": cfg.max_other}


def header(ctx, info):
    cfg, load = ctx.cfg, proc.loadavg()
    print(f"perf/run: {info['model']}, {ctx.ncpu} cores, Linux {info['kernel']}; server on CPU "
          f"{ctx.srv_cpu}, load on CPU {ctx.load_cpu}; {cfg.rounds} round(s) of {cfg.seconds}s "
          f"runs; load average now {load}", file=sys.stderr)
    if ctx.ncpu < 2:
        print("perf/run: one CPU only: server and load share it; figures mean little",
              file=sys.stderr)
    if cfg.quick:
        print(f"perf/run: --quick: {cfg.rounds} round(s), so the ratios are indicative only "
              "(drift is not cancelled)", file=sys.stderr)
    if float(load) > 0.7:
        print(f"perf/run: warning: the machine is busy (load {load}): other work skews the "
              "figures; see the cpu0_other_pct column", file=sys.stderr)


def finish(ctx, info):
    """summary.md, chart.dat and chart.png; print them; append to RESULTS.md."""
    try:
        with open(os.path.join(ctx.out, "tls_ciphers.txt")) as f:
            ciphers = [l.rstrip("\n") for l in f]
    except OSError:
        ciphers = []
    md, dat = summary.render(ctx.rows, info, ciphers)
    for name, text in (("summary.md", md), ("chart.dat", dat)):
        with open(os.path.join(ctx.out, name), "w") as f:
            f.write(text)
    has_chart = report.chart(ctx, info)
    rel = os.path.relpath(ctx.out, ctx.root)
    print(f"\n{md}\nraw numbers: {rel}/runs.csv")
    if has_chart:
        print(f"chart:       {rel}/chart.png")
    if ctx.cfg.append:
        report.append_results(os.path.join(ctx.root, "perf/RESULTS.md"), md, info,
                              f"{rel}/runs.csv", f"{rel}/chart.png")
        print("summary appended to perf/RESULTS.md")


def bench(cfg, root):
    bin_dir = os.path.join(root, cfg.build_dir)
    if cfg.dry_run:
        print_plan(cfg, plan(cfg, bin_dir, dry_run=True))
        return 0
    if cfg.install:
        prepare.install()
    if cfg.build:
        prepare.build(cfg.build_dir)
    prepare.check_built(bin_dir)
    fast = not cfg.no_aesni and any(b in cfg.benches for b in ("tls", "memory", "memory-tls")) \
        and os.access(os.path.join(bin_dir, "rn_tls_server"), os.X_OK)
    if fast and cfg.build:
        aesni.build(root)
    if fast and os.access(os.path.join(root, aesni.BUILD, "rn_tls_server"), os.X_OK):
        aesni.check(root, cfg.build_dir, ("rn_tls_server", "tls_idle"))
    groups = plan(cfg, bin_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = os.path.join(root, cfg.out_dir, stamp)
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="perf-run.") as tmp:
        ctx = Ctx(cfg, root, tmp, out)
        ctx.csv = os.path.join(out, "runs.csv")
        with open(ctx.csv, "w") as f:
            f.write(CSV_HEADER + "\n")
        t0 = time.time()
        header(ctx, run_info(ctx, stamp, t0))
        ctx.progress = Progress(sum(len(g.steps) for g in groups))
        try:
            run_groups(ctx, groups)
        finally:
            ctx.kill_all()
        sys.stderr.write("\r\033[K")
        finish(ctx, run_info(ctx, stamp, t0))
    return 0


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.chdir(root)
    cfg = cli.parse(argv)
    modes = {"bench": bench, "echo-compare": compare.echo, "tls-compare": compare.tls,
             "ir": ir.run, "threads": threads.threads, "scale": threads.scale}
    try:
        return modes[cfg.mode](cfg, root)
    except Fatal as e:
        Progress.note(str(e))
        return 1
    except KeyboardInterrupt:
        Progress.note("perf/run: interrupted")
        return 130
