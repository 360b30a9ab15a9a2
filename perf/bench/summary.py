"""runs.csv as perf/run's Markdown summary: medians with min-max, ratios as
medians of per-round ratios, the goals of issue 5, and the chart's data."""
import statistics

from .harness import awk_num

# CSV columns by number, 1-based as in the header (see harness.CSV_HEADER)
RATE, CPU_US, P50, P99, ERR, OPE, CQE, CALLS, VALUE, LOAD_CPU, OTHER0, USER_US, OPS_OP, OTHER1 = (
    7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
CHART_COLS = ["rn-io_uring", "rn-1shot", "rn-lent", "rn-epoll", "nginx", "libuv", "raw", "iperf3"]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def med(values):
    """(median, min, max) of the values; (0, 0, 0) when there are none."""
    v = sorted(num(x) for x in values)
    if not v:
        return 0.0, 0.0, 0.0
    return statistics.median(v), v[0], v[-1]


class Table:
    """The rows of runs.csv by case, server and round."""

    def __init__(self, lines):
        self.cases, self.bench, self.servers = [], {}, {}
        self.vals, self.by_round, self.rounds, self.errors = {}, {}, {}, {}
        self.other = []
        for line in lines:
            self._add(line.split(","))

    def _add(self, f):
        f = f + [""] * (21 - len(f))
        b, c, s, r = f[0], f[1], f[2], int(f[3])
        if c not in self.bench:
            self.bench[c] = b
            self.cases.append(c)
        if s not in self.servers.setdefault(c, []):
            self.servers[c].append(s)
        self.rounds[c] = max(self.rounds.get(c, 0), r)
        for i in range(5, 22):
            self.by_round[c, s, r, i] = f[i - 1]
            if f[i - 1] != "":
                self.vals.setdefault((c, s, i), []).append(f[i - 1])
        self.errors[c, s] = self.errors.get((c, s), 0) + int(num(f[ERR - 1]))
        if b in ("http", "echo") and f[OTHER0 - 1] != "":
            self.other.append(max(num(f[OTHER1 - 1]), num(f[OTHER0 - 1])))

    def med(self, c, s, i):
        return med(self.vals.get((c, s, i), []))

    def m(self, c, s, i):
        return self.med(c, s, i)[0]

    def has(self, c, s, i):
        return (c, s, i) in self.vals

    def per_round(self, c, a, b, i, inv=False):
        out = []
        for r in range(1, self.rounds[c] + 1):
            x, y = self.by_round.get((c, a, r, i), ""), self.by_round.get((c, b, r, i), "")
            if x == "" or y == "" or num(x) == 0 or num(y) == 0:
                continue
            out.append(num(y) / num(x) if inv else num(x) / num(y))
        return out

    def ratio(self, c, a, b, i):
        """'1.05x (0.98-1.10)' of a over b, or '' when not measured."""
        v = self.per_round(c, a, b, i)
        if not v:
            return ""
        m, lo, hi = med(v)
        return f"{m:.2f}x ({lo:.2f}-{hi:.2f})"

    def rmed(self, c, a, b, i):
        v = self.per_round(c, a, b, i)
        return med(v)[0] if v else None

    def cases_of(self, bench):
        return [c for c in self.cases if self.bench[c] == bench]


def lat(t, c, s, i):
    v = t.m(c, s, i)
    return f"{v:.0f}" if v > 0 else "-"


def loopcols(t, c, s):
    """SQEs per enter, operations completed per enter, requests per enter,
    kernel calls per request."""
    if not t.has(c, s, OPE):
        return "- | - | - | -"
    o, p = t.m(c, s, OPE), t.m(c, s, OPS_OP)
    return f"{o:.1f} | {t.m(c, s, CQE):.1f} | {o / p if p > 0 else 0:.1f} | {t.m(c, s, CALLS):.3f}"


def http_table(t, chart):
    out = []
    for c in t.cases_of("http"):
        for s in t.servers[c]:
            m, lo, hi = t.med(c, s, CPU_US)
            vs_n = "1" if s == "nginx" else t.ratio(c, s, "nginx", CPU_US)
            vs_r = "1" if s == "raw" else t.ratio(c, s, "raw", CPU_US)
            out.append(f"| {c} | {s} | {m:.2f} ({lo:.2f}-{hi:.2f}) | {t.m(c, s, USER_US):.2f} | "
                       f"{vs_n} | {vs_r} | {t.m(c, s, RATE):.0f} | {lat(t, c, s, P50)} | "
                       f"{lat(t, c, s, P99)} | {loopcols(t, c, s)} | {t.errors[c, s]} |")
            chart[c, s] = m
    if not out:
        return []
    return ["### HTTP/1.1 hello world (wrk, 1 thread); server CPU per request", "",
            "| case | server | CPU µs/req | user µs/req | vs nginx | vs raw floor | req/s | p50 µs "
            "| p99 µs | SQEs/enter | done/enter | req/enter | kernel calls/req | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + out + [""]


def echo_table(t, chart):
    out = []
    for c in t.cases_of("echo"):
        for s in t.servers[c]:
            m, lo, hi = t.med(c, s, VALUE)
            vs = ["1" if s == peer else t.ratio(c, s, peer, VALUE)
                  for peer in ("rn-epoll", "libuv", "raw")]
            out.append(f"| {c} | {s} | {m:.0f} ({lo:.0f}-{hi:.0f}) | {t.m(c, s, USER_US):.2f} | "
                       f"{' | '.join(vs)} | {t.m(c, s, RATE):.0f} | {lat(t, c, s, P50)} | "
                       f"{lat(t, c, s, P99)} | {loopcols(t, c, s)} | {t.errors[c, s]} |")
            chart[c, s] = 1e6 / m if m > 0 else 0
    if not out:
        return []
    return ["### Echo ping-pong (perf/echo_load, every byte checked); messages per server "
            "CPU-second", "",
            "| case | server | msgs/CPU-s | user µs/msg | vs rn-epoll | vs libuv | vs raw floor | "
            "msgs/s | p50 µs | p99 µs | SQEs/enter | done/enter | msgs/enter | kernel calls/msg "
            "| errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + out + [""]


def bulk_table(t):
    out = []
    for c in t.cases_of("bulk"):
        for s in t.servers[c]:
            m, lo, hi = t.med(c, s, RATE)
            vs = "1" if s == "iperf3" else t.ratio(c, s, "iperf3", RATE)
            out.append(f"| {c} | {s} | {m:.2f} ({lo:.2f}-{hi:.2f}) | {vs} | "
                       f"{t.m(c, s, CPU_US):.0f} | {t.m(c, s, LOAD_CPU):.2f} | {t.errors[c, s]} |")
    if not out:
        return []
    return ["### Bulk, one connection over loopback", "",
            "| case | peer | Gbit/s | vs iperf3 | receiver CPU µs/MiB | sender CPU s | errors |",
            "|---|---|---|---|---|---|---|"] + out + [""]


def tls_table(t, ciphers):
    out = []
    for c in t.cases_of("tls"):
        unit = "MB/s" if c == "tls-bulk" else "handshakes/s"
        for s in t.servers[c]:
            m, lo, hi = t.med(c, s, RATE)
            vs = "1" if s == "openssl" else t.ratio(c, s, "openssl", RATE)
            cm, clo, chi = t.med(c, s, CPU_US)
            cvs = "1" if s == "openssl" else t.ratio(c, s, "openssl", CPU_US)
            out.append(f"| {c} | {s} | {m:.1f} ({lo:.1f}-{hi:.1f}) {unit} | {vs} | "
                       f"{cm:.0f} ({clo:.0f}-{chi:.0f}) | {cvs} |")
    if not out:
        return []
    neg = [f"Negotiated with openssl s_client: {line}  " for line in ciphers]
    return ["### TLS (openssl s_time / s_client as the client of every server)", "",
            "rn-io_uring: ringnet on Debian's wolfSSL; rn-aesni: on wolfSSL built by "
            "ci/build-wolfssl-aesni.sh (AES-NI, assembly).", "",
            "| case | server | rate | rate vs openssl s_server | server CPU µs per handshake / "
            "per MiB | CPU vs openssl |",
            "|---|---|---|---|---|---|"] + out + [""] + neg + [""]


def memory_table(t):
    out = []
    for c in t.cases_of("memory"):
        for s in t.servers[c]:
            m, lo, hi = t.med(c, s, VALUE)
            out.append(f"| {c} | {s} | {m:.0f} ({lo:.0f}-{hi:.0f}) | {t.m(c, s, CQE):.0f} | "
                       f"{t.m(c, s, RATE):.0f} | {t.m(c, s, 6):.0f} |")
    if not out:
        return []
    return ["### Memory per idle connection (perf/idle_conns)", "",
            "| case | server | RSS bytes/conn | page tables bytes/conn | RSS before KiB | "
            "connections |", "|---|---|---|---|---|---|"] + out + [""]


def goal(text, v, op, limit):
    if v is None:
        return f"- {text}: not measured in this run"
    ok = v <= limit if op == "<=" else v >= limit
    return f"- {text}: **{'met' if ok else 'missed'}** ({v:.2f}, goal {op} {awk_num(limit)})"


def med_or_none(t, c, s, i):
    return t.m(c, s, i) if t.has(c, s, i) else None


def case_goals(t, c):
    b, g = t.bench[c], []
    if b == "http":
        g.append(goal(f"{c}: rn-io_uring CPU/req vs raw floor", t.rmed(c, "rn-io_uring", "raw", CPU_US), "<=", 1.10))
        g.append(goal(f"{c}: rn-io_uring CPU/req vs nginx", t.rmed(c, "rn-io_uring", "nginx", CPU_US), "<=", 0.80))
        # operations completed per enter (a CQE each, or a read served from
        # what a multishot recv queued); fewer SQEs taken is better
        if c.startswith("pipelined"):
            g.append(goal(f"{c}: rn-io_uring operations completed per io_uring_enter",
                          med_or_none(t, c, "rn-io_uring", CQE), ">=", 32))
        g.append(goal(f"{c}: stream reads lever: rn-io_uring CPU/req vs rn-1shot",
                      t.rmed(c, "rn-io_uring", "rn-1shot", CPU_US), "<=", 1.0))
    if b == "echo" and c.endswith("-c1000"):
        for peer, limit in (("rn-epoll", 1.2), ("libuv", 1.0)):
            g.append(goal(f"{c}: rn-io_uring vs {peer}, msgs per CPU-s",
                          t.rmed(c, "rn-io_uring", peer, VALUE), ">=", limit))
        g.append(goal(f"{c}: stream reads lever: rn-io_uring vs rn-1shot, msgs per CPU-s",
                      t.rmed(c, "rn-io_uring", "rn-1shot", VALUE), ">=", 1.0))
        g.append(goal(f"{c}: rn-lent vs rn-epoll, msgs per CPU-s",
                      t.rmed(c, "rn-lent", "rn-epoll", VALUE), ">=", 1.2))
    if b == "bulk":
        g.append(goal(f"{c}: rn-io_uring vs iperf3, Gbit/s", t.rmed(c, "rn-io_uring", "iperf3", RATE), ">=", 0.9))
    if b == "tls":
        for s in ("rn-io_uring", "rn-aesni"):
            if c == "tls-bulk":
                g.append(goal(f"{c}: {s} server CPU per MiB vs openssl s_server",
                              t.rmed(c, s, "openssl", CPU_US), "<=", 1.0))
            else:
                g.append(goal(f"{c}: {s} handshakes/s vs openssl s_server (s_time: bound by "
                              "the client)", t.rmed(c, s, "openssl", RATE), ">=", 1.5))
                cpu = t.rmed(c, s, "openssl", CPU_US)
                g.append(goal(f"{c}: {s} handshakes per server CPU-second vs openssl s_server",
                              1 / cpu if cpu else None, ">=", 1.5))
    if b == "memory" and "tls" in c:
        for s in ("rn-aesni-lent", "rn-lent"):
            if t.has(c, s, VALUE):
                g.append(goal(f"{c}: {s} RSS bytes per idle TLS connection", med_or_none(
                    t, c, s, VALUE), "<=", 20480))
    if b == "memory" and "tls" not in c:
        g.append(goal(f"{c}: rn-io_uring RSS bytes per idle connection (a 4 KiB buffer on the "
                      "task stack)", med_or_none(t, c, "rn-io_uring", VALUE), "<=", 8192))
        g.append(goal(f"{c}: rn-lent RSS bytes per idle connection (rn_conn_read_lent)",
                      med_or_none(t, c, "rn-lent", VALUE), "<=", 8192))
    return g


def heading(t, run):
    """run: dict of stamp, model, ncpu, kernel, rounds, seconds, quick, mins, retries, max_other."""
    q = run["quick"]
    text = (f"Machine: {run['model']}, {run['ncpu']} cores, Linux {run['kernel']}. Server pinned to "
            f"CPU 0, load generator to CPU 1. {run['rounds']} interleaved round(s) of "
            f"{run['seconds']} s per run (about {run['mins']} min in all)"
            f"{'; --quick: the ratios are indicative only' if q else ''}. Medians, with min-max "
            "over the rounds; ratios are medians of per-round ratios.")
    if t.other:
        m, _, hi = med(t.other)
        again = (f" ({run['retries']} run(s) measured again for going over {run['max_other']}%)"
                 if run["retries"] else "")
        text += (f" Other work on the two CPUs during the http and echo runs: median {m:.1f}%, "
                 f"max {hi:.1f}% of the run time{again}.")
        if m > 5:
            text += " **The machine was busy: these figures are skewed.**"
    return [f"## {run['stamp']} — perf/run{' --quick' if q else ''}", "", text, ""]


def chart_data(t, chart):
    lines = ["case " + " ".join(CHART_COLS)]
    for c in t.cases:
        if t.bench[c] in ("http", "echo"):
            cells = [awk_num(chart[c, s]) if (c, s) in chart else "-" for s in CHART_COLS]
            lines.append(" ".join([c] + cells))
    return "\n".join(lines) + "\n"


def render(lines, run, ciphers):
    """(summary Markdown, chart data) of the CSV rows (header left out)."""
    t, chart = Table(lines), {}
    md = heading(t, run)
    md += http_table(t, chart) + echo_table(t, chart) + bulk_table(t)
    md += tls_table(t, ciphers) + memory_table(t)
    md += ["### Goals (issues 5 and 13)", ""]
    for c in t.cases:
        md += case_goals(t, c)
    return "\n".join(md) + "\n", chart_data(t, chart)
