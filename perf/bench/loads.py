"""The load benchmarks: HTTP under wrk (plain and pipelined) and echo
ping-pong under perf/echo_load."""
import os
import re
import subprocess

from . import proc, servers
from .harness import Fatal, Step, awk_num


def to_us(v):
    """wrk's "123.45us" / "1.23ms" / "1.02s" in microseconds, as awk prints it."""
    m = re.match(r"([0-9.]+)", v or "")
    n = float(m.group(1)) if m else 0.0
    if v.endswith("us"):
        return awk_num(n)
    if v.endswith("ms"):
        return awk_num(n * 1000)
    if v.endswith("s"):
        return awk_num(n * 1e6)
    return awk_num(n)


def parse_wrk(text):
    """requests, duration (wrk's text less its 's'), rate, p50, p99, errors."""
    r = {"reqs": 0, "dur": "0", "rate": "0", "p50": "", "p99": "", "errs": 0}
    for line in text.splitlines():
        w = line.split()
        if " requests in " in line:
            r["reqs"], r["dur"] = int(w[0]), w[3].rstrip(",").rstrip("s")
        elif line.startswith("Requests/sec:"):
            r["rate"] = w[1]
        elif w[:1] == ["50%"]:
            r["p50"] = to_us(w[1])
        elif w[:1] == ["99%"]:
            r["p99"] = to_us(w[1])
        elif "Socket errors:" in line:
            nums = [int(x.rstrip(",")) for x in w if x.rstrip(",").isdigit()]
            r["errs"] += sum(nums)
        elif "Non-2xx" in line:
            r["errs"] += int(w[-1])
    return r


class Sample:
    """CPU counters around a run: server ticks (all, user), both CPUs' busy ticks."""

    def __init__(self, ctx, pids):
        self.ctx, self.pids = ctx, pids
        self.t = proc.ticks(pids)
        self.u = proc.ticks(pids, user_only=True)
        self.b0 = proc.cpu_busy(ctx.srv_cpu)
        self.b1 = proc.cpu_busy(ctx.load_cpu)

    def delta(self, user_pids=None):
        """(server ticks, server user ticks, CPU0 busy, CPU1 busy) since the start."""
        ctx = self.ctx
        return (proc.ticks(self.pids) - self.t,
                proc.ticks(user_pids or self.pids, user_only=True) - self.u,
                proc.cpu_busy(ctx.srv_cpu) - self.b0, proc.cpu_busy(ctx.load_cpu) - self.b1)


def http_check(ctx, srv):
    out = ctx.path("check.out")
    with open(out, "w") as f:
        rc = subprocess.call([ctx.exe("http_check"), str(srv.port)], stdout=f,
                             stderr=subprocess.STDOUT)
    if rc != 0:
        ctx.note(f"perf/run: {srv.name} answers differently from nginx:")
        ctx.cat("check.out")
        raise Fatal(f"perf/run: {srv.name} failed perf/http_check")


def wrk_argv(ctx, conns, pipe):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{ctx.cfg.seconds}s", "--latency"]
    if pipe:
        argv += ["-s", os.path.join(ctx.root, "perf/wrk/pipeline.lua")]
    argv.append(f"http://127.0.0.1:{ctx.srv.port}/")
    if pipe:
        argv += ["--", str(pipe)]
    return argv


def http_run(ctx, case, conns, name, rnd, pipe=0):
    srv = servers.start(ctx, "http", name)
    http_check(ctx, srv)
    s0 = srv.stats_line(1) if servers.has_stats(name) else ""
    smp = Sample(ctx, srv.pids)
    rc, lc = ctx.run_load(wrk_argv(ctx, conns, pipe), ctx.path("wrk.out"))
    t, u, busy, busy1 = smp.delta()
    s1 = srv.stats_line(2) if s0 else ""
    srv.stop()
    with open(ctx.path("wrk.out")) as f:
        w = parse_wrk(f.read())
    if rc != 0 or w["reqs"] <= 0:
        ctx.note("perf/run: wrk failed or reported no requests:")
        ctx.cat("wrk.out")
        raise Fatal("perf/run: wrk failed")
    ctx.row(http_row(ctx, case, name, rnd, w, (t, u, busy, busy1, lc), servers.counters(
        s0, s1, name, w["reqs"])))
    if w["errs"]:
        ctx.note(f"perf/run: {case} {name} round {rnd}: wrk counted {w['errs']} errors")


