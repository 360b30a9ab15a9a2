"""perf/run --ir: user-space instructions per HTTP request under callgrind,
per backend, by perf/ir_per_request.py (one keep-alive connection, the
difference of a 2,000- and a 6,000-request run)."""
import os
import shutil
import subprocess
import sys
import time

from . import prepare


def run(cfg, root):
    script = os.path.join(root, "perf/ir_per_request.py")
    argv = [sys.executable, script, "--build", cfg.build_dir, "--backend", "both"]
    if cfg.dry_run:
        if cfg.build:
            print("build:   " + " ".join(" ".join(c) for c in prepare.build_commands(cfg.build_dir)))
        print("run:     " + " ".join(argv))
        return 0
    if cfg.install and not shutil.which("valgrind"):
        prepare.install_packages(["valgrind"])
    if cfg.build:
        prepare.build(cfg.build_dir)
    prepare.check_built(os.path.join(root, cfg.build_dir), ["rn_http_server"])
    print("perf/run: callgrind Ir per HTTP request, io_uring then epoll (about a minute)",
          file=sys.stderr)
    r = subprocess.run(argv, capture_output=True, text=True)
    sys.stderr.write(r.stderr)
    rows = [dict(w.split("=", 1) for w in line.split()[1:]) for line in r.stdout.splitlines()
            if line.startswith("ir_per_request ")]
    lines = ["| backend | user-space Ir per request |", "|---|---|"]
    lines += [f"| {x['backend']} | {x['ir']} |" for x in rows]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = os.path.join(root, cfg.out_dir)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"ir-{time.strftime('%Y%m%d-%H%M%S')}.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"table: {os.path.relpath(path, root)}")
    return r.returncode
