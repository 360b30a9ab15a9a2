#!/usr/bin/env python3
"""ir_per_request.py - user-space instructions per HTTP request, counted by
callgrind: the figure that proves a change to ringnet costs nothing.

perf/rn_http_server (the hello server written on the public API) runs
under `valgrind --tool=callgrind` on one backend; one keep-alive connection
sends SHORT sequential requests, waiting for each answer; a second run sends
LONG. Ir per request = (Ir(LONG) - Ir(SHORT)) / (LONG - SHORT), so start-up,
listen and teardown cancel out. Counts are repeatable to a few Ir.

Usage: perf/ir_per_request.py [--build DIR] [--backend io_uring|epoll|both]
                              [--short N] [--long N] [--threads N]
--threads N runs the server as rn_http_server --threads N (rn_run_threads,
a reuseport listener per thread) under callgrind --separate-threads=yes and
counts the thread that served the connection (the one with the most Ir):
against --threads 1, what a second loop adds to a request's path (issue 12).
Prints one line per backend: "ir_per_request backend=NAME ir=X.X" (with
" threads=N" when --threads is given).
Exit 0, or 1 when a run failed (the reason on stderr)."""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
ANSWER_LEN = 160  # nginx's answer to `return 200 "hello world\n"`


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive(port, n):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            s.sendall(REQUEST)
            got = 0
            while got < ANSWER_LEN:
                b = s.recv(ANSWER_LEN - got)
                if not b:
                    raise RuntimeError("server closed the connection")
                got += len(b)


def total_ir(path):
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"{path}: no totals line")


def busiest_thread_ir(out):
    """--separate-threads: the totals of the thread files of out, the largest."""
    d, base = os.path.split(out)
    files = [os.path.join(d, f) for f in os.listdir(d) if f.startswith(base + "-")]
    if not files:
        raise RuntimeError(f"{out}: no per-thread callgrind files")
    return max(total_ir(f) for f in files)


def run_once(server, backend, n, tmp, threads=0):
    port = free_port()
    out = os.path.join(tmp, f"cg.{backend}.{n}.t{threads}")
    extra = ["--threads", str(threads)] if threads else []
    sep = ["--separate-threads=yes"] if threads else []
    p = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *sep,
         server, "--port", str(port), "--backend", backend, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"{server} --backend {backend}: no 'listening' line ({line!r})")
        if f"backend {backend}" not in line:
            raise RuntimeError(f"asked for {backend}, server says {line.strip()!r}")
        drive(port, n)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    return busiest_thread_ir(out) if threads else total_ir(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--backend", default="both", choices=["io_uring", "epoll", "both"])
    ap.add_argument("--short", type=int, default=2000)
    ap.add_argument("--long", type=int, default=6000)
    ap.add_argument("--threads", type=int, default=0, help="rn_http_server --threads N")
    a = ap.parse_args()
    server = next((p for p in (os.path.join(a.build, "perf", "rn_http_server"),
                                os.path.join(a.build, "rn_http_server")) if os.access(p, os.X_OK)),
                  os.path.join(a.build, "perf", "rn_http_server"))
    if not os.access(server, os.X_OK):
        print(f"ir_per_request: {server} not built (cmake --build --preset release)",
              file=sys.stderr)
        return 1
    backends = ["io_uring", "epoll"] if a.backend == "both" else [a.backend]
    rc = 0
    with tempfile.TemporaryDirectory() as tmp:
        for b in backends:
            try:
                lo = run_once(server, b, a.short, tmp, a.threads)
                hi = run_once(server, b, a.long, tmp, a.threads)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                print(f"ir_per_request: {b}: {e}", file=sys.stderr)
                rc = 1
                continue
            t = f" threads={a.threads}" if a.threads else ""
            print(f"ir_per_request backend={b} ir={(hi - lo) / (a.long - a.short):.1f}{t}",
                  flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
