#!/usr/bin/env python3
"""ir_per_request.py - user-space instructions per HTTP request, counted by
callgrind: the figure that proves a change to ringnet costs nothing.

perf/rn_http_server (the hello server written on the public API) runs
under `valgrind --tool=callgrind` on one backend; one keep-alive connection
sends SHORT sequential requests, waiting for each answer; a second run sends
LONG. Ir per request = (Ir(LONG) - Ir(SHORT)) / (LONG - SHORT), so start-up,
listen and teardown cancel out. Counts are repeatable to a few Ir.

Usage: perf/ir_per_request.py [--build DIR] [--backend io_uring|epoll|both]
                              [--short N] [--long N]
Prints one line per backend: "ir_per_request backend=NAME ir=X.X".
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


def run_once(server, backend, n, tmp):
    port = free_port()
    out = os.path.join(tmp, f"cg.{backend}.{n}")
    p = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         server, "--port", str(port), "--backend", backend],
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
    return total_ir(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--backend", default="both", choices=["io_uring", "epoll", "both"])
    ap.add_argument("--short", type=int, default=2000)
    ap.add_argument("--long", type=int, default=6000)
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
                lo = run_once(server, b, a.short, tmp)
                hi = run_once(server, b, a.long, tmp)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                print(f"ir_per_request: {b}: {e}", file=sys.stderr)
                rc = 1
                continue
            print(f"ir_per_request backend={b} ir={(hi - lo) / (a.long - a.short):.1f}",
                  flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
