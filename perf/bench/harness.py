"""The context of one perf/run: progress line, the processes it started,
the server under test, the CSV rows."""
import os
import signal
import subprocess
import sys
import time

from . import proc

CSV_HEADER = ("bench,case,server,round,seconds,count,rate,server_cpu_s,cpu_us_per_op,p50_us,"
              "p99_us,errors,ops_per_enter,cqes_per_enter,calls_per_op,value,load_cpu_s,"
              "cpu0_other_pct,user_us_per_op,ops_per_op,cpu1_other_pct")
NCOLS = CSV_HEADER.count(",") + 1


class Progress:
    """perf/run's progress line: [run/total elapsed, ~left] label."""

    def __init__(self, total):
        self.total, self.n, self.t0 = total, 0, time.time()

    def step(self, label):
        self.n += 1
        el = int(time.time() - self.t0)
        eta = ""
        if self.n > 1:
            left = el * (self.total - self.n + 1) // (self.n - 1)
            eta = f", ~{left // 60}m{left % 60:02d}s left"
        sys.stderr.write(f"\r\033[K[{self.n}/{self.total} {el // 60}m{el % 60:02d}s{eta}] {label}")
        sys.stderr.flush()

    def again(self, label):
        self.n -= 1
        self.step(label)

    @staticmethod
    def note(text):
        sys.stderr.write(f"\r\033[K{text}\n")
        sys.stderr.flush()


class Fatal(Exception):
    """A run that cannot go on; the message says why."""


def wait_rusage(p):
    """Wait for Popen p; (exit status, user+sys CPU seconds of it)."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_utime + ru.ru_stime


class Ctx:
    """One run: configuration, paths, CPUs, started processes, CSV."""

    def __init__(self, cfg, root, tmp, out):
        self.cfg, self.root, self.tmp, self.out = cfg, root, tmp, out
        self.bin = os.path.join(root, cfg.build_dir)
        # ringnet's perf programs against the fast wolfSSL (aesni.py), when built
        self.aes_bin = os.path.join(root, "build/release-aesni")
        ncpu = os.cpu_count() or 1
        self.ncpu, self.srv_cpu, self.load_cpu = ncpu, 0, (1 if ncpu > 1 else 0)
        self.started = []
        self.rows = []
        self.csv, self.written = None, 0
        self.retries = 0
        self.progress = None
        self.srv = None

    def exe(self, name, server=""):
        """Program NAME of the build a server name says: build/release-aesni
        for rn-aesni*, the run's build otherwise."""
        return os.path.join(self.aes_bin if server.startswith("rn-aesni") else self.bin, name)

    def has(self, name):
        return os.access(self.exe(name), os.X_OK)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def spawn(self, argv, cpu, stdout=None, stderr=None, env=None, stdin=None):
        """Start argv pinned to cpu; remembered so that it is killed at exit."""
        extra = dict(os.environ, **env) if env else None
        p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=stdout, stderr=stderr,
                             stdin=stdin if stdin is not None else subprocess.DEVNULL, env=extra)
        self.started.append(p)
        return p

    def forget(self, p):
        if p in self.started:
            self.started.remove(p)

    def run_load(self, argv, outfile, cpu=None):
        """Run a load generator to its end; (exit status, CPU seconds)."""
        with open(outfile, "w") as f:
            p = self.spawn(argv, self.load_cpu if cpu is None else cpu, f, subprocess.STDOUT)
            try:
                return wait_rusage(p)
            finally:
                self.forget(p)

    def kill_all(self):
        for p in self.started:
            try:
                p.kill()
                p.wait(timeout=5)
            except (OSError, subprocess.SubprocessError):
                pass
        self.started = []

    def row(self, fields):
        """One CSV row, padded to the header's columns."""
        fields = [str(f) for f in fields]
        self.rows.append(",".join(fields + [""] * (NCOLS - len(fields))))

    def flush(self):
        """Append the rows not yet written to runs.csv."""
        if self.csv and self.written < len(self.rows):
            with open(self.csv, "a") as f:
                f.write("".join(r + "\n" for r in self.rows[self.written:]))
            self.written = len(self.rows)

    def note(self, text):
        Progress.note(text)

    def cat(self, *names):
        for n in names:
            try:
                with open(self.path(n), errors="replace") as f:
                    sys.stderr.write(f.read())
            except OSError:
                pass


class Server:
    """A server under test on a free port, pinned to the server CPU."""

    def __init__(self, ctx, name, argv, env=None, port=None, stdin=None):
        self.ctx, self.name = ctx, name
        self.port = port
        self.out, self.err = ctx.path("srv.out"), ctx.path("srv.err")
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.p = ctx.spawn(argv, ctx.srv_cpu, o, e, env=env, stdin=stdin)
        self.pids = [self.p.pid]

    def wait_listening(self, tries=200, step=0.025):
        for _ in range(tries):
            if proc.listening(self.port) or self.p.poll() is not None:
                break
            time.sleep(step)
        return proc.listening(self.port)

    def add_children(self):
        """nginx: the master and its worker."""
        for _ in range(100):
            kids = proc.children_of(self.p.pid)
            if kids:
                self.pids = [self.p.pid] + kids
                return
            time.sleep(0.02)

    def stats_line(self, n):
        """The server's Nth STATS line (asked for with SIGUSR1)."""
        self.p.send_signal(signal.SIGUSR1)
        for _ in range(200):
            with open(self.err, errors="replace") as f:
                lines = [l for l in f if l.startswith("STATS")]
            if len(lines) >= n:
                return lines[n - 1].strip()
            time.sleep(0.01)
        return "STATS ops_submitted=0 enter_calls=0 completions=0"

    def stop(self):
        try:
            self.p.terminate()
            self.p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        except OSError:
            pass
        self.ctx.forget(self.p)


def awk_num(x):
    """A number as awk prints it: integers whole, others with %.6g."""
    x = float(x)
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return f"{x:.6g}"


class Step:
    """One measured run of a plan: its progress label and what makes it."""

    def __init__(self, label, fn, *args, retry=False):
        self.label, self.fn, self.args, self.retry = label, fn, args, retry

    def __repr__(self):
        return self.label


def other_pct(line):
    """The larger of cpu0_other_pct and cpu1_other_pct of a CSV row."""
    v = line.split(",")
    def f(i):
        try:
            return float(v[i])
        except (IndexError, ValueError):
            return 0.0
    return max(f(17), f(20))


def run_step(ctx, step):
    """One step; an http or echo run is measured again (twice at most) when
    other work took more than --max-other percent of a CPU during it."""
    ctx.progress.step(step.label)
    for attempt in (1, 2, 3):
        mark = len(ctx.rows)
        step.fn(ctx, *step.args)
        if not step.retry or len(ctx.rows) == mark:
            return
        other = other_pct(ctx.rows[-1])
        if attempt == 3 or other <= ctx.cfg.max_other:
            return
        del ctx.rows[mark:]
        ctx.retries += 1
        ctx.note(f"perf/run: {step.label}: a CPU was {awk_num(other)}% busy with other work; "
                 "measuring again")
        ctx.progress.again(f"{step.label} (again)")


def run_groups(ctx, groups):
    """Every step of every group, in order; a group whose prep fails is skipped."""
    for g in groups:
        if g.prep and not g.prep(ctx):
            continue
        for step in g.steps:
            run_step(ctx, step)
            ctx.flush()
