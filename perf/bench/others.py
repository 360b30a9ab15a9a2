"""The other benchmarks: bulk over one connection, TLS handshakes and bulk,
memory per idle connection (plain and TLS)."""
import json
import os
import subprocess
import time

from . import proc, servers
from .harness import Fatal, Server, Step, wait_rusage


class Group:
    """Steps that share a preparation (certificates, a probe); when prep
    returns False the steps are skipped."""

    def __init__(self, name, steps, prep=None):
        self.name, self.steps, self.prep = name, steps, prep


# ---- bulk ---------------------------------------------------------------------

def bulk_cmds(ctx, name, port):
    n = ctx.cfg.bulk_bytes
    if name == "iperf3":
        return (["iperf3", "-s", "-1", "-p", str(port)],
                ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-n", str(n), "-J"])
    be = name[len("rn-"):]
    return ([ctx.exe("rn_bulk"), "recv", "--port", str(port), "--backend", be],
            [ctx.exe("rn_bulk"), "send", "--port", str(port), "--bytes", str(n), "--backend", be])


def bulk_bytes_got(ctx, name):
    if name == "iperf3":
        # What the client sent: iperf3's server stops counting when the client
        # signals the end, which can leave its last megabytes out of sum_received.
        try:
            with open(ctx.path("send.out")) as f:
                return int(json.load(f)["end"]["sum_sent"]["bytes"])
        except (OSError, ValueError, KeyError):
            return 0
    with open(ctx.path("recv.out")) as f:
        for line in f:
            if line.startswith("RESULT bytes="):
                return int(line.split()[1].split("=")[1])
    return 0


def bulk_run(ctx, case, name, rnd):
    """Both peers are timed and charged the same way, whatever they report
    themselves: the rate is the bytes over the sender's wall time (launch to
    exit, connection set-up included), each side's CPU its own rusage."""
    port = proc.free_port()
    recv, send = bulk_cmds(ctx, name, port)
    with open(ctx.path("recv.out"), "w") as f:
        rp = ctx.spawn(recv, ctx.srv_cpu, f, subprocess.STDOUT)
    for _ in range(200):
        if proc.listening(port):
            break
        time.sleep(0.025)
    w0 = time.time()
    rc, send_cpu = ctx.run_load(send, ctx.path("send.out"))
    w1 = time.time()
    if rc != 0:
        ctx.note(f"{name} sender failed:")
        ctx.cat("send.out")
        raise Fatal(f"perf/run: {name} sender failed")
    rrc, recv_cpu = wait_rusage(rp)
    ctx.forget(rp)
    if rrc != 0:
        ctx.note(f"{name} receiver failed:")
        ctx.cat("recv.out")
        raise Fatal(f"perf/run: {name} receiver failed")
    n, want, d = bulk_bytes_got(ctx, name), ctx.cfg.bulk_bytes, w1 - w0
    rcpu = float(f"{recv_cpu:.3f}")
    ctx.row(["bulk", case, name, rnd, f"{d:.4f}", n, f"{n * 8 / d / 1e9:.3f}", f"{rcpu:.3f}",
             f"{rcpu * 1e6 / (n / 1048576) if n > 0 else 0:.1f}", "", "", 0 if n == want else 1,
             "", "", "", "", f"{send_cpu:.3f}"])
    if n != want:
        ctx.note(f"perf/run: {case} {name}: received {n} of {want} bytes")


def plan_bulk(cfg, keep):
    case = f"bulk-{cfg.bulk_bytes >> 20}MiB"
    return [Group("bulk", [Step(f"{case}: {s}, round {r}", bulk_run, case, s, r)
                           for r in range(1, cfg.rounds + 1)
                           for s in ("rn-io_uring", "rn-epoll", "iperf3")])]


# ---- TLS ----------------------------------------------------------------------

def make_cert(dir_, san=False):
    os.makedirs(dir_, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{dir_}/key.pem", "-out", f"{dir_}/cert.pem", "-days", "2",
            "-subj", "/CN=localhost"]
    if san:
        argv += ["-addext", "subjectAltName=DNS:localhost"]
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def tls_start(ctx, name):
    port, d = proc.free_port(), ctx.path("tls")
    if name == "openssl":
        argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", f"{d}/cert.pem",
                "-key", f"{d}/key.pem", "-quiet"]
        # s_server ends a connection when its stdin ends: give it one that never does.
        srv = Server(ctx, name, argv, port=port, stdin=subprocess.PIPE)
    else:
        argv = [ctx.exe("rn_tls_server", name), "--port", str(port), "--cert", f"{d}/cert.pem",
                "--key", f"{d}/key.pem"]
        srv = Server(ctx, name, argv, port=port)
    srv.wait_listening()
    return srv


