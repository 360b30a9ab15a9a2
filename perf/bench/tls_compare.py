"""perf/run --tls-compare (was perf/tls_bench.sh): issue 3's TLS figures.
rn_tls_server built against Debian's wolfSSL (build/tls-debian) and against
the same source with AES-NI (build/release-aesni), beside openssl s_server,
each pinned to CPU 0, clients to CPU 1, TLS 1.3, X25519, ECDSA P-256:
  handshake  full handshakes/s, openssl s_time -new (per suite)
  bulk       MB/s client to server, perf/tls/ossl_bulk (per suite)
  hs-rn      handshakes/s from ringnet's client (tls_bulk --handshakes,
             AES-NI build, 8 connections at once), the server's own suite
  rn2rn      MB/s, ringnet client to ringnet server, each build with itself
with the server's CPU (utime+stime) per handshake or per MiB; interleaved
rounds, medians (min-max) and medians of per-round ratios."""
import os
import re
import subprocess
import sys
import tempfile
import time

from . import aesni, proc
from .harness import Ctx, Fatal, Server
from .others import negotiated
from .summary import med

SUITES = {"aes": "TLS_AES_128_GCM_SHA256", "chacha": "TLS_CHACHA20_POLY1305_SHA256"}
CSV = "kind,suite,server,round,count,seconds,rate,server_cpu_s,server_us_per_unit"
DEB, AES = "build/tls-debian", "build/release-aesni"


def build(root):
    steps = [
        (f"rn_tls_server, tls_bulk and ossl_bulk against Debian's wolfSSL ({DEB})",
         [["cmake", "--preset", "release", "-B", DEB, "-DRINGNET_BUILD_TESTS=OFF",
           "-DRINGNET_BUILD_EXAMPLES=OFF"],
          ["cmake", "--build", DEB, "-j2", "--target", "rn_tls_server", "tls_bulk", "ossl_bulk"]])]
    for what, cmds in steps:
        print(f"tls_compare: building {what}", file=sys.stderr)
        for cmd in cmds:
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
            if r.returncode:
                sys.stderr.write("\n".join((r.stdout + r.stderr).splitlines()[-30:]) + "\n")
                raise Fatal("tls_compare: the build failed (log above)")
    # wolfSSL with AES-NI (built once; again when its script changes), and
    # rn_tls_server and tls_bulk against it
    aesni.build(root, ["rn_tls_server", "tls_bulk"])


def check(root):
    for b in (DEB, AES):
        for p in ("rn_tls_server", "tls_bulk"):
            if not os.access(os.path.join(root, b, p), os.X_OK):
                raise Fatal(f"tls_compare: {b}/{p} is missing (run without --no-build)")
    if not os.access(os.path.join(root, DEB, "ossl_bulk"), os.X_OK):
        raise Fatal(f"tls_compare: {DEB}/ossl_bulk is missing (libssl-dev needed)")
    # Each ringnet server must load the wolfSSL it was built for (an RPATH,
    # the prefix's own options.h).
    aesni.check(root, DEB, ("rn_tls_server", "tls_bulk"))