def http_row(ctx, case, name, rnd, w, cpu, k):
    t, u, busy, busy1, lc = cpu
    hz, d, n = proc.HZ, float(w["dur"]), w["reqs"]
    lc = float(f"{lc:.3f}")
    c = t / hz
    other = 100 * ((busy - t) / hz) / d if d > 0 else 0
    other1 = 100 * (busy1 / hz - lc) / d if d > 0 else 0
    k = k.split(",")
    return ["http", case, name, rnd, w["dur"], n, w["rate"], f"{c:.2f}", f"{c * 1e6 / n:.3f}",
            w["p50"], w["p99"], w["errs"], k[0], k[1], k[2], "", f"{lc:.3f}", f"{other:.1f}",
            f"{u / hz * 1e6 / n:.3f}", k[3], f"{other1:.1f}"]


def echo_run(ctx, conns, size, name, rnd):
    srv = servers.start(ctx, "echo", name)
    s0 = srv.stats_line(1) if servers.has_stats(name) else ""
    smp = Sample(ctx, [srv.p.pid])
    argv = [ctx.exe("echo_load"), "--host", "127.0.0.1", "--port", str(srv.port), "--conns",
            str(conns), "--seconds", str(ctx.cfg.seconds), "--size", str(size),
            "--server-pid", str(srv.p.pid)]
    rc, _ = ctx.run_load(argv, ctx.path("load.out"))
    _, u, busy, busy1 = smp.delta()
    s1 = srv.stats_line(2) if s0 else ""
    srv.stop()
    if rc != 0:
        ctx.note(f"perf/run: echo_load against {name} failed (a byte that did not match, "
                 "or a reset):")
        ctx.cat("load.out")
        raise Fatal("perf/run: echo_load failed")
    with open(ctx.path("load.out")) as f:
        line = next((l.strip() for l in f if l.startswith("CSV,")), None)
    if not line:
        raise Fatal(f"perf/run: echo_load against {name} printed no CSV line")
    ctx.row(echo_row(f"echo-{size}B-c{conns}", name, rnd, line.split(","), (u, busy, busy1),
                     servers.counters(s0, s1, name, int(line.split(",")[8]))))


def echo_row(case, name, rnd, v, cpu, k):
    # CSV,host,port,conns,connected,size,pipeline,duration_s,messages,msgs_per_s,mb_per_s,
    # p50_us,p99_us,max_us,mean_us,errors,server_cpu_s,server_cpu_us_per_msg,client_cpu_s
    dur, msgs, mps, p50, p99, errs, scpu, us, lc = (v[i] for i in (7, 8, 9, 11, 12, 15, 16, 17, 18))
    u, busy, busy1 = cpu
    hz, d, n = proc.HZ, float(dur), int(msgs)
    other = 100 * (busy / hz - float(scpu)) / d if d > 0 else 0
    other1 = 100 * (busy1 / hz - float(lc)) / d if d > 0 else 0
    k = k.split(",")
    rate = 1e6 / float(us) if float(us) > 0 else 0
    return ["echo", case, name, rnd, dur, msgs, mps, scpu, us, p50, p99, errs, k[0], k[1], k[2],
            f"{rate:.0f}", lc, f"{other:.1f}", f"{u / hz * 1e6 / n if n else 0:.3f}", k[3],
            f"{other1:.1f}"]


def plan_http(cfg, keep):
    return [Step(f"http-c{c}: {s}, round {r}", http_run, f"http-c{c}", c, s, r, retry=True)
            for c in cfg.http_conns for r in range(1, cfg.rounds + 1)
            for s in keep(servers.HTTP_SERVERS)]


def plan_pipeline(cfg, keep):
    c = f"pipelined{cfg.pipe_depth}-c{cfg.pipe_conns}"
    return [Step(f"{c}: {s}, round {r}", http_run, c, cfg.pipe_conns, s, r, cfg.pipe_depth,
                 retry=True)
            for r in range(1, cfg.rounds + 1) for s in keep(servers.HTTP_SERVERS)]


def plan_echo(cfg, keep, names=servers.ECHO_SERVERS):
    return [Step(f"echo-{size}B-c{c}: {s}, round {r}", echo_run, c, size, s, r, retry=True)
            for c in cfg.echo_conns for size in cfg.echo_sizes
            for r in range(1, cfg.rounds + 1) for s in keep(names)]