def negotiated(port, extra=()):
    """'protocol, suite, key exchange K' that openssl s_client -brief reports."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *extra],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    got = {}
    for line in (r.stdout + r.stderr).splitlines():
        key, _, val = line.partition(":")
        if key in ("Protocol version", "Ciphersuite") or key.endswith("Temp Key"):
            got["Temp Key" if key.endswith("Temp Key") else key] = val.strip()
    return got


def tls_prep(ctx):
    if not ctx.has("rn_tls_server"):
        ctx.note("tls: skipped: TLS engine not built (no rn_tls_server)")
        return False
    make_cert(ctx.path("tls"))
    d, port = ctx.path("tls"), proc.free_port()
    r = subprocess.run([ctx.exe("rn_tls_server"), "--port", str(port), "--cert", f"{d}/cert.pem",
                        "--key", f"{d}/key.pem", "--probe"], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
        ctx.note(f"tls: skipped: TLS engine not built ({last[0]})")
        return False
    if not has_aesni(ctx) and not ctx.cfg.no_aesni:
        ctx.note("tls: no build against the fast wolfSSL: rn-aesni left out")
    with open(os.path.join(ctx.out, "tls_ciphers.txt"), "w") as f:
        for name in tls_servers(ctx):
            srv = tls_start(ctx, name)
            g = negotiated(srv.port)
            f.write(f"{name}: {g.get('Protocol version', '')}, {g.get('Ciphersuite', '')}, "
                    f"key exchange {g.get('Temp Key', '')}\n")
            srv.stop()
    return True


def tls_client(ctx, what, port):
    """Run the client; the count (handshakes, or bytes)."""
    if what == "handshake":
        ctx.run_load(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
                      str(ctx.cfg.seconds)], ctx.path("st.out"))
        with open(ctx.path("st.out")) as f:
            counts = [l.split()[0] for l in f if "connections in" in l and "real seconds" in l]
        return int(counts[-1]) if counts and counts[-1].isdigit() else 0
    n = ctx.cfg.tls_bulk_bytes
    subprocess.run(f"head -c {n} /dev/zero | taskset -c {ctx.load_cpu} openssl s_client "
                   f"-connect 127.0.0.1:{port} -quiet -no_ign_eof >/dev/null 2>'{ctx.path('sc.err')}'",
                   shell=True)
    return n


def has_aesni(ctx):
    return os.access(ctx.exe("rn_tls_server", "rn-aesni"), os.X_OK)


def tls_servers(ctx):
    """rn-io_uring (Debian's wolfSSL), rn-aesni (the fast one) when built, openssl."""
    return ["rn-io_uring"] + (["rn-aesni"] if has_aesni(ctx) else []) + ["openssl"]


def tls_run(ctx, what, name, rnd):
    if name.startswith("rn-aesni") and not has_aesni(ctx):
        return  # not built (--no-aesni, or no TLS): noted once by the prep
    srv = tls_start(ctx, name)
    t0, w0 = proc.ticks([srv.p.pid]), time.time()
    cnt = tls_client(ctx, what, srv.port)
    w1 = time.time()
    time.sleep(0.1)  # the server's last reads
    t1 = proc.ticks([srv.p.pid])
    srv.stop()
    if cnt <= 0:
        ctx.note(f"tls {what} against {name}: no result")
        ctx.cat("st.out", "srv.err")
        return
    d, cpu = float(f"{w1 - w0:.3f}"), (t1 - t0) / proc.HZ
    per = cpu * 1e6 / (cnt / 1048576) if what == "bulk" else cpu * 1e6 / cnt
    rate = cnt / d / 1e6 if what == "bulk" else cnt / d
    ctx.row(["tls", f"tls-{what}", name, rnd, f"{d:.3f}", cnt, f"{rate:.1f}", f"{cpu:.2f}",
             f"{per:.1f}", "", "", 0])


def plan_tls(cfg, keep):
    servers = ["rn-io_uring"] + ([] if cfg.no_aesni else ["rn-aesni"]) + ["openssl"]
    steps = [Step(f"tls-{w}: {s}, round {r}", tls_run, w, s, r)
             for r in range(1, cfg.rounds + 1) for w in ("handshake", "bulk")
             for s in servers]
    return [Group("tls", steps, tls_prep)]


# ---- memory per idle connection ---------------------------------------------------

def hold_idle(ctx, srv, argv, outfile, count_fn, tries):
    """Start the idle client, wait until count_fn() says all are up; RSS and
    page tables of the server before and after, and the count."""
    time.sleep(0.2)
    r0, q0 = proc.rss_kib(srv.pids), proc.pte_kib(srv.pids)
    with open(ctx.path(outfile), "w") as f:
        ic = ctx.spawn(argv, ctx.load_cpu, f, subprocess.STDOUT)
    n = 0
    for _ in range(tries):
        n = count_fn()
        if n >= ctx.want or ic.poll() is not None:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # the server finishes setting up the last ones
    n = count_fn()
    r1, q1 = proc.rss_kib(srv.pids), proc.pte_kib(srv.pids)
    ic.terminate()
    ic.wait()
    ctx.forget(ic)
    srv.stop()
    return n, r0, r1, q0, q1


def memory_row(ctx, case, name, rnd, want, got):
    n, r0, r1, q0, q1 = got
    ctx.row(["memory", case, name, rnd, "", n, r0, "", "", "", "", 0 if n >= want else 1, "",
             f"{(q1 - q0) * 1024 / n if n else 0:.0f}", "",
             f"{(r1 - r0) * 1024 / n if n else 0:.0f}"])


def memory_run(ctx, name, rnd):
    want = ctx.cfg.idle_conns
    srv = servers.start(ctx, "echo", name)
    ctx.want = want
    argv = [ctx.exe("idle_conns"), "--port", str(srv.port), "--conns", str(want), "--hold", "120"]
    got = hold_idle(ctx, srv, argv, "idle.out", lambda: proc.established(srv.port), 600)
    if got[0] < want:
        ctx.note(f"perf/run: memory: only {got[0]} of {want} connections to {name} came up")
        ctx.cat("idle.out")
    memory_row(ctx, f"memory-{want}", name, rnd, want, got)


def tls_idle_count(ctx):
    try:
        with open(ctx.path("tls_idle.out")) as f:
            for line in f:
                if line.startswith("connected"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_tls_run(ctx, name, rnd):
    if name.startswith("rn-aesni") and not has_aesni(ctx):
        return
    want = ctx.cfg.idle_tls_conns
    srv = servers.start(ctx, "tls", name)
    ctx.want = want
    argv = [ctx.exe("tls_idle", name), "--port", str(srv.port), "--ca", ctx.path("tls-idle/cert.pem"),
            "--conns", str(want), "--hold", "120"]
    # up to 60 s; a count of 0 until tls_idle prints its 'connected' line
    got = hold_idle(ctx, srv, argv, "tls_idle.out",
                    lambda: want if tls_idle_count(ctx) else 0, 1200)
    got = (tls_idle_count(ctx),) + got[1:]
    if got[0] < want:
        ctx.note(f"perf/run: memory-tls: only {got[0]} of {want} TLS connections to {name} came up")
        ctx.cat("tls_idle.out")
    memory_row(ctx, f"memory-tls-{want}", name, rnd, want, got)


def memory_tls_prep(ctx):
    if not (ctx.has("rn_tls_server") and ctx.has("tls_idle")):
        ctx.note("memory-tls: skipped: TLS engine not built")
        return False
    make_cert(ctx.path("tls-idle"), san=True)
    if not has_aesni(ctx) and not ctx.cfg.no_aesni:
        ctx.note("memory-tls: no build against the fast wolfSSL: rn-aesni left out")
    return True


def plan_memory(cfg, keep):
    rounds = range(1, cfg.rounds + 1)
    plain = [Step(f"memory-{cfg.idle_conns}: {s}, round {r}", memory_run, s, r)
             for r in rounds for s in keep(["rn-io_uring", "rn-lent", "rn-epoll", "nginx", "libuv"])]
    rn = ["rn-io_uring", "rn-lent"] + ([] if cfg.no_aesni else ["rn-aesni", "rn-aesni-lent"])
    tls = [Step(f"memory-tls-{cfg.idle_tls_conns}: {s}, round {r}", memory_tls_run, s, r)
           for r in rounds for s in rn + ["nginx"]]
    return [Group("memory", plain), Group("memory-tls", tls, memory_tls_prep)]