class Bench:
    """The servers, the clients and the rows of one --tls-compare run."""

    def __init__(self, ctx):
        self.ctx, self.rows = ctx, []
        self.cert, self.key = ctx.path("cert.pem"), ctx.path("key.pem")

    def start(self, name):
        ctx, port = self.ctx, proc.free_port()
        files = ["--cert", self.cert, "--key", self.key]
        if name == "openssl":
            argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", self.cert,
                    "-key", self.key, "-quiet"]
            srv = Server(ctx, name, argv, port=port, stdin=subprocess.PIPE)
        else:
            b = DEB if name == "rn-debian" else AES
            srv = Server(ctx, name, [os.path.join(ctx.root, b, "rn_tls_server"), "--port",
                                     str(port)] + files, port=port)
        if not srv.wait_listening():
            ctx.cat("srv.out", "srv.err")
            raise Fatal(f"tls_compare: server {name} did not start")
        return srv

    def measure(self, kind, suite, name, rnd, client, unit_bytes):
        """Start NAME, run client(port) -> (count, seconds), take the server's CPU."""
        srv = self.start(name)
        t0 = proc.ticks([srv.p.pid])
        n, secs = client(srv.port)
        time.sleep(0.05)
        cpu = (proc.ticks([srv.p.pid]) - t0) / proc.HZ
        srv.stop()
        if n <= 0 or secs <= 0:
            raise Fatal(f"tls_compare: {kind} {suite} {name}: no result")
        rate = n / secs / 1e6 if unit_bytes else n / secs
        per = cpu * 1e6 / (n / 1048576) if unit_bytes else cpu * 1e6 / n
        self.rows.append([kind, suite, name, str(rnd), str(n), f"{secs:.3f}", f"{rate:.1f}",
                          f"{cpu:.2f}", f"{per:.1f}"])

    def client(self, argv, out, pattern):
        """Run a client on the client CPU; the values its output's pattern gives."""
        rc, _ = self.ctx.run_load(argv, self.ctx.path(out))
        with open(self.ctx.path(out)) as f:
            text = f.read()
        if rc != 0 and "s_time" not in argv[0]:
            sys.stderr.write(text)
            raise Fatal(f"tls_compare: {os.path.basename(argv[0])} failed")
        return re.findall(pattern, text)

    def s_time(self, suite):
        def run(port):
            w0 = time.time()
            got = self.client(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
                               "-time", str(self.ctx.cfg.seconds), "-ciphersuites",
                               SUITES[suite]], "st.out", r"(\d+) connections in .* real seconds")
            return (int(got[-1]) if got else 0), time.time() - w0
        return run

    def ossl_bulk(self, suite):
        def run(port):
            n = self.ctx.cfg.tls_bytes
            got = self.client([os.path.join(self.ctx.root, DEB, "ossl_bulk"), str(port),
                               SUITES[suite], str(n)], "ob.out", r"seconds=([0-9.]+).*suite=(\S+)")
            if not got or got[-1][1] != SUITES[suite]:
                raise Fatal(f"tls_compare: ossl_bulk did not negotiate {SUITES[suite]}")
            return n, float(got[-1][0])
        return run

    def tls_handshakes(self):
        """ringnet's client (AES-NI build), 8 connections at once, certificate verified."""
        def run(port):
            got = self.client([os.path.join(self.ctx.root, AES, "tls_bulk"), "--port", str(port),
                               "--ca", self.cert, "--handshakes", str(self.ctx.cfg.seconds),
                               "--conns", "8"], "th.out", r"handshakes=(\d+).*seconds=([0-9.]+)")
            return (int(got[-1][0]), float(got[-1][1])) if got else (0, 0)
        return run

    def tls_bulk(self, build):
        """ringnet's client of the same build as the server, --bytes of data."""
        def run(port):
            n = self.ctx.cfg.tls_bytes
            got = self.client([os.path.join(self.ctx.root, build, "tls_bulk"), "--port", str(port),
                               "--ca", self.cert, "--bytes", str(n)], "tb.out",
                              r"seconds=([0-9.]+)")
            return n, (float(got[-1]) if got else 0)
        return run

    def round(self, r):
        for s in SUITES:
            for name in ("rn-debian", "rn-aesni", "openssl"):
                self.note(f"round {r}: handshake {s} {name}")
                self.measure("handshake", s, name, r, self.s_time(s), False)
        for s in SUITES:
            for name in ("rn-debian", "rn-aesni", "openssl"):
                self.note(f"round {r}: bulk {s} {name}")
                self.measure("bulk", s, name, r, self.ossl_bulk(s), True)
        for name in ("rn-debian", "rn-aesni", "openssl"):
            self.note(f"round {r}: hs-rn {name}")
            self.measure("hs-rn", "chacha" if name == "rn-debian" else "aes", name, r,
                         self.tls_handshakes(), False)
        for name, b, s in (("rn-debian", DEB, "chacha"), ("rn-aesni", AES, "aes")):
            self.note(f"round {r}: rn2rn {name}")
            self.measure("rn2rn", s, name, r, self.tls_bulk(b), True)

    @staticmethod
    def note(text):
        print(f"tls_compare: {text}", file=sys.stderr)

    def negotiated(self):
        lines = []
        for name in ("rn-debian", "rn-aesni", "openssl"):
            srv = self.start(name)
            for s, suite in SUITES.items():
                g = negotiated(srv.port, ["-ciphersuites", suite])
                lines.append(f"{name}, client offers only {suite}: {g.get('Protocol version', '')}"
                             f", {g.get('Ciphersuite', '')}, {g.get('Temp Key', '')}")
            g = negotiated(srv.port, ["-ciphersuites", ":".join(SUITES.values())])
            lines.append(f"{name}, client offers both (AES first): {g.get('Ciphersuite', '')}")
            srv.stop()
        return lines


def ratio(rows, key, other, col):
    """Median over the rounds of row key's column over row other's."""
    if other is None:
        return "-"
    if key == other:
        return "1"
    a = {r[3]: float(r[col]) for r in rows if tuple(r[:3]) == key}
    b = {r[3]: float(r[col]) for r in rows if tuple(r[:3]) == other}
    v = [a[k] / b[k] for k in a if k in b and b[k] > 0]
    return f"{med(v)[0]:.2f}x" if v else "-"


def table(rows):
    out = ["| measure | suite | server | rate | rate vs rn-debian | rate vs openssl | server CPU "
           "| CPU vs rn-debian | CPU vs openssl |", "|---|---|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys(tuple(r[:3]) for r in rows):
        kind, suite, _ = key
        mine = [r for r in rows if tuple(r[:3]) == key]
        rm, rlo, rhi = med([r[6] for r in mine])
        cm, clo, chi = med([r[8] for r in mine])
        hs = kind in ("handshake", "hs-rn")
        # the rows to compare with: the same measure and suite, except where
        # each server picks its own
        deb = (kind, "chacha" if kind in ("rn2rn", "hs-rn") else suite, "rn-debian")
        ossl = None if kind == "rn2rn" else (kind, "aes" if kind == "hs-rn" else suite, "openssl")
        out.append(f"| {kind} | {suite} | {key[2]} | {rm:.0f} ({rlo:.0f}-{rhi:.0f}) "
                   f"{'handshakes/s' if hs else 'MB/s'} | {ratio(rows, key, deb, 6)} | "
                   f"{ratio(rows, key, ossl, 6)} | {cm:.0f} ({clo:.0f}-{chi:.0f}) "
                   f"{'µs/handshake' if hs else 'µs/MiB'} | {ratio(rows, key, deb, 8)} | "
                   f"{ratio(rows, key, ossl, 8)} |")
    return out


def goals(rows):
    """Issue 13's goals, from the per-round ratios of rn-aesni against openssl."""
    out = []
    for kind, suite, col, op, limit, what in (
            ("bulk", "aes", 8, "<=", 1.0, "server CPU per MiB"),
            ("bulk", "chacha", 8, "<=", 1.0, "server CPU per MiB"),
            ("handshake", "aes", 6, ">=", 1.5, "handshakes/s (openssl s_time, one client "
             "process: bound by the client)"),
            ("handshake", "aes", -8, ">=", 1.5, "handshakes per server CPU-second"),
            ("hs-rn", "aes", 6, ">=", 1.5, "handshakes/s (ringnet's client, 8 at once)")):
        r = ratio(rows, (kind, suite, "rn-aesni"), (kind, suite, "openssl"), abs(col))
        if r == "-":
            continue
        v = float(r[:-1])
        if col < 0:  # per CPU-second: the inverse of the CPU per handshake
            v = 1 / v
        ok = v <= limit if op == "<=" else v >= limit
        out.append(f"- rn-aesni {what} vs openssl s_server, {kind} {suite}: "
                   f"**{'met' if ok else 'missed'}** ({v:.2f}, goal {op} {limit})")
    return out


def summary(ctx, rows, neg):
    cfg = ctx.cfg
    ossl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.split()
    head = [f"Machine: {proc.cpu_model()}, {ctx.ncpu} cores (AES-NI in the CPU: "
            f"{'yes' if proc.has_cpu_flag('aes') else 'no'}), Linux {os.uname().release}, "
            f"{' '.join(ossl[:2])}.",
            f"Servers on CPU {ctx.srv_cpu}, clients on CPU {ctx.load_cpu}. {cfg.rounds} interleaved "
            f"rounds; handshake runs {cfg.seconds} s, bulk runs {cfg.tls_bytes >> 20} MiB.",
            "Medians (min-max over the rounds); a ratio is the median of the per-round ratios.",
            f"Load average at the start {ctx.load0}, at the end {proc.loadavg()} (other "
            "work on the machine skews the absolute figures more than the ratios).",
            f"rn-aesni: {aesni.describe(ctx.root)}.",
            "", "Negotiated (openssl s_client -brief):", ""]
    return "\n".join(head + ["    " + l for l in neg] + [""] + table(rows) + ["", "Goals (issue 13):", ""]
                     + goals(rows)) + "\n"


def run(cfg, root):
    if cfg.dry_run:
        print(f"build: {DEB}, ci/build-wolfssl-aesni.sh, {AES}" if cfg.build else "no build")
        print(f"{cfg.rounds} rounds of: handshake x2 suites x3 servers, bulk x2 x3, hs-rn x3, "
              "rn2rn x2")
        return 0
    if cfg.build:
        build(root)
    check(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = os.path.join(root, cfg.out_dir, f"tls-{stamp}")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tls-compare.") as tmp:
        ctx = Ctx(cfg, root, tmp, out)
        ctx.load0 = proc.loadavg()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", ctx.path("key.pem"),
                        "-out", ctx.path("cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, check=True)
        b = Bench(ctx)
        try:
            neg = b.negotiated()
            sys.stderr.write("\n".join(neg) + "\n")
            b.note(f"{cfg.rounds} rounds: handshakes {cfg.seconds}s, bulk {cfg.tls_bytes >> 20} MiB per run")
            for r in range(1, cfg.rounds + 1):
                b.round(r)
        finally:
            ctx.kill_all()
    with open(os.path.join(out, "runs.csv"), "w") as f:
        f.write(CSV + "\n" + "".join(",".join(r) + "\n" for r in b.rows))
    text = summary(ctx, b.rows, neg)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print(text, end="")
    b.note(f"raw rows: {os.path.relpath(out, root)}/runs.csv")
    return 0
